#!/usr/bin/env python3
"""Browser legs through the edge: WebRTC browsers (SIP over WebSocket to
Kamailio, ICE + DTLS-SRTP + Opus to rtpengine) per machine.

One app server with its Kamailio (`pbx.websocket.listen`: the browsers'
WebSocket) and rtpengine, and the web console on; a SIP moderator (our
softphone, PCMU, straight to the app server) sends 1000 Hz into room `demo`.
Browser participants join as the join page does: POST the participant PIN to
/join/token (each from its own 127.x address, as browsers on a LAN), open
the WebSocket the reply names, INVITE `sip:web-<token>@...` with an aiortc
offer (tests/wsbrowser.py). rtpengine terminates ICE and DTLS-SRTP and gives
the app server plain RTP with Opus, which pjmedia decodes in C. Each browser
sends Opus silence (encoded once, looped), so it hears the moderator's tone
alone.

The simulated browsers run in --workers processes of their own (one asyncio
loop each), so their cost is measured apart from the appliance's and can be
spread over the cores. The browsers rise in steps; after each step has
joined and settled, a steady window measures:

- the CPU (100 = one core) of the app server (per thread too), rtpengine,
  Kamailio (its whole process group), the browsers' processes, and how busy
  the whole machine was;
- at every browser: audio received versus expected (RTP packets of 20 ms
  over the window), the longest gap between arriving packets, and the share
  of 1000 Hz in what it heard (decoded after the window).

A step is degraded when any browser received under 99 % of the window's
audio, saw a gap over 100 ms, or heard less than 80 % 1000 Hz, or a browser
failed to join. A degraded window is measured again once at the same browsers
and only a second counts (as bench/legs.py). The series stops at the first
degraded step.

    .venv/bin/python bench/webrtc.py [--steps 10,25,50,75,100,125,150] [--window 5] [--workers 2]

Bounded: loopback only, ports from the benches' block, every wait has a
deadline, steps that would not fit --budget are skipped, and the server (with
Kamailio and rtpengine), the moderator and the workers are stopped in
`finally`. The last line is the `BENCH-RESULT` JSON that `bench/run` collects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The repository first (bench/pbx.py must not shadow the `pbx` package), then
# bench/ for the benches' shared modules.
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import common  # noqa: E402

common.use_bench_ports()

import numpy as np  # noqa: E402
import relay  # noqa: E402

from tests import audio, ports  # noqa: E402

GAP_LIMIT = 0.100
RECEIVED_MIN = 99.0
TONE_MIN = 0.8
PIN = "1111"  # room demo's participant PIN (tests/harness.DEFAULT_ROOMS)
# Browsers joining at the same time, per worker: people arrive spread out, and
# the steady state is measured here, not a burst of joins.
JOIN_AT_ONCE = 5
# What a step's browsers got (kept from a first window measured again).
HEALTH_KEYS = ("received_min", "max_gap_ms", "tone_min", "gaps_over")
WORKER_NICE = 5  # the browsers take what the appliance leaves, as browsers elsewhere would


# -- the worker: N browsers on one loop ----------------------------------------------------
async def _join_one(b: Any, base: str, source: str) -> str | None:
    from tests.wsbrowser import join_token

    code, reply = await join_token(base, PIN, source)
    if code != 200 or not reply.get("ok"):
        return f"join {code}: {reply.get('error', reply)}"
    await b.connect(reply["ws"], origin=base, source=source)
    status = await b.call(reply["uri"])
    if status != 200:
        return f"INVITE {status}"
    await b.wait_connected(20)
    return None


def browser_health(b: Any, t0: float, t1: float) -> dict[str, Any]:
    """What one browser got over [t0, t1]: packets (20 ms each) against the
    window, the longest gap between arrivals, the share of 1000 Hz."""
    stamps = b.arrivals(t0, t1)
    edges = [t0, *stamps, t1]
    heard = b.heard(t0, t1).astype(float)
    return {
        "received_pct": round(100 * len(stamps) * 0.02 / (t1 - t0), 1),
        "max_gap_ms": round(1000 * float(np.diff(edges).max()), 1),
        "tone_1000": round(audio.band_fraction(heard, 8000, 1000), 3) if len(heard) else 0.0,
    }


async def _worker() -> None:
    import aiohttp

    from tests.wsbrowser import WsBrowser

    session = aiohttp.ClientSession()
    browsers: list[WsBrowser] = []
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["op"] == "join":
            errors: list[str] = []
            sources = list(cmd["sources"])
            for i in range(0, len(sources), JOIN_AT_ONCE):
                batch = [(WsBrowser(session, 0), s) for s in sources[i : i + JOIN_AT_ONCE]]
                got = await asyncio.gather(
                    *(asyncio.wait_for(_join_one(b, cmd["base"], s), 40) for b, s in batch),
                    return_exceptions=True,
                )
                for (b, _), r in zip(batch, got, strict=True):
                    browsers.append(b)
                    if r is not None:
                        errors.append(repr(r) if isinstance(r, BaseException) else r)
            say({"joined": len(sources) - len(errors), "errors": errors[:5]})
        elif cmd["op"] == "health":
            # The browsers in a call: one that never joined is counted as such
            # (the step's `joined`), not as one that heard nothing.
            live = [b for b in browsers if b.status == 200]
            say(
                {
                    "health": [browser_health(b, cmd["t0"], cmd["t1"]) for b in live],
                    "ended": sum(b.state == "ended" for b in live),
                }
            )
        elif cmd["op"] == "quit":
            await asyncio.gather(
                *(asyncio.wait_for(b.close(), 5) for b in browsers), return_exceptions=True
            )
            await session.close()
            say({"closed": len(browsers)})
            return


class Worker:
    """One browsers' process, driven over its stdin/stdout (JSON lines)."""

    def __init__(self, err: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err.open("a"),
            text=True,
            preexec_fn=lambda: os.nice(WORKER_NICE),
        )
        self.count = 0

    def send(self, cmd: dict[str, Any]) -> None:
        """A command; its reply comes with `reply`."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float) -> dict[str, Any]:
        """The next reply line (raises SystemExit on a dead or silent worker)."""
        assert self.proc.stdout is not None
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise SystemExit(f"a browsers' worker died or was silent {timeout} s")
        out: dict[str, Any] = json.loads(line)
        return out

    def stop(self) -> None:
        """Close its browsers and end it."""
        try:
            self.send({"op": "quit"})
            self.reply(20)
        except (OSError, SystemExit, ValueError):
            pass
        self.proc.kill()
        self.proc.wait()


# -- the parent ---------------------------------------------------------------------------------
def step_line(s: dict[str, Any]) -> str:
    """One step's summary on the terminal."""
    return (
        f"{s['browsers']:>3} browsers ({s['joined']} joined): server CPU {s['server_cpu']:.0f} %, "
        f"rtpengine {s['rtpengine_cpu']:.0f} %, Kamailio {s['kamailio_cpu']:.1f} %, "
        f"browsers' own {s['browsers_cpu']:.0f} %, machine {s['machine_busy']:.0f} % busy; "
        f"received min {s['received_min']:.1f} %, max gap {s['max_gap_ms']:.0f} ms, "
        f"1000 Hz min {s['tone_min']:.2f}"
        + (f" ({s['gaps_over']} with a gap > 100 ms)" if s["gaps_over"] else "")
        + ("  DEGRADED" if s["degraded"] else "")
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", default="10,25,50,75,100,125,150")
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2, help="browsers' processes")
    ap.add_argument("--budget", type=float, default=400, help="seconds for the whole run")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        asyncio.run(_worker())
        return 0
    common.graceful_sigterm()
    started, load_start = time.monotonic(), common.loadavg()
    steps_wanted = [int(n) for n in args.steps.split(",")]
    top = steps_wanted[-1]
    from tests.harness import PY, start_server
    from tests.pbx_helpers import pbx_overrides

    tmp = Path(tempfile.mkdtemp(prefix="bench-webrtc-"))
    wport = ports.allocate(1)
    base = f"http://127.0.0.1:{wport}"
    overrides = pbx_overrides()
    overrides["pbx"]["websocket"] = {"listen": f"127.0.0.1:{ports.allocate(1)}"}
    # rtpengine: a port (pair) on each side of every browser's call.
    overrides["pbx"]["media_ports"] = ports.rtp_range(4 * top + 40)
    overrides["sip"] = {
        "listen": f"127.0.0.1:{ports.allocate(1)}",
        "rtp_ports": ports.rtp_range(2 * top + 40),
        "codecs": ["opus/48000", "PCMU/8000"],
    }
    srv = start_server(
        tmp / "srv",
        common.prompt_cache(),
        log_level="info",
        web={"listen": f"127.0.0.1:{wport}"},
        **overrides,
    )
    workers: list[Worker] = []
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "path": "edge",
        "window_s": args.window,
        "workers": args.workers,
        "steps": steps,
        "errors": [],
    }
    mod = subprocess.Popen(
        [
            PY, "-m", "pbx.softphone", "--target", srv.uri("conf"), "--script",
            "wait_media 5; dtmf 9999#; tone 1000; wait 900", "--rtp", ports.rtp_range(12),
            "--max-seconds", str(int(args.budget + 120)),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        rel = relay.Relay.of(srv)
        deadline = time.monotonic() + 15
        while not srv.status()["rooms"].get("demo", {}).get("members"):
            if time.monotonic() > deadline:
                raise SystemExit("the moderator did not join")
            time.sleep(0.05)
        workers = [Worker(tmp / "workers.err") for _ in range(args.workers)]
        time.sleep(1.0)
        idle = window(srv, rel, workers, min(args.window, 3.0))
        result["idle"] = {k: v for k, v in idle.items() if k != "server_threads"}
        print(
            f"idle: server {idle['server_cpu']:.1f} %, rtpengine {idle['rtpengine_cpu']:.1f} %, "
            f"Kamailio {idle['kamailio_cpu']:.1f} %, "
            f"browsers' processes {idle['browsers_cpu']:.1f} %",
            flush=True,
        )
        have = joined = 0
        for want in steps_wanted:
            need = (want - have) / 8 + 6 + args.window + 8
            if time.monotonic() + need > started + args.budget:
                result["stopped"] = f"time budget before {want} browsers"
                break
            # The new browsers, spread evenly over the workers, joining at once.
            new = [ports.loopback_ip() for _ in range(want - have)]
            for i, w in enumerate(workers):
                mine = new[i :: len(workers)]
                w.send({"op": "join", "base": base, "sources": mine})
                w.count += len(mine)
            errors = []
            for w in workers:
                r = w.reply(60 + (want - have) * 2)
                joined += r["joined"]
                errors += r["errors"]
            if errors:
                result["errors"] += errors[:5]
                print(f"join errors: {errors[:3]}", file=sys.stderr, flush=True)
            have = want
            time.sleep(1.5)  # past the join prompts
            step = measure(srv, rel, workers, args.window, want, joined, result)
            if step["degraded"] and joined == want:
                # One bad window is measured again at the same browsers, and only
                # a second counts (as bench/legs.py does): on this shared 2-core
                # box one stall of the browsers' own process reads as a gap.
                print(step_line(step) + "  (measuring again)", flush=True)
                first = {k: step[k] for k in HEALTH_KEYS}
                # The first window's decoding held the browsers' loops: what
                # queued meanwhile arrives first, and must not count.
                time.sleep(1.5)
                step = measure(srv, rel, workers, args.window, want, joined, result)
                step["first_window"] = first
            step["server_threads"] = step["server_threads"][:4]
            steps.append(step)
            print(step_line(step), flush=True)
            if step["degraded"]:
                break
    finally:
        for w in workers:
            w.stop()
        mod.kill()
        mod.wait()
        srv.stop()
    healthy = [s["browsers"] for s in steps if not s["degraded"]]
    per_core = None
    if healthy:
        best = next(s for s in steps if s["browsers"] == max(healthy))
        edge = best["server_cpu"] + best["rtpengine_cpu"] + best["kamailio_cpu"]
        per_core = round(100 * best["browsers"] / max(edge, 1), 1)
    result["largest_healthy"] = max(healthy) if healthy else 0
    result["legs_per_core"] = per_core
    print(
        f"largest healthy step: {result['largest_healthy']} browsers; browser legs per core "
        f"of the appliance (server + rtpengine + Kamailio) at that step: {per_core}"
    )
    common.emit("webrtc", result, load_start, started)
    return 0


def measure(
    srv: Any,
    rel: Any,
    workers: list[Worker],
    seconds: float,
    want: int,
    joined: int,
    result: dict[str, Any],
) -> dict[str, Any]:
    """One steady window at `want` browsers: CPU, then what every browser got."""
    step: dict[str, Any] = {"browsers": want, "joined": joined}
    t0 = time.monotonic()
    step |= window(srv, rel, workers, seconds)
    t1 = time.monotonic()
    health: list[dict[str, Any]] = []
    ended = 0
    for w in workers:
        w.send({"op": "health", "t0": t0, "t1": t1})
    for w in workers:
        r = w.reply(60)
        health += r["health"]
        ended += r["ended"]
    try:
        st = srv.status()
        step["members"] = len(st["rooms"].get("demo", {}).get("members", [])) - 1
    except OSError as exc:  # a server too busy to answer: the step says so
        step["members"] = None
        result["errors"].append(f"status at {want} browsers: {exc!r}")
    step["ended"] = ended
    step["rtpengine_calls"] = rel.rtpengine_calls()
    step["received_min"] = min((h["received_pct"] for h in health), default=0.0)
    step["max_gap_ms"] = max((h["max_gap_ms"] for h in health), default=0.0)
    step["tone_min"] = min((h["tone_1000"] for h in health), default=0.0)
    # How many browsers saw a gap over the limit: one, or all of them?
    step["gaps_over"] = sum(h["max_gap_ms"] > 1000 * GAP_LIMIT for h in health)
    step["degraded"] = (
        joined < want
        or step["received_min"] < RECEIVED_MIN
        or step["max_gap_ms"] > 1000 * GAP_LIMIT
        or step["tone_min"] < TONE_MIN
    )
    return step


def window(srv: Any, rel: Any, workers: list[Worker], seconds: float) -> dict[str, Any]:
    """CPU of the server (and per thread), rtpengine, Kamailio and the
    browsers' processes over `seconds` (bench/relay.py's window, the
    browsers' processes as its load generators)."""
    out = relay.window(srv, rel, [w.proc for w in workers], seconds)
    out["browsers_cpu"] = out.pop("generator_cpu")
    out["appliance_cpu"] = out.pop("total_cpu")
    return out


if __name__ == "__main__":
    sys.exit(main())
