#!/usr/bin/env python3
"""Browser legs: WebRTC participants (aiortc, opus, DTLS-SRTP) per core.

One app server with the web console on; a SIP moderator (our softphone) sends
1000 Hz into room `demo`; browser participants join through /join with the
participant PIN, each a real WebRTC peer (tests/webclient.py: aiortc as the
browser, all of them on one asyncio loop in this process) sending silence
(opus-encoded all the same), so each hears the moderator's tone alone.
The browsers rise in steps; after each step has joined and settled, a steady
window measures:

- the server's CPU (100 = one core) and per thread: the server decodes and
  encodes opus, runs DTLS-SRTP and ICE in Python (aiortc) on its web thread,
  and bridges 8 kHz frames through pbx/_pjx.c's media port;
- what this process (the simulated browsers, just as costly) and the whole
  machine used: on 2 cores the browsers compete with the server;
- at every browser: audio received versus expected (8 kHz samples over the
  window), the longest gap between arriving frames, and the share of 1000 Hz
  in what it heard (the moderator, through the bridge).

A step is degraded when any browser received under 99 % of the window's
audio, saw a gap over 100 ms, or heard less than 80 % 1000 Hz. The series
stops at the first degraded step.

    .venv/bin/python bench/webrtc.py [--steps 1,5,10,20] [--window 5]

Bounded: loopback only, ports from the benches' block, every wait has a
deadline. The last line is the `BENCH-RESULT` JSON that `bench/run` collects.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import common  # noqa: E402

common.use_bench_ports()

import numpy as np  # noqa: E402

from tests import audio, ports  # noqa: E402
from tests.harness import PY, start_server  # noqa: E402
from tests.webclient import WebClient  # noqa: E402

GAP_LIMIT = 0.100
RECEIVED_MIN = 99.0
TONE_MIN = 0.8


def browser_health(c: WebClient, t0: float, t1: float) -> dict[str, Any]:
    """What one browser got over [t0, t1]."""
    stamps = [t for t, _ in list(c.chunks) if t0 <= t <= t1]
    heard = c.heard(t0, t1).astype(float)
    gaps = np.diff(stamps) if len(stamps) > 1 else np.array([t1 - t0])
    return {
        "received_pct": round(100 * len(heard) / (8000 * (t1 - t0)), 1),
        "max_gap_ms": round(1000 * float(gaps.max()), 1),
        "tone_1000": round(audio.band_fraction(heard, 8000, 1000), 3) if len(heard) else 0.0,
    }


def step_line(s: dict[str, Any]) -> str:
    return (
        f"{s['browsers']:>3} browsers: server CPU {s['server_cpu']:.0f} %, browsers' CPU "
        f"{s['generator_cpu']:.0f} %, machine {s['machine_busy']:.0f} % busy; received "
        f"min {s['received_min']:.1f} %, max gap {s['max_gap_ms']:.0f} ms, 1000 Hz min "
        f"{s['tone_min']:.2f}; server sent late by {s['server_max_late_ms']:.0f} ms at worst"
        f"{'  DEGRADED' if s['degraded'] else ''}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", default="1,5,10,20")
    ap.add_argument("--window", type=float, default=5.0)
    args = ap.parse_args()
    common.graceful_sigterm()
    started, load_start = time.monotonic(), common.loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-webrtc-"))
    wport = ports.allocate(1)
    base = f"http://127.0.0.1:{wport}"
    srv = start_server(
        tmp, common.prompt_cache(), log_level="info", web={"listen": f"127.0.0.1:{wport}"}
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    clients: list[WebClient] = []
    steps: list[dict[str, Any]] = []
    mod = subprocess.Popen(
        [
            PY, "-m", "pbx.softphone", "--target", srv.uri("conf"), "--script",
            "wait_media 5; dtmf 9999#; tone 1000; wait 600", "--rtp", ports.rtp_range(12),
            "--max-seconds", "900",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not srv.status()["rooms"].get("demo", {}).get("members"):
            if time.monotonic() > deadline:
                raise SystemExit("the moderator did not join")
            time.sleep(0.05)
        # The console allows 5 joins a minute per address: each browser asks
        # from its own 127.x address, as browsers on a LAN would.
        for want in [int(n) for n in args.steps.split(",")]:
            while len(clients) < want:
                c = WebClient(base, 0, loop=loop, source=ports.loopback_ip())
                code, answer = c.join("1111")
                if code != 200:
                    raise SystemExit(f"join failed: {code} {answer}")
                clients.append(c)
            deadline = time.monotonic() + 20
            while not all(c.connected() for c in clients):
                if time.monotonic() > deadline:
                    raise SystemExit("browsers did not connect")
                time.sleep(0.05)
            time.sleep(1.5)
            window = common.CpuWindow(srv.proc.pid, others=[])
            window.start()
            own0 = time.process_time()
            t0 = time.monotonic()
            time.sleep(args.window)
            t1 = time.monotonic()
            cpu = window.stop()
            health = [browser_health(c, t0, t1) for c in clients]
            legs = srv.status()["web_legs"]
            step = {
                "browsers": len(clients),
                **cpu,
                "generator_cpu": 100 * (time.process_time() - own0) / (t1 - t0),
                "received_min": min(h["received_pct"] for h in health),
                "max_gap_ms": max(h["max_gap_ms"] for h in health),
                "tone_min": min(h["tone_1000"] for h in health),
                # The server's side of a gap: how late it sent a frame, at worst
                # (since the leg joined), over all browser legs.
                "server_max_late_ms": max((v["max_late_ms"] for v in legs.values()), default=0),
            }
            step["degraded"] = (
                step["received_min"] < RECEIVED_MIN
                or step["max_gap_ms"] > 1000 * GAP_LIMIT
                or step["tone_min"] < TONE_MIN
            )
            steps.append(step)
            print(step_line(step), flush=True)
            if step["degraded"]:
                break
    finally:
        for c in clients:
            try:
                c.close()
            except Exception as exc:  # a bench still reports what it measured
                print(f"closing a browser: {exc}", file=sys.stderr)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        mod.kill()
        mod.wait()
        srv.stop()
    healthy = [s["browsers"] for s in steps if not s["degraded"]]
    per_core = None
    if healthy:
        top = next(s for s in steps if s["browsers"] == max(healthy))
        per_core = round(100 * top["browsers"] / max(top["server_cpu"], 1), 1)
    print(f"largest healthy step: {max(healthy) if healthy else 0} browsers; "
          f"browser legs per server core at that step: {per_core}")  # fmt: skip
    common.emit("webrtc", {"steps": steps, "legs_per_core": per_core}, load_start, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
