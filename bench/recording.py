#!/usr/bin/env python3
"""What conference recording costs: the same G.711 legs series without and
with every room recording (its mix and a track per member), in one run.

Each series is bench/legs.py's (rooms of 10, every leg sending a tone, raw
probe legs timing each packet the server sends them). In the recording series
every room starts recording as soon as its members have joined, through the
control socket (the path `ponte room record-start` takes), so at each step
every room writes 1 + 10 WAV files. What it shows: the server's CPU with and
without, the bridge clock thread's CPU (the recorder ports only copy a frame
into a ring on its tick; the files are written by other threads), and the
probes' loss and largest gap (a clock held up by file I/O shows there).

    .venv/bin/python bench/recording.py [--steps 60,120,240] [--window 8]

Bounded: loopback only, the benches' port block, each series a time budget.
The last line is the `BENCH-RESULT` JSON that `bench/run` collects.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import common  # noqa: E402
import legs  # noqa: E402
from report_media import recording_section  # noqa: E402

MODES = ("none", "tracks")


def main() -> int:
    """Both series, their table, then the `BENCH-RESULT` line."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", default="60,120,240", help="legs at each step")
    ap.add_argument("--window", type=float, default=8.0, help="steady seconds measured")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds per series")
    args = ap.parse_args()
    common.graceful_sigterm()
    load0, t0 = common.loadavg(), time.monotonic()
    steps = [int(x) for x in args.steps.split(",")]
    series: list[dict[str, Any]] = []
    for mode in MODES:
        series.append(
            legs.series(
                "g711",
                10,
                steps,
                args.window,
                args.budget,
                common.prompt_cache(),
                record=mode,
            )
        )
    result = {"series": series}
    print("\n".join(recording_section({"bench": "recording", **result})))
    common.emit("recording", result, load0, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
