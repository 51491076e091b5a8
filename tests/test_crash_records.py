"""Records of calls a crash cut off (issue 23), on the stores alone.

A call's record exists from answer and a room leg's from its join, both
checkpointed; a new process closes what the dead one left at the last
checkpoint, `ended_by: crash`. On both backends. The real kill -9 is in
tests/test_crash.py.
"""

from __future__ import annotations

from pathlib import Path

from bridge.billing import LegRecord
from ponte.records import CallRecord
from ponte.stores import Stores

T0 = 1_800_000_000.0


def stores(spec: str, node: str = "local") -> Stores:
    # A SQLite file's "created" marker sits beside it; PostgreSQL has none.
    state = Path(spec).parent / "state" if "://" not in spec else Path("/nonexistent")
    s = Stores(spec, state, node=node)
    s.open()
    return s


def answered(s: Stores, leg: int, at: float, **kw: object) -> CallRecord:
    rec = CallRecord(leg, "1001", "conf", at - 2, call_type="conference", **kw)  # type: ignore[arg-type]
    rec.answered = at
    s.calls.call_answered(s.node, rec)
    return rec


def test_a_crash_leaves_rows_closed_at_the_last_checkpoint(records_spec: str) -> None:
    old = stores(records_spec)
    answered(old, 1, T0)
    answered(old, 2, T0 + 10, trunk="provider1")
    done = answered(old, 3, T0)
    sid = old.billing.new_session_id()
    old.billing.open_session("demo", T0, sid)
    for leg in (1, 2):
        old.billing.leg_joined(
            "local", LegRecord(sid, leg, f"100{leg}", "moderator", None, T0, 0, "")
        )
    old.checkpoint(T0 + 30)
    # One call ended normally: its row, and no live row left behind.
    done.ended_by, done.disposition = "caller", "answered"
    old.calls.call_ended(done.row(T0 + 31), "local")
    old.checkpoint(T0 + 40)

    new = stores(records_spec)  # the restart
    assert new.close_crashed() == (2, 2, 1)
    rows = {r["leg"]: r for r in new.calls.call_rows()}
    assert rows[1]["ended_by"] == "crash" and rows[1]["duration"] == 40
    assert rows[2]["duration"] == 30 and rows[2]["trunk"] == "provider1"
    assert rows[3]["ended_by"] == "caller" and rows[3]["duration"] == 31
    assert all(r["disposition"] == "answered" for r in rows.values())
    (session,) = list(new.billing.sessions())
    assert session["ended_by"] == "crash" and session["legs"] == 2
    assert session["participant_minutes"] == round(80 / 60, 2) and session["billed_minutes"] == 2
    assert session["ended_at"].startswith("2027-01-15T08:00:40")
    assert {leg["ended_by"] for leg in new.billing.legs(session["id"])} == {"crash"}
    # Nothing is closed twice.
    assert stores(records_spec).close_crashed() == (0, 0, 0)


def test_a_node_closes_only_its_own_calls(records_spec: str) -> None:
    a, b = stores(records_spec, "a"), stores(records_spec, "b")
    answered(a, 1, T0)
    answered(b, 1, T0)
    sid = b.billing.new_session_id()
    b.billing.open_session("demo", T0, sid)
    b.billing.leg_joined("b", LegRecord(sid, 1, "1001", "moderator", None, T0, 0, ""))
    assert stores(records_spec, "a").close_crashed() == (1, 0, 0)
    # b's room is still live: its session stays open.
    (session,) = list(a.billing.sessions())
    assert session["ended_at"] is None
    assert stores(records_spec, "b").close_crashed() == (1, 1, 1)


def test_a_clean_run_leaves_nothing_to_close(records_spec: str) -> None:
    s = stores(records_spec)
    rec = answered(s, 1, T0)
    sid = s.billing.new_session_id()
    s.billing.open_session("demo", T0, sid)
    joined = LegRecord(sid, 1, "1001", "moderator", None, T0, T0 + 5, "caller")
    s.billing.leg_joined("local", joined)
    s.billing.leg_ended(joined, "local")
    s.billing.close_session(sid, T0 + 5)
    s.calls.call_ended(rec.row(T0 + 5), "local")
    assert stores(records_spec).close_crashed() == (0, 0, 0)
    (session,) = list(s.billing.sessions())
    assert session["ended_by"] == "empty"
