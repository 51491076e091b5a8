#!/usr/bin/env python3
"""Line-profile decision time with 10,000 lines and 100 profiles.

Prints p50/p99 of `decide()` in process (the app server's cost per outbound
call, SQLite usage lookups included) and the wall time of the whole
`ponte dial-check` command (load and validate the YAML, decide, print).

    .venv/bin/python bench/dialcheck.py [--lines 10000] [--profiles 100] [--n 5000]

The last line is the `BENCH-RESULT` JSON that `bench/run` collects.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# The repository first (bench/pbx.py must not shadow the `pbx` package), then
# bench/ for the benches' shared modules.
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from common import emit, graceful_sigterm, loadavg, summary  # noqa: E402

from lines.policy import cycle_start, decide  # noqa: E402
from lines.usage import UsageStore  # noqa: E402
from provisioning.loader import load_config  # noqa: E402

NUMBERS = [
    "33334444",
    "988887777",
    "02133334444",
    "0412133334444",
    "021988887777",
    "+12125551234",
    "08001234567",
    "09001234567",
    "190",
    "909033334444",
    "019988887777",
    "+5511991111111",
]


def make_config(path: Path, lines: int, profiles: int, db: Path) -> None:
    """Write a provisioning file of `lines` lines sharing `profiles` profiles."""
    profs = {}
    for i in range(profiles):
        profs[f"p{i}"] = {
            "quota": "shared" if i % 2 else "individual",
            "limits": {
                "local_fixed": "unlimited",
                "mobile": 60 + i,
                "national_fixed": 30,
                "international": "blocked",
                "premium": "blocked",
            },
            "calendar": {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "holidays": "deny",
                "windows": ["08:00-12:00", "13:00-18:00"],
            },
            "deny_numbers": ["0900*"],
            "allow_numbers": ["+5511991111111"],
        }
    deps = {f"d{i}": {"profile": f"p{i % profiles}"} for i in range(50)}
    ls = {
        str(10000 + i): {
            "area_code": random.choice(["11", "19", "21", "31"]),
            "department": f"d{i % 50}",
            **({"profile": f"p{i % profiles}"} if i % 3 else {}),
        }
        for i in range(lines)
    }
    path.write_text(
        yaml.safe_dump(
            {
                "lines": ls,
                "departments": deps,
                "profiles": profs,
                "carrier": {"csp": "21", "force": True},
                "holidays": {"subdivision": "SP"},
                "billing_cycle_day": 16,
                "database": str(db),
            }
        )
    )


def measure(lines: int, profiles: int, n: int, cli_runs: int) -> dict[str, Any]:
    """Time `decide()` in process and the whole `ponte dial-check` command."""
    random.seed(7)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path, db = Path(tmp) / "big.yaml", Path(tmp) / "usage.db"
        make_config(cfg_path, lines, profiles, db)
        t0 = time.perf_counter()
        cfg = load_config(cfg_path)
        load_s = time.perf_counter() - t0
        store = UsageStore(db)
        at = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
        cycle = cycle_start(at.date(), 16)
        # Every 7th line has usage this cycle: decide() reads it from SQLite.
        for i in range(0, lines, 7):
            store.add(f"line:{10000 + i}", cycle, "national_fixed", 20)
        line_ids = list(cfg.lines)
        times = []
        for _ in range(n):
            line, number = random.choice(line_ids), random.choice(NUMBERS)
            t = time.perf_counter()
            decide(cfg, line, number, at, store.used)
            times.append((time.perf_counter() - t) * 1e6)
        walls = []
        for _ in range(cli_runs):
            t = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "ponte.cli",
                    "dial-check",
                    "--config",
                    str(cfg_path),
                    "--line",
                    line_ids[0],
                    "--number",
                    "02133334444",
                    "--at",
                    at.isoformat(),
                ],
                cwd=ROOT,
                capture_output=True,
                check=True,
                timeout=120,
            )
            walls.append(time.perf_counter() - t)
        return {
            "lines": lines,
            "profiles": profiles,
            "yaml_kib": cfg_path.stat().st_size // 1024,
            "load_s": load_s,
            "decide_us": summary(times),
            "cli_s": summary(walls),
        }


def main() -> int:
    """Print the numbers, then the `BENCH-RESULT` line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=10000)
    ap.add_argument("--profiles", type=int, default=100)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--cli-runs", type=int, default=5)
    args = ap.parse_args()
    graceful_sigterm()
    load0, t0 = loadavg(), time.monotonic()
    r = measure(args.lines, args.profiles, args.n, args.cli_runs)
    print(
        f"config: {r['lines']} lines, {r['profiles']} profiles, "
        f"{r['yaml_kib']} KiB YAML, validated in {r['load_s']:.2f} s"
    )
    d, c = r["decide_us"], r["cli_s"]
    print(f"decide() in process, {d['n']} decisions: p50 {d['p50']:.0f} us, p99 {d['p99']:.0f} us")
    print(
        f"ponte dial-check command (load + validate + decide): "
        f"p50 {c['p50']:.2f} s, max {c['max']:.2f} s over {c['n']} runs"
    )
    emit("dialcheck", r, load0, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
