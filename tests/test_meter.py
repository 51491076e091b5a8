"""Metering a shared quota (lines/meter.py) against the records store, on
both backends: near its limit a pool is flushed at every tick, so two
app-server nodes drawing on one pool through one database cut their calls
within a tick of the limit, and no node's increment is lost."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from lines.meter import Cut, Flush, Meter
from lines.policy import Decision
from ponte.stores import Stores

CYCLE = dt.date(2026, 12, 1)
TYPES = frozenset({"local"})


def pool(limit: float) -> Decision:
    return Decision(
        "allow", "local", "ok", "quota", "5511", None, line="1001",
        usage_key="dept:sales", limit="local", limit_seconds=limit, cut=True,
    )  # fmt: skip


def node(spec: str, name: str, tmp: Path) -> Stores:
    state = tmp / f"state-{name}" if "://" not in spec else Path("/nonexistent")
    s = Stores(spec, state, node=name)
    s.open()
    return s


def run(meters: dict[str, tuple[Meter, Stores]], until: float) -> dict[str, float]:
    """Tick every node when its meter asks (each on its own phase, as two
    processes would); carry out flushes; return the cut times."""
    cut: dict[str, float] = {}
    due = {name: 1.0 + 0.37 * i for i, name in enumerate(meters)}
    while len(cut) < len(meters):
        name = min(due, key=due.__getitem__)
        t = due[name]
        assert t < until, cut
        meter, stores = meters[name]
        actions = meter.tick(t)
        for action in actions:
            if isinstance(action, Cut) and name not in cut:
                cut[name] = t
                actions += meter.stop(action.call, t)
        for a in actions:
            if isinstance(a, Flush):
                stores.writer.write(stores.usage.add, a.key, a.cycle, a.call_type, a.seconds)
        due[name] = t + meter.next_tick() if name not in cut else float("inf")
    return cut


def test_a_pool_near_its_limit_is_flushed_every_tick(tmp_path: Path) -> None:
    stores = node(str(tmp_path / "p.db"), "a", tmp_path)
    meter = Meter(stores.used)
    meter.start(1, pool(100), CYCLE, TYPES, 0.0)
    flushes = []
    for t in range(1, 60):
        for a in meter.tick(float(t)):
            if isinstance(a, Flush):
                flushes.append(t)
                stores.usage.add(a.key, a.cycle, a.call_type, a.seconds)
    # Far from the limit every 10 s; from 40 s used (60 s left) every second.
    assert flushes == [10, 20, 30, *range(40, 60)]


def test_two_nodes_on_one_pool_cut_within_a_tick_of_the_limit(
    records_spec: str, tmp_path: Path
) -> None:
    a, b = node(records_spec, "a", tmp_path), node(records_spec, "b", tmp_path)
    meters = {"a": (Meter(a.used), a), "b": (Meter(b.used), b)}
    for leg, (meter, _) in enumerate(meters.values(), 1):
        meter.start(leg, pool(120), CYCLE, TYPES, 0.0)
    cut = run(meters, until=300)
    assert set(cut) == {"a", "b"}, "both nodes cut their call"
    total = a.usage.used("dept:sales", CYCLE, TYPES)
    # Every second counted once (no lost increment) ...
    assert total == cut["a"] + cut["b"]
    # ... and the pool overshot by at most a near-limit tick (0.25 s) per node.
    assert 120 <= total <= 120 + 2 * 0.25, (cut, total)
