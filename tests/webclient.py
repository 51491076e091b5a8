"""A WebRTC participant in Python (aiortc as the offerer), for tests that need
a browser's side of /join without a browser: a real peer connection with ICE,
DTLS-SRTP and opus, on 127.0.0.1 only. It sends a sine tone and keeps what it
hears as 8 kHz mono samples with their arrival times.

Obsolete as it stands: it posts its offer to the console's old /join/offer,
which is gone (browsers now call over Kamailio's WebSocket: README
"Browsers"); bench/webrtc.py's simulated browser over SIP/WebSocket replaces
it. The aioice host-address override it needs lives here now (the server has
no WebRTC of its own any more).
"""

from __future__ import annotations

import asyncio
import contextvars
import fractions
import http.client
import ipaddress
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import aioice.ice
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

# --- aioice gathers on the addresses given, not every interface ----------------
_host_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "ponte_webclient_host_addresses", default=None
)
_orig_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    override = _host_addresses.get()
    if override is None:
        return list(_orig_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6))
    return [
        a
        for a in override
        if (ipaddress.ip_address(a).version == 4 and use_ipv4)
        or (ipaddress.ip_address(a).version == 6 and use_ipv6)
    ]


if getattr(aioice.ice.get_host_addresses, "__module__", "") != __name__:
    aioice.ice.get_host_addresses = _get_host_addresses


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # an mDNS name or a hostname
        return False


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


RATE = 48000
PTIME = 0.02


class ToneTrack(MediaStreamTrack):
    """A sine at `hz` (-12 dBFS), paced at 20 ms on the asyncio clock."""

    kind = "audio"

    def __init__(self, hz: float) -> None:
        super().__init__()
        self.hz = hz
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        samples = int(RATE * PTIME)
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._n * PTIME
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        t = (np.arange(samples) + self._n * samples) / RATE
        pcm = (0.25 * 32767 * np.sin(2 * np.pi * self.hz * t)).astype("<i2")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._n * samples
        frame.time_base = fractions.Fraction(1, RATE)
        self._n += 1
        return frame


class WebClient:
    """Joins a room through the console's /join API and exchanges audio."""

    def __init__(
        self,
        base_url: str,
        tone_hz: float,
        loop: asyncio.AbstractEventLoop | None = None,
        source: str = "127.0.0.1",
    ) -> None:
        """`loop`: an event loop running in another thread, shared by many
        clients (bench/webrtc.py); by default each client runs its own.
        `source`: the 127.x address the HTTP requests come from (the console
        limits joins per address)."""
        self.base_url = base_url.rstrip("/")
        self.source = source
        self.tone_hz = tone_hz
        self._own_loop = loop is None
        self.loop = loop or asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        if self._own_loop:
            self._thread.start()
        self.pc: RTCPeerConnection | None = None
        self.token: str | None = None
        self.chunks: list[tuple[float, np.ndarray]] = []  # (arrival, 8 kHz samples)
        self.states: list[str] = []

    def _run(self, coro: Any, timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST JSON with our own origin (as the join page does), from `source`."""
        url = urllib.parse.urlsplit(self.base_url)
        conn = http.client.HTTPConnection(
            url.hostname, url.port, timeout=20, source_address=(self.source, 0)
        )
        try:
            conn.request(
                "POST",
                path,
                json.dumps(body),
                {"Content-Type": "application/json", "Origin": self.base_url},
            )
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def join(self, pin: str) -> tuple[int, dict[str, Any]]:
        """Offer, POST /join/offer with the PIN, apply the answer."""
        offer = self._run(self._offer())
        code, answer = self.post("/join/offer", {"pin": pin, **offer})
        if code == 200 and answer.get("ok"):
            self.token = answer["token"]
            self._run(self._answer(answer["answer"]))
        return code, answer

    def key(self, key: str) -> tuple[int, dict[str, Any]]:
        """An on-screen button."""
        return self.post(f"/join/{self.token}/key", {"key": key})

    def leave(self) -> tuple[int, dict[str, Any]]:
        """The Leave button."""
        return self.post(f"/join/{self.token}/leave", {})

    def connected(self) -> bool:
        """Whether the peer connection is up."""
        return self.pc is not None and self.pc.connectionState == "connected"

    def heard(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        """What arrived between two monotonic times, as 8 kHz samples."""
        parts = [c for t, c in list(self.chunks) if since <= t <= until]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def close(self) -> None:
        """Close the peer connection and stop the loop thread."""
        if self.pc is not None:
            self._run(self.pc.close())
        if self._own_loop:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    # -- on the client's loop -------------------------------------------------
    async def _offer(self) -> dict[str, str]:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(ToneTrack(self.tone_hz))
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", lambda: self.states.append(self.pc.connectionState))
        offer = await self.pc.createOffer()
        token = _host_addresses.set(("127.0.0.1",))  # gather on loopback only
        try:
            await self.pc.setLocalDescription(offer)
        finally:
            _host_addresses.reset(token)
        return {"sdp": self.pc.localDescription.sdp, "type": "offer"}

    async def _answer(self, answer: dict[str, str]) -> None:
        assert self.pc is not None
        sdp = filter_candidates(answer["sdp"], _is_loopback)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):
                pcm = np.frombuffer(bytes(out.planes[0])[: out.samples * 2], dtype="<i2")
                self.chunks.append((time.monotonic(), pcm.copy()))
