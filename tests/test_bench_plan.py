"""The bench runner's plan: an Opus-only run (DTX, or another encoder
complexity) measures only the Opus series, and passes its setting to each."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import runner  # noqa: E402


def test_an_opus_complexity_run_plans_only_the_opus_series_with_that_complexity():
    _fixed, capacity = runner.plan(False, label="c1", direct=True, opus_complexity=1)
    assert [j.name for j in capacity] == [
        "legs opus16 room 10 direct c1",
        "legs opus16 room 100 direct c1",
    ]
    for job in capacity:
        args = job.args
        assert args[args.index("--opus-complexity") + 1] == "1"
        assert "--opus-dtx" not in args


def test_a_default_run_plans_every_codec_at_the_servers_own_complexity():
    _fixed, capacity = runner.plan(False, label="after")
    assert {j.args[j.args.index("--codec") + 1] for j in capacity} == {"g711", "g722", "opus16"}
    assert not any("--opus-complexity" in j.args for j in capacity)
