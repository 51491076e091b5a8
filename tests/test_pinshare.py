"""One PIN guard for every node (ponte/pinshare.py, issue 18): wrong PINs
keyed on two nodes sharing a PostgreSQL add up to one count and one lockout,
a restart reloads the window on both backends, and rows too old to count
are dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.guard import NUMBER_LOCKED, SOURCE_LOCKED, PinGuard
from ponte.pinshare import SharedPinGuard
from ponte.stores import Stores

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def node(spec: str, tmp: Path, name: str, clock: Clock) -> SharedPinGuard:
    state = tmp / f"state-{name}" if "://" not in spec else Path("/nonexistent")
    stores = Stores(spec, state, node=name)
    stores.open()
    return SharedPinGuard(PinGuard(limit=6, window=600, lockout=900, per_source=3), stores, clock)


def test_two_nodes_count_one_budget_and_lock_together(pg_url: str, tmp_path: Path) -> None:
    clock = Clock()
    a, b = node(pg_url, tmp_path, "a", clock), node(pg_url, tmp_path, "b", clock)
    # 3 wrong PINs on each node, from two caller IDs, on one number: 6 in all.
    for _ in range(3):
        clock.t += 1
        a.wrong_pin("4004", "cid:5551")
        clock.t += 1
        verdict = b.wrong_pin("4004", "cid:5552")
    assert verdict.number_locked, "the 6th wrong PIN, on b, spends the number's budget"
    # a never saw the last three itself, yet it refuses both the number and the sources.
    assert a.number_locked("4004")
    assert a.admit("4004", "cid:5551") == SOURCE_LOCKED
    assert a.admit("4004", "cid:7777") == NUMBER_LOCKED
    clock.t += 901
    assert a.admit("4004", "cid:7777") is None and b.admit("4004", "cid:5551") is None


def test_a_restart_forgets_no_attack(records_spec: str, tmp_path: Path) -> None:
    clock = Clock()
    first = node(records_spec, tmp_path, "a", clock)
    for _ in range(6):
        clock.t += 1
        first.wrong_pin("4004", "cid:5551")
    assert first.stores.writer.flush()
    again = node(records_spec, tmp_path, "a", clock)  # the same node, restarted
    assert again.admit("4004", "cid:5551") == SOURCE_LOCKED
    assert again.number_locked("4004")


@pytest.mark.parametrize("gone", [True, False])
def test_rows_too_old_to_count_are_dropped(records_spec: str, tmp_path: Path, gone: bool) -> None:
    clock = Clock()
    g = node(records_spec, tmp_path, "a", clock)
    g.wrong_pin("4004", "cid:5551")
    clock.t += 600 + 900 + (1 if gone else -60)
    g._expired_at = float("-inf")  # expiry runs at most once a minute; make it due
    g.wrong_pin("4004", "cid:5552")
    rows = g.stores.guard.since(0, 0)
    assert [r.source for r in rows] == (["cid:5552"] if gone else ["cid:5551", "cid:5552"])
