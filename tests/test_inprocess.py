"""The whole app server in-process, on a fake SIP user agent (tests/fakeua.py).

Routing, the entry IVR, rooms, the key map, the admin commands and dial-out
run as in production, on fake time, in milliseconds. What a phone hears is
checked by the real-call tests; these check what the server decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ponte.roomops import room_command
from ponte.server import AppServer
from provisioning.loader import load_config
from tests.fakeua import FakeTime, FakeUA
from tests.pbx_helpers import EXTENSIONS

ROOM = {"name": "demo", "participant_pin": "1111", "moderator_pin": "9999", "security_level": 3}


class Rig:
    """A started server on a fake user agent, and the fake time it runs on."""

    def __init__(self, srv: AppServer, ua: FakeUA, time: FakeTime) -> None:
        self.srv, self.ua, self.time = srv, ua, time

    def run(self, seconds: float) -> None:
        """Let fake time pass, running the loop as it would."""
        end = self.time.t + seconds
        while self.time.t < end:
            self.srv.loop.run_once()

    def join(self, pin: str, caller: str = "5511999990000") -> int:
        leg = self.ua.call("conf", caller=caller, source=f"192.0.2.{len(self.ua.legs) + 2}:5060")
        self.run(0.5)
        self.ua.digits(leg, pin + "#")
        self.run(0.5)
        return leg

    def room(self) -> Any:
        return self.srv.svc.rooms.live.rooms.get("demo")


@pytest.fixture
def rig(tmp_path: Path, prompt_cache: Path) -> Iterator:
    made: list[Rig] = []

    def make(**overrides: Any) -> Rig:
        cfg: dict[str, Any] = {
            "access_numbers": [{"user": "conf", "language": "pt-BR"}],
            "rooms": [ROOM],
            "prompts": {"cache_dir": str(prompt_cache)},
            "control": {"socket": str(tmp_path / "control.sock")},
            "database": str(tmp_path / "ponte.db"),
            "state_dir": str(tmp_path / "state"),
            "sip": {"listen": "127.0.0.1:5080", "rtp_ports": "40000-40999"},
            **overrides,
        }
        path = tmp_path / "ponte.yaml"
        path.write_text(yaml.safe_dump(cfg))
        time = FakeTime()
        uas: list[FakeUA] = []

        def agent(*args: Any, **kwargs: Any) -> FakeUA:
            ua = FakeUA(*args, **kwargs)
            ua.time = time
            uas.append(ua)
            return ua

        srv = AppServer(
            load_config(path), config_path=path, run_kamailio=False, agent=agent, monotonic=time
        )
        srv.start()
        r = Rig(srv, uas[0], time)
        made.append(r)
        return r

    yield make
    for r in made:
        r.srv.shutdown()


def test_pin_puts_callers_in_the_room_with_music_until_the_moderator(rig):
    r = rig()
    p = r.join("1111")
    assert r.ua.prompts(p)[:1] == ["enter_pin"]
    assert r.ua.prompts(p, "music") == ["hold_music"]
    m = r.join("9999")
    room = r.room()
    assert room is not None and set(room.members) == {p, m}
    assert {(p, m), (m, p)} <= r.ua.links
    # PIN `#` -> joined, measured for every join.
    assert len(r.srv.svc.entry.join_latencies) == 2


def test_callers_waiting_for_the_moderator_share_one_music_player(rig):
    """The room's waiting music is one source: the second and third callers
    to wait hear the first one's player, not a player each."""
    r = rig()
    p1, p2, p3 = r.join("1111"), r.join("1111"), r.join("1111")
    assert [(leg, slot) for slot, leg, _ in r.ua.joined_plays] == [(p2, "music"), (p3, "music")]
    for leg in (p1, p2, p3):
        assert r.ua.prompts(leg, "music") == ["hold_music"]


def test_a_join_tone_reaches_the_room_from_one_player(rig):
    """The room's signals are one source for all its members (one player,
    one port on the bridge), so they keep one mix and one shared encode; the
    one who joins hears its tone too, and so stays in the listeners' group."""
    r = rig()
    m, p1, p2 = r.join("9999"), r.join("1111"), r.join("1111")
    r.ua.shared_plays.clear()
    p3 = r.join("1111")
    tones = [legs for slot, legs in r.ua.shared_plays if slot == "signal"]
    assert [set(legs) for legs in tones] == [{m, p1, p2, p3}], r.ua.shared_plays
    for leg in (m, p1, p2, p3):
        assert r.ua.prompts(leg, "signal")[-1] == "join_tone"


def test_wrong_pins_end_the_call_and_nothing_is_joined(rig):
    r = rig()
    leg = r.ua.call("conf")
    r.run(0.5)
    for _ in range(3):
        r.ua.digits(leg, "4321#")
        r.run(6)
    assert r.ua.legs[leg].gone
    assert r.room() is None


def test_star6_and_the_admin_mute_take_one_path(rig):
    r = rig()
    m, p = r.join("9999"), r.join("1111")
    r.ua.digits(p, "*6")
    r.run(1)
    assert (p, m) not in r.ua.links and "muted" in r.ua.prompts(p)
    r.ua.digits(p, "*6")
    r.run(1)
    assert (p, m) in r.ua.links and "unmuted" in r.ua.prompts(p)
    # The CLI's mute: same function, same announcement.
    before = r.ua.prompts(p).count("muted")
    reply = room_command(r.srv.svc, {"action": "mute", "room": "demo", "member": p})
    assert reply["ok"] and (p, m) not in r.ua.links
    assert r.ua.prompts(p).count("muted") == before + 1
    actions = [a for a, _ in r.srv.svc.rooms.action_latencies]
    assert actions == ["mute", "mute"]


def test_lock_by_key_is_told_to_the_room_and_refuses_the_next_caller(rig):
    r = rig()
    m, p = r.join("9999"), r.join("1111")
    r.ua.digits(m, "*7")  # *7: lock (the default key map)
    r.run(1)
    assert r.room().locked
    assert "locked" in r.ua.prompts(m) and "locked" in r.ua.prompts(p)
    late = r.join("1111")
    r.run(8)
    assert "conference_locked" in r.ua.prompts(late) and r.ua.legs[late].gone


def test_the_room_ends_when_the_moderator_leaves_and_is_billed(rig):
    r = rig()
    m, p = r.join("9999"), r.join("1111")
    r.run(60)
    r.ua.hang_up(m)
    r.run(10)
    assert r.ua.legs[p].gone and r.room() is None
    assert r.srv.svc.stores.writer.flush(timeout=5)  # the writer thread's rows
    rows = list(r.srv.svc.stores.billing.sessions())
    assert len(rows) == 1 and rows[0]["ended_at"] is not None


def test_unknown_numbers_get_404_and_a_did_rings_its_extension(rig):
    r = rig(extensions=EXTENSIONS, dids={"+551130001000": {"extension": "1001"}})
    leg = r.ua.call("12345")
    assert r.ua.legs[leg].answers == [404]
    a = r.ua.call("+551130001000")
    out = [leg for leg in r.ua.legs.values() if leg.uri]
    assert len(out) == 1 and out[0].uri.startswith("sip:1001@")
    r.ua.answer_out(out[0].id)
    assert r.ua.legs[a].answers == [200]
    r.ua.hang_up(out[0].id)
    r.run(1)
    assert r.ua.legs[a].gone


DIAL_OUT = {
    "trunks": [
        {
            "name": "provider1",
            "registrar": "sip:198.51.100.50:5060",
            "allow_ip": True,  # no DNS lookups in an in-process test
            "username": "u",
            "password": "trunk-Secret-9x",
            "cps": 2,
            "outbound_prefixes": ["0", "00", "3"],  # 3: local numbers
        }
    ],
    "lines": {"room:demo": {"area_code": "11", "profile": "dial"}},
    "profiles": {"dial": {"limits": {"local": "unlimited", "national": "unlimited"}}},
}


def test_dial_out_hands_the_moderator_to_the_number_entry_and_back(rig):
    r = rig(**DIAL_OUT)
    m, p = r.join("9999"), r.join("1111")
    r.ua.digits(m, "*1")
    r.run(4)
    assert (m, p) not in r.ua.links  # away from the room while dialing
    r.ua.digits(m, "33334444#")
    r.run(4)
    r.ua.digits(m, "1")  # confirm the read-back
    r.run(1)
    guest = next(leg for leg in r.ua.legs.values() if leg.uri)
    assert guest.uri.startswith("sip:33334444@")
    r.ua.answer_out(guest.id)
    r.run(1)
    assert (m, guest.id) in r.ua.links and (guest.id, m) in r.ua.links
    r.ua.digits(m, "*2")  # bring the guest in
    r.run(1)
    assert set(r.room().members) == {m, p, guest.id}
    assert (guest.id, p) in r.ua.links


def test_dial_out_entry_gives_up_after_its_timeout(rig):
    """A moderator who keys nothing after *1 is back in the room after 15 s
    (this timer once called a float: DialOutEntry.timeout was overwritten)."""
    r = rig(**DIAL_OUT)
    m, p = r.join("9999"), r.join("1111")
    r.ua.digits(m, "*1")
    r.run(4)
    r.ua.digits(m, "3")
    r.run(20)  # "3" is submitted at the timeout: not a number, asked again
    assert (m, p) not in r.ua.links
    r.run(20)  # nothing keyed this time: back in the room
    assert (m, p) in r.ua.links
    assert not [leg for leg in r.ua.legs.values() if leg.uri]


def test_hands_by_key_queue_and_the_admin_next_hand_and_lower_hand_share_one_path(rig):
    """*94 raises (moderators hear the count), the queue keeps raise order,
    `ponte room demo next-hand` and *96 take the oldest, `lower-hand` lowers;
    a member who hangs up leaves the queue."""
    from ponte.status import status

    r = rig()
    m = r.join("9999")
    p1, p2, p3 = (r.join("1111", caller=f"55119999900{n}") for n in (1, 2, 3))
    for p in (p2, p1, p3):
        r.ua.digits(p, "*94")
        r.run(1.5)
        assert "your_hand_raised" in r.ua.prompts(p)
    assert r.room().hands == [p2, p1, p3]
    assert r.ua.prompts(m, "hands")[:3] == ["one_hand_raised", "num_2f", "hands_raised"]
    assert r.ua.prompts(m, "hands")[3:] == ["digit_3", "hands_raised"]
    shown = {x["leg"]: x["hand"] for x in status(r.srv.svc, None, {})["rooms"]["demo"]["members"]}
    assert shown == {m: False, p1: True, p2: True, p3: True}
    # The admin's next hand: the oldest (p2), unmuted in lecture mode, told.
    r.ua.digits(m, "*5")
    r.run(1)
    assert (p2, m) not in r.ua.links
    reply = room_command(r.srv.svc, {"action": "next-hand", "room": "demo"})
    assert reply["ok"], reply
    assert (p2, m) in r.ua.links and "your_turn" in r.ua.prompts(p2)
    assert r.room().hands == [p1, p3]
    # The moderator's *96: the next (p1); the floor moves on from p2.
    r.ua.digits(m, "*96")
    r.run(1.5)
    assert (p1, m) in r.ua.links and (p2, m) not in r.ua.links
    assert "floor_given" in r.ua.prompts(m) and "your_turn" in r.ua.prompts(p1)
    # A participant's *96 is refused and changes nothing.
    r.ua.digits(p3, "*96")
    r.run(1.5)
    assert r.ua.prompts(p3)[-1] == "not_available" and r.room().hands == [p3]
    # lower-hand by caller; a hand that is not up, or nobody, is a clear error.
    bad = room_command(r.srv.svc, {"action": "lower-hand", "room": "demo", "member": p1})
    assert not bad["ok"] and "has no hand raised" in bad["error"]
    bad = room_command(r.srv.svc, {"action": "lower-hand", "room": "demo", "member": "nobody"})
    assert not bad["ok"] and "no member 'nobody'" in bad["error"]
    bad = room_command(r.srv.svc, {"action": "lower-hand", "room": "demo"})
    assert not bad["ok"] and "needs a member" in bad["error"]
    assert r.room().hands == [p3]
    ok = room_command(r.srv.svc, {"action": "lower-hand", "room": "demo", "member": "551199999003"})
    assert ok["ok"] and r.room().hands == [] and r.ua.prompts(p3)[-1] == "your_hand_lowered"
    links = set(r.ua.links)
    bad = room_command(r.srv.svc, {"action": "next-hand", "room": "demo"})
    assert not bad["ok"] and "no hand is raised" in bad["error"] and r.ua.links == links
    # Hung up with a hand raised: out of the queue.
    r.ua.digits(p3, "*94")
    r.run(1.5)
    r.ua.hang_up(p3)
    r.run(1)
    assert r.room().hands == []
    # `ponte room` offers exactly the actions the control socket runs.
    from ponte import cli, roomops

    assert set(cli.ROOM_ACTIONS) == set(roomops.ACTIONS)


def test_opus_runs_at_the_bridge_rate(rig):
    # Opus legs (browsers through the edge) are encoded at the bridge's rate
    # (its SDP says maxplaybackrate so), not fullband: pbx/sipua.py's opus_rate.
    made = rig(sip={"listen": "127.0.0.1:5080", "rtp_ports": "40000-40999", "clock_rate": 16000})
    assert made.ua.made_with["opus_rate"] == made.ua.made_with["clock_rate"] == 16000


def test_the_talker_gate_reaches_the_bridge(rig):
    # sip.talker_* go to the user agent, which sets pjmedia's talker gate.
    sip = {"listen": "127.0.0.1:5080", "rtp_ports": "40000-40999", "talker_hangover_ms": 250}
    made = rig(sip={**sip, "talker_threshold_dbfs": -45})
    assert made.ua.made_with["talker_threshold_dbfs"] == -45
    assert made.ua.made_with["talker_hangover_ms"] == 250


def test_shared_encode_reaches_the_user_agent(rig):
    # sip.shared_encode goes to the user agent, which sets pjmedia's switch
    # (on unless the config says off: test_provisioning's default).
    sip = {"listen": "127.0.0.1:5080", "rtp_ports": "40000-40999", "shared_encode": False}
    assert rig(sip=sip).ua.made_with["shared_encode"] is False


def test_jitter_discard_reaches_the_user_agent(rig):
    # sip.jitter_discard goes to the user agent, which sets pjmedia's
    # algorithm for the legs it opens (progressive unless the config says so).
    sip = {"listen": "127.0.0.1:5080", "rtp_ports": "40000-40999"}
    assert rig(sip=sip).ua.made_with["jitter_discard"] == "progressive"
    made = rig(sip={**sip, "jitter_discard": "static"})
    assert made.ua.made_with["jitter_discard"] == "static"
