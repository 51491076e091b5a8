"""Kamailio's call history survives a busy SQLite file (real calls, phones off the host).

Kamailio 5.6's db_sqlite gives its connections no busy timeout: a write that
meets another writer's lock fails at once ("database is locked") and acc's
row is lost. pbx/sqlite_busy.c, preloaded into Kamailio, gives every SQLite
connection Kamailio opens a busy timeout. Here a second writer holds acc's
file locked most of the time (1 s held, 0.25 s free, over and over: SQLite's
busy handler polls every 100 ms once it has waited a while, so it finds each
gap) while an extension call between two LAN phones is answered and hung up:
both acc rows land, the history row has the call's duration, and Kamailio
logged no locked database. Without the preload the BYE's row was lost in 4
runs of 4 (Kamailio: "database is locked"; 3 of 5 with 10 ms gaps).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from tests.netns import net_fixture  # noqa: F401
from tests.pbx_helpers import wait_registered
from tests.test_edge_calls import _acc_rows, _wait_rows, appliance, softphone

HOLD_S = 1.0  # well under the preload's 2 s busy timeout
GAP_S = 0.25


class _Locker(threading.Thread):
    """Another writer that keeps acc's file write-locked (BEGIN IMMEDIATE)
    HOLD_S at a time, GAP_S apart, until stopped."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.holds = 0

    def run(self) -> None:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            while not self.stop.is_set():
                db.execute("BEGIN IMMEDIATE")
                self.holds += 1
                self.stop.wait(HOLD_S)
                db.execute("COMMIT")
                time.sleep(GAP_S)
        finally:
            db.close()


def test_the_history_keeps_a_call_that_ended_while_another_writer_held_the_file(
    server_factory, phone, net
):
    srv = appliance(server_factory, net)
    acc = Path(srv.config["state_dir"]) / "kamailio" / "acc.db"
    callee = softphone(
        phone, net.lan[1], "1002", "wait_media 8; tone 700; wait 6; hangup", extra=["--answer"]
    )
    wait_registered(srv, "1002")
    caller = softphone(phone, net.lan[0], "1001", "wait_media 8; tone 440; wait 3; hangup", "1002")
    # The INVITE's row lands first, on a free file; the BYE's must wait.
    deadline = time.monotonic() + 15
    while ("INVITE", "200") not in _acc_rows(srv):
        assert time.monotonic() < deadline, _acc_rows(srv)
        time.sleep(0.05)
    locker = _Locker(acc)
    locker.start()
    try:
        ra = caller.result()
        rb = callee.result()
        time.sleep(HOLD_S + 0.5)  # the BYE's write, if it waits, gets its gap
    finally:
        locker.stop.set()
        locker.join(10)
    assert "error" not in ra and "error" not in rb, (ra, rb)
    assert locker.holds >= 3, locker.holds
    (row,) = _wait_rows(srv, 1, call_type="extension")
    assert (row["origin"], row["destination"], row["disposition"]) == ("1001", "1002", "answered")
    talked = ra["hangup_sent_at"] - ra["media_at"]
    assert abs(row["duration"] - talked) < 1.0, (row, talked)
    assert _acc_rows(srv) == [("INVITE", "200"), ("BYE", "200")]
    kamailio_log = (Path(srv.config["state_dir"]) / "kamailio" / "kamailio.log").read_text()
    assert "database is locked" not in kamailio_log
