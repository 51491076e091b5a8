"""Dial-out (*1, *2, *3) and blast dial-out (*92) with real calls. The
guests are a softphone answering as the trunk provider (so what each side
hears can be checked), or the SIPp provider where only pacing matters."""

from __future__ import annotations

from tests import audio, ports
from tests.harness import report
from tests.pbx_helpers import busiest_window, pbx_overrides, start_provider
from tests.test_spine_calls import window

ROOM = {"name": "demo", "participant_pin": "1111", "moderator_pin": "9999", "security_level": 3}
PROFILE_LINES = {
    "lines": {"room:demo": {"area_code": "11", "profile": "dial"}},
    "profiles": {
        "dial": {
            "limits": {"local": "unlimited", "national": "unlimited", "international": "blocked"},
            "deny_numbers": ["+552133339999"],
        }
    },
}


def config(trunk_port: int, registration: bool = False, room: dict | None = None) -> dict:
    cfg = pbx_overrides(trunk_port)
    cfg["trunks"][0]["registration"] = registration
    cfg["rooms"] = [room or ROOM]
    cfg.update(PROFILE_LINES)
    return cfg


def guest_phone(phone, port: int, script: str, calls: int = 1, record: bool = True):
    return phone(
        "",
        script,
        record=record,
        bind="127.0.0.1",
        calls=calls,
        extra=["--answer", "--port", str(port), "--max-seconds", "60"],
    )


def mark(r: dict, name: str) -> float:
    return r["marks"][name]


def test_dial_out_talks_privately_then_star2_brings_the_guest_in(server_factory, phone):
    port = ports.allocate(1)
    srv = server_factory(**config(port))
    guest = guest_phone(phone, port, "wait_media 5; tone 900; wait_end 30")
    mod = phone(
        srv.uri("conf-en"),
        "wait_media 5; dtmf 9999#; tone 440; wait 1; dtmf *1; wait 1; "
        "dtmf 212133334444#; wait 1; dtmf 1; mark confirmed; wait 5; mark star2; "
        "dtmf *2; wait 4; mark bye; hangup",
    )
    part = phone(
        srv.uri("conf-en"), "wait_media 5; wait 0.5; dtmf 1111#; tone 700; wait 18; hangup"
    )
    rm, rp, rg = mod.result(), part.result(), guest.result()
    assert rg["dialed"] == "0212133334444"
    private = (mark(rm, "confirmed") + 1.5, mark(rm, "star2") - 0.2)
    m_priv, rate = audio.load(mod.record)
    heard = audio.segment(m_priv, rate, *window(rm, *private))
    assert audio.band_fraction(heard, rate, 900) > 0.3, "the moderator hears the guest"
    assert audio.band_fraction(heard, rate, 700) < 0.02, "and not the room"
    p_all, _ = audio.load(part.record)
    p_priv = audio.segment(p_all, rate, *window(rp, *private))
    for hz in (440, 900):
        assert audio.band_fraction(p_priv, rate, hz) < 0.02, "the room does not hear them"
    after = (mark(rm, "star2") + 1.0, mark(rm, "bye") - 0.2)
    p_after = audio.segment(p_all, rate, *window(rp, *after))
    assert audio.band_fraction(p_after, rate, 900) > 0.1, "the guest is in the room"
    assert audio.band_fraction(p_after, rate, 440) > 0.1, "and so is the moderator"
    g_all, _ = audio.load(guest.record)
    g_after = audio.segment(g_all, rate, *window(rg, *after))
    assert audio.band_fraction(g_after, rate, 700) > 0.1, "the guest hears the participant"
    import sqlite3

    db = sqlite3.connect(srv.config["database"])
    assert ("dial-out",) in db.execute("SELECT joined_by FROM conference_legs").fetchall()


def test_star3_drops_the_guest_and_a_guest_hanging_up_first(server_factory, phone):
    port = ports.allocate(1)
    srv = server_factory(**config(port))
    guests = guest_phone(
        phone, port, "wait_media 5; tone 900; wait 3; hangup", calls=2, record=False
    )
    mod = phone(
        srv.uri("conf-en"),
        "wait_media 5; dtmf 9999#; tone 440; dtmf *1; wait 1; dtmf 212133334444#; "
        "wait 0.5; dtmf 1; wait 1.5; dtmf *3; mark star3; wait 3; "
        "dtmf *1; wait 1; dtmf 212133334444#; wait 0.5; dtmf 1; wait 7; mark end; hangup",
    )
    part = phone(srv.uri("conf-en"), "wait_media 5; dtmf 1111#; wait 22; hangup")
    rm, rp = mod.result(), part.result()
    g1, g2 = guests.result()
    assert g1["hung_up_by"] == "remote", "*3 hung up the first guest"
    assert g2["hung_up_by"] == "local", "the second guest hung up first"
    log = srv.log()
    assert "(dialout_back)" in log and "(dialout_guest_left)" in log
    # Back in the room after the second guest left: the participant hears the moderator.
    samples, rate = audio.load(part.record)
    back = audio.segment(samples, rate, *window(rp, g2["ended_at"] + 0.8, mark(rm, "end")))
    assert audio.band_fraction(back, rate, 440) > 0.3


def test_dial_out_refused_by_the_room_profile_and_by_level_1(server_factory, phone, tmp_path):
    provider = start_provider(tmp_path)
    try:
        srv = server_factory(**config(provider.port, registration=True))
        mod = phone(
            srv.uri("conf-en"),
            "wait_media 5; dtmf 9999#; dtmf *1; wait 1; dtmf 212133339999#; "
            "wait 0.5; dtmf 1; mark refused; wait 4; hangup",
        )
        r = mod.result()
        samples, rate = audio.load(mod.record)
        said = audio.segment(
            samples, rate, *window(r, mark(r, "refused") + 0.2, mark(r, "refused") + 3.0)
        )
        assert audio.speech_like(said, rate), "the profile's reason was spoken"
        assert not [e for _, e in provider.events() if e.startswith("INVITE")]
        assert "rule=deny_list" in srv.log() and "(refused_number_blocked)" in srv.log()
        # A busy guest: the moderator is told and goes back to the room.
        busy = phone(
            srv.uri("conf-en"),
            "wait_media 5; dtmf 9999#; dtmf *1; wait 1; dtmf 212133334860#; "
            "wait 0.5; dtmf 1; wait 3; hangup",
            record=False,
        )
        busy.result()
        assert "(dialout_busy)" in srv.log()
    finally:
        provider.stop()
    lvl1 = dict(ROOM, security_level=1)
    srv1 = server_factory(
        **config(ports.allocate(1), room=lvl1), env={"PONTE_NOW": "2026-11-23T10:00:00-03:00"}
    )
    phone(
        srv1.uri("conf-en"), "wait_media 5; dtmf 9999#; dtmf *1; wait 2; hangup", record=False
    ).result()
    assert "key action=dial_out refused" in srv1.log()


def blast_room(n: int, numbers_start: int = 1) -> dict:
    numbers = [f"02121333300{numbers_start + i:02d}" for i in range(n)]
    return dict(
        ROOM,
        blast={"numbers": numbers, "message": "You are invited to a meeting. Joining you now."},
    )


def test_blast_paces_8_calls_plays_the_message_and_joins_them(server_factory, phone):
    port = ports.allocate(1)
    srv = server_factory(**config(port, room=blast_room(8)))
    callees = guest_phone(phone, port, "wait_media 5; wait 11; hangup", calls=8)
    mod = phone(
        srv.uri("conf-en"),
        "wait_media 5; dtmf 9999#; tone 440; wait 0.5; dtmf *92; mark blast; wait 14; hangup",
        record=False,
    )
    rm = mod.result()
    reports = callees.result(timeout=90)
    missing = [
        {k: r.get(k) for k in ("index", "error", "code", "reason", "started_at", "ended_at")}
        for r in reports
        if "media_at" not in r
    ]
    assert len(reports) == 8 and not missing, missing
    starts = [r["started_at"] for r in reports]
    assert busiest_window(starts, 1.0) <= 2, sorted(starts)
    for i in range(len(reports)):
        samples, rate = audio.load(callees.record.parent / f"phone0-{i}.wav")
        msg = audio.segment(samples, rate, 0.2, 2.0)
        assert audio.speech_like(msg, rate), f"callee {i} heard the invitation"
        late = audio.segment(samples, rate, len(samples) / rate - 3.0, len(samples) / rate - 0.5)
        assert audio.band_fraction(late, rate, 440) > 0.2, f"callee {i} is in the room"
    import sqlite3

    db = sqlite3.connect(srv.config["database"])
    n = db.execute("SELECT COUNT(*) FROM conference_legs WHERE joined_by = 'blast'").fetchone()
    assert n[0] == 8
    assert rm["hung_up_by"] == "local"
    # Each blast call is in the call history, from the room's line.
    # (An attempt the edge's pacing refused, tried again, is in the history too.)
    every = report(srv, "calls", "--line", "room:demo")
    calls = [c for c in every if c["disposition"] == "answered"]
    assert len(calls) == 8 and len(every) <= 8 + 3, every
    assert all(c["origin"] == "room:demo" and c["trunk"] and c["duration"] > 5 for c in calls)


def test_star3_mid_blast_stops_the_rest(server_factory, phone, tmp_path):
    provider = start_provider(tmp_path)
    try:
        srv = server_factory(**config(provider.port, registration=True, room=blast_room(8)))
        mod = phone(
            srv.uri("conf-en"),
            "wait_media 5; dtmf 9999#; wait 0.5; dtmf *92; wait 1.6; dtmf *3; wait 5; hangup",
            record=False,
        )
        mod.result()
        invites = [e for _, e in provider.events() if e.startswith("INVITE")]
        assert 2 <= len(invites) <= 4, invites
        assert "blast in room=demo cancelled" in srv.log()
    finally:
        provider.stop()
