"""Individual counter-PINs with real calls: a moderator who keys the room's
moderator PIN and then their own counter-PIN enters as moderator (the room
starts: the waiting participant hears them), the log and the billing name
whose counter-PIN it was, and a wrong counter-PIN is refused as before."""

from __future__ import annotations

import json

from tests import audio
from tests.harness import cli, report
from tests.test_spine_calls import hash_time, window

ROOMS = [
    {
        "name": "demo",
        "participant_pin": "1111",
        "moderator_pin": "9999",
        "counter_pin": "4321",
        "counter_pins": [{"name": "Ana", "pin": "5151"}, {"name": "Bia", "pin": "6262"}],
    }
]


def test_a_moderator_enters_with_their_own_counter_pin_and_is_billed_by_its_name(
    server_factory, phone
):
    srv = server_factory(rooms=ROOMS)
    part = phone(srv.uri("conf"), "wait_media 5; dtmf 1111#; tone 440; wait 10; hangup")
    mod = phone(
        srv.uri("conf"),
        "wait_media 5; wait 2; dtmf 9999#; wait 0.5; dtmf 5151#; tone 700; wait 5; hangup",
    )
    bad = phone(
        srv.uri("conf"),
        "wait_media 5; wait 1; dtmf 9999#; wait 0.5; dtmf 7777#; tone 900; wait 4; hangup",
    )
    rp, rm, rb = part.result(), mod.result(), bad.result()
    for r in (rp, rm, rb):
        assert "error" not in r, r

    # Ana came in as moderator: the room started, each hears the other.
    ps, rate = audio.load(part.record)
    heard = audio.segment(ps, rate, *window(rp, hash_time(rm) + 1.0, rm["hangup_sent_at"]))
    assert audio.band_fraction(heard, rate, 700) > 0.2
    ms, _ = audio.load(mod.record)
    heard = audio.segment(ms, rate, *window(rm, hash_time(rm) + 1.0, rm["hangup_sent_at"]))
    assert audio.band_fraction(heard, rate, 440) > 0.2
    # The wrong counter-PIN was told so and kept out: nobody heard it, it heard nobody.
    bs, _ = audio.load(bad.record)
    told = audio.segment(bs, rate, *window(rb, hash_time(rb) + 0.2, hash_time(rb) + 2.5))
    assert audio.speech_like(told, rate), "the 'invalid PIN' prompt was heard"
    assert audio.band_fraction(told, rate, 440) < 0.02
    assert audio.band_fraction(heard, rate, 900) < 0.02

    log = srv.log()
    assert log.count("counter-pin ok name=Ana") == 1 and log.count("counter-pin failed") == 1
    assert log.count("role=moderator members=2 counter_pin=Ana") == 1
    assert "5151" not in log  # the name is logged, never the PIN

    # Billing names it: the moderator's row says Ana, the participant's nothing.
    (conference,) = report(srv, "conferences")
    assert conference["counter_pins"] == "Ana"
    session = conference["id"]
    done = cli(srv, "report", "participants", str(session), "--json")
    assert done.returncode == 0, done.stderr
    legs = {r["role"]: r for r in json.loads(done.stdout)}
    assert set(legs) == {"moderator", "participant"}, legs
    assert legs["moderator"]["counter_pin_name"] == "Ana"
    assert legs["participant"]["counter_pin_name"] is None
    table = cli(srv, "report", "participants", str(session))
    assert table.returncode == 0 and "counter_pin_name" in table.stdout and "Ana" in table.stdout
