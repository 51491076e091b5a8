#!/usr/bin/env python3
"""PBX numbers: registrations per second through Kamailio, extension-to-
extension set-up time, and the app server's INVITE -> 200 rate (SIPp uac).

    .venv/bin/python bench/pbx.py [--rates 50,100,200,300]

Loopback only; every SIPp run is bounded by a call count and a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
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
from tests.pbx_helpers import EXTENSIONS, pbx_overrides, wait_registered  # noqa: E402

PW = {e["number"]: e["password"] for e in EXTENSIONS}


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))] if s else float("nan")


def sipp(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sipp", *args, "-nostdin"], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def registrations(srv, tmp: Path, rate: int, count: int) -> tuple[float, int, int]:
    """(achieved per second, successes, failures) for REGISTER + auth at `rate`."""
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
            "-r",
            str(rate),
            "-m",
            str(count),
            "-l",
            "200",
            "-timeout",
            "60s",
            "-trace_stat",
            "-stf",
            str(tmp / "reg.csv"),
            srv.config["pbx"]["listen"],
        ],
        tmp,
        90,
    )
    elapsed = time.monotonic() - t0
    ok, failed = _stat_counts(tmp / "reg.csv")
    if ok == 0:
        print(r.stderr[-500:], file=sys.stderr)
    return ok / elapsed, ok, failed


def _stat_counts(path: Path) -> tuple[int, int]:
    rows = list(csv.DictReader(path.open(), delimiter=";"))
    last = rows[-1]
    return int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])


def setup_times(srv, calls: int) -> list[float]:
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
    callee.terminate()
    callee.wait(30)
    import json

    reports = json.loads(out.stdout.strip().splitlines()[-1])
    return [(r["confirmed_at"] - r["started_at"]) * 1000 for r in reports if "confirmed_at" in r]


def invite_rate(srv, tmp: Path, rate: int, seconds: int) -> dict:
    """SIPp's built-in uac at `rate` calls/s against the access number."""
    count = rate * seconds
    r = sipp(
        [
            "-sn",
            "uac",
            "-s",
            "conf",
            "-i",
            "127.0.0.1",
            "-p",
            str(ports.allocate(1)),
            "-r",
            str(rate),
            "-m",
            str(count),
            "-d",
            "2000",
            "-l",
            str(rate * 4),
            "-timeout",
            f"{seconds + 30}s",
            "-trace_stat",
            "-stf",
            str(tmp / f"uac{rate}.csv"),
            "-trace_rtt",
            "-rtt_freq",
            "1",
            f"127.0.0.1:{srv.sip_port}",
        ],
        tmp,
        seconds + 60,
    )
    ok, failed = _stat_counts(tmp / f"uac{rate}.csv")
    rtts: list[float] = []
    for f in tmp.glob("uac_*_rtt.csv"):
        for row in csv.DictReader(f.open(), delimiter=";"):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                rtts.append(float(row["response_time_ms"]))
        f.unlink()
    del r
    return {
        "rate": rate,
        "ok": ok,
        "failed": failed,
        "success": 100.0 * ok / max(1, ok + failed),
        "p50": statistics.median(rtts) if rtts else float("nan"),
        "p99": pct(rtts, 99),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rates", default="50,100,200,300")
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    from ivr.prompts import PromptLibrary

    cache = Path(tempfile.gettempdir()) / "ponte-test-prompts"
    PromptLibrary(cache).render_all()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        overrides = pbx_overrides()
        overrides["pbx"]["flood_density"] = 10000
        overrides["sip"] = {
            "listen": f"127.0.0.1:{ports.allocate(1)}",
            "rtp_ports": ports.rtp_range(1600),
        }
        srv = start_server(tmp, cache, log_level="info", **overrides)
        try:
            for rate in (300, 1000, 2000):
                per_s, ok, failed = registrations(srv, tmp, rate, rate * 5)
                print(
                    f"REGISTER+auth offered {rate}/s: {per_s:.0f}/s achieved, "
                    f"{ok} ok, {failed} failed"
                )
            times = setup_times(srv, 20)
            print(
                f"ext->ext set-up (INVITE -> 200 via Kamailio), {len(times)} calls: "
                f"p50 {statistics.median(times):.1f} ms, p99 {pct(times, 99):.1f} ms"
            )
            print("| uac calls/s | ok | failed | success % | INVITE->200 p50 ms | p99 ms |")
            print("|---:|---:|---:|---:|---:|---:|")
            for rate in (int(x) for x in args.rates.split(",")):
                r = invite_rate(srv, tmp, rate, args.seconds)
                print(
                    f"| {r['rate']} | {r['ok']} | {r['failed']} | {r['success']:.2f} | "
                    f"{r['p50']:.1f} | {r['p99']:.1f} |",
                    flush=True,
                )
        finally:
            srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
