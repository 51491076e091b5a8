"""The pjsua2 adapter: with pbx/sipcalls.py and pbx/sipsetup.py, all of ponte that imports pjsua2.

Everything else speaks in legs (plain ints), paths and events. The rules
pjsua2 imposes live here (and in those two) and nowhere else:

* One thread makes every pjsua2 call: `threadCnt=0`, `mainThreadOnly`, and the
  owner polls `poll()` (which calls `libHandleEvents`). pjsua2 then runs every
  callback, DTMF included, on that same thread.
* A Python reference is kept to every live Call, Account, player and recorder;
  a Call is dropped in its DISCONNECTED callback, because a Call freed later
  would hang up whatever new call reused its slot.
* `getInfo()` results are held in a variable before their vectors are read.
* Every pjsua2 object is released before `libDestroy`.

The adapter is this module (`SipUA`: the Endpoint, calls, media), with
pbx/sipcalls.py (the Call and Account whose pjsua2 callbacks land here, the
per-leg record) and pbx/sipsetup.py (Endpoint, account and codec config),
the only other modules that import pjsua2. Beside it, free of pjsua2:
pbx/sipmsg.py (the SIP text read here) and pbx/sipevents.py (what the owner
is told, and `SipError`).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import _pjsua2
import pjsua2 as pj

# pbx._pjx (our media port) is compiled against pjproject's headers and calls
# the pj* functions _pjsua2 holds; Python loaded _pjsua2 RTLD_LOCAL, so make
# its symbols global before importing the extension.
ctypes.CDLL(_pjsua2.__file__, mode=os.RTLD_GLOBAL | os.RTLD_NOLOAD)
from pbx import _pjx  # noqa: E402
from pbx.opus import OpusSettings  # noqa: E402
from pbx.recorder import RING_FRAMES, RecorderPool, Result  # noqa: E402
from pbx.sipcalls import (  # noqa: E402
    DTMF_METHODS,
    _Account,
    _Call,
    _header_vector,
    _Leg,
    _PortCall,
)
from pbx.sipevents import (  # noqa: E402
    HANDOFF_HEADERS,
    WEB_HEADER,
    IncomingCall,
    SipError,
    SipEvents,
)
from pbx.sipmsg import (  # noqa: E402
    LINE_HEADER,
    REQUEST_USER,
    NameAddr,
    message_headers,
    parse_name_addr,
    uri_user,
)
from pbx.sipsetup import _LogWriter, build_info, ep_config, own_address, set_codecs  # noqa: E402
from pcm import CLOCK_RATE, FRAME_MS  # noqa: E402

SHARED_LOG_S = 5.0  # seconds between shared-encode counter lines in the log
# `sip.jitter_discard` -> pjmedia_jb_discard_algo (pjproject patch 0016); ""
# leaves pjsua's own (progressive).
JB_DISCARD = {"": -1, "none": 0, "static": 1, "progressive": 2}

# Re-exported: the app and the tests import these from the adapter.
__all__ = [
    "DTMF_METHODS",
    "IncomingCall",
    "NameAddr",
    "SipError",
    "SipEvents",
    "SipUA",
    "build_info",
    "parse_name_addr",
    "uri_user",
]

log = logging.getLogger("ponte.sip")

# Media states in which the call's audio may have a conference port (on hold
# with a=sendonly the stream still receives; a=inactive has none).
_LIVE_MEDIA = (
    pj.PJSUA_CALL_MEDIA_ACTIVE,
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD,
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD,
)


def talker_level(dbfs: float | None) -> int:
    """pjmedia's talker threshold for `dbfs`: the mean absolute sample value
    (0-32767) of a frame at that level relative to full scale; 0 (the gate
    off) for None."""
    if dbfs is None:
        return 0
    return max(1, min(32767, round(32767 * 10 ** (dbfs / 20))))


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
        opus: OpusSettings | None = None,
        screen: bool = True,
        media_polled: bool = False,
        jitter_ms: int = 0,
        jitter_hold_ms: int = 0,
        tls_port: int | None = None,
        tls_pair: tuple[str, str] | None = None,
        srtp: str = "",
        talker_threshold_dbfs: float | None = None,
        talker_hangover_ms: int = 400,
        shared_encode: bool = True,
        jitter_discard: str = "",
    ) -> None:
        self.events = events
        # Talkers and listeners on the bridge (`sip.talker_threshold_dbfs`,
        # `sip.talker_hangover_ms`): a member quieter than the threshold for
        # longer than the hangover is mixed to nobody. None: every member is
        # mixed (test phones, whose own bridge only plays and records).
        self.talker_threshold_dbfs = talker_threshold_dbfs
        self.talker_hangover_ms = talker_hangover_ms
        # One encode per listener group (`sip.shared_encode`): listeners who
        # hear the same talkers share one payload. False: every leg encodes
        # its own (to measure what sharing saves, or should a codec misbehave).
        self.shared_encode = shared_encode
        # How each leg's receive jitter buffer sheds delay
        # (`sip.jitter_discard`: "static", "progressive"); "": pjsua's own
        # (progressive), as test phones keep.
        self.jitter_discard = jitter_discard
        self._shared_log_at = 0.0
        self._shared_last: dict[str, int] = {}
        # SIP over TLS (a test phone's --tls): a TLS transport on this port
        # (0: any) that registering accounts and their calls use; None: UDP
        # only. The app server never needs it: Kamailio terminates TLS.
        self.tls_port = tls_port
        # A certificate and key (PEM paths) for the TLS transport to answer
        # TLS connections with (a test provider's); None: a client only.
        self.tls_pair = tls_pair
        self.tls_tid: int | None = None
        self.tls_bound_port = 0
        # SRTP (SDES) on our calls: "" none, "optional" or "mandatory".
        if srtp not in ("", "optional", "mandatory"):
            raise ValueError(f"srtp must be '', 'optional' or 'mandatory', got {srtp!r}")
        self.srtp = srtp
        # RTP read by poll() rather than by pjmedia's worker thread (see
        # pbx/sipsetup.py's ep_config): test phones only.
        self.media_polled = media_polled
        # The jitter buffer's cap in ms (pbx/sipsetup.py's ep_config); 0:
        # pjmedia's default. Test and bench phones only.
        self.jitter_ms = jitter_ms
        # What it fills before playing (ep_config); 0: pjmedia's default.
        self.jitter_hold_ms = jitter_hold_ms
        # pbx/_pjx.c's SIP screen; only a test phone goes without it, to show
        # what this module refuses on its own.
        self.screen = screen
        # Run opus at this clock rate (mono) instead of pjmedia's 48 kHz, and
        # say so in the SDP (the benches' 16 kHz opus legs); 0 leaves it alone.
        self.opus_rate = opus_rate
        # Opus's encoder (`sip.opus`): None keeps pjmedia's defaults.
        self.opus = opus
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
        # Players let go of since the last poll, destroyed together at the
        # next: removing a port from the bridge waits for the clock thread's
        # tick to end (pjproject patch 0017 queues adds and links, not
        # removals), so one at a time a burst of calls (a PIN prompt and a
        # join tone each) waited a tick per player; together, the first waits
        # and the rest go in the same pause. Unlinked already: unheard.
        self._graveyard: list[pj.AudioMediaPlayer] = []
        # A refusal (a final response >= 300, or a hang-up) of the call whose
        # onIncomingCall is running waits for the next poll(): sent inside
        # the callback to an INVITE without SDP, pjsua 2.12 then frees a
        # cloned rdata that is not there and aborts the process
        # (pjsip_rx_data_free_cloned: Assertion `rdata' failed), so any
        # delayed-offer INVITE we refused killed every call.
        self._incoming_leg: int | None = None
        self._refusals: list[tuple[int, pj.CallOpParam]] = []
        self._ids = itertools.count(1)
        self.bound_port = port
        # Room recordings: bridge ports drained off the clock thread (pbx/recorder.py).
        self.recorders = RecorderPool()
        self._rec_ports: dict[int, tuple[_PortCall, _pjx.MediaPort]] = {}

    # -- lifecycle --------------------------------------------------------
    def start(self) -> None:
        """Create the endpoint, bind SIP, and open the null sound device."""
        ep = pj.Endpoint()
        ep.libCreate()
        cfg = ep_config(
            max_calls=self.max_calls,
            user_agent=self.user_agent,
            writer=self._writer,
            log_level=self.pj_log_level,
            clock_rate=self.clock_rate,
            media_polled=self.media_polled,
            codec_vad=self.opus is not None and self.opus.dtx,
            jitter_ms=self.jitter_ms,
            jitter_hold_ms=self.jitter_hold_ms,
        )
        ep.libInit(cfg)
        self._ep = ep
        _pjx.set_talker_gate(
            talker_level(self.talker_threshold_dbfs), max(0, self.talker_hangover_ms)
        )
        _pjx.set_shared_encode(self.shared_encode)
        _pjx.set_jb_discard(JB_DISCARD[self.jitter_discard])
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
        if self.tls_port is not None:
            self._start_tls(ep)
        ep.audDevManager().setNullDev()
        ep.libStart()
        set_codecs(ep, self.codecs, self.opus_rate, self.opus)

        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{self.user}@{self.host}:{self.bound_port}"
        self._own_address(acfg)
        acc = _Account(self, "local")
        acc.create(acfg, True)
        self._acc = acc
        lo, hi = self.rtp_range
        log.debug("SIP listening on %s:%d, RTP %d-%d", self.host, self.bound_port, lo, hi)

    def _start_tls(self, ep: pj.Endpoint) -> None:
        """The TLS transport (a test phone's): it connects to the server,
        which reuses that connection for calls to us; the server's
        certificate is not checked (lab pairs are self-signed). With
        `tls_pair` it also takes connections (a test provider)."""
        tcfg = pj.TransportConfig()
        tcfg.port = self.tls_port or 0
        tcfg.boundAddress = self.host
        tcfg.publicAddress = self.host
        tcfg.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
        tcfg.tlsConfig.verifyServer = False
        if self.tls_pair is not None:
            tcfg.tlsConfig.certFile, tcfg.tlsConfig.privKeyFile = self.tls_pair
        try:
            self.tls_tid = ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg)
        except pj.Error as exc:
            ep.libDestroy()
            self._ep = None
            raise SipError(f"cannot listen for TLS on {self.host}: {exc.info()}") from None
        info = ep.transportGetInfo(self.tls_tid)
        self.tls_bound_port = int(info.localName.rpartition(":")[2])

    def _own_address(self, acfg: pj.AccountConfig) -> None:
        """An account's Contact and RTP on our address (own_address), on the
        TLS transport when there is one (a test phone's --tls: all its
        requests go over TLS), with SRTP as `srtp` asks."""
        if self.tls_tid is not None:
            own_address(
                acfg, self.host, self.tls_bound_port, self.user, self.rtp_range, transport="tls"
            )
            acfg.sipConfig.transportId = self.tls_tid
        else:
            own_address(acfg, self.host, self.bound_port, self.user, self.rtp_range)
        self._media_security(acfg)

    def _media_security(self, acfg: pj.AccountConfig) -> None:
        """SRTP (SDES) on an account's calls, as `srtp` asks."""
        if not self.srtp:
            return
        mcfg = acfg.mediaConfig
        mcfg.srtpUse = (
            pj.PJMEDIA_SRTP_MANDATORY if self.srtp == "mandatory" else pj.PJMEDIA_SRTP_OPTIONAL
        )
        # SDES keys travel in the SDP: over TLS they are secret; the test
        # phone may still be asked to try SRTP over UDP.
        mcfg.srtpSecureSignaling = 0
        acfg.mediaConfig = mcfg

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
        self._send_refusals()
        self._graveyard.clear()
        self._ep.libHandleEvents(timeout_ms)
        self._send_refusals()
        self._log_shared_encode()

    def _log_shared_encode(self) -> None:
        """Every SHARED_LOG_S, if it moved: how many G.711/G.722/Opus frames went out
        with a payload their listener group shared (our pjproject patches 0009, 0011),
        next to the group encodes. What it saves is read off the log, not guessed."""
        now = time.monotonic()
        if now < self._shared_log_at:
            return
        self._shared_log_at = now + SHARED_LOG_S
        stats = _pjx.shared_encode_stats()
        if stats != self._shared_last:
            self._shared_last = stats
            log.info(
                "media: frames sent with a shared encode %d, group encodes %d",
                stats["shared"],
                stats["encoded"],
            )

    def _send_refusals(self) -> None:
        """The refusals deferred out of onIncomingCall (see __init__)."""
        while self._refusals:
            leg, prm = self._refusals.pop(0)
            entry = self._legs.get(leg)
            if entry is None:
                continue
            try:
                if prm.statusCode:
                    entry.call.answer(prm)
                else:
                    entry.call.hangup(prm)
            except pj.Error as exc:
                log.debug("refusal of leg %d: %s", leg, exc.info())

    def shutdown(self, timeout: float = 2.0) -> None:
        """Hang up everything with BYE, wait for the dialogs to end, destroy."""
        ep = self._ep
        if ep is None:
            return
        # A comprehension, not a loop: a loop variable would keep the last
        # Call alive past libDestroy, and its destructor would then assert.
        for rec in list(self._rec_ports):
            self.end_recorder(rec)
        self.recorders.shutdown()
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
        self._graveyard.clear()
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
        # After idUri: the Contact keeps the account's user.
        self._own_address(acfg)
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
        if code >= 300 and leg == self._incoming_leg:
            self._refusals.append((leg, prm))
            return
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
        if leg == self._incoming_leg and not entry.call.answered:
            self._refusals.append((leg, prm))  # still inside onIncomingCall
            return
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

    def rx_stat(self, leg: int) -> dict[str, object] | None:
        """What the leg's audio stream received so far: RTP packets, payload
        bytes and the codec, and the RTP packets it sent (None: no stream)."""
        entry = self._legs.get(leg)
        if entry is None or not isinstance(entry.call, _Call) or entry.call.audio is None:
            return None
        try:
            stat = entry.call.getStreamStat(0)
            info = entry.call.getStreamInfo(0)
        except pj.Error:
            return None
        rx = stat.rtcp.rxStat
        return {
            "packets": int(rx.pkt),
            "bytes": int(rx.bytes),
            "codec": str(info.codecName),
            "sent": int(stat.rtcp.txStat.pkt),
        }

    def jbuf_state(self, leg: int) -> dict[str, int] | None:
        """The leg's receive jitter buffer now (None: no stream): `delay_ms`
        is what it holds (its latency), `prefetch_ms` what it waits for
        after running dry, then its counts of frames discarded, lost
        (played by concealment) and found empty."""
        entry = self._legs.get(leg)
        if entry is None or not isinstance(entry.call, _Call) or entry.call.audio is None:
            return None
        try:
            jb = entry.call.getStreamStat(0).jbuf
            frame_ms = int(entry.call.getStreamInfo(0).audCodecParam.info.frameLen)
        except pj.Error:
            return None
        return {
            "delay_ms": int(jb.size) * frame_ms,
            "prefetch_ms": int(jb.prefetch) * frame_ms,
            "discarded": int(jb.discard),
            "lost": int(jb.lost),
            "empty": int(jb.empty),
        }

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
    def add_recorder(self, path: Path) -> int:
        """A bridge port that records what is connected to it into a WAV at
        `path` (the bridge's rate); its id goes to connect/disconnect as a
        leg's would. The file is written by pbx/recorder.py's threads, never
        on pjmedia's clock thread."""
        port = _pjx.MediaPort(self.clock_rate, FRAME_MS, RING_FRAMES, "rec", keep_silence=True)
        rec = next(self._ids)
        try:
            call = _PortCall(self, rec, port)
        except SipError:
            port.close()
            raise
        self._rec_ports[rec] = (call, port)
        self.recorders.open(rec, path, self.clock_rate, port.pull, port.stats)
        return rec

    def end_recorder(self, rec: int, on_done: Callable[[Result], None] | None = None) -> None:
        """Stop a recorder: its port leaves the bridge now; the file is
        completed on the writer thread, which then calls `on_done(result)`."""
        found = self._rec_ports.pop(rec, None)
        if found is None:
            return
        call, port = found
        self.recorders.close(rec, on_done)
        call.audio = None
        port.close()

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
        self.play_to([leg], files, loop=loop, slot=slot)

    def play_to(
        self,
        legs: Sequence[int],
        files: Sequence[Path],
        *,
        loop: bool = False,
        slot: str = "prompt",
    ) -> None:
        """Play files in sequence to several legs from one player, replacing
        what plays in each one's `slot`.

        One player is one port on the bridge: the listeners of a room who
        hear a signal together (a join tone to everyone else) still hear the
        same sources, so they keep one mix and one shared encode (a player
        each made every listener's mix its own, and cost a port per leg).
        Each leg's entry holds the player; `stop_play` unlinks that leg
        only, and the player goes when the last leg lets it go."""
        entries = [
            e
            for e in (self._legs.get(leg) for leg in legs)
            if e is not None and e.call.audio is not None
        ]
        if not entries:
            return
        # What played in the slot goes as drop_play lets it go: a player
        # that only these legs held leaves the bridge in one step once the
        # last of them takes the new one (the next signal to the same room).
        old = {id(p): p for e in entries if (p := e.players.pop(slot, None)) is not None}
        for p in old.values():
            if self._held(p):
                # Still someone else's: unlink ours alone.
                for e in entries:
                    with contextlib.suppress(pj.Error):
                        p.stopTransmit(e.call.audio)
        self._graveyard.extend(old.values())
        old.clear()
        player = pj.AudioMediaPlayer()
        opts = 0 if loop else pj.PJMEDIA_FILE_NO_LOOP
        names = [str(f) for f in files]
        if len(names) == 1:
            player.createPlayer(names[0], opts)
        else:
            vec = pj.StringVector(names)
            player.createPlaylist(vec, slot, opts)
        for entry in entries:
            player.startTransmit(entry.call.audio)
            entry.players[slot] = player

    def join_play(self, leg: int, with_legs: Sequence[int], slot: str) -> bool:
        """Let `leg` hear the player that the first of `with_legs` that has
        one plays in `slot` (a room's waiting music: one player, one port,
        and its listeners keep one mix), replacing what plays in its own
        slot. False when none of them has one."""
        entry = self._legs.get(leg)
        if entry is None or entry.call.audio is None:
            return False
        for other in with_legs:
            held = self._legs.get(other)
            player = held.players.get(slot) if held is not None else None
            if player is not None and other != leg:
                self.stop_play(leg, slot)
                player.startTransmit(entry.call.audio)
                entry.players[slot] = player
                return True
        return False

    def drop_play(self, legs: Sequence[int], slot: str) -> None:
        """Stop what plays in `slot` for several legs at once. Their entries
        let the player go without unlinking it leg by leg: a player they
        share then leaves the bridge when the last of them lets it go, its
        port removed with all its links in one step, so every listener's mix
        changes in the same tick (unlinked one by one, a tick between two
        unlinks split a group's shared encode in two). A player someone
        else still holds is unlinked from these legs alone."""
        entries = [e for e in (self._legs.get(leg) for leg in legs) if e is not None]
        dropped = [(e, p) for e in entries if (p := e.players.pop(slot, None)) is not None]
        for e, p in dropped:
            if e.call.audio is not None and self._held(p):
                with contextlib.suppress(pj.Error):
                    p.stopTransmit(e.call.audio)
        self._graveyard.extend(p for _, p in dropped)

    def _held(self, player: pj.AudioMediaPlayer) -> bool:
        """Whether a leg still holds this player in one of its slots."""
        return any(player is q for e in self._legs.values() for q in e.players.values())

    def stop_play(self, leg: int, slot: str = "prompt") -> None:
        """Stop a playback (dropping the player frees its conference port)."""
        entry = self._legs.get(leg)
        if entry is None:
            return
        player = entry.players.pop(slot, None)
        if player is not None and entry.call.audio is not None:
            with contextlib.suppress(pj.Error):
                player.stopTransmit(entry.call.audio)
        if player is not None:
            self._graveyard.append(player)

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
        if entry is None:
            rec = self._rec_ports.get(leg)
            return rec[0].audio if rec else None
        return entry.call.audio

    def _release_media(self, leg: int) -> None:
        entry = self._legs.get(leg)
        if entry is None:
            return
        self._graveyard.extend(entry.players.values())
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
        lines = LINE_HEADER.findall(whole.split("\r\n\r\n", 1)[0])
        m = REQUEST_USER.match(first_line)
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
            handoff=message_headers(whole, HANDOFF_HEADERS),
            web=message_headers(whole, (WEB_HEADER,)).get(WEB_HEADER),
        )
        self._incoming_leg = leg
        try:
            self.events.on_incoming(incoming)
        finally:
            self._incoming_leg = None

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
                        headers = message_headers(src.rdata.wholeMsg)
            except (AttributeError, pj.Error):
                pass
            self._release_media(call.leg)
            # Dropped here and only here: see the module docstring.
            self._legs.pop(call.leg, None)
            self.events.on_disconnected(call.leg, code, reason, headers)

    def _on_media_state(self, call: _Call) -> None:
        """The call's media was (re)negotiated: its first answer, or a re-INVITE.

        pjsua recreates the call's stream on a re-INVITE that changes it
        (hold, resume, a new codec or address): the old conference port goes
        with every link to and from it, and the new one may even reuse the
        old slot number. So every media state after the first re-attaches the
        leg's own players and recorder here, and tells the owner
        (`on_media_changed`) so that it re-links the leg to the others.
        """
        info = call.getInfo()
        media = info.media  # held before iterating (see module docstring)
        for i in range(len(media)):
            mi = media[i]
            if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = mi.status
            log.debug("call %d media status=%d dir=%d", call.leg, status, mi.dir)
            audio: pj.AudioMedia | None = None
            if status in _LIVE_MEDIA:
                try:
                    audio = call.getAudioMedia(i)
                except pj.Error:  # e.g. an inactive stream: no conference port
                    audio = None
            # The far end holds the call: its a=sendonly is REMOTE_HOLD, but
            # pjsua 2.12 reports its a=inactive as ACTIVE with no direction.
            held = status == pj.PJSUA_CALL_MEDIA_REMOTE_HOLD or mi.dir == pj.PJMEDIA_DIR_NONE
            if not call.media_reported:
                if status != pj.PJSUA_CALL_MEDIA_ACTIVE or audio is None:
                    return  # not up yet (as before: the first report is active media)
                call.audio = audio
                call.media_reported = True
                self.events.on_media_ready(call.leg)
                return
            call.audio = audio
            self._reattach(call.leg)
            self.events.on_media_changed(call.leg, held)
            return

    def _reattach(self, leg: int) -> None:
        """Feed the leg's players to, and record from, its current audio port
        (idempotent: connecting twice is one link)."""
        entry = self._legs.get(leg)
        if entry is None or entry.call.audio is None:
            return
        audio = entry.call.audio
        for player in entry.players.values():
            with contextlib.suppress(pj.Error):
                player.startTransmit(audio)
        if entry.recorder is not None:
            with contextlib.suppress(pj.Error):
                audio.startTransmit(entry.recorder)

    # -- hold (test phones: the app server never holds) --------------------
    def hold(self, leg: int, inactive: bool = False) -> None:
        """Put the call on hold: a re-INVITE with a=sendonly (what we play
        still goes out, as a phone's own hold music does), or a=inactive."""
        try:
            if inactive:
                prm = pj.CallOpParam(True)
                prm.opt.flag = pj.PJSUA_CALL_SET_MEDIA_DIR
                prm.opt.mediaDir = pj.IntVector([pj.PJMEDIA_DIR_NONE])
                self._call(leg).reinvite(prm)
            else:
                self._call(leg).setHold(pj.CallOpParam(True))
        except pj.Error as exc:
            raise SipError(f"cannot hold leg {leg}: {exc.info()}") from None

    def resume(self, leg: int) -> None:
        """Take the call off hold: a re-INVITE with a=sendrecv."""
        prm = pj.CallOpParam(True)
        # The direction is set too: an a=inactive hold set it, and it stays.
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD | pj.PJSUA_CALL_SET_MEDIA_DIR
        prm.opt.mediaDir = pj.IntVector([pj.PJMEDIA_DIR_ENCODING_DECODING])
        try:
            self._call(leg).reinvite(prm)
        except pj.Error as exc:
            raise SipError(f"cannot resume leg {leg}: {exc.info()}") from None


if __name__ == "__main__":
    import json
    import sys

    json.dump(build_info(), sys.stdout)
    print()
