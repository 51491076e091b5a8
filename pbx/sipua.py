"""The pjsua2 adapter: the one module in ponte that imports pjsua2.

Everything else speaks in legs (plain ints), paths and events. The rules
pjsua2 imposes live here and nowhere else:

* One thread makes every pjsua2 call: `threadCnt=0`, `mainThreadOnly`, and the
  owner polls `poll()` (which calls `libHandleEvents`). pjsua2 then runs every
  callback, DTMF included, on that same thread.
* A Python reference is kept to every live Call, Account, player and recorder;
  a Call is dropped in its DISCONNECTED callback, because a Call freed later
  would hang up whatever new call reused its slot.
* `getInfo()` results are held in a variable before their vectors are read.
* Every pjsua2 object is released before `libDestroy`.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import _pjsua2
import pjsua2 as pj

# pbx._pjx (our media port) is compiled against pjproject's headers and calls
# the pj* functions _pjsua2 holds; Python loaded _pjsua2 RTLD_LOCAL, so make
# its symbols global before importing the extension.
ctypes.CDLL(_pjsua2.__file__, mode=os.RTLD_GLOBAL | os.RTLD_NOLOAD)
from pbx import _pjx  # noqa: E402
from pcm import CLOCK_RATE, FRAME_MS  # noqa: E402

log = logging.getLogger("ponte.sip")
pjlog = logging.getLogger("ponte.pjsip")

DTMF_METHODS = {
    pj.PJSUA_DTMF_METHOD_RFC2833: "rfc2833",
    pj.PJSUA_DTMF_METHOD_SIP_INFO: "info",
}
_REQUEST_USER = re.compile(r"^[A-Z]+ sips?:(?:([^@;>\s]+)@)?")
_LINE_HEADER = re.compile(r"^X-Ponte-Line:[ \t]*([0-9]{1,16})[ \t]*$", re.IGNORECASE | re.MULTILINE)


# RFC 3261 25.1: the characters of a token (an unquoted display name is
# tokens separated by LWS).
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_LWS = " \t\r\n"


@dataclass(frozen=True)
class NameAddr:
    """A From/To/Contact value split the RFC 3261 way (20.10, 25.1).

    `display` is the display name with its quoting undone (None when there
    is none) and `uri` the addr-spec alone: whatever the display name says
    (a URI, `<`, quotes), it is never taken for the address.
    """

    display: str | None
    uri: str


def parse_name_addr(text: str) -> NameAddr | None:
    """Split `name-addr / addr-spec` followed by header parameters.

    Grammar (RFC 3261 25.1)::

        name-addr    = [ display-name ] LAQUOT addr-spec RAQUOT
        display-name = *(token LWS) / quoted-string
        quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE
        quoted-pair  = "\\" (%x00-09 / %x0B-0C / %x0E-7F)

    An addr-spec outside < > ends at the first `;`: what follows are the
    header's parameters (20.10), e.g. the tag. None when the text is not a
    name-addr or addr-spec (an unterminated quote, a display name with
    characters a token may not hold, no closing `>`).
    """
    s = text.strip(_LWS)
    display: str | None = None
    if s.startswith('"'):
        chars: list[str] = []
        i = 1
        while True:
            if i >= len(s):
                return None  # unterminated quoted-string
            c = s[i]
            if c == "\\":
                if i + 1 >= len(s) or s[i + 1] in "\r\n":
                    return None  # a quoted-pair never escapes CR or LF
                chars.append(s[i + 1])
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                chars.append(c)
                i += 1
        display = "".join(chars)
        rest = s[i:].lstrip(_LWS)
        if not rest.startswith("<"):
            return None  # a quoted display name is always followed by <addr-spec>
    else:
        lt = s.find("<")
        if lt < 0:
            uri = s.split(";", 1)[0].strip(_LWS)  # a bare addr-spec, then header params
            return NameAddr(None, uri) if uri and "<" not in uri and ">" not in uri else None
        words = s[:lt].strip(_LWS)
        if any(c not in _TOKEN_CHARS and c not in _LWS for c in words):
            return None  # e.g. `sip:1001@host <sip:1002@host>`: not a display name
        display = " ".join(words.split()) or None
        rest = s[lt:]
    gt = rest.find(">")
    if gt < 0:
        return None
    uri = rest[1:gt]
    if not uri or uri != uri.strip(_LWS) or "<" in uri:
        return None
    return NameAddr(display, uri)


def uri_user(uri: str) -> str:
    """The user part of a sip:, sips: or tel: URI ("" when it has none).

    RFC 3261 19.1.1: `sip:user:password@host;params?headers`. '@' may appear
    nowhere after the userinfo, so the user is what precedes the only '@'
    (up to a ':' password). %-escapes are undone unless that would yield a
    control character (which would then end up in a log line).
    """
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep:
        return ""
    if scheme == "tel":  # telephone-subscriber, then ;parameters
        user = rest.split(";", 1)[0]
    elif scheme in ("sip", "sips"):
        userinfo, at, _host = rest.partition("@")
        if not at:
            return ""
        user = userinfo.split(":", 1)[0]
    else:
        return ""
    if "%" not in user:
        return user
    try:
        plain = urllib.parse.unquote(user, errors="strict")
    except UnicodeDecodeError:  # escapes that are not UTF-8: keep them escaped
        return user
    return plain if plain.isprintable() else user


@dataclass(frozen=True)
class IncomingCall:
    """What the app needs to route a new inbound call."""

    leg: int
    request_user: str  # the Request-URI's user part: the number dialed
    from_uri: str  # the From addr-spec alone (no display name, no parameters)
    from_user: str  # its user part, by parse_name_addr/uri_user (never the display name)
    sip_call_id: str
    source: str  # "ip:port" the INVITE came from
    # The extension Kamailio authenticated (its X-Ponte-Line header); None for
    # anything else, e.g. a provider's call to a DID. Only the app knows
    # whether `source` is Kamailio, so it decides whether to believe it.
    line: str | None = None
    from_display: str | None = None  # the From display name, as the caller chose it


class SipEvents(Protocol):
    """Callbacks the adapter's owner implements (all on the polling thread).

    Owners may also define `on_progress(leg, code)` (180/183 on an outbound
    leg), `on_registration(account, code, reason, active)` and
    `on_transfer_status(leg, code, final)` (a REFER we sent).
    """

    def on_incoming(self, call: IncomingCall) -> None: ...
    def on_media_ready(self, leg: int) -> None: ...
    def on_confirmed(self, leg: int) -> None: ...
    def on_digit(self, leg: int, digit: str, method: str) -> None: ...
    def on_disconnected(
        self, leg: int, code: int, reason: str, headers: dict[str, str]
    ) -> None: ...


class SipError(Exception):
    """A pjsua2 operation failed."""


class _LogWriter(pj.LogWriter):
    """Routes pjsip's log into Python logging."""

    _LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}

    def write(self, entry: pj.LogEntry) -> None:  # noqa: D102 - pjsua2 callback
        level = self._LEVELS.get(entry.level, logging.DEBUG)
        # pjsip's own level 3 is chatty; keep it out of our INFO call lines.
        pjlog.log(logging.DEBUG if level == logging.INFO else level, entry.msg.rstrip())


class _Call(pj.Call):
    """One pjsua call, owned by `SipUA._legs` until its DISCONNECTED callback.

    pjsua must never make a call of its own on one of ours: following a
    REFER it places the new call with our Call as its user data, and pjsua2
    then repoints this object at whichever of the two calls last had an
    event (`Call::lookup`). Our DISCONNECTED handling dropped the leg when
    the transferred call failed, the object was freed, and the next event
    of the surviving call read freed memory: a segfault in _pjsua2. So
    transfers and replacements are refused here (and by the SIP screen in
    pbx/_pjx.c before pjsua sees them), and an event for a pjsua call that
    is not ours is never taken for our leg's.
    """

    def __init__(self, ua: SipUA, leg: int, acc: pj.Account, call_id: int | None = None) -> None:
        if call_id is None:
            super().__init__(acc)
        else:
            super().__init__(acc, call_id)
        self.ua = ua
        self.leg = leg
        # pjsua's id for our call: known now for an inbound call, learnt from
        # the first event (during makeCall) for an outbound one.
        self.pj_id: int | None = call_id
        self.audio: pj.AudioMedia | None = None
        self.confirmed = False
        self.answered = False  # we sent a 2xx (an inbound call)

    def ours(self) -> bool:
        """Whether pjsua2 points this object at our own call right now."""
        current = int(self.getId())
        if self.pj_id is None:
            self.pj_id = current
        if current == self.pj_id:
            return True
        log.error(
            "call %d: pjsua reported pjsua call %d on this call's object "
            "(a call pjsua made by itself); ignored",
            self.leg,
            current,
        )
        return False

    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802
        if self.ours():
            self.ua._on_call_state(self, prm)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        if self.ours():
            self.ua._on_media_state(self)

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:  # noqa: N802
        if self.ours():
            self.ua.events.on_digit(self.leg, prm.digit, DTMF_METHODS.get(prm.method, "rfc2833"))

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:  # noqa: N802
        # A final refusal: pjsua answers the REFER with it and places no call.
        prm.statusCode = 403
        log.warning(
            "call %d: REFER to %s refused (403): the app server never transfers",
            self.leg,
            _printable(str(prm.dstUri)),
        )

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:  # noqa: N802
        # Progress of a REFER we sent (test phones only: see SipUA.refer).
        handler = getattr(self.ua.events, "on_transfer_status", None)
        if handler is not None and self.ours():
            handler(self.leg, int(prm.statusCode), bool(prm.finalNotify))

    def onCallReplaceRequest(self, prm: pj.OnCallReplaceRequestParam) -> None:  # noqa: N802
        # pjsua would answer the replacing INVITE itself, a call that never
        # reaches _on_incoming. prm.reason is left alone: pjsua2 2.12.1 hands
        # pjsua a pointer into it that dies with prm, and pjsua only
        # replaces a 2-character reason ("OK") with the code's own text.
        prm.statusCode = 403
        log.warning("call %d: INVITE with Replaces refused (403)", self.leg)


class _PortCall:
    """A conference member fed by Python (a browser over WebRTC) instead of RTP.

    It stands where a `_Call` stands in `_Leg`, so players, recorders,
    connect/disconnect and levels work on it unchanged; `hangup` removes the
    port and reports the leg disconnected on the next poll, as a call would.
    """

    def __init__(self, ua: SipUA, leg: int, port: _pjx.MediaPort) -> None:
        self.ua = ua
        self.leg = leg
        self.port = port
        self.confirmed = True
        # pjsua2 has no AudioMedia constructor for a bare slot; its port list
        # holds one per slot. The vector is kept: its elements live in it.
        self._ports = ua._ep.mediaEnumPorts2() if ua._ep is not None else None
        self.audio: pj.AudioMedia | None = None
        for i in range(len(self._ports or ())):
            if self._ports[i].getPortId() == port.slot:
                self.audio = self._ports[i]
                break
        if self.audio is None:
            raise SipError(f"media port slot {port.slot} not on the bridge")

    def hangup(self, prm: pj.CallOpParam) -> None:
        self.ua._port_ended.append((self.leg, int(prm.statusCode or 200)))


class _Account(pj.Account):
    def __init__(self, ua: SipUA, key: str) -> None:
        super().__init__()
        self.ua = ua
        self.key = key

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        self.ua._on_incoming(self, prm)

    def onInstantMessage(self, prm: pj.OnInstantMessageParam) -> None:  # noqa: N802
        handler = getattr(self.ua.events, "on_message", None)
        if handler is not None:
            handler(str(prm.fromUri), str(prm.msgBody))

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # noqa: N802
        info = self.getInfo()
        handler = getattr(self.ua.events, "on_registration", None)
        if handler is not None:
            handler(self.key, int(prm.code), str(prm.reason), bool(info.regIsActive))


def _printable(text: str, limit: int = 200) -> str:
    """`text` for a log line: control characters escaped, length bounded."""
    return repr(text[:limit])[1:-1]


def _headers(msg: str, names: Sequence[str] = ("Retry-After", "Warning", "Reason")) -> dict:
    """A few headers of a SIP message, by name (case-insensitive)."""
    found: dict[str, str] = {}
    head = msg.split("\r\n\r\n", 1)[0]
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        for wanted in names:
            if sep and name.strip().lower() == wanted.lower():
                found[wanted] = value.strip()
    return found


def _header_vector(headers: dict[str, str] | None) -> pj.SipHeaderVector:
    vec = pj.SipHeaderVector()
    for name, value in (headers or {}).items():
        h = pj.SipHeader()
        h.hName = name
        h.hValue = value
        vec.append(h)
    return vec


@dataclass
class _Leg:
    call: _Call
    players: dict[str, pj.AudioMediaPlayer]
    recorder: pj.AudioMediaRecorder | None = None


class SipUA:
    """One pjsua2 Endpoint with one UDP transport and one local account."""

    def __init__(
        self,
        events: SipEvents,
        host: str,
        port: int,
        rtp_range: tuple[int, int],
        *,
        clock_rate: int = CLOCK_RATE,
        codecs: Sequence[str] = ("PCMU/8000", "PCMA/8000", "G722/16000"),
        user: str = "ponte",
        user_agent: str = "ponte",
        max_calls: int = 1000,
        pj_log_level: int = 3,
        opus_rate: int = 0,
        screen: bool = True,
    ) -> None:
        self.events = events
        # pbx/_pjx.c's SIP screen; only a test phone goes without it, to show
        # what this module refuses on its own.
        self.screen = screen
        # Run opus at this clock rate (mono) instead of pjmedia's 48 kHz, and
        # say so in the SDP (the benches' 16 kHz opus legs); 0 leaves it alone.
        self.opus_rate = opus_rate
        self.host = host
        self.port = port
        self.rtp_range = rtp_range
        # The conference bridge's rate (`sip.clock_rate`): every leg, player,
        # recorder and Python-fed port is resampled to it.
        self.clock_rate = clock_rate
        self.codecs = list(codecs)
        self.user = user
        self.user_agent = user_agent
        self.max_calls = max_calls
        self.pj_log_level = pj_log_level
        self._ep: pj.Endpoint | None = None
        self._acc: _Account | None = None
        self._accounts: dict[str, _Account] = {}
        self._buddies: dict[str, pj.Buddy] = {}
        self._writer = _LogWriter()
        self._legs: dict[int, _Leg] = {}
        self._port_ended: list[tuple[int, int]] = []
        self._ids = itertools.count(1)
        self.bound_port = port

    # -- lifecycle --------------------------------------------------------
    def start(self) -> None:
        """Create the endpoint, bind SIP, and open the null sound device."""
        ep = pj.Endpoint()
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = self.max_calls
        cfg.uaConfig.userAgent = self.user_agent
        cfg.logConfig.writer = self._writer
        cfg.logConfig.level = self.pj_log_level
        cfg.logConfig.consoleLevel = self.pj_log_level
        cfg.logConfig.decor = 0
        cfg.medConfig.clockRate = self.clock_rate
        cfg.medConfig.sndClockRate = self.clock_rate
        cfg.medConfig.channelCount = 1
        cfg.medConfig.audioFramePtime = FRAME_MS
        cfg.medConfig.ptime = 20
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0  # a bridge has no acoustic echo to cancel
        cfg.medConfig.quality = 4
        # The null device must never auto-close: with it closed the bridge's
        # clock stops and no RTP (nor RFC 2833) goes out.
        cfg.medConfig.sndAutoCloseTime = -1
        ep.libInit(cfg)
        self._ep = ep
        # Invalid requests (RFC 4475) get 400 here even when they did not come
        # through Kamailio: pjsip 2.12.1 alone answers some of them 200. The
        # screen also answers 481 to a request that names a dialog by its
        # tags with another Call-ID, and 403 to REFER and Replaces.
        if self.screen:
            _pjx.install_screen()

        tcfg = pj.TransportConfig()
        tcfg.port = self.port
        tcfg.boundAddress = self.host
        tcfg.publicAddress = self.host
        try:
            tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        except pj.Error as exc:
            ep.libDestroy()
            self._ep = None
            raise SipError(f"cannot listen on {self.host}:{self.port}: {exc.info()}") from None
        tinfo = ep.transportGetInfo(tid)
        self.bound_port = int(tinfo.localName.rpartition(":")[2])
        ep.audDevManager().setNullDev()
        ep.libStart()
        self._set_codecs()

        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{self.user}@{self.host}:{self.bound_port}"
        self._own_address(acfg)
        acc = _Account(self, "local")
        acc.create(acfg, True)
        self._acc = acc
        lo, hi = self.rtp_range
        log.debug("SIP listening on %s:%d, RTP %d-%d", self.host, self.bound_port, lo, hi)

    def _own_address(self, acfg: pj.AccountConfig) -> None:
        """Every account's Contact and RTP stay on our own (loopback) address.

        Left alone, pjsua builds a dialog's Contact from the interface that
        routes to the top Record-Route (Kamailio's LAN address, with our
        port, where nothing listens) and binds a trunk account's RTP to
        0.0.0.0:4000; Kamailio and rtpengine face the network, we do not.
        """
        parsed = parse_name_addr(acfg.idUri)
        contact_user = (uri_user(parsed.uri) if parsed else "") or self.user
        acfg.sipConfig.contactForced = f"<sip:{contact_user}@{self.host}:{self.bound_port}>"
        acfg.natConfig.contactRewriteUse = 0
        acfg.natConfig.viaRewriteUse = 0
        acfg.natConfig.sdpNatRewriteUse = 0
        lo, hi = self.rtp_range
        tcfg = acfg.mediaConfig.transportConfig
        tcfg.port = lo
        tcfg.portRange = hi - lo
        tcfg.boundAddress = self.host
        tcfg.publicAddress = self.host
        acfg.mediaConfig.transportConfig = tcfg

    def _set_codecs(self) -> None:
        assert self._ep is not None
        infos = self._ep.codecEnum2()  # held: a temporary's vector is freed under you
        wanted = {c.lower(): len(self.codecs) - i for i, c in enumerate(self.codecs)}
        for info in infos:
            cid = info.codecId
            key = cid.rsplit("/", 1)[0].lower()  # "PCMU/8000/1" -> "pcmu/8000"
            prio = wanted.get(key, 0)
            self._ep.codecSetPriority(cid, 128 + prio if prio else 0)
            if self.opus_rate and key == "opus/48000":
                self._set_opus_rate(cid)

    def _set_opus_rate(self, cid: str) -> None:
        assert self._ep is not None
        param = self._ep.codecGetParam(cid)
        param.info.clockRate = self.opus_rate
        param.info.channelCnt = 1
        fmtp = pj.CodecFmtpVector()
        for name, value in (
            ("useinbandfec", "1"),
            ("maxplaybackrate", str(self.opus_rate)),
            ("sprop-maxcapturerate", str(self.opus_rate)),
        ):
            f = pj.CodecFmtp()
            f.name, f.val = name, value
            fmtp.append(f)
        param.setting.decFmtp = fmtp
        self._ep.codecSetParam(cid, param)

    @property
    def started(self) -> bool:
        """Whether the endpoint exists (between start and shutdown)."""
        return self._ep is not None

    def poll(self, timeout_ms: int) -> None:
        """Run pjsip's event loop for at most `timeout_ms`."""
        assert self._ep is not None
        if self._port_ended:
            self._end_ports()
            timeout_ms = 0
        self._ep.libHandleEvents(timeout_ms)

    def shutdown(self, timeout: float = 2.0) -> None:
        """Hang up everything with BYE, wait for the dialogs to end, destroy."""
        ep = self._ep
        if ep is None:
            return
        # A comprehension, not a loop: a loop variable would keep the last
        # Call alive past libDestroy, and its destructor would then assert.
        self._port_ended += [
            (leg, 503) for leg, e in self._legs.items() if isinstance(e.call, _PortCall)
        ]
        self._end_ports()
        if self._legs:
            ep.hangupAllCalls()
            deadline = time.monotonic() + timeout
            while self._legs and time.monotonic() < deadline:
                ep.libHandleEvents(20)
        for leg in list(self._legs):
            self._release_media(leg)
        self._legs.clear()
        self._buddies.clear()
        for acc in self._accounts.values():
            acc.shutdown()
        self._accounts.clear()
        if self._acc is not None:
            self._acc.shutdown()
            self._acc = None
        ep.libDestroy()
        self._ep = None

    # -- accounts ---------------------------------------------------------
    def add_account(
        self,
        key: str,
        id_uri: str,
        *,
        registrar: str = "",
        username: str = "",
        password: str = "",
        retry_seconds: int = 30,
        expires: int = 300,
        proxy: str = "",
    ) -> None:
        """An account with digest credentials, registering when `registrar` is set.

        With `proxy`, every request of the account goes through that outbound
        proxy (a `;lr` URI), registrations included.
        """
        acfg = pj.AccountConfig()
        acfg.idUri = id_uri
        self._own_address(acfg)  # after idUri: the Contact keeps the account's user
        if proxy:
            acfg.sipConfig.proxies.append(proxy)
        if registrar:
            acfg.regConfig.registrarUri = registrar
            acfg.regConfig.timeoutSec = expires
            # Re-register after a failure; pjsua adds a random 0-10 s on top.
            acfg.regConfig.retryIntervalSec = retry_seconds
            acfg.regConfig.firstRetryIntervalSec = min(retry_seconds, 5)
        else:
            acfg.regConfig.registerOnAdd = False
        if username:
            cred = pj.AuthCredInfo("digest", "*", username, 0, password)
            acfg.sipConfig.authCreds.append(cred)
        acc = _Account(self, key)
        acc.create(acfg)
        self._accounts[key] = acc

    def remove_account(self, key: str) -> None:
        """Unregister and drop an account."""
        acc = self._accounts.pop(key, None)
        if acc is not None:
            acc.shutdown()

    def send_message(self, uri: str, text: str) -> None:
        """Send a SIP MESSAGE (text/plain) out of dialog."""
        assert self._acc is not None
        buddy = self._buddies.get(uri)
        if buddy is None:
            bcfg = pj.BuddyConfig()
            bcfg.uri = uri
            bcfg.subscribe = False
            buddy = pj.Buddy()
            buddy.create(self._acc, bcfg)
            # Kept: the MESSAGE transaction outlives this call.
            self._buddies[uri] = buddy
        prm = pj.SendInstantMessageParam()
        prm.content = text
        prm.contentType = "text/plain"
        try:
            buddy.sendInstantMessage(prm)
        except pj.Error as exc:
            raise SipError(f"cannot send MESSAGE to {uri}: {exc.info()}") from None

    # -- calls ------------------------------------------------------------
    def answer(
        self, leg: int, code: int = 200, reason: str = "", headers: dict[str, str] | None = None
    ) -> None:
        """Answer (or send a provisional or final response to) an inbound call."""
        prm = pj.CallOpParam()
        prm.statusCode = code
        if reason:
            prm.reason = reason
        if headers:
            prm.txOption.headers = _header_vector(headers)
        call = self._call(leg)
        call.answer(prm)
        if 200 <= code < 300:
            call.answered = True

    def hangup(self, leg: int, code: int = 0, reason: str = "") -> None:
        """End a call: BYE when answered, CANCEL or a final response before."""
        entry = self._legs.get(leg)
        if entry is None:
            return
        prm = pj.CallOpParam()
        if code:
            prm.statusCode = code
        if reason:
            prm.reason = reason
        try:
            entry.call.hangup(prm)
        except pj.Error as exc:
            log.debug("hangup leg %d: %s", leg, exc.info())

    def make_call(
        self, uri: str, account: str | None = None, headers: dict[str, str] | None = None
    ) -> int:
        """Place an outbound call (through an account's credentials); returns its leg."""
        acc = self._accounts[account] if account else self._acc
        assert acc is not None
        leg = next(self._ids)
        call = _Call(self, leg, acc)
        self._legs[leg] = _Leg(call, {})
        prm = pj.CallOpParam(True)
        if headers:
            prm.txOption.headers = _header_vector(headers)
        try:
            call.makeCall(uri, prm)
        except pj.Error as exc:
            del self._legs[leg]
            raise SipError(f"cannot call {uri}: {exc.info()}") from None
        return leg

    def refer(self, leg: int, target: str) -> None:
        """Send an in-dialog REFER asking the far end to call `target` (sent
        as given, `?headers` included). For test phones: the app server
        never transfers. Its progress comes back as
        `on_transfer_status(leg, code, final)` if the owner defines it."""
        try:
            self._call(leg).xfer(target, pj.CallOpParam(True))
        except pj.Error as exc:
            raise SipError(f"cannot REFER leg {leg} to {target}: {exc.info()}") from None

    def send_dtmf(self, leg: int, digits: str, method: str = "rfc2833") -> None:
        """Send digits by RFC 2833 or SIP INFO."""
        prm = pj.CallSendDtmfParam()
        prm.digits = digits
        prm.method = (
            pj.PJSUA_DTMF_METHOD_SIP_INFO if method == "info" else pj.PJSUA_DTMF_METHOD_RFC2833
        )
        prm.duration = 160
        self._call(leg).sendDtmf(prm)

    def rx_packets(self, leg: int) -> int | None:
        """RTP packets received on the leg's audio stream so far (None: no stream)."""
        entry = self._legs.get(leg)
        if entry is None or not isinstance(entry.call, _Call) or entry.call.audio is None:
            return None
        try:
            stat = entry.call.getStreamStat(0)
        except pj.Error:
            return None
        return int(stat.rtcp.rxStat.pkt)

    def has_leg(self, leg: int) -> bool:
        """True while the leg's call exists."""
        return leg in self._legs

    def has_media(self, leg: int) -> bool:
        """True once the leg's audio is on the conference bridge."""
        entry = self._legs.get(leg)
        return entry is not None and entry.call.audio is not None

    def call_count(self) -> int:
        """Live calls."""
        return len(self._legs)

    def conf_ports(self) -> int:
        """Ports in use on pjmedia's conference bridge (leak check)."""
        assert self._ep is not None
        return int(self._ep.mediaActivePorts())

    # -- ports fed by Python ----------------------------------------------
    def add_port_leg(self, depth: int = 8) -> tuple[int, _pjx.MediaPort]:
        """A new leg whose audio Python pushes and pulls in 20 ms frames of
        the bridge's rate (s16le mono), e.g. a browser's WebRTC audio.

        The port's `push`/`pull` may be called from any thread; the leg is
        ended like a call, with `hangup`, and reported by `on_disconnected`.
        """
        port = _pjx.MediaPort(self.clock_rate, FRAME_MS, depth, "web")
        leg = next(self._ids)
        try:
            call = _PortCall(self, leg, port)
        except SipError:
            port.close()
            raise
        self._legs[leg] = _Leg(call, {})  # type: ignore[arg-type]
        return leg, port

    def levels(self, leg: int) -> tuple[int, int] | None:
        """The leg's last (heard, said) signal levels, 0-255, or None."""
        audio = self._audio(leg)
        if audio is None:
            return None
        try:
            return _pjx.signal_level(audio.getPortId())
        except ValueError:
            return None

    @staticmethod
    def screened() -> dict[str, int]:
        """Requests the SIP screen refused, by rule (400 for the RFC 4475
        ones, 481 `dialog`, 403 `refer` and `replaces`)."""
        return dict(_pjx.screen_stats())

    def _end_ports(self) -> None:
        ended, self._port_ended = self._port_ended, []
        for leg, code in ended:
            entry = self._legs.get(leg)
            if entry is None or not isinstance(entry.call, _PortCall):
                continue
            port = entry.call.port
            del entry  # no reference may outlive the leg (see shutdown)
            self._release_media(leg)
            port.close()
            self._legs.pop(leg, None)
            self.events.on_disconnected(leg, code, "port closed", {})

    # -- media ------------------------------------------------------------
    def play(
        self, leg: int, files: Sequence[Path], *, loop: bool = False, slot: str = "prompt"
    ) -> None:
        """Play files in sequence to a leg, replacing what plays in `slot`."""
        entry = self._legs.get(leg)
        if entry is None or entry.call.audio is None:
            return
        self.stop_play(leg, slot)
        player = pj.AudioMediaPlayer()
        opts = 0 if loop else pj.PJMEDIA_FILE_NO_LOOP
        names = [str(f) for f in files]
        if len(names) == 1:
            player.createPlayer(names[0], opts)
        else:
            vec = pj.StringVector(names)
            player.createPlaylist(vec, slot, opts)
        player.startTransmit(entry.call.audio)
        entry.players[slot] = player

    def stop_play(self, leg: int, slot: str = "prompt") -> None:
        """Stop a playback (dropping the player frees its conference port)."""
        entry = self._legs.get(leg)
        if entry is None:
            return
        player = entry.players.pop(slot, None)
        if player is not None and entry.call.audio is not None:
            with contextlib.suppress(pj.Error):
                player.stopTransmit(entry.call.audio)

    def record(self, leg: int, path: Path) -> None:
        """Record what the leg receives from the far end into a WAV file."""
        entry = self._legs.get(leg)
        if entry is None or entry.call.audio is None:
            raise SipError(f"leg {leg} has no media to record")
        rec = pj.AudioMediaRecorder()
        rec.createRecorder(str(path))
        entry.call.audio.startTransmit(rec)
        entry.recorder = rec

    def stop_record(self, leg: int) -> None:
        """Close the leg's recording (the WAV header is finalised)."""
        entry = self._legs.get(leg)
        if entry is not None:
            entry.recorder = None

    def set_listen_level(self, leg: int, level: float) -> None:
        """Scale what the leg hears from the bridge (1.0 = unchanged, 2.0 = +6 dB)."""
        audio = self._audio(leg)
        if audio is not None:
            # Measured on this 2.12.1 build (tests/test_conference_calls.py, *4):
            # adjustRxLevel scales what the caller hears; adjustTxLevel does not.
            audio.adjustRxLevel(level)

    def connect(self, src: int, dst: int) -> None:
        """Send `src`'s received audio to `dst` on the conference bridge."""
        a, b = self._audio(src), self._audio(dst)
        if a is not None and b is not None:
            a.startTransmit(b)

    def disconnect(self, src: int, dst: int) -> None:
        """Stop sending `src`'s audio to `dst`."""
        a, b = self._audio(src), self._audio(dst)
        if a is not None and b is not None:
            with contextlib.suppress(pj.Error):
                a.stopTransmit(b)

    # -- internals --------------------------------------------------------
    def _call(self, leg: int) -> _Call:
        entry = self._legs.get(leg)
        if entry is None:
            raise SipError(f"no call on leg {leg}")
        return entry.call

    def _audio(self, leg: int) -> pj.AudioMedia | None:
        entry = self._legs.get(leg)
        return entry.call.audio if entry else None

    def _release_media(self, leg: int) -> None:
        entry = self._legs.get(leg)
        if entry is None:
            return
        entry.players.clear()
        entry.recorder = None
        entry.call.audio = None

    def _on_incoming(self, acc: _Account, prm: pj.OnIncomingCallParam) -> None:
        leg = next(self._ids)
        call = _Call(self, leg, acc, prm.callId)
        self._legs[leg] = _Leg(call, {})
        rdata = prm.rdata
        whole = rdata.wholeMsg
        first_line = whole.split("\r\n", 1)[0]
        lines = _LINE_HEADER.findall(whole.split("\r\n\r\n", 1)[0])
        m = _REQUEST_USER.match(first_line)
        info = call.getInfo()
        # pjsip's own print of the From it parsed: `"display" <uri>` or `<uri>`.
        # The user comes from the addr-spec only: a display name such as
        # "sip:1001@127.0.0.1" must never make the call look like 1001's.
        remote = str(info.remoteUri)
        parsed = parse_name_addr(remote)
        from_uri = parsed.uri if parsed else remote
        incoming = IncomingCall(
            leg=leg,
            request_user=(m.group(1) or "") if m else "",
            from_uri=from_uri,
            from_user=uri_user(from_uri) if parsed else "",
            sip_call_id=info.callIdString,
            source=rdata.srcAddress,
            line=lines[0] if len(lines) == 1 else None,  # two headers: forged, ignore
            from_display=parsed.display if parsed else None,
        )
        self.events.on_incoming(incoming)

    def _on_call_state(self, call: _Call, prm: pj.OnCallStateParam) -> None:
        info = call.getInfo()
        if info.state == pj.PJSIP_INV_STATE_EARLY:
            handler = getattr(self.events, "on_progress", None)
            if handler is not None:
                handler(call.leg, int(info.lastStatusCode))
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED and not call.confirmed:
            call.confirmed = True
            self.events.on_confirmed(call.leg)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            code, reason = int(info.lastStatusCode), str(info.lastReason)
            if call.answered and not call.confirmed:
                # Our 200 OK was never ACKed: the phone's ACK went elsewhere
                # (a wrong Contact or Record-Route) or was lost on the way.
                log.warning(
                    "call %d: no ACK for our 200 OK (%d %s): check the proxy's "
                    "Record-Route and the phone's NAT",
                    call.leg,
                    code,
                    reason,
                )
            headers: dict[str, str] = {}
            try:
                ev = prm.e
                if ev.type == pj.PJSIP_EVENT_TSX_STATE:
                    src = ev.body.tsxState.src
                    if ev.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG:
                        headers = _headers(src.rdata.wholeMsg)
            except (AttributeError, pj.Error):
                pass
            self._release_media(call.leg)
            # Dropped here and only here: see the module docstring.
            self._legs.pop(call.leg, None)
            self.events.on_disconnected(call.leg, code, reason, headers)

    def _on_media_state(self, call: _Call) -> None:
        info = call.getInfo()
        media = info.media  # held before iterating (see module docstring)
        for i in range(len(media)):
            mi = media[i]
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                first = call.audio is None
                call.audio = call.getAudioMedia(i)
                if first:
                    self.events.on_media_ready(call.leg)
                return


def build_info() -> dict[str, object]:
    """This pjsua2 build's version and codecs, from a throwaway Endpoint.

    Meant for a child process (the benches ask with `python -m pbx.sipua`):
    one process may hold only one Endpoint.
    """
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    ep.libStart()
    try:
        infos = ep.codecEnum2()  # held: a temporary's vector is freed under you
        return {"version": ep.libVersion().full, "codecs": [i.codecId for i in infos]}
    finally:
        ep.libDestroy()


if __name__ == "__main__":
    import json
    import sys

    json.dump(build_info(), sys.stdout)
    print()
