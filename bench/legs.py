#!/usr/bin/env python3
"""Legs in rooms versus app-server CPU, and PIN `#` -> joined latency.

For each leg count, starts a fresh app server, has one softphone process place
that many calls (8 kHz G.711, each sending a 440 Hz tone) into rooms of 10,
waits until every leg has joined, then samples the server's CPU time from
/proc over a fixed window. Prints one row per leg count.

    .venv/bin/python bench/legs.py [--legs 20,60,120,250] [--window 10]

Bounded: loopback only, each run stops by itself (softphone --max-seconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import ports  # noqa: E402
from tests.harness import PY, start_server  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
ROOM_SIZE = 10


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def run(legs: int, window: float, cache: Path) -> dict[str, float]:
    """One measurement at `legs` legs."""
    rooms = [
        {"name": f"r{i}", "participant_pin": f"{1000 + i}", "moderator_pin": f"{5000 + i}"}
        for i in range((legs + ROOM_SIZE - 1) // ROOM_SIZE)
    ]
    # The first caller of each room moderates it, so rooms mix (not hold music).
    pins = ",".join(
        rooms[i // ROOM_SIZE]["moderator_pin" if i % ROOM_SIZE == 0 else "participant_pin"]
        for i in range(legs)
    )
    sip = {"listen": f"127.0.0.1:{ports.allocate(1)}", "rtp_ports": ports.rtp_range(2 * legs + 20)}
    phone_rtp = ports.rtp_range(4 * legs + 8)
    hold = 15 + legs / 25 + window
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(Path(tmp), cache, log_level="info", rooms=rooms, sip=sip)
        phone = None
        try:
            phone = subprocess.Popen(
                [
                    PY,
                    "-m",
                    "pbx.softphone",
                    "--target",
                    srv.uri("conf"),
                    "--script",
                    f"wait_media 10; dtmf {{pin}}#; tone 440; wait {hold}; hangup",
                    "--calls",
                    str(legs),
                    "--rate",
                    "50",
                    "--pins",
                    pins,
                    "--rtp",
                    phone_rtp,
                    "--max-seconds",
                    str(hold + 40),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 15 + legs / 10
            joined = 0
            while time.monotonic() < deadline:
                st = srv.status()
                joined = sum(len(r["members"]) for r in st["rooms"].values())
                if joined >= legs:
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # let the joins settle before measuring
            c0, p0, t0 = cpu_seconds(srv.proc.pid), cpu_seconds(phone.pid), time.monotonic()
            time.sleep(window)
            c1, p1, t1 = cpu_seconds(srv.proc.pid), cpu_seconds(phone.pid), time.monotonic()
            st = srv.status()
            lat = [x * 1000 for x in st["join_latencies"]]
            if joined < legs:
                errors = [ln for ln in srv.log().splitlines() if "ERROR" in ln][:5]
                print(
                    f"only {joined}/{legs} joined; server errors:",
                    *errors,
                    sep="\n",
                    file=sys.stderr,
                )
        finally:
            if phone is not None:
                phone.terminate()
                phone.communicate(timeout=30)
            srv.stop()
    return {
        "legs": legs,
        "joined": joined,
        "server_cpu": 100 * (c1 - c0) / (t1 - t0),
        "phone_cpu": 100 * (p1 - p0) / (t1 - t0),
        "conf_ports": st["conf_ports"],
        "join_p50_ms": statistics.median(lat) if lat else float("nan"),
        "join_p99_ms": pct(lat, 99) if lat else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--legs", default="20,60,120,250")
    ap.add_argument("--window", type=float, default=10.0, help="CPU sampling seconds")
    args = ap.parse_args()
    from ivr.prompts import PromptLibrary

    cache = Path(tempfile.gettempdir()) / "ponte-test-prompts"
    PromptLibrary(cache).render_all()
    print(
        "| legs | joined | server CPU % (1 core = 100) | softphone CPU % | "
        "# -> joined p50 ms | p99 ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.legs.split(",")):
        r = run(n, args.window, cache)
        print(
            f"| {r['legs']} | {r['joined']} | {r['server_cpu']:.1f} | {r['phone_cpu']:.1f} | "
            f"{r['join_p50_ms']:.2f} | {r['join_p99_ms']:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
