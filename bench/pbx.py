#!/usr/bin/env python3
"""PBX numbers: registrations per second through Kamailio, extension-to-
extension set-up time, and call set-up against a room's access number (SIPp's
built-in `uac` at rising rates: INVITE, 200, ACK, 2 s, BYE).

    .venv/bin/python bench/pbx.py [--rates 25,50,100,150,200,250,300,400] [--seconds 5]
                                  [--reg-rates 200,500,1000] [--reg-seconds 3]

The set-up capacity is the highest rate at which at least 99.9 % of the calls
succeeded and INVITE -> 200 p99 stayed within 50 ms; the ramp stops at the
first rate that misses either. Loopback only; every SIPp run is bounded by a
call count, `-recv_timeout` and a timeout; ports come from the benches' block
(bench/common.py). The last line is the `BENCH-RESULT` JSON `bench/run` reads.
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

from callrate import (  # noqa: E402
    P99_GOAL_MS,
    SUCCESS_GOAL,
    admission_limits,
    print_ramp,
    ramp,
    sipp,
    stat_counts,
)

from tests import ports  # noqa: E402
from tests.harness import PY, Server, start_server  # noqa: E402
from tests.pbx_helpers import EXTENSIONS, pbx_overrides, wait_registered  # noqa: E402

PW = {e["number"]: e["password"] for e in EXTENSIONS}


def registrations(srv: Server, tmp: Path, rate: int, seconds: int) -> dict[str, Any]:
    """REGISTER + digest auth through Kamailio, offered at `rate` per second."""
    count = rate * seconds
    stat = tmp / f"reg{rate}.csv"
    t0 = time.monotonic()
    r = sipp(
        [
            "-sf",
            str(ROOT / "bench/sipp/register_auth.xml"),
            "-s",
            "1001",
            "-au",
            "1001",
            "-ap",
            PW["1001"],
            "-i",
            ports.loopback_ip(),
            "-p",
            str(ports.allocate(1)),
            "-mp",
            str(ports.allocate(4)),  # SIPp binds -mp to -mp + 3
            "-r",
            str(rate),
            "-m",
            str(count),
            "-l",
            "200",
            "-recv_timeout",
            "5000",
            "-timeout",
            f"{seconds + 30}s",
            "-trace_stat",
            "-stf",
            str(stat),
        ]
        + [srv.config["pbx"]["listen"]],
        tmp,
        seconds + 60,
    )
    elapsed = time.monotonic() - t0
    ok, failed = stat_counts(stat) if stat.exists() else (0, count)
    if ok == 0:
        print(r.stderr[-500:], file=sys.stderr)
    return {"offered": rate, "count": count, "ok": ok, "failed": failed, "per_s": ok / elapsed}


def setup_times(srv: Server, calls: int) -> dict[str, Any]:
    """INVITE sent -> 200 received, 1001 calling 1002 through Kamailio (ms)."""
    proxy = srv.config["pbx"]["listen"]
    callee = subprocess.Popen(
        [
            PY,
            "-m",
            "pbx.softphone",
            "--register",
            f"1002:{PW['1002']}@{proxy}",
            "--answer",
            "--calls",
            str(calls),
            "--script",
            "wait_end 10",
            "--bind",
            ports.loopback_ip(),
            "--rtp",
            ports.rtp_range(4 * calls + 8),
            "--max-seconds",
            "120",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_registered(srv, "1002")
        out = subprocess.run(
            [
                PY,
                "-m",
                "pbx.softphone",
                "--target",
                f"sip:1002@{proxy}",
                "--register",
                f"1001:{PW['1001']}@{proxy}",
                "--calls",
                str(calls),
                "--rate",
                "5",
                "--script",
                "wait_media 5; wait 0.3; hangup",
                "--bind",
                ports.loopback_ip(),
                "--rtp",
                ports.rtp_range(4 * calls + 8),
                "--max-seconds",
                "120",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        callee.terminate()
        callee.communicate(timeout=30)
    reports = json.loads(out.stdout.strip().splitlines()[-1])
    times = [(r["confirmed_at"] - r["started_at"]) * 1000 for r in reports if "confirmed_at" in r]
    codes = Counter(str(r.get("code", 0)) for r in reports if "confirmed_at" not in r)
    return {"calls": calls, "ms": common.summary(times), "unanswered_codes": dict(codes)}


def measure(
    rates: list[int], seconds: int, reg_rates: list[int], reg_seconds: int, ext_calls: int
) -> dict[str, Any]:
    """All three PBX measurements on one server with Kamailio."""
    cache = common.prompt_cache()
    result: dict[str, Any] = {
        "registrations": [],
        "uac": [],
        "seconds": seconds,
        "reg_seconds": reg_seconds,
    }
    with tempfile.TemporaryDirectory(prefix="ponte-bench-pbx-") as tmpdir:
        tmp = Path(tmpdir)
        overrides = pbx_overrides()
        overrides["pbx"]["flood_density"] = 10000  # the most allowed: this bench floods on purpose
        overrides["sip"] = {
            "listen": f"127.0.0.1:{ports.allocate(1)}",
            # At R calls/s with a 2 s hold about 2.2 R calls are up, 2 ports each.
            "rtp_ports": ports.rtp_range(5 * max(rates) + 40),
        }
        result["admission"] = admission_limits()
        if "max_new_calls_per_second" in result["admission"]:
            # The server sheds new calls above sip.max_new_calls_per_second with
            # 503: raised to its maximum here, so the ramp finds what the server
            # itself can take (the shipped limit is reported beside it).
            overrides["sip"]["max_new_calls_per_second"] = result["admission"]["allowed_max"]
        srv = start_server(tmp, cache, log_level="info", **overrides)
        try:
            for rate in reg_rates:
                r = registrations(srv, tmp, rate, reg_seconds)
                result["registrations"].append(r)
                print(
                    f"REGISTER+auth offered {rate}/s: {r['per_s']:.0f}/s achieved, "
                    f"{r['ok']} ok, {r['failed']} failed",
                    file=sys.stderr,
                )
            if ext_calls:
                result["ext_to_ext"] = setup_times(srv, ext_calls)
            result |= ramp(srv, tmp, rates, seconds)
        finally:
            srv.stop()
    result["goal"] = {"success_pct": SUCCESS_GOAL, "p99_ms": P99_GOAL_MS}
    return result


def main() -> int:
    """Tables, then the `BENCH-RESULT` line."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rates", default="25,50,100,150,200,250,300,400")
    ap.add_argument("--seconds", type=int, default=5, help="seconds of calls at each rate")
    ap.add_argument("--reg-rates", default="200,500,1000")
    ap.add_argument("--reg-seconds", type=int, default=3)
    ap.add_argument("--ext-calls", type=int, default=20, help="ext -> ext calls timed")
    args = ap.parse_args()
    common.graceful_sigterm()
    load0, t0 = common.loadavg(), time.monotonic()
    r = measure(
        [int(x) for x in args.rates.split(",")],
        args.seconds,
        [int(x) for x in args.reg_rates.split(",") if x],
        args.reg_seconds,
        args.ext_calls,
    )
    if "ext_to_ext" in r:
        e = r["ext_to_ext"]["ms"]
        print(
            f"ext->ext set-up (INVITE -> 200 via Kamailio), {e['n']} calls: "
            f"p50 {e['p50']:.1f} ms, p99 {e['p99']:.1f} ms"
        )
    print_ramp(r["uac"])
    print(
        f"set-up capacity (>= {SUCCESS_GOAL} % and p99 <= {P99_GOAL_MS:.0f} ms): "
        f"{r['setup_capacity_cps']} calls/s"
    )
    common.emit("pbx", r, load0, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
