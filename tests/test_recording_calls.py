"""Conference recording with real calls: *93 and the admin's record-start,
what every member hears about it, and what the files hold, checked by content."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests import audio
from tests.harness import Server, report
from tests.test_spine_calls import hash_time, window

RECORDED = [
    {
        "name": "demo",
        "participant_pin": "1111",
        "moderator_pin": "9999",
        "allow_recording": True,
        "record_tracks": True,
    },
    {"name": "other", "participant_pin": "2222", "moderator_pin": "8888"},
]


def key_times(r: dict[str, Any], key: str = "*93") -> list[float]:
    """When each `key` sequence was complete (its last digit sent)."""
    sent = r["digits_sent"]
    return [
        sent[i + len(key) - 1][2]
        for i in range(len(sent) - len(key) + 1)
        if "".join(d for d, _m, _t in sent[i : i + len(key)]) == key
    ]


def recordings(srv: Server, want: int = 1, ended: bool = True) -> list[dict[str, Any]]:
    """`ponte report recordings --json`, once `want` rows are (complete)."""
    deadline = time.monotonic() + 10
    while True:
        rows = report(srv, "recordings")
        done = [r for r in rows if r["ended_at"] or not ended]
        if len(done) >= want or time.monotonic() > deadline:
            return done
        time.sleep(0.3)


def files(srv: Server, row: dict[str, Any]) -> dict[str, Path]:
    root = Path(srv.config["state_dir"]) / "recordings" / row["folder"]
    return {f["name"]: root / f["name"] for f in row["files"]}


def test_star93_records_the_mix_and_a_track_per_member_and_everyone_is_told(
    server_factory, phone
):
    srv = server_factory(rooms=RECORDED)
    mod = phone(
        srv.uri("conf-en"),
        "wait_media 5; dtmf 9999#; wait 1.5; dtmf *93; wait 4.5; tone 440; wait 4; tone 0; "
        "wait 0.5; dtmf *93; wait 3; hangup",
    )
    part = phone(
        srv.uri("conf-en"),
        "wait_media 5; dtmf 1111#; wait 6; tone 700; wait 3.5; tone 0; wait 5; hangup",
    )
    # A late joiner, after the start: told on entry.
    late = phone(srv.uri("conf-en"), "wait_media 5; wait 4; dtmf 1111#; wait 4; hangup")
    rm, rp, rl = mod.result(), part.result(), late.result()
    start, stop = key_times(rm)
    assert hash_time(rl) > start + 0.5, "the late joiner came in after the start"
    # Every member hears "this conference is being recorded" after the key.
    for p, r in ((mod, rm), (part, rp)):
        heard, rate = audio.load(p.record)
        told = audio.segment(heard, rate, *window(r, start + 0.3, start + 2.3))
        assert audio.speech_like(told, rate), f"{p.record}: no announcement after *93"
        stopped = audio.segment(heard, rate, *window(r, stop + 0.3, stop + 1.5))
        assert audio.speech_like(stopped, rate), f"{p.record}: no 'recording stopped'"
    heard, rate = audio.load(late.record)
    told = audio.segment(heard, rate, *window(rl, hash_time(rl) + 0.3, hash_time(rl) + 2.3))
    assert audio.speech_like(told, rate), "the late joiner was not told"

    (row,) = recordings(srv)
    assert row["room"] == "demo"
    assert "moderator" in row["started_by"] and "moderator" in row["stopped_by"]
    assert row["dropped_frames"] == 0, row
    got = files(srv, row)
    assert set(got) >= {"mix.wav"} and len(got) == 4, row  # mix + 3 members
    # The mix: both tones; as long as the recording ran (no frame lost or late).
    mix, rate = audio.load(got["mix.wav"])
    assert audio.band_fraction(mix, rate, 440) > 0.2 and audio.band_fraction(mix, rate, 700) > 0.2
    assert abs(len(mix) / rate - (stop - start)) < 0.5, (len(mix) / rate, stop - start)
    # Each member's track: its own tone only.
    by_leg = {f["caller"]: got[f["name"]] for f in row["files"] if f.get("caller")}
    tracks = [audio.load(p)[0] for p in got.values() if p.name != "mix.wav"]
    own = {
        hz: [t for t in tracks if audio.band_fraction(t, rate, hz) > 0.5] for hz in (440, 700)
    }
    assert len(own[440]) == 1 and len(own[700]) == 1, by_leg
    assert audio.band_fraction(own[440][0], rate, 700) < 0.02
    assert audio.band_fraction(own[700][0], rate, 440) < 0.02
    # The moderator's steady tone has no hole in its track: no frame gap.
    assert audio.longest_gap(own[440][0][int(5 * rate) : int(8 * rate)], rate, 440) < 0.1
    assert srv.proc.poll() is None
