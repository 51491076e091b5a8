#!/usr/bin/env python3
"""Trunk pacing: 30 outbound calls offered at once, through Kamailio, to a
trunk whose provider allows 2 calls per second.

A SIPp UAS plays the provider (tests/sipp/provider_uas.xml: it logs each
INVITE it receives with SIPp's clock in ms). The trunk is configured with
`cps: 2` (tests/pbx_helpers.pbx_overrides). One softphone registers to
Kamailio as extension 1001 and starts 30 calls to a number on the trunk's
outbound prefix within a few milliseconds. Reported: the most INVITEs the
provider saw in any 1-s window (the goal: at most 2), how many calls got 503
(and with which Retry-After), and how fast the 503s came back.

    .venv/bin/python bench/trunk.py [--calls 30]

Loopback only, ports from the benches' block; the softphone and SIPp each
have a hard time limit. The last line is the `BENCH-RESULT` JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The repository first (bench/pbx.py must not shadow the `pbx` package), then
# bench/ for the benches' shared modules.
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import common  # noqa: E402

common.use_bench_ports()

from tests import ports  # noqa: E402
from tests.harness import PY, start_server  # noqa: E402
from tests.pbx_helpers import (  # noqa: E402
    busiest_window,
    pbx_overrides,
    proxy,
    register,
    start_provider,
)

NUMBER = "0011999990000"  # an outbound prefix of the trunk ("0"), not a busy number
GOAL_PER_S = 2


def measure(calls: int) -> dict[str, Any]:
    """Offer `calls` at once; what the provider saw and what the caller got."""
    cache = common.prompt_cache()
    with tempfile.TemporaryDirectory(prefix="ponte-bench-trunk-") as tmpdir:
        tmp = Path(tmpdir)
        provider = start_provider(tmp)
        srv = None
        try:
            srv = start_server(tmp / "srv", cache, log_level="info", **pbx_overrides(provider.port))
            cps = srv.config["trunks"][0]["cps"]
            t0 = time.monotonic()
            out = subprocess.run(
                [
                    PY,
                    "-m",
                    "pbx.softphone",
                    "--target",
                    f"sip:{NUMBER}@{proxy(srv)}",
                    "--script",
                    "wait_media 8; wait 2; hangup",
                    "--bind",
                    ports.loopback_ip(),
                    "--rtp",
                    ports.rtp_range(4 * calls + 8),
                    "--calls",
                    str(calls),
                    # All at once: 1,000 per second is as fast as one poll loop goes.
                    "--rate",
                    "1000",
                    "--max-seconds",
                    "45",
                    *register("1001", srv),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=90,
            )
            wall = time.monotonic() - t0
            reports = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            if srv is not None:
                srv.stop()
            provider.stop()
        ticks: list[float] = [t for t, e in provider.events() if e.startswith("INVITE")]
    codes = Counter(r.get("code", 0) for r in reports)
    refused = [r for r in reports if r.get("code") == 503]
    answered = [r for r in reports if "confirmed_at" in r]
    # How long a refused caller waited for its 503 (INVITE sent -> 503 received).
    waits = [(r["ended_at"] - r["started_at"]) * 1000 for r in refused if "ended_at" in r]
    return {
        "offered": calls,
        "trunk_cps": cps,
        "provider_invites": len(ticks),
        "max_in_1s_window": busiest_window(ticks, 1000),
        "answered": len(answered),
        "got_503": len(refused),
        "retry_after": sorted({r.get("headers", {}).get("Retry-After", "") for r in refused}),
        "codes": {str(k): v for k, v in sorted(codes.items())},
        "ms_to_503": common.summary(waits),
        "spread_ms": (max(ticks) - min(ticks)) if ticks else 0,
        "calls_wall_s": round(wall, 1),
        # Met only if calls really reached the provider and every other one got
        # the trunk's 503: no INVITE at all (a broken route) passes nothing.
        "passed": 0 < busiest_window(ticks, 1000) <= GOAL_PER_S
        and len(answered) + len(refused) == calls,
    }


def main() -> int:
    """Print the numbers, then the `BENCH-RESULT` line."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--calls", type=int, default=30)
    args = ap.parse_args()
    common.graceful_sigterm()
    load0, t0 = common.loadavg(), time.monotonic()
    r = measure(args.calls)
    print(
        f"{r['offered']} calls offered at once to a trunk of cps {r['trunk_cps']}: the provider "
        f"saw {r['provider_invites']} INVITEs, at most {r['max_in_1s_window']} in any 1-s "
        f"window; {r['got_503']} got 503 (Retry-After {', '.join(r['retry_after'])}) in "
        f"p50 {r['ms_to_503']['p50']:.1f} ms; {r['answered']} answered; codes {r['codes']}"
    )
    common.emit("trunk", r, load0, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
