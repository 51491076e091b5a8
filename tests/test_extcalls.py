"""Pairing Kamailio's acc rows into extension-call history (ponte.extcalls),
on an acc file written here as Kamailio writes it.

The real-call side (two phones off the host calling through Kamailio, and the
history row they leave) is tests/test_edge_calls.py; these cover what a real
call cannot make happen on demand: a BYE row that Kamailio failed to write.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pbx.kamailio import init_acc_db
from ponte.extcalls import GONE_GRACE, RELAY_CHECK, AccReader


def _acc(path: Path, *rows: tuple[str, str, int, float]) -> None:
    """Append acc rows (method, Call-ID, code, time) from 1001 to 1002."""
    db = sqlite3.connect(path)
    with db:
        for method, callid, code, ts in rows:
            db.execute(
                "INSERT INTO acc (method, from_tag, to_tag, callid, sip_code, sip_reason, time,"
                " ts, src_user, dst_user, src_ip) VALUES (?, 'f', 't', ?, ?, 'x', '', ?,"
                " '1001', '1002', '198.51.100.10')",
                (method, callid, str(code), str(ts)),
            )
    db.close()


class Relay:
    """rtpengine's side of `relay_holds`: the calls it holds, and who asked."""

    def __init__(self, *calls: str) -> None:
        self.calls = set(calls)
        self.asked: list[str] = []
        self.answering = True

    def __call__(self, callid: str) -> bool | None:
        self.asked.append(callid)
        return (callid in self.calls) if self.answering else None


def test_a_call_whose_bye_row_was_lost_ends_when_the_relay_forgets_it(tmp_path):
    """An answered call with no BYE row held the watermark back for good (one
    write lost to 'database is locked' and every later row was read again each
    round, that call never in the history). Now it ends when rtpengine no
    longer holds it, once a late BYE row has had its grace."""
    acc = tmp_path / "acc.db"
    init_acc_db(acc)
    _acc(acc, ("INVITE", "lost-bye", 200, 1000.0), ("INVITE", "later", 486, 1001.0))
    reader, relay = AccReader(acc), Relay("lost-bye")

    rows, mark = reader.collect(0, 1005.0, relay)
    assert [r["sip_call_id"] for r in rows] == ["later"]
    assert mark == 0, "the answered call still up holds the watermark"

    relay.calls.clear()  # its BYE passed, and Kamailio failed to write it
    rows, mark = reader.collect(0, 1010.0, relay)
    assert [r["sip_call_id"] for r in rows] == ["later"] and mark == 0
    assert relay.asked == ["lost-bye"], "asked again only after RELAY_CHECK"

    gone_at = 1005.0 + RELAY_CHECK
    rows, mark = reader.collect(0, gone_at, relay)
    assert mark == 0, "a late BYE row is waited for"
    rows, mark = reader.collect(0, gone_at + GONE_GRACE, relay)
    lost = next(r for r in rows if r["sip_call_id"] == "lost-bye")
    assert lost["disposition"] == "answered"
    assert lost["duration"] == gone_at - 1000.0, "it ended when it was found gone"
    assert mark == 2, "the watermark moves on"


def test_a_late_bye_row_wins_over_the_relay(tmp_path):
    acc = tmp_path / "acc.db"
    init_acc_db(acc)
    _acc(acc, ("INVITE", "c1", 200, 1000.0))
    reader, relay = AccReader(acc), Relay()
    rows, mark = reader.collect(0, 1003.0, relay)
    assert rows == [] and mark == 0, "found gone, but the BYE row may be late"
    _acc(acc, ("BYE", "c1", 200, 1002.0))
    (row,), mark = reader.collect(0, 1004.0, relay)
    assert row["duration"] == 2.0 and mark == 2


def test_a_call_is_held_while_the_relay_holds_it_or_cannot_tell(tmp_path):
    acc = tmp_path / "acc.db"
    init_acc_db(acc)
    _acc(acc, ("INVITE", "up", 200, 1000.0))
    reader = AccReader(acc)
    relay = Relay("up")
    for at in range(0, 600, 2):
        assert reader.collect(0, 1000.0 + at, relay) == ([], 0)
    assert len(relay.asked) == 600 // RELAY_CHECK, "asked once per RELAY_CHECK"
    relay.answering = False  # rtpengine away: nothing is decided on no answer
    relay.calls.clear()
    for at in range(600, 700, 2):
        assert reader.collect(0, 1000.0 + at, relay) == ([], 0)
    assert reader.collect(0, 2000.0, None) == ([], 0), "no relay at all: held"
