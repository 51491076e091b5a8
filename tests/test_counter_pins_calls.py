"""Individual counter-PINs with real calls: a moderator who keys the room's
moderator PIN and then their own counter-PIN enters as moderator (the room
starts: the waiting participant hears them), the log and the billing name
whose counter-PIN it was, and a wrong counter-PIN is refused as before."""

from __future__ import annotations

import json

import yaml

from pbx.sipevents import HANDOFF_HEADERS
from ponte.handoff import sign
from tests import audio
from tests.harness import cli, report
from tests.test_nodes_rooms import hand_over, two_nodes  # noqa: F401  (fixture `two_nodes`)
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
    # The prompt's own speech puts about 2 % of its energy near 440 Hz; the
    # participant's tone, had it leaked in, would hold most of it.
    assert audio.band_fraction(told, rate, 440) < 0.1
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


def test_a_handed_off_moderator_keeps_its_counter_pin_name_at_the_home(two_nodes):  # noqa: F811
    """The counter-PIN's name crosses to the room's home in the signed role
    header (percent-encoded), so the home bills it; the home takes only a
    name its room knows, and a node that knows no names refuses the header
    as an unknown role (the caller then joins where it called)."""
    a, b = two_nodes["a"], two_nodes["b"]
    for node in (a, b):
        path = node.srv.reloader.config_path
        cfg = yaml.safe_load(path.read_text())
        cfg["rooms"][0]["counter_pins"] = [{"name": "Ana Maria", "pin": "5151"}]
        path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        assert node.srv.reloader.reload(by="test")["ok"]
    a.join("1111", caller="1001")  # homes the room on a
    caller = b.ua.call("conf", caller="1002", source="192.0.2.9:5060")
    b.run(0.5)
    b.ua.digits(caller, "9999#")
    b.run(0.5)
    b.ua.digits(caller, "5151#")
    b.run(0.5)
    (peer,) = [leg for leg in b.ua.legs.values() if leg.uri]
    assert peer.headers["X-Ponte-Role"] == "moderator=Ana%20Maria"
    there = hand_over(b, a, peer.id)
    seat = a.srv.svc.legs.get(there).seat
    assert seat is not None and seat.role == "moderator" and seat.counter_pin_name == "Ana Maria"
    # A name the room does not know, under a good token: admitted, not billed by it.
    home = a.srv.svc.entry.handoff
    expires = f"{a.srv.svc.clock.ts() + 10:.3f}000001"
    fields = ("demo", "moderator=Intruso", "1003", "0", expires)
    headers = dict(zip(HANDOFF_HEADERS, (*fields, sign(home.key, *fields)), strict=True))
    leg = a.ua.call("handoff", source="127.0.0.1:5082", handoff=headers)
    a.run(0.2)
    assert a.ua.legs[leg].answers == [200]
    assert a.srv.svc.legs.get(leg).seat.counter_pin_name is None
