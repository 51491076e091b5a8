"""Kamailio's call history survives a busy SQLite file (real calls, phones off the host).

Kamailio 5.6's db_sqlite gives its connections no busy timeout: a write that
meets another writer's lock fails at once ("database is locked") and acc's
row is lost. pbx/sqlite_busy.c, preloaded into Kamailio, gives every SQLite
connection Kamailio opens a busy timeout. Here a second writer holds acc's
file locked most of the time (1 s held, 0.25 s free, over and over: SQLite's
busy handler polls every 100 ms once it has waited a while, so it finds each
gap) while an extension call is answered and hung up (baresip behind the NAT
calls our softphone on the LAN; each hears the other's tone):
both acc rows land, the history row has the call's duration, and Kamailio
logged no locked database. Without the preload the BYE's row was lost in 4
runs of 4 (Kamailio: "database is locked"; 3 of 5 with 10 ms gaps).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from tests import audio
from tests.attack_helpers import wait_for
from tests.netns import APPLIANCE_IP, net_fixture  # noqa: F401
from tests.pbx_helpers import wait_registered
from tests.test_edge_calls import (
    ALL_PASSWORDS,
    PBX,
    _acc_rows,
    _wait_rows,
    appliance,
    heard,
    softphone,
)

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
    server_factory, phone, net, tmp_path
):
    """baresip behind the NAT (1001) calls our softphone on the LAN (1002);
    both hear each other, and the call ends while acc.db is held."""
    from tests.baresip import Baresip

    srv = appliance(server_factory, net)
    acc = Path(srv.config["state_dir"]) / "kamailio" / "acc.db"
    callee = softphone(
        phone, net.lan[1], "1002", "wait_media 8; tone 700; wait_end 30", extra=["--answer"]
    )
    wait_registered(srv, "1002")
    account = (
        f"<sip:1001@{APPLIANCE_IP}>;auth_pass={ALL_PASSWORDS['1001']};"
        f'outbound="sip:{PBX}";regint=60'
    )
    locker = _Locker(acc)
    with Baresip(net.nat[0], tmp_path / "baresip", account=account, tone_hz=440) as bs:
        bs.wait_event("REGISTER_OK")
        bs.dial("1002")
        bs.wait_event("CALL_ESTABLISHED")
        up = time.monotonic()
        # The INVITE's row lands first, on a free file; the BYE's must wait.
        wait_for(lambda: ("INVITE", "200") in _acc_rows(srv), 15, "the INVITE's acc row")
        locker.start()
        try:
            time.sleep(max(0.0, up + 4.0 - time.monotonic()))
            bs.hangup()
            bs.wait_event("CALL_CLOSED")
            talked = time.monotonic() - up
            rb = callee.result()
            time.sleep(HOLD_S + 0.5)  # the BYE's write, if it waits, gets its gap
        finally:
            locker.stop.set()
            locker.join(10)
        heard_path = bs.recording()
    assert "error" not in rb, rb
    assert locker.holds >= 3, locker.holds
    # Both heard each other: baresip the softphone's 700 Hz, the softphone 440 Hz.
    samples, rate = audio.load(heard_path)
    middle = audio.segment(samples, rate, 1.0, talked - 0.5)
    assert audio.band_fraction(middle, rate, 700) > 0.2, audio.band_fraction(middle, rate, 700)
    assert heard(callee, rb, rb["media_at"] + 1.0, rb["ended_at"] - 0.5, 440) > 0.2
    (row,) = _wait_rows(srv, 1, call_type="extension")
    assert (row["origin"], row["destination"], row["disposition"]) == ("1001", "1002", "answered")
    assert abs(row["duration"] - talked) < 1.0, (row, talked)
    assert _acc_rows(srv) == [("INVITE", "200"), ("BYE", "200")]
    kamailio_log = (Path(srv.config["state_dir"]) / "kamailio" / "kamailio.log").read_text()
    assert "database is locked" not in kamailio_log
