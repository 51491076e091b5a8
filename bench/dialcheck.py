#!/usr/bin/env python3
"""Line-profile decision time with 10,000 lines and 100 profiles.

Prints p50/p99 of `decide()` in process (the app server's cost per outbound
call, SQLite usage lookups included) and the wall time of the whole
`ponte dial-check` command (load and validate the YAML, decide, print).

    .venv/bin/python bench/dialcheck.py [--lines 10000] [--profiles 100] [--n 5000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=10000)
    ap.add_argument("--profiles", type=int, default=100)
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    random.seed(7)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path, db = Path(tmp) / "big.yaml", Path(tmp) / "usage.db"
        make_config(cfg_path, args.lines, args.profiles, db)
        t0 = time.perf_counter()
        cfg = load_config(cfg_path)
        load_s = time.perf_counter() - t0
        store = UsageStore(db)
        at = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
        cycle = cycle_start(at.date(), 16)
        for i in range(0, args.lines, 7):
            store.add(f"line:{10000 + i}", cycle, "national_fixed", 20)
        line_ids = list(cfg.lines)
        times = []
        for _ in range(args.n):
            line, number = random.choice(line_ids), random.choice(NUMBERS)
            t = time.perf_counter()
            decide(cfg, line, number, at, store.used)
            times.append((time.perf_counter() - t) * 1e6)
        times.sort()
        print(
            f"config: {args.lines} lines, {args.profiles} profiles, "
            f"{cfg_path.stat().st_size // 1024} KiB YAML, validated in {load_s:.2f} s"
        )
        print(
            f"decide() in process, {args.n} decisions: p50 {statistics.median(times):.0f} us, "
            f"p99 {times[int(0.99 * len(times))]:.0f} us"
        )
        walls = []
        for _ in range(5):
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
            )
            walls.append(time.perf_counter() - t)
        print(
            f"ponte dial-check command (load + validate + decide): "
            f"median {statistics.median(walls):.2f} s over 5 runs"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
