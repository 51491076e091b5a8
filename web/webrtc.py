"""A browser's WebRTC audio leg (aiortc: opus over DTLS-SRTP), bridged to raw PCM frames.

The conference side speaks 20 ms frames of mono signed 16-bit little-endian PCM at the
bridge's clock rate (`sip.clock_rate`: 8 kHz, 320 bytes, by default; see pcm/).
`WebRtcLeg` decodes the browser's opus audio, resamples it to that format and hands each
frame to `push()`; in the other direction it asks `pull()` for a frame every 20 ms (paced
on the asyncio clock) and sends it to the browser; aiortc's opus encoder resamples the
bridge's rate to 48 kHz itself.

ICE on loopback (what works, and why)
-------------------------------------
Nothing in this module needs STUN: with no `ice_servers` the peer connection gets an
explicitly empty list (aiortc would otherwise add Google's public STUN server).

Host candidates. aioice gathers on every interface *except* 127.0.0.1
(`aioice.ice.get_host_addresses`). For a deployment that is right: the browser is on the
LAN. For loopback-only traffic (tests, or a browser on the appliance itself) pass
`host_addresses=["127.0.0.1"]`: the leg then gathers only there (the UDP sockets are bound
to 127.0.0.1, so nothing can leave the host), and it drops every remote candidate of the
browser's offer that is not on loopback as well, before aiortc sees it. That also drops
mDNS `*.local` candidates, which aioice would otherwise try to resolve with multicast DNS
queries on the real interfaces. The override is per leg: a context variable read by a thin
wrapper around `aioice.ice.get_host_addresses` (asyncio copies the context into the tasks
that aiortc's gathering spawns), so legs with and without it can coexist in one loop.

The browser side (Chromium) needs, for loopback, (see tests/browser.py):
- `--allow-loopback-in-peer-connection`: Chromium's network list for WebRTC comes from the
  browser process, which leaves out loopback interfaces; this switch adds 127.0.0.1 (and
  ::1) as networks, so Chromium gathers a 127.0.0.1 host candidate.
- granting microphone access (`--use-fake-ui-for-media-stream` in tests; a real user
  clicks "Allow"): with capture permission granted Chromium puts real host IPs into its
  candidates; without it, it hides them behind random mDNS `*.local` names (and answers
  mDNS queries for them). The join page always asks for the microphone first, so that
  holds; `--disable-features=WebRtcHideLocalIpsWithMdns` would force it, but is not needed.
Chromium still gathers on its other interfaces (no switch leaves them out; the tests run
it in a network namespace with only `lo`, tests/browser.py:loopback_netns) and
pairs them with our 127.0.0.1 candidate: its checks from, say, 192.0.2.2 to 127.0.0.1 stay
on `lo` (the destination is local), but aioice would answer them, learn 192.0.2.2 as a
peer-reflexive candidate and might nominate that pair (seen in the test). In loopback-only
mode the leg ignores checks from non-loopback sources, so those pairs fail and the only
pair that can be nominated, on both sides, is 127.0.0.1 <-> 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fractions
import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription

from pcm import CLOCK_RATE, frame_bytes, frame_samples

log = logging.getLogger(__name__)

# One frame at the default clock rate (each leg is given the bridge's own rate).
RATE = CLOCK_RATE
SAMPLES = frame_samples(RATE)  # 160 samples per 20 ms frame at 8 kHz
FRAME_BYTES = frame_bytes(RATE)  # 320 bytes at 8 kHz: mono s16le
# If the loop stalls longer than this, the outgoing clock is re-based instead of bursting
# the backlog at the browser (the RTP timestamps stay contiguous either way).
MAX_LAG = 0.5

# --- host address override for aioice (see module docstring) -----------------------------
_host_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "ponte_webrtc_host_addresses", default=None
)
_orig_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    override = _host_addresses.get()
    if override is None:
        return _orig_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    out = []
    for a in override:
        v = ipaddress.ip_address(a).version
        if (v == 4 and use_ipv4) or (v == 6 and use_ipv6):
            out.append(a)
    return out


if getattr(aioice.ice.get_host_addresses, "__module__", "") != __name__:
    aioice.ice.get_host_addresses = _get_host_addresses


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # an mDNS name or a hostname
        return False


def _refuse_non_loopback_checks(ice_transport: Any) -> None:
    """Ignore ICE connectivity checks that do not come from a loopback address.

    The browser also pairs its non-loopback host candidates with our 127.0.0.1 one; the
    kernel delivers those checks over `lo` with the real source address, and aioice would
    learn that address as a peer-reflexive candidate and could nominate it. Unanswered,
    those pairs fail and only 127.x <-> 127.x remains."""
    conn = getattr(ice_transport.iceGatherer, "_connection", None)
    if conn is None or getattr(conn, "_ponte_loopback_only", False):
        return
    original = conn.request_received

    def request_received(message: Any, addr: tuple, protocol: Any) -> None:
        if _is_loopback(addr[0]):
            original(message, addr, protocol)

    conn.request_received = request_received
    conn._ponte_loopback_only = True


def filter_candidates(sdp: str, keep: Callable[[str], bool]) -> str:
    """Drop `a=candidate` lines whose connection address fails `keep(address)`."""
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) < 5 or not keep(parts[4]):
                continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _ice_server(spec: Any) -> RTCIceServer:
    """An RTCIceServer from "stun:host:port", "turn:user:pass@host:port[?transport=udp]"
    or a dict like the browser's RTCIceServer ({"urls", "username", "credential"})."""
    if isinstance(spec, dict):
        return RTCIceServer(
            urls=spec["urls"], username=spec.get("username"), credential=spec.get("credential")
        )
    scheme, _, rest = str(spec).partition(":")
    if "@" in rest and scheme in ("turn", "turns"):
        cred, _, hostpart = rest.rpartition("@")
        user, _, password = cred.partition(":")
        return RTCIceServer(urls=f"{scheme}:{hostpart}", username=user, credential=password)
    return RTCIceServer(urls=str(spec))


class _PullTrack(MediaStreamTrack):
    """Outgoing audio: one 20 ms frame from `pull()` per tick of the asyncio clock.

    Paced like aiortc's AudioStreamTrack: frame n is due at start + n * 20 ms, so the rate
    never drifts; `None` or a short frame from pull() sends silence."""

    kind = "audio"

    def __init__(self, pull: Callable[[], bytes | None], rate: int = RATE) -> None:
        super().__init__()
        self._pull = pull
        self.rate = rate
        self._samples = frame_samples(rate)
        self._silence = bytes(frame_bytes(rate))
        self._start: float | None = None
        self._timestamp = 0
        self.max_late = 0.0  # seconds: the latest a frame left after it was due

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._timestamp += self._samples
            due = self._start + self._timestamp / self.rate
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -MAX_LAG:
                self._start -= wait  # re-base after a long stall
            self.max_late = max(self.max_late, loop.time() - due)
        try:
            data = self._pull()
        except Exception:
            log.exception("webrtc: pull() failed")
            data = None
        if not data or len(data) != len(self._silence):
            data = self._silence
        frame = av.AudioFrame(format="s16", layout="mono", samples=self._samples)
        frame.planes[0].update(data)
        frame.pts = self._timestamp
        frame.sample_rate = self.rate
        frame.time_base = fractions.Fraction(1, self.rate)
        return frame


class WebRtcLeg:
    """One browser's WebRTC audio leg (aiortc), bridged to raw PCM frames.

    `push(frame)` gets each 20 ms frame (mono s16le at `rate`, the bridge's clock rate:
    320 bytes at 8 kHz) heard from the browser; `pull()` gives the next frame for the
    browser, or None for silence. Both are called directly on the event loop, so they must
    not block. `on_closed()` is called once, when the peer connection fails or closes (the
    browser went away, or close() was called).

    `host_addresses`: the local addresses to offer ICE host candidates on (None: every
    interface but loopback, aioice's default). When all of them are loopback, the browser's
    non-loopback candidates are ignored too, so media stays on 127.x.
    """

    def __init__(
        self,
        push: Callable[[bytes], None],
        pull: Callable[[], bytes | None],
        ice_servers: Sequence[Any] = (),
        on_closed: Callable[[], None] | None = None,
        *,
        host_addresses: Sequence[str] | None = None,
        rate: int = CLOCK_RATE,
    ) -> None:
        self._push = push
        self.rate = rate
        self._on_closed = on_closed
        self._closed_reported = False
        self._host_addresses = tuple(host_addresses) if host_addresses is not None else None
        self._loopback_only = bool(self._host_addresses) and all(
            _is_loopback(a) for a in self._host_addresses
        )
        config = RTCConfiguration(iceServers=[_ice_server(s) for s in ice_servers])
        self.pc = RTCPeerConnection(configuration=config)
        self._out = _PullTrack(pull, rate)
        self._reader: asyncio.Task | None = None
        self._closing: asyncio.Future | None = None
        self.frames_in = 0  # frames pushed (for status pages and tests)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    # --- signalling ---------------------------------------------------------------------
    async def answer(self, offer: dict) -> dict:
        """Answer the browser's offer ({"sdp", "type": "offer"}), ICE gathered completely."""
        if offer.get("type") != "offer" or not isinstance(offer.get("sdp"), str):
            raise ValueError("expected an SDP offer")
        sdp = offer["sdp"]
        if self._loopback_only:
            sdp = filter_candidates(sdp, _is_loopback)
        parsed = SessionDescription.parse(sdp)
        if not any(m.kind == "audio" for m in parsed.media):
            raise ValueError("the offer has no audio")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if self._loopback_only:
            for t in self.pc.getTransceivers():
                if t.sender.transport is not None:
                    _refuse_non_loopback_checks(t.sender.transport.transport)
        # Reuses the offer's audio transceiver, which becomes sendrecv.
        self.pc.addTrack(self._out)
        answer = await self.pc.createAnswer()
        token = _host_addresses.set(self._host_addresses)
        try:
            # aiortc gathers all candidates in here (it never trickles).
            await self.pc.setLocalDescription(answer)
        finally:
            _host_addresses.reset(token)
        return {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}

    async def close(self) -> None:
        self._out.stop()
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._report_closed()

    # --- state ----------------------------------------------------------------------------
    @property
    def max_late_ms(self) -> float:
        """The latest an outgoing frame left after it was due, in ms."""
        return round(1000 * self._out.max_late, 1)

    def info(self) -> dict:
        """Negotiated codec, connection/ICE/DTLS states and the selected candidate pair."""
        out: dict[str, Any] = {
            "connection": self.pc.connectionState,
            "ice": self.pc.iceConnectionState,
            "codec": None,
            "dtls": None,
            "pair": None,
            "frames_in": self.frames_in,
            # How late our frames left for the browser, at worst (the web
            # thread's share of any gap the browser hears).
            "max_late_ms": self.max_late_ms,
        }
        if self.pc.localDescription is not None:
            for m in SessionDescription.parse(self.pc.localDescription.sdp).media:
                if m.kind == "audio" and m.rtp.codecs:
                    c = m.rtp.codecs[0]
                    out["codec"] = f"{c.mimeType}/{c.clockRate}/{c.channels or 1}"
                    break
        for t in self.pc.getTransceivers():
            dtls = t.sender.transport
            if dtls is None:
                continue
            out["dtls"] = dtls.state
            # aioice keeps the nominated pair privately; informational only.
            conn = getattr(dtls.transport, "_connection", None)
            pair = (getattr(conn, "_nominated", None) or {}).get(1)
            if pair is not None:
                lc, rc = pair.local_candidate, pair.remote_candidate
                out["pair"] = (f"{lc.host}:{lc.port}", f"{rc.host}:{rc.port}")
            break
        return out

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("webrtc: connection %s", state)
        if state in ("failed", "closed"):
            if state == "failed":
                self._closing = asyncio.ensure_future(self.close())
            self._report_closed()

    def _report_closed(self) -> None:
        if self._closed_reported:
            return
        self._closed_reported = True
        if self._on_closed is not None:
            try:
                self._on_closed()
            except Exception:
                log.exception("webrtc: on_closed failed")

    # --- incoming audio ---------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
        size = frame_bytes(self.rate)
        buf = bytearray()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):
                buf += bytes(out.planes[0])[: out.samples * 2]
            while len(buf) >= size:
                chunk = bytes(buf[:size])
                del buf[:size]
                self.frames_in += 1
                try:
                    self._push(chunk)
                except Exception:
                    log.exception("webrtc: push() failed")
