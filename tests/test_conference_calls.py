"""Moderator and participant keys, PIN levels and billing, with real calls,
checked by what callers hear and by the records written."""

from __future__ import annotations

import sqlite3

from tests import audio
from tests.test_spine_calls import hash_time, window

LEVEL3 = [{"name": "demo", "participant_pin": "1111", "moderator_pin": "9999", "security_level": 3}]


def digits_time(report: dict, digit: str, nth: int = -1) -> float:
    return [t for d, _m, t in report["digits_sent"] if d == digit][nth]


def seg(phone, report, start, end):
    samples, rate = audio.load(phone.record)
    return audio.segment(samples, rate, *window(report, start, end)), rate


def test_star6_mutes_a_caller_for_the_others(server, phone):
    mod = phone(server.uri("conf"), "wait_media 5; dtmf 9999#; tone 700; wait 7; hangup")
    part = phone(
        server.uri("conf"), "wait_media 5; dtmf 1111#; tone 440; wait 2.5; dtmf *6; wait 4; hangup"
    )
    rm, rp = mod.result(), part.result()
    star = digits_time(rp, "*")
    before, rate = seg(mod, rm, hash_time(rp) + 0.6, star - 0.1)
    after, _ = seg(mod, rm, star + 0.8, rp["hangup_sent_at"] - 0.2)
    assert audio.band_fraction(before, rate, 440) > 0.5
    assert audio.rms(after) < 0.01, "the muted caller is not heard"
    # The muted caller still hears the moderator.
    heard, _ = seg(part, rp, star + 2.5, rp["hangup_sent_at"] - 0.2)
    assert audio.band_fraction(heard, rate, 700) > 0.5
    assert "key action=mute room=demo" in server.log()


def test_star5_lecture_mode_leaves_only_the_moderator_heard(server, phone):
    mod = phone(
        server.uri("conf"), "wait_media 5; dtmf 9999#; tone 700; wait 2.5; dtmf *5; wait 5; hangup"
    )
    p1 = phone(server.uri("conf"), "wait_media 5; dtmf 1111#; tone 440; wait 10; hangup")
    p2 = phone(server.uri("conf"), "wait_media 5; dtmf 1111#; tone 600; wait 10; hangup")
    rm, r1, r2 = mod.result(), p1.result(), p2.result()
    star = digits_time(rm, "*")
    joined = max(hash_time(r) for r in (rm, r1, r2)) + 0.6
    before, rate = seg(p1, r1, joined, star - 0.1)
    assert audio.band_fraction(before, rate, 600) > 0.2
    # After the moderator's own "lecture mode" prompt: silence from the participants.
    mod_after, _ = seg(mod, rm, star + 4.5, rm["hangup_sent_at"] - 0.2)
    assert audio.rms(mod_after) < 0.01, "the moderator hears no participant in lecture mode"
    p1_after, _ = seg(p1, r1, star + 3.5, rm["hangup_sent_at"] - 0.2)  # after "lecture mode"
    assert audio.band_fraction(p1_after, rate, 700) > 0.5
    assert audio.band_fraction(p1_after, rate, 600) < 0.02


def test_star7_locks_the_room_and_a_right_pin_is_refused(server_factory, phone):
    srv = server_factory(rooms=LEVEL3)
    mod = phone(
        srv.uri("conf-en"),
        "wait_media 5; dtmf 9999#; wait 0.5; dtmf *7; wait 8; hangup",
        record=False,
    )
    late = phone(srv.uri("conf-en"), "wait_media 5; wait 3.5; dtmf 1111#; wait_end 15")
    r = late.result()
    mod.result()
    assert r["hung_up_by"] == "remote"
    tail, rate = seg(late, r, hash_time(r) + 0.2, r["ended_at"])
    assert audio.speech_like(tail, rate), "the caller heard 'the conference is locked'"
    log = srv.log()
    assert "key action=lock room=demo" in log and "pin refused: conference_locked" in log


def test_participant_star7_does_nothing(server_factory, phone):
    srv = server_factory(rooms=LEVEL3)
    mod = phone(srv.uri("conf-en"), "wait_media 5; dtmf 9999#; wait 8; hangup", record=False)
    part = phone(srv.uri("conf-en"), "wait_media 5; dtmf 1111#; wait 0.5; dtmf *7; wait 6; hangup")
    late = phone(
        srv.uri("conf-en"),
        "wait_media 5; wait 4; dtmf 1111#; tone 440; wait 2; hangup",
        record=False,
    )
    rp = part.result()
    rl = late.result()
    mod.result()
    assert rl["hung_up_by"] == "local", "the room was not locked"
    heard, rate = seg(part, rp, digits_time(rp, "7") + 0.1, digits_time(rp, "7") + 2.0)
    assert audio.speech_like(heard, rate), "the participant heard 'not available'"
    assert "key action=lock refused" in srv.log()
    assert srv.log().count("join room=demo") == 3


def test_level1_hours_and_expiry_with_a_moved_clock(server_factory, phone):
    rooms = [
        {
            "name": "early",
            "participant_pin": "1111",
            "moderator_pin": "9999",
            "security_level": 1,
            "issued": "2026-06-01",
        },
        {
            "name": "old",
            "participant_pin": "2222",
            "moderator_pin": "8888",
            "security_level": 2,
            "issued": "2025-11-01",
        },
        {
            "name": "fine",
            "participant_pin": "3333",
            "moderator_pin": "7777",
            "security_level": 2,
            "issued": "2026-06-01",
        },
    ]
    srv = server_factory(rooms=rooms, env={"PONTE_NOW": "2026-11-23T03:00:00-03:00"})
    script = "wait_media 5; dtmf {}#; wait_end 12"
    early = phone(srv.uri("conf-en"), script.format("9999"))
    old = phone(srv.uri("conf-en"), script.format("8888"), record=False)
    fine = phone(srv.uri("conf-en"), "wait_media 5; dtmf 7777#; wait 6; hangup", record=False)
    re_, ro, rf = early.result(), old.result(), fine.result()
    assert re_["hung_up_by"] == "remote" and ro["hung_up_by"] == "remote"
    assert rf["hung_up_by"] == "local"
    tail, rate = seg(early, re_, hash_time(re_) + 0.2, re_["ended_at"])
    assert audio.speech_like(tail, rate), "'this PIN is not valid at this time' was heard"
    log = srv.log()
    assert "outside the hours of a level-1 PIN" in log and "expired on 2026-11-01" in log
    assert "join room=fine" in log


def test_counter_pin(server_factory, phone):
    rooms = [
        {"name": "demo", "participant_pin": "1111", "moderator_pin": "9999", "counter_pin": "4321"}
    ]
    srv = server_factory(rooms=rooms)
    ok = phone(
        srv.uri("conf"),
        "wait_media 5; dtmf 9999#; wait 0.5; dtmf 4321#; wait 2; hangup",
        record=False,
    )
    bad = phone(
        srv.uri("conf"),
        "wait_media 5; dtmf 9999#; wait 0.5; dtmf 1234#; wait 2; hangup",
        record=False,
    )
    assert ok.result()["hung_up_by"] == "local" and bad.result()["hung_up_by"] == "local"
    log = srv.log()
    assert log.count("counter-pin ok") == 1 and log.count("counter-pin failed") == 1
    assert log.count("join room=demo role=moderator") == 1


def test_names_are_recorded_announced_and_rolled_call(server_factory, phone):
    rooms = [
        {"name": "demo", "participant_pin": "1111", "moderator_pin": "9999", "entry_signal": "name"}
    ]
    srv = server_factory(rooms=rooms)
    # Each caller "says" its name as a tone while the recorder runs.
    mod = phone(
        srv.uri("conf-en"),
        "wait_media 5; dtmf 9999#; tone 850; wait 7; tone 0; wait 2; dtmf *8; wait 6; hangup",
    )
    part = phone(
        srv.uri("conf-en"),
        "wait_media 5; wait 3; dtmf 1111#; tone 950; wait 6; tone 0; wait 8; hangup",
        record=False,
    )
    rm = mod.result()
    rp = part.result()
    # The participant's name (950 Hz) was announced to the moderator on entry...
    announce, rate = seg(mod, rm, hash_time(rp) + 3.0, hash_time(rp) + 7.5)
    assert audio.band_fraction(announce, rate, 950) > 0.05
    # ... and played again by the roll call *8.
    roll, _ = seg(mod, rm, digits_time(rm, "8") + 0.2, digits_time(rm, "8") + 3.5)
    assert audio.band_fraction(roll, rate, 950) > 0.3
    assert srv.log().count("name recorded") == 2


def test_star4_doubles_what_the_caller_hears(server, phone):
    mod = phone(
        server.uri("conf"), "wait_media 5; dtmf 9999#; tone 700; wait 8; hangup", record=False
    )
    part = phone(server.uri("conf"), "wait_media 5; dtmf 1111#; wait 3; dtmf *4; wait 4; hangup")
    rp = part.result()
    mod.result()
    star = digits_time(rp, "*")
    normal, rate = seg(part, rp, star - 1.5, star - 0.1)
    louder, _ = seg(part, rp, rp["hangup_sent_at"] - 1.5, rp["hangup_sent_at"] - 0.1)
    ratio = audio.rms(louder) / audio.rms(normal)
    assert 1.7 < ratio < 2.3, ratio  # +6 dB


def test_star0_speaks_the_help(server, phone):
    p = phone(server.uri("conf-en"), "wait_media 5; dtmf 9999#; wait 0.5; dtmf *0; wait 6; hangup")
    r = p.result()
    heard, rate = seg(p, r, digits_time(r, "0", -1) + 0.3, r["hangup_sent_at"])
    assert audio.speech_like(heard, rate)
    assert "key action=help room=demo" in server.log()


def test_billing_rows_match_the_real_durations(server, phone):
    mod = phone(server.uri("conf"), "wait_media 5; dtmf 9999#; wait 6; hangup", record=False)
    part = phone(server.uri("conf"), "wait_media 5; dtmf 1111#; wait 3; hangup", record=False)
    rm, rp = mod.result(), part.result()
    db = sqlite3.connect(server.config["database"])
    db.row_factory = sqlite3.Row
    (session,) = db.execute("SELECT * FROM conference_sessions").fetchall()
    legs = {r["role"]: r for r in db.execute("SELECT * FROM conference_legs")}
    for role, r in (("moderator", rm), ("participant", rp)):
        real = r["hangup_sent_at"] - hash_time(r)
        assert abs(legs[role]["seconds"] - real) < 1.0, (role, legs[role]["seconds"], real)
    assert session["legs"] == 2 and session["peak_members"] == 2
    assert session["billed_minutes"] == 2 and session["ended_at"] is not None
    assert legs["participant"]["ended_by"] == "caller"


def test_reports_print_sessions_and_participants(server, phone):
    import csv
    import io
    import subprocess
    import sys

    from tests.harness import ROOT

    mod = phone(server.uri("conf"), "wait_media 5; dtmf 9999#; wait 2.5; hangup", record=False)
    part = phone(server.uri("conf"), "wait_media 5; dtmf 1111#; wait 1.5; hangup", record=False)
    mod.result(), part.result()
    base = [sys.executable, "-m", "ponte.cli", "report"]
    cfg = ["--config", str(server.config_path)]
    out = subprocess.run(
        [*base, "conferences", *cfg, "--csv", "--room", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["room"] == "demo" and row["legs"] == "2" and row["billed_minutes"] == "2"
    table = subprocess.run(
        [*base, "participants", row["id"], *cfg],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "moderator" in table and "participant" in table
    bad = subprocess.run(
        [*base, "conferences", *cfg, "--from", "yesterday"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "not a date" in bad.stderr


def test_roll_call_numbers_unnamed_callers_and_star9_stops_it(server, phone):
    mod = phone(
        server.uri("conf-en"),
        "wait_media 5; wait 1; dtmf 9999#; wait 2; dtmf *1; wait 3; dtmf *8; wait 1.5; "
        "dtmf *9; wait 4; hangup",
    )
    parts = [
        phone(server.uri("conf-en"), "wait_media 5; dtmf 1111#; wait 14; hangup", record=False)
        for _ in range(3)
    ]
    rm = mod.result()
    for p in parts:
        p.result()
    sent = rm["digits_sent"]
    star1, star8, star9 = (t for d, _m, t in sent if d == "*")
    refused, rate = seg(mod, rm, star1 + 0.3, star1 + 2.0)
    assert audio.speech_like(refused, rate), "*1 is reserved: 'not available'"
    rolling, _ = seg(mod, rm, star8 + 0.3, star9)
    assert audio.speech_like(rolling, rate), "the roll call speaks 'caller N'"
    # *9 acts after the 1 s wait for a possible *92; then the roll call is silent.
    stopped, _ = seg(mod, rm, star9 + 1.6, star9 + 3.5)
    assert audio.rms(stopped) < 0.01
    log = server.log()
    assert "key action=dial_out refused" in log and "key action=stop_roll_call" in log


def test_finished_legs_survive_kill_9(server, phone):
    import signal
    import sqlite3
    import time

    mod = phone(server.uri("conf"), "wait_media 5; dtmf 9999#; wait_end 30", record=False)
    short = phone(server.uri("conf"), "wait_media 5; dtmf 1111#; wait 1.5; hangup", record=False)
    short.result()
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    mod.proc.kill()
    db = sqlite3.connect(server.config["database"])
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT role, ended_by FROM conference_legs").fetchall()
    assert rows == [("participant", "caller")]
