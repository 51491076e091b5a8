"""A real headless Chromium joins over WebRTC on loopback; audio flows both ways.

The browser's fake microphone plays 440 Hz; the leg's pull() sends 1000 Hz. We check the
440 Hz tone arrives as 8 kHz PCM frames at push(), and the 1000 Hz tone reaches the
browser's remote audio (WebAudio analyser on the remote stream), over opus and DTLS-SRTP,
with the selected ICE pair on 127.0.0.1 on both sides.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from tests import browser

pytestmark = pytest.mark.skipif(
    not browser.available(), reason="needs Debian chromium and playwright (scripts/setup)"
)

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
PIN = "4321"
RATE = 8000
FRAME = 320
CSP = "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'"


def write_tone_wav(path: Path, hz: float, seconds: float = 2.0, rate: int = 48000) -> Path:
    """16-bit mono PCM WAV at 48 kHz (what Chromium's fake capture reads), -12 dBFS;
    a whole number of cycles so the loop is seamless."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    data = (10 ** (-12 / 20) * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
    return path


class Sine:
    """pull(): a phase-continuous 1000 Hz sine at -12 dBFS in 320-byte frames."""

    def __init__(self, hz: float = 1000.0, dbfs: float = -12.0) -> None:
        self.step = 2 * math.pi * hz / RATE
        self.amp = 10 ** (dbfs / 20) * 32767
        self.n = 0

    def __call__(self) -> bytes:
        idx = np.arange(self.n, self.n + FRAME // 2)
        self.n += FRAME // 2
        return (self.amp * np.sin(self.step * idx)).astype("<i2").tobytes()


class App:
    """A tiny aiohttp app on 127.0.0.1:0 in its own thread and event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.pushed: list[bytes] = []
        self.keys: list[str] = []
        self.legs: dict = {}
        self.closed_calls = 0
        self.errors: list[str] = []
        self.runner = None
        self.port = 0

    def call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> str:
        self.thread.start()
        self.call(self._start())
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        from aiohttp import web

        @web.middleware
        async def csp(request, handler):
            resp = await handler(request)
            resp.headers["Content-Security-Policy"] = CSP
            return resp

        app = web.Application(middlewares=[csp])

        async def static(request):
            name = request.path.rpartition("/")[2] if "/static/" in request.path else "join.html"
            return web.FileResponse(STATIC / name)

        app.router.add_get("/join", static)
        app.router.add_get("/static/join.js", static)
        app.router.add_get("/static/console.css", static)
        app.router.add_post("/join/offer", self.offer)
        app.router.add_post("/join/{token}/key", self.key)
        app.router.add_post("/join/{token}/leave", self.leave)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def offer(self, request):
        from aiohttp import web

        from web.webrtc import WebRtcLeg

        body = await request.json()
        if body.get("pin") != PIN:
            return web.json_response({"ok": False, "error": "Wrong PIN."})

        def on_closed() -> None:
            self.closed_calls += 1

        leg = WebRtcLeg(
            push=self.pushed.append,
            pull=Sine(),
            on_closed=on_closed,
            host_addresses=["127.0.0.1"],
        )
        try:
            answer = await leg.answer({"sdp": body["sdp"], "type": body["type"]})
        except Exception as e:  # reported to the test, not swallowed
            self.errors.append(repr(e))
            await leg.close()
            return web.json_response({"ok": False, "error": "could not connect"})
        token = f"t{len(self.legs) + 1}"
        self.legs[token] = leg
        return web.json_response({"ok": True, "answer": answer, "token": token})

    async def key(self, request):
        from aiohttp import web

        self.keys.append((await request.json())["key"])
        return web.json_response({"ok": True})

    async def leave(self, request):
        from aiohttp import web

        self.keys.append("leave")
        return web.json_response({"ok": True})

    async def info(self, token: str) -> dict:
        return self.legs[token].info()

    async def _stop(self) -> None:
        for leg in self.legs.values():
            await leg.close()
        if self.runner is not None:
            await self.runner.cleanup()

    def stop(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


def wait_for(pred, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def tone_snr_db(pcm: bytes, hz: float, width: float = 20.0) -> tuple[float, float, float]:
    """(peak frequency, dB of the band around `hz` over everything else, level in dBFS)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    usable = freqs > 50
    band = usable & (np.abs(freqs - hz) <= width)
    rest = usable & ~band
    peak = float(freqs[usable][np.argmax(spec[usable])])
    snr = 10 * np.log10(spec[band].sum() / max(spec[rest].sum(), 1e-20))
    level = 20 * np.log10(max(np.sqrt(np.mean(x**2)), 1e-10))
    return peak, float(snr), float(level)


@pytest.fixture
def netns():
    """The test (server thread, Playwright, Chromium) in a namespace with only `lo`."""
    with browser.loopback_netns() as isolated:
        yield isolated


@pytest.fixture
def app(netns):
    a = App()
    a.start()
    yield a
    a.stop()


@pytest.mark.alone  # Chromium's processes would crowd the audio tests running beside it
def test_browser_audio_both_ways_over_loopback(app: App, netns: bool, tmp_path: Path) -> None:
    t0 = time.monotonic()
    print(f"\nisolated network namespace: {netns}")
    wav = write_tone_wav(tmp_path / "mic-440.wav", 440.0)
    base = f"http://127.0.0.1:{app.port}"
    from playwright.sync_api import expect

    with browser.chromium(wav) as page:
        csp_errors: list[str] = []
        page.on(
            "console",
            lambda m: csp_errors.append(m.text) if "Content Security" in m.text else None,
        )
        page.goto(f"{base}/join")

        # A wrong PIN shows the server's error and keeps the form.
        page.fill("#pin", "0000")
        page.click("#join")
        page.wait_for_selector("#error:not([hidden])", timeout=10_000)
        assert page.text_content("#error") == "Wrong PIN."
        assert page.is_visible("#join-form")

        page.fill("#pin", PIN)
        page.click("#join")
        page.wait_for_selector("#controls:not([hidden])", timeout=15_000)
        assert not app.errors, app.errors
        expect(page.locator("#status")).to_have_text("Connected.", timeout=15_000)
        wait_for(lambda: app.call(app.info("t1"))["dtls"] == "connected", 10, "DTLS connected")
        t_conn = time.monotonic()

        # (a) the browser's 440 Hz reaches push() as 8 kHz frames: take the last second.
        start = len(app.pushed)
        wait_for(lambda: len(app.pushed) >= start + 75, 10, "1.5 s of pushed audio")
        frames = list(app.pushed)
        assert all(len(f) == FRAME for f in frames)
        peak, snr, level = tone_snr_db(b"".join(frames[-50:]), 440.0)
        print(f"\nbrowser->leg: peak {peak:.0f} Hz, 440 Hz SNR {snr:.1f} dB, {level:.1f} dBFS")
        assert abs(peak - 440) <= 10, peak
        assert snr > 20, snr
        assert level > -40, level

        # (b) the leg's 1000 Hz reaches the browser's remote audio.
        m = page.evaluate("ponteMeasure([1000, 440], 1000)")
        print(
            f"leg->browser: peak {m['peakHz']:.0f} Hz, 1000 Hz share {m['bands']['1000']:.3f}, "
            f"440 Hz share {m['bands']['440']:.4f}, {m['totalDb']:.1f} dB total"
        )
        assert abs(m["peakHz"] - 1000) <= 15, m
        assert m["bands"]["1000"] > 0.9, m

        # opus over DTLS-SRTP on 127.0.0.1, as both ends see it.
        info = app.call(app.info("t1"))
        stats = page.evaluate("ponteStats()")
        print(f"leg: {info}\nbrowser: {stats}")
        assert info["codec"].lower().startswith("audio/opus/48000"), info
        assert info["dtls"] == "connected" and info["connection"] == "connected", info
        assert all(a.startswith("127.0.0.1:") for a in info["pair"]), info
        assert stats["dtlsState"] == "connected", stats
        assert stats["srtpCipher"], stats
        assert stats["inboundCodec"] == "audio/opus", stats
        assert stats["outboundCodec"] == "audio/opus", stats
        assert stats["local"].startswith("127.0.0.1:"), stats
        assert stats["remote"].startswith("127.0.0.1:"), stats

        # The buttons post keys.
        page.click("#mute")
        expect(page.locator("#mute")).to_have_text("Unmute")
        page.click("#hand")
        expect(page.locator("#status")).to_have_text("Hand raised.")
        assert app.keys == ["mute", "hand"], app.keys

        # Leave: the browser closes its peer connection; the leg notices and reports once.
        page.click("#leave")
        wait_for(lambda: app.closed_calls >= 1, 10, "on_closed after Leave")
        assert app.keys[-1] == "leave"
        assert not csp_errors, csp_errors
        t_end = time.monotonic()
    app.call(app.legs["t1"].close())
    assert app.closed_calls == 1
    print(f"timing: connect {t_conn - t0:.1f} s, total {t_end - t0:.1f} s")


def test_outgoing_track_paces_20ms_frames_from_pull(monkeypatch) -> None:
    """pull() is asked once per 20 ms of the loop's clock; None becomes silence; after
    a stall the clock is re-based instead of bursting the backlog. The loop's clock
    is a fake one that asyncio.sleep advances, so nothing here depends on timing."""
    import web.webrtc as webrtc
    from web.webrtc import FRAME_BYTES, MAX_LAG, SAMPLES, _PullTrack

    sine = Sine()
    calls = []

    def pull() -> bytes | None:
        calls.append(1)
        return sine() if len(calls) % 2 else None

    class FakeClock(asyncio.SelectorEventLoop):
        now = 100.0

        def time(self) -> float:
            return self.now

    loop = FakeClock()

    async def sleep(delay: float) -> None:
        loop.now += delay

    monkeypatch.setattr(webrtc.asyncio, "sleep", sleep)

    async def run() -> tuple[list, list[float]]:
        track = _PullTrack(pull)
        frames, at = [], []
        for i in range(26):
            if i == 20:
                loop.now += 2 * MAX_LAG  # a stall: the loop was busy elsewhere
            frames.append(await track.recv())
            at.append(loop.now)
        return frames, at

    try:
        frames, at = loop.run_until_complete(run())
    finally:
        loop.close()
    # Frame n leaves at start + n * 20 ms...
    assert [round(t - 100.0, 6) for t in at[:20]] == [round(i * 0.02, 6) for i in range(20)]
    # ...and after the stall, at once and then every 20 ms again (no burst).
    assert [round(b - a, 6) for a, b in zip(at[20:], at[21:], strict=False)] == [0.02] * 5
    assert [f.pts for f in frames] == [i * SAMPLES for i in range(26)]
    assert all(f.sample_rate == RATE and f.samples == SAMPLES for f in frames)
    assert all(f.format.name == "s16" and f.layout.name == "mono" for f in frames)
    assert len(calls) == 26
    assert bytes(frames[1].planes[0])[:FRAME_BYTES] == bytes(FRAME_BYTES)
    assert bytes(frames[0].planes[0])[:FRAME_BYTES] != bytes(FRAME_BYTES)


def test_candidate_filter_and_ice_servers() -> None:
    from web.webrtc import _ice_server, _is_loopback, filter_candidates

    sdp = (
        "v=0\r\n"
        "a=candidate:1 1 udp 2113937151 127.0.0.1 50000 typ host\r\n"
        "a=candidate:2 1 udp 2113937151 192.0.2.2 50001 typ host\r\n"
        "a=candidate:3 1 udp 2113937151 0b1c-4f.local 50002 typ host\r\n"
        "a=end-of-candidates\r\n"
    )
    out = filter_candidates(sdp, _is_loopback)
    assert "127.0.0.1 50000" in out
    assert "192.0.2.2" not in out and ".local" not in out
    assert "a=end-of-candidates" in out

    s = _ice_server("stun:127.0.0.1:3478")
    assert s.urls == "stun:127.0.0.1:3478" and s.username is None
    t = _ice_server("turn:alice:secret@127.0.0.1:3478?transport=udp")
    assert (t.urls, t.username, t.credential) == (
        "turn:127.0.0.1:3478?transport=udp",
        "alice",
        "secret",
    )
