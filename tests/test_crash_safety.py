"""Records survive what a real box throws at them: damaged or vanished
databases, a full disk, a dying proxy, and kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests import ports
from tests.pbx_helpers import EXTENSIONS, pbx_overrides, proxy


def test_corrupt_database_is_refused_and_left_untouched(server_factory, tmp_path):
    srv = server_factory()
    srv.stop()
    db = Path(srv.config["database"])
    garbage = b"this is not sqlite" * 100
    db.write_bytes(garbage)
    for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        extra.unlink(missing_ok=True)
    assert srv.restart() == 2
    assert "not a usable SQLite database" in srv.log()
    assert db.read_bytes() == garbage


def test_vanished_database_is_not_silently_recreated(server_factory, phone):
    srv = server_factory()
    phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; wait 1; hangup", record=False).result()
    srv.stop()
    db = Path(srv.config["database"])
    for f in db.parent.glob(db.name + "*"):
        f.unlink()
    assert srv.restart() == 2
    assert "is missing" in srv.log() and not db.exists()


def test_restart_after_kill_9_answers_calls_and_keeps_records(server_factory, phone):
    srv = server_factory()
    done = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; wait 1; hangup", record=False)
    done.result()
    live = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; wait_end 30", record=False)
    time.sleep(2)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    live.proc.kill()
    t0 = time.monotonic()
    assert srv.restart() == 0
    r = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; wait 1; hangup", record=False).result()
    assert r["hung_up_by"] == "local" and "confirmed_at" in r
    print(f"restart to a confirmed call: {r['confirmed_at'] - t0:.2f} s")
    db = sqlite3.connect(srv.config["database"])
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # The call cut by the kill is billed up to its last checkpoint (issue 23).
    legs = db.execute("SELECT ended_by FROM conference_legs ORDER BY id").fetchall()
    assert [e for (e,) in legs] == ["caller", "crash", "caller"], legs
    crashed = db.execute("SELECT COUNT(*) FROM calls WHERE ended_by = 'crash'").fetchone()[0]
    assert crashed == 1


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_keeps_calls_up_and_records_land_when_space_returns(
    server_factory, phone, small_disk
):
    srv = server_factory(database=str(small_disk / "ponte.db"))
    filler = small_disk / "filler"
    try:  # fill the disk to the last byte
        with filler.open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    mod = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; wait 3; hangup", record=False)
    part = phone(srv.uri("conf"), "wait_media 5; dtmf 1111#; wait 2; hangup", record=False)
    assert mod.result()["hung_up_by"] == "local" and part.result()["hung_up_by"] == "local"
    time.sleep(0.5)
    assert srv.log().count("cannot write call records") == 1  # once, not per write
    filler.unlink()
    deadline = time.monotonic() + 8
    legs = 0
    while time.monotonic() < deadline and legs < 2:
        time.sleep(0.5)
        db = sqlite3.connect(srv.config["database"])
        legs = db.execute("SELECT COUNT(*) FROM conference_legs").fetchone()[0]
        db.close()
    assert legs == 2
    assert "call records written again" in srv.log()


def test_kamailio_dying_is_noticed_and_restarted(server_factory, phone):
    srv = server_factory(**pbx_overrides())
    pid_file = Path(srv.config["state_dir"]) / "kamailio" / "kamailio.pid"
    old = int(pid_file.read_text())
    os.killpg(os.getpgid(old), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "kamailio died; restarting" not in srv.log():
        time.sleep(0.2)
    assert "kamailio died; restarting" in srv.log()
    time.sleep(1.0)
    pw = EXTENSIONS[0]["password"]
    r = phone(
        "",
        "",
        record=False,
        bind=ports.loopback_ip(),
        extra=["--register", f"1001:{pw}@{proxy(srv)}"],
    ).result()
    assert r["registration"]["code"] == 200
