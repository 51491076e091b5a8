"""A simulated browser that joins through the edge as a real one does: SIP over
WebSocket (RFC 7118) to Kamailio, the media an aiortc peer connection (ICE,
DTLS-SRTP, Opus) to rtpengine. A test peer, not product code: the join page's
JsSIP does the same in a browser.

Many of them share one asyncio loop (bench/webrtc.py runs 100+), so each is
kept cheap where a browser's own cost is not what is measured:

- what it sends is Opus encoded once per tone (`OpusLoop`: one second,
  looped) and handed to aiortc as packets, on one 20 ms clock for the whole
  loop (`Ticker`), instead of a PCM track encoded per browser;
- what it hears is kept as the RTP payloads with their arrival times
  (aiortc's jitter buffer and decoder thread are bypassed) and decoded only
  when asked (`heard`), after the measured window.

SIP: `SIP/2.0/WS` Via with a random `.invalid` host, Contact
`;transport=ws;ob`, INVITE with aiortc's offer; 1xx, 2xx (ACK, the dialog's
route set), a final error (ACK, the code kept); BYE either way; OPTIONS and a
re-INVITE (our same SDP) answered. Only loopback ICE candidates are gathered.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fractions
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aioice.ice
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtp import RtpPacket

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
PTIME = 0.02
TIME_BASE = fractions.Fraction(1, RATE)

# -- ICE on loopback only --------------------------------------------------------
# aioice gathers on every interface; a context variable read by a thin wrapper
# limits one peer connection's gathering (asyncio copies the context into the
# tasks aiortc spawns), so nothing of ours leaves the host.
_host_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "wsbrowser_host_addresses", default=None
)
_orig_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    override = _host_addresses.get()
    if override is None:
        return list(_orig_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6))
    return [a for a in override if ipaddress.ip_address(a).version == 4 and use_ipv4]


if getattr(aioice.ice.get_host_addresses, "__module__", "") not in (__name__, "web.webrtc"):
    aioice.ice.get_host_addresses = _get_host_addresses


# -- what it sends -----------------------------------------------------------------
class OpusLoop:
    """One second of a sine (`hz`, -12 dBFS; 0 = silence) encoded once as 50
    Opus packets of 20 ms, sent in a loop (an integer hz makes the second
    periodic, so the loop has no seam)."""

    _cache: dict[int, list[bytes]] = {}

    @classmethod
    def packets(cls, hz: int) -> list[bytes]:
        """The 50 packets for `hz` (encoded on first use)."""
        if hz not in cls._cache:
            enc = av.CodecContext.create("libopus", "w")
            enc.sample_rate = RATE
            enc.layout = "mono"
            enc.format = "s16"
            enc.bit_rate = 32000
            t = np.arange(RATE) / RATE
            pcm = (0.25 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")
            out: list[bytes] = []
            for i in range(RATE // FRAME):
                frame = av.AudioFrame.from_ndarray(
                    pcm[i * FRAME : (i + 1) * FRAME].reshape(1, -1), format="s16", layout="mono"
                )
                frame.sample_rate = RATE
                frame.pts = i * FRAME
                out += [bytes(p) for p in enc.encode(frame)]
            out += [bytes(p) for p in enc.encode(None)]
            cls._cache[hz] = out[: RATE // FRAME]
        return cls._cache[hz]


class Ticker:
    """One 20 ms clock for every browser on a loop: each tick resolves one
    future all their tracks wait on (one timer instead of one per browser)."""

    def __init__(self) -> None:
        self._next: asyncio.Future[int] | None = None
        self._task: asyncio.Task[None] | None = None
        self.n = 0

    async def wait(self) -> int:
        """Until the next tick; its number."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._next)

    async def _run(self) -> None:
        start = time.monotonic()
        while True:
            self.n += 1
            await asyncio.sleep(max(0.0, start + self.n * PTIME - time.monotonic()))
            fut, self._next = self._next, None
            if fut is not None and not fut.done():
                fut.set_result(self.n)


_tickers: dict[asyncio.AbstractEventLoop, Ticker] = {}


def ticker() -> Ticker:
    """This loop's ticker."""
    loop = asyncio.get_running_loop()
    if loop not in _tickers:
        _tickers[loop] = Ticker()
    return _tickers[loop]


class PacketTrack(MediaStreamTrack):
    """An audio track handing aiortc pre-encoded Opus packets, one per tick."""

    kind = "audio"

    def __init__(self, hz: int) -> None:
        super().__init__()
        self.hz = hz
        self._n = 0

    async def recv(self) -> av.Packet:
        await ticker().wait()
        loop = OpusLoop.packets(self.hz)
        packet = av.Packet(loop[self._n % len(loop)])
        packet.pts = self._n * FRAME
        packet.time_base = TIME_BASE
        self._n += 1
        return packet


# -- SIP messages ------------------------------------------------------------------------
COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
}


class SipError(Exception):
    """A SIP message we cannot read, or a call that did not go as it should."""


@dataclass
class SipMessage:
    """One SIP message: a request (`method`, `uri`) or a response (`status`)."""

    first: str
    headers: list[tuple[str, str]]
    body: str = ""
    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""

    @classmethod
    def parse(cls, text: str) -> SipMessage:
        """Parse one message as it arrived in a WebSocket frame (RFC 7118:
        one message per frame). Raises SipError on anything malformed."""
        head, sep, body = text.partition("\r\n\r\n")
        if not sep:
            raise SipError("no blank line after the headers")
        lines = head.split("\r\n")
        first = lines[0]
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:  # folded (obsolete, still legal)
                name, value = headers[-1]
                headers[-1] = (name, value + " " + line.strip())
                continue
            name, colon, value = line.partition(":")
            if not colon or not name.strip():
                raise SipError(f"bad header line {line!r}")
            key = name.strip().lower()
            headers.append((COMPACT.get(key, key), value.strip()))
        msg = cls(first, headers, body)
        parts = first.split(" ", 2)
        if first.startswith("SIP/2.0 "):
            if len(parts) < 2 or not parts[1].isdigit():
                raise SipError(f"bad status line {first!r}")
            msg.status, msg.reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
        elif len(parts) == 3 and parts[2] == "SIP/2.0":
            msg.method, msg.uri = parts[0], parts[1]
        else:
            raise SipError(f"bad start line {first!r}")
        length = msg.get("content-length")
        if length is not None and length.isdigit() and int(length) < len(body.encode()):
            msg.body = body.encode()[: int(length)].decode()
        return msg

    def get(self, name: str) -> str | None:
        """The first value of a header (case-insensitive name)."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def all(self, name: str) -> list[str]:
        """Every value of a header, comma-separated lists split (for Via,
        Record-Route, Route: commas inside <> are kept)."""
        name = name.lower()
        out: list[str] = []
        for k, v in self.headers:
            if k == name:
                out += split_list(v)
        return out

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method) of CSeq."""
        num, _, method = (self.get("cseq") or "").partition(" ")
        if not num.isdigit():
            raise SipError("bad CSeq")
        return int(num), method.strip()


def split_list(value: str) -> list[str]:
    """A header value's comma-separated entries, commas inside <> or quotes kept."""
    out, cur, depth, quoted = [], "", 0, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def tag_of(value: str) -> str | None:
    """The ;tag= of a From/To value."""
    params = value.rsplit(">", 1)[-1]
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "tag":
            return v
    return None


def uri_of(value: str) -> str:
    """The URI of a name-addr (`"x" <sip:..>;p`) or an addr-spec."""
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0]
    return value.split(";", 1)[0].strip()


def build(first: str, headers: list[tuple[str, str]], body: str = "") -> str:
    """A message's text, Content-Length filled in."""
    lines = [first, *(f"{k}: {v}" for k, v in headers)]
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


# -- the browser --------------------------------------------------------------------------
@dataclass
class Arrival:
    """What the browser received: RTP payloads and when."""

    times: list[float] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)


class WsBrowser:
    """One browser tab: a WebSocket to Kamailio, one call, one peer connection.

    Every coroutine runs on the loop that created it (`BrowserLoop` runs one in
    a thread for synchronous callers)."""

    def __init__(self, session: aiohttp.ClientSession, tone_hz: int = 0) -> None:
        self.session = session
        self.tone_hz = tone_hz
        self.host = secrets.token_hex(6) + ".invalid"
        self.user = "b" + secrets.token_hex(4)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pc: RTCPeerConnection | None = None
        self.call_id = secrets.token_hex(12)
        self.from_tag = secrets.token_hex(5)
        self.to_tag: str | None = None
        self.target = ""
        self.remote_target = ""
        self.route_set: list[str] = []
        self.cseq = 1
        self.status = 0  # the INVITE's final status (0: none yet)
        self.provisional: list[int] = []
        self.state = "idle"  # idle, calling, confirmed, ended
        self.ended_by = ""  # "us", "remote"
        self.ended = asyncio.Event()
        self.received = Arrival()
        self.sent: list[str] = []  # every message sent (for tests of the wire)
        self.got: list[SipMessage] = []  # every message received
        self._waiting: dict[tuple[str, str], asyncio.Queue[SipMessage]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._local_sdp = ""
        self._own_session: aiohttp.ClientSession | None = None

    # -- the WebSocket ----------------------------------------------------------------
    async def connect(
        self, ws_url: str, origin: str | None = None, source: str | None = None, timeout: float = 10
    ) -> None:
        """Open the WebSocket with the `sip` subprotocol (RFC 7118), with the
        join page's `origin` (as a browser sends it) and from `source` (a
        127.x address of its own: the edge limits requests per address)."""
        if source is not None:
            self._own_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=(source, 0))
            )
        session = self._own_session or self.session
        self.ws = await session.ws_connect(
            ws_url,
            protocols=("sip",),
            origin=origin,
            timeout=aiohttp.ClientWSTimeout(ws_close=timeout),
        )
        if self.ws.protocol != "sip":
            raise SipError(f"the server did not accept the sip subprotocol ({self.ws.protocol})")
        self._reader = asyncio.ensure_future(self._read())

    async def _send(self, text: str) -> None:
        assert self.ws is not None
        self.sent.append(text)
        await self.ws.send_str(text)

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                if frame.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                data = frame.data if isinstance(frame.data, str) else frame.data.decode()
                try:
                    msg = SipMessage.parse(data)
                except SipError:
                    continue  # a peer's garbage is not our crash
                self.got.append(msg)
                if msg.status:
                    self._on_response(msg)
                else:
                    await self._on_request(msg)
        finally:
            if self.state != "ended":
                self._end("remote")

    def _on_response(self, msg: SipMessage) -> None:
        vias = msg.all("via")
        branch = _param(vias[0], "branch") if vias else None
        q = self._waiting.get((branch or "", msg.cseq[1]))
        if q is not None:
            q.put_nowait(msg)
        elif msg.cseq[1] == "INVITE" and 200 <= msg.status < 300 and self.to_tag:
            # A 2xx retransmitted (our ACK lost on the way): ACK again.
            asyncio.ensure_future(self._ack(msg.cseq[0]))

    async def _on_request(self, msg: SipMessage) -> None:
        if msg.method == "ACK":
            return
        if msg.method == "BYE":
            await self._reply(msg, 200, "OK")
            self._end("remote")
        elif msg.method == "INVITE":  # a re-INVITE: the same media, our same SDP
            await self._reply(msg, 200, "OK", self._local_sdp, contact=True)
        elif msg.method in ("OPTIONS", "INFO", "NOTIFY", "UPDATE"):
            await self._reply(msg, 200, "OK")
        else:
            await self._reply(msg, 405, "Method Not Allowed")

    async def _reply(
        self, req: SipMessage, code: int, reason: str, body: str = "", contact: bool = False
    ) -> None:
        headers = [("Via", v) for v in req.all("via")]
        headers += [("Record-Route", r) for r in req.all("record-route")]
        to = req.get("to") or ""
        if tag_of(to) is None:
            to += f";tag={self.from_tag}"
        headers += [
            ("From", req.get("from") or ""),
            ("To", to),
            ("Call-ID", req.get("call-id") or ""),
            ("CSeq", req.get("cseq") or ""),
        ]
        if contact:
            headers.append(("Contact", self._contact()))
        if body:
            headers.append(("Content-Type", "application/sdp"))
        await self._send(build(f"SIP/2.0 {code} {reason}", headers, body))

    def _contact(self) -> str:
        return f"<sip:{self.user}@{self.host};transport=ws;ob>"

    def _request(self, method: str, uri: str, cseq: int, branch: str, body: str = "") -> str:
        to = f"<{self.target}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        headers = [
            ("Via", f"SIP/2.0/WS {self.host};branch={branch};rport"),
            ("Max-Forwards", "70"),
        ]
        headers += [("Route", r) for r in self.route_set]
        headers += [
            ("To", to),
            ("From", f'"Browser" <sip:{self.user}@{self.host}>;tag={self.from_tag}'),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if method in ("INVITE",):
            headers += [
                ("Contact", self._contact()),
                ("Allow", "INVITE,ACK,CANCEL,BYE,OPTIONS,INFO,NOTIFY"),
                ("Supported", "outbound"),
                ("User-Agent", "ponte-test-wsbrowser"),
            ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return build(f"{method} {uri} SIP/2.0", headers, body)

    # -- the call -------------------------------------------------------------------------
    async def call(self, target: str, timeout: float = 15) -> int:
        """INVITE `target` (e.g. sip:web-TOKEN@domain) with aiortc's offer;
        ACK the final answer. Returns the final status (200: the media is
        being set up; `wait_connected` for ICE + DTLS)."""
        if self.ws is None:
            raise SipError("connect() first")
        self.target = self.remote_target = target
        self._local_sdp = await self._offer()
        branch = "z9hG4bK" + secrets.token_hex(8)
        q: asyncio.Queue[SipMessage] = asyncio.Queue()
        self._waiting[(branch, "INVITE")] = q
        self.state = "calling"
        await self._send(self._request("INVITE", target, self.cseq, branch, self._local_sdp))
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SipError(f"no final answer to the INVITE in {timeout} s")
                try:
                    msg = await asyncio.wait_for(q.get(), left)
                except TimeoutError:
                    continue
                if msg.status < 200:
                    self.provisional.append(msg.status)
                    continue
                self.status = msg.status
                self.to_tag = tag_of(msg.get("to") or "")
                if msg.status >= 300:
                    # A final error: ACK in the INVITE's transaction (same branch).
                    await self._send(self._request("ACK", target, self.cseq, branch))
                    self._end("remote")
                    return msg.status
                self.route_set = list(reversed(msg.all("record-route")))
                contact = msg.get("contact")
                if contact:
                    self.remote_target = uri_of(contact)
                await self._ack(self.cseq)
                self.state = "confirmed"
                await self._answer(msg.body)
                return msg.status
        finally:
            self._waiting.pop((branch, "INVITE"), None)

    async def _ack(self, cseq: int) -> None:
        branch = "z9hG4bK" + secrets.token_hex(8)
        await self._send(self._request("ACK", self.remote_target, cseq, branch))

    async def hangup(self, timeout: float = 5) -> int | None:
        """BYE; the status of its answer (None: none in `timeout`)."""
        if self.state != "confirmed":
            return None
        self.cseq += 1
        branch = "z9hG4bK" + secrets.token_hex(8)
        q: asyncio.Queue[SipMessage] = asyncio.Queue()
        self._waiting[(branch, "BYE")] = q
        self._end("us")
        await self._send(self._request("BYE", self.remote_target, self.cseq, branch))
        try:
            while True:
                msg = await asyncio.wait_for(q.get(), timeout)
                if msg.status >= 200:
                    return msg.status
        except TimeoutError:
            return None
        finally:
            self._waiting.pop((branch, "BYE"), None)

    def _end(self, by: str) -> None:
        if self.state == "ended":
            return
        self.state, self.ended_by = "ended", by
        self.ended.set()
        if self.pc is not None:
            asyncio.ensure_future(self.pc.close())

    async def close(self) -> None:
        """Hang up if in a call, close the peer connection and the WebSocket."""
        with contextlib.suppress(Exception):
            await self.hangup(2)
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
        if self._own_session is not None:
            await self._own_session.close()

    async def wait_connected(self, timeout: float = 15) -> None:
        """Until ICE + DTLS are up (raises SipError if not in `timeout`)."""
        deadline = time.monotonic() + timeout
        while not self.connected():
            if self.state == "ended" or time.monotonic() > deadline:
                raise SipError(
                    f"media not connected (call {self.state}, "
                    f"pc {self.pc.connectionState if self.pc else None})"
                )
            await asyncio.sleep(0.05)

    def connected(self) -> bool:
        """Whether the peer connection is up."""
        return self.pc is not None and self.pc.connectionState == "connected"

    # -- media ------------------------------------------------------------------------------
    async def _offer(self) -> str:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        tr = self.pc.addTransceiver(PacketTrack(self.tone_hz), direction="sendrecv")
        # Opus only: what we send is Opus, and what we hear is decoded as Opus.
        caps = RTCRtpSender.getCapabilities("audio")
        tr.setCodecPreferences([c for c in caps.codecs if c.mimeType.lower() == "audio/opus"])
        # Keep the payloads as they arrive; decode later (see the module's doc).
        tr.receiver._handle_rtp_packet = self._on_rtp  # type: ignore[method-assign]
        token = _host_addresses.set(("127.0.0.1",))
        try:
            await self.pc.setLocalDescription(await self.pc.createOffer())
        finally:
            _host_addresses.reset(token)
        return self.pc.localDescription.sdp

    async def _answer(self, sdp: str) -> None:
        assert self.pc is not None
        if not sdp.strip():
            raise SipError("the 200 OK has no SDP")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def _on_rtp(self, packet: RtpPacket, arrival_time_ms: int = 0) -> None:
        self.received.times.append(time.monotonic())
        self.received.payloads.append(packet.payload)

    def heard(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        """What arrived between two monotonic times, decoded, as 8 kHz samples."""
        times, payloads = self.received.times, self.received.payloads
        dec = av.CodecContext.create("libopus", "r")
        dec.sample_rate = RATE
        dec.layout = "mono"
        dec.format = "s16"
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        parts = []
        for t, p in zip(list(times), list(payloads), strict=False):
            if not since <= t <= until or not p:
                continue
            for frame in dec.decode(av.Packet(p)):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1).copy())
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def arrivals(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        """Arrival times of the RTP packets between two monotonic times."""
        return [t for t in list(self.received.times) if since <= t <= until]


async def join_token(
    base_url: str, pin: str, source: str = "127.0.0.1", timeout: float = 20
) -> tuple[int, dict[str, Any]]:
    """The join page's first step: POST the PIN to the console's /join/token
    (same origin, from `source`); its status and JSON reply (on success
    `ws`: where to connect, `uri`: whom to INVITE, `token`)."""
    base_url = base_url.rstrip("/")
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0))) as s,
        s.post(
            base_url + "/join/token",
            json={"pin": pin},
            headers={"Origin": base_url},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp,
    ):
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = {}
        return resp.status, body if isinstance(body, dict) else {}


def _param(value: str, name: str) -> str | None:
    for p in value.split(";")[1:]:
        k, _, v = p.strip().partition("=")
        if k.lower() == name:
            return v
    return None


class BrowserLoop:
    """An asyncio loop in a thread with one aiohttp session, for synchronous
    callers (tests, bench/webrtc.py): `run(coro)` waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.session: aiohttp.ClientSession = self.run(self._session())

    @staticmethod
    async def _session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def browser(self, tone_hz: int = 0) -> WsBrowser:
        """A new browser on this loop (made on the loop: its Event belongs there)."""

        async def make() -> WsBrowser:
            return WsBrowser(self.session, tone_hz)

        return self.run(make())

    def close(self) -> None:
        """Close the session and stop the loop."""
        with contextlib.suppress(Exception):
            self.run(self.session.close(), 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
