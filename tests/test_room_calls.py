"""Conference rules with real calls: music until the moderator, tones, and
the room ending when the moderator leaves."""

from __future__ import annotations

from ivr.tones import MUSIC_NOTES
from tests import audio
from tests.test_spine_calls import hash_time, window


def music_share(samples, rate) -> float:
    return sum(audio.band_fraction(samples, rate, hz) for hz in MUSIC_NOTES)


def test_participant_hears_music_until_the_moderator_then_the_moderator(server, phone):
    part = phone(server.uri("conf"), "wait_media 5; dtmf 1111#; tone 440; wait 7; hangup")
    other = phone(server.uri("conf"), "wait_media 5; dtmf 1111#; tone 600; wait 7; hangup")
    mod = phone(server.uri("conf"), "wait_media 5; wait 3.5; dtmf 9999#; tone 700; wait 4; hangup")
    rp, ro, rm = part.result(), other.result(), mod.result()
    samples, rate = audio.load(part.record)
    # Before the moderator: music, and not the other waiting participant.
    before = audio.segment(samples, rate, *window(rp, hash_time(ro) + 0.5, hash_time(rm) - 0.1))
    assert len(before) > rate
    assert music_share(before, rate) > 0.5
    assert audio.band_fraction(before, rate, 600) < 0.02
    # After: the moderator and the other participant, and no more music.
    after = audio.segment(samples, rate, *window(rp, hash_time(rm) + 0.8, rm["hangup_sent_at"]))
    assert audio.band_fraction(after, rate, 700) > 0.2
    assert audio.band_fraction(after, rate, 600) > 0.2
    assert music_share(after, rate) < 0.05
    # The moderator, once in, hears the participants and never music.
    ms, _ = audio.load(mod.record)
    heard = audio.segment(ms, rate, *window(rm, hash_time(rm) + 0.8, rm["hangup_sent_at"]))
    assert audio.band_fraction(heard, rate, 440) > 0.2 and music_share(heard, rate) < 0.05


def test_joins_are_signalled_with_a_tone(server, phone):
    mod = phone(server.uri("conf"), "wait_media 5; dtmf 9999#; wait 4; hangup")
    part = phone(
        server.uri("conf"), "wait_media 5; wait 1.5; dtmf 1111#; wait 2; hangup", record=False
    )
    rm, rp = mod.result(), part.result()
    samples, rate = audio.load(mod.record)
    beep = audio.segment(samples, rate, *window(rm, hash_time(rp), hash_time(rp) + 0.8))
    assert audio.band_fraction(beep, rate, 1400) > 0.5


def test_moderator_leaving_ends_the_room_with_an_announcement(server, phone):
    mod = phone(server.uri("conf-en"), "wait_media 5; dtmf 9999#; tone 700; wait 2; hangup")
    parts = [
        phone(server.uri("conf-en"), "wait_media 5; dtmf 1111#; wait_end 20") for _ in range(2)
    ]
    rm = mod.result()
    for p in parts:
        r = p.result()
        assert r["hung_up_by"] == "remote" and "end_timeout" not in r, r
        samples, rate = audio.load(p.record)
        tail = audio.segment(samples, rate, *window(r, rm["hangup_sent_at"] + 0.2, r["ended_at"]))
        assert audio.speech_like(tail, rate), "the 'moderator has left' prompt was heard"
    assert server.log().count("sent away by the room (moderator_left)") == 2


def test_room_keeps_running_without_moderator_when_configured(server_factory, phone):
    rooms = [
        {
            "name": "demo",
            "participant_pin": "1111",
            "moderator_pin": "9999",
            "end_on_moderator_exit": False,
        }
    ]
    srv = server_factory(rooms=rooms)
    mod = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; wait 1; hangup", record=False)
    a = phone(srv.uri("conf"), "wait_media 5; dtmf 1111#; tone 440; wait 5; hangup")
    b = phone(srv.uri("conf"), "wait_media 5; dtmf 1111#; tone 900; wait 5; hangup")
    rm, ra, rb = mod.result(), a.result(), b.result()
    assert ra["hung_up_by"] == "local" and rb["hung_up_by"] == "local"
    samples, rate = audio.load(a.record)
    late = audio.segment(samples, rate, *window(ra, rm["ended_at"] + 0.8, ra["hangup_sent_at"]))
    assert audio.band_fraction(late, rate, 900) > 0.3


def test_caller_over_max_members_hears_full_and_is_hung_up(server_factory, phone):
    rooms = [{"name": "demo", "participant_pin": "1111", "moderator_pin": "9999", "max_members": 1}]
    srv = server_factory(rooms=rooms)
    mod = phone(srv.uri("conf-en"), "wait_media 5; dtmf 9999#; wait 6; hangup", record=False)
    late = phone(srv.uri("conf-en"), "wait_media 5; wait 1; dtmf 1111#; wait_end 15")
    r = late.result()
    mod.result()
    assert r["hung_up_by"] == "remote"
    samples, rate = audio.load(late.record)
    assert audio.speech_like(
        audio.segment(samples, rate, *window(r, hash_time(r) + 0.2, r["ended_at"])), rate
    )
    assert "conference_full" in srv.log()


def test_room_music_file_replaces_the_default(server_factory, phone, tmp_path):
    from ivr.tones import write_segments

    music = tmp_path / "music.wav"
    write_segments(music, [(300, 2000)])
    rooms = [
        {"name": "demo", "participant_pin": "1111", "moderator_pin": "9999", "music": str(music)}
    ]
    srv = server_factory(rooms=rooms)
    p = phone(srv.uri("conf"), "wait_media 5; dtmf 1111#; wait 3; hangup")
    r = p.result()
    heard, rate = audio.load(p.record)
    waiting = audio.segment(heard, rate, *window(r, hash_time(r) + 0.5, r["hangup_sent_at"]))
    assert audio.band_fraction(waiting, rate, 300) > 0.5
