"""Key map, level rules, key actions and billing as plain logic."""

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from bridge.billing import BillingStore, LegRecord
from bridge.controls import Context, Say, SetGain, run_action
from bridge.levels import LevelPolicy, expires, permits, refusal
from bridge.room import Connect, Disconnect, RoomSet
from ivr.keys import ACTIONS, DEFAULT_KEYS, WEB_ACTIONS, KeyReader, validate_key_map, web_keys
from ivr.numbers import Number
from ivr.pin_entry import PinEntry, PinMatch
from provisioning.schema import KeysConfig

ROOT = Path(__file__).resolve().parent.parent
BRT = dt.timezone(dt.timedelta(hours=-3))


def test_star_nine_waits_for_a_two():
    r = KeyReader(DEFAULT_KEYS, feature_digit_timeout=1.0)
    assert r.digit("*").wait == 3.0
    res = r.digit("9")
    assert res.action is None and res.wait == 1.0
    assert r.digit("2").action == "blast"
    r.digit("*")
    r.digit("9")
    assert r.timeout().action == "stop_roll_call"


def test_unique_keys_act_at_once_and_unknown_ones_are_reported():
    r = KeyReader(DEFAULT_KEYS)
    r.digit("*")
    assert r.digit("6").action == "mute"
    r.digit("*")
    r.digit("9")
    assert r.digit("7").unknown == "*97"
    assert r.digit("6").action is None  # digits outside a sequence mean nothing


def test_key_map_validation():
    with pytest.raises(ValueError, match="unknown action"):
        validate_key_map({"*6": "explode"}, 1.0)
    with pytest.raises(ValueError, match="prefix"):
        validate_key_map({"*0": "help", "*9": "stop_roll_call", "*92": "blast"}, 0)
    with pytest.raises(ValueError, match="followed by"):
        validate_key_map({"6": "mute"}, 1.0)
    with pytest.raises(ValidationError):
        KeysConfig(map={"*6": "explode"})
    validate_key_map({"*0": "help", "*9": "stop_roll_call"}, 0)


def test_key_map_refuses_clashes_and_a_lost_help_key():
    ok = dict(DEFAULT_KEYS)
    validate_key_map(ok, 1.0)
    # The same key twice (as written, before a dict keeps only the last).
    with pytest.raises(ValueError, match=r"key \*94 is bound twice"):
        validate_key_map([*ok.items(), ("*94", "count")], 1.0)
    # A prefix with no wait for the longer key is ambiguous: *9 fires before *94.
    with pytest.raises(ValueError, match=r"\*9 is a prefix of \*9[2456]"):
        validate_key_map(ok, 0)
    # Help must stay on *0: moved, unbound or rebound, the map is refused.
    for bad in (
        {**{k: a for k, a in ok.items() if k != "*0"}, "*99": "help"},
        {k: a for k, a in ok.items() if k != "*0"},
        {**ok, "*0": "count"},
    ):
        with pytest.raises(ValueError, match=r"\*0 must stay bound to help"):
            validate_key_map(bad, 1.0)
    with pytest.raises(ValueError, match="unknown action 'recording'"):
        validate_key_map({**ok, "*93": "recording"}, 1.0)
    with pytest.raises(ValidationError, match="must stay bound to help"):
        KeysConfig(map={"*6": "mute"})


def test_a_key_written_twice_in_the_yaml_is_refused_with_its_lines(tmp_path):
    """Attack/bad input: YAML would silently keep the second binding of *94."""
    from provisioning.loader import ConfigError, load_tree

    text = (ROOT / "provisioning" / "example.yaml").read_text()
    assert '    "*95": count' in text
    bad = text.replace('    "*95": count', '    "*94": count', 1)
    path = tmp_path / "ponte.yaml"
    with pytest.raises(ConfigError) as err:
        load_tree(path, {path: bad})
    e = err.value
    first = text.splitlines().index(next(ln for ln in text.splitlines() if '"*94"' in ln)) + 1
    assert e.key == "keys.map" and "*94 is bound twice" in e.message
    assert f"lines {first}, {first + 1}" in e.message and e.line == first + 1
    load_tree(path, {path: text})  # the file as shipped loads


def test_new_keys_are_in_the_help_list_by_role():
    room = room_with((1, "moderator"), (2, "participant"))
    part = run_action(room, 2, "help", ctx())[0].items
    mod = run_action(room, 1, "help", ctx())[0].items
    for prompt, key in (("help_hand", "digit_4"), ("help_count", "digit_5")):
        for items in (part, mod):
            i = items.index(prompt)
            assert items[i + 1 : i + 4] == ("star", "digit_9", key)
    assert "help_next_hand" not in part
    i = mod.index("help_next_hand")
    assert mod[i + 1 : i + 4] == ("star", "digit_9", "digit_6")
    assert DEFAULT_KEYS["*93"] == "record"  # the recording's key, beside the *9x family


def test_hands_queue_in_raise_order_and_moderators_hear_the_count():
    room = room_with((1, "moderator"), (2, "participant"), (3, "participant"), (4, "participant"))
    assert run_action(room, 3, "hand", ctx()) == [
        Say(3, ("your_hand_raised",)),
        Say(1, ("one_hand_raised",), slot="hands"),
    ]
    cmds = run_action(room, 2, "hand", ctx())
    # "two hands raised", said as a number ("duas mãos": feminine in pt-BR).
    assert Say(1, (Number(2, feminine=True), "hands_raised"), slot="hands") in cmds
    assert not any(c.leg in (3, 4) for c in cmds if isinstance(c, Say) and c.slot == "hands")
    run_action(room, 4, "hand", ctx())
    assert room.hands == [3, 2, 4]
    # Pressed again: lowered, nobody else told.
    assert run_action(room, 2, "hand", ctx()) == [Say(2, ("your_hand_lowered",))]
    assert room.hands == [3, 4]
    # A member who leaves drops out of the queue.
    b = RoomSet()
    b.rooms["demo"] = room
    b.room_of.update({leg: "demo" for leg in room.members})
    b.leave(4)
    assert room.hands == [3]


def test_next_hand_gives_the_oldest_hand_the_floor_in_lecture_mode_and_when_muted():
    room = room_with((1, "moderator"), (2, "participant"), (3, "participant"))
    run_action(room, 1, "lecture", ctx())
    run_action(room, 3, "mute", ctx())
    run_action(room, 2, "hand", ctx())
    run_action(room, 3, "hand", ctx())
    assert (2, 1) not in room.links and (3, 1) not in room.links
    cmds = run_action(room, 1, "next_hand", ctx())
    assert Connect(2, 1) in cmds and Say(2, ("your_turn",)) in cmds
    assert Say(1, ("floor_given", "one_hand_raised")) in cmds
    assert room.hands == [3] and room.floor == 2
    # The next: muted by *6, now unmuted; the floor moves from 2 to 3.
    cmds = run_action(room, 1, "next_hand", ctx())
    assert Connect(3, 1) in cmds and Disconnect(2, 1) in cmds
    assert not room.members[3].muted and room.hands == []
    assert Say(1, ("floor_given",)) in cmds
    assert run_action(room, 1, "next_hand", ctx()) == [Say(1, ("no_hands_raised",))]
    # A participant may raise a hand but not give the floor.
    run_action(room, 2, "hand", ctx())
    assert run_action(room, 2, "next_hand", ctx()) == [Say(2, ("not_available",))]
    assert room.hands == [2]
    # A new lecture starts with nobody given the floor.
    run_action(room, 1, "lecture", ctx())
    run_action(room, 1, "lecture", ctx())
    assert room.floor is None and (3, 1) not in room.links


def test_count_speaks_how_many_are_in_the_room():
    room = room_with((1, "moderator"))
    assert run_action(room, 1, "count", ctx()) == [Say(1, ("one_participant",))]
    for leg in range(2, 13):
        room.join(leg, "participant", 0)
    (say,) = run_action(room, 5, "count", ctx())
    assert say.items == (Number(12), "participants_count")  # "twelve", not "one two"


def test_every_key_action_has_a_handler_and_its_prompts_exist():
    from bridge.controls import ACTION_HANDLERS
    from ivr.keys import ACTIONS
    from ivr.prompts import load_catalogue

    texts = load_catalogue()
    assert set(ACTION_HANDLERS) == set(ACTIONS)
    for name in ("hand", "count", "next_hand"):
        assert ACTIONS[name].help_prompt in texts
    for pid in (
        "your_hand_raised",
        "your_hand_lowered",
        "one_hand_raised",
        "hands_raised",
        "no_hands_raised",
        "your_turn",
        "floor_given",
        "one_participant",
        "participants_count",
    ):
        assert set(texts[pid]) == {"pt-BR", "en"}


def test_level_hours_and_validity():
    l1 = LevelPolicy(1, "America/Sao_Paulo", dt.date(2026, 1, 10))
    assert refusal(l1, dt.datetime(2026, 11, 23, 5, 59, tzinfo=BRT)) is not None
    assert refusal(l1, dt.datetime(2026, 11, 23, 6, 0, tzinfo=BRT)) is None
    assert refusal(l1, dt.datetime(2026, 11, 23, 23, 59, tzinfo=BRT)) is None
    l2 = LevelPolicy(2, "America/Sao_Paulo", dt.date(2026, 1, 10))
    assert refusal(l2, dt.datetime(2026, 11, 23, 3, 0, tzinfo=BRT)) is None
    assert expires(l2) == dt.date(2027, 1, 10)
    assert "expired" in refusal(l2, dt.datetime(2027, 1, 10, 12, 0, tzinfo=BRT))
    assert refusal(l2, dt.datetime(2027, 1, 9, 23, 0, tzinfo=BRT)) is None
    # 02:30 UTC is 23:30 the day before in São Paulo: still valid on the 9th.
    assert refusal(l2, dt.datetime(2027, 1, 10, 2, 30, tzinfo=dt.UTC)) is None


def test_level_permissions():
    assert not permits(LevelPolicy(1, "UTC", allow_lock=True), "lock")
    assert not permits(LevelPolicy(2, "UTC"), "lock")
    assert permits(LevelPolicy(2, "UTC", allow_lock=True), "lock")
    assert permits(LevelPolicy(3, "UTC"), "lock")
    assert permits(LevelPolicy(3, "UTC"), "dial_out")
    assert not permits(LevelPolicy(3, "UTC"), "reserved")


def room_with(*members):
    b = RoomSet()
    for leg, role in members:
        b.join("demo", leg, role, 0)
    return b.rooms["demo"]


def ctx(level=3):
    return Context(LevelPolicy(level, "UTC"), KeyReader(DEFAULT_KEYS))


def test_participant_may_not_lock_and_level_2_moderator_needs_allow_lock():
    room = room_with((1, "moderator"), (2, "participant"))
    assert run_action(room, 2, "lock", ctx()) == [Say(2, ("not_available",))]
    assert run_action(room, 1, "lock", ctx(level=2)) == [Say(1, ("not_available",))]
    assert not room.locked
    # The whole room hears it, as when an admin locks it (one lock for both).
    assert run_action(room, 1, "lock", ctx()) == [Say(1, ("locked",)), Say(2, ("locked",))]
    assert room.locked


def test_mute_gain_and_help():
    room = room_with((1, "moderator"), (2, "participant"))
    cmds = run_action(room, 2, "mute", ctx())
    assert Disconnect(2, 1) in cmds and Say(2, ("muted",)) in cmds
    assert run_action(room, 2, "gain", ctx())[0] == SetGain(2, 2.0)
    assert run_action(room, 2, "gain", ctx())[0] == SetGain(2, 0.5)
    assert run_action(room, 2, "gain", ctx())[0] == SetGain(2, 1.0)
    help_items = run_action(room, 2, "help", ctx())[0].items
    assert "help_mute" in help_items and "help_lock" not in help_items
    assert "help_lock" in run_action(room, 1, "help", ctx())[0].items


def test_roll_call_names_or_caller_numbers():
    b = RoomSet()
    b.join("demo", 1, "moderator", 0)
    b.join("demo", 2, "participant", 0, name_path="/x/ana.wav")
    b.join("demo", 3, "participant", 0)
    (say,) = run_action(b.rooms["demo"], 1, "roll_call", ctx())
    assert say.items == (Path("/x/ana.wav"), "caller", Number(3)) and say.slot == "roll_call"


def test_counter_pin_is_part_of_one_try():
    pins = {"9999": PinMatch("demo", "moderator", counter_pin="4321")}
    d = PinEntry(pins.get, max_tries=2)
    d.start()
    for ch in "9999#":
        d.digit(ch)
    for ch in "1111#":
        cmds = d.digit(ch)
    assert d.tries == 1 and cmds[-1].prompts == ("invalid_pin", "enter_pin")
    for ch in "9999#4321#":
        cmds = d.digit(ch)
    assert d.outcome.kind == "joined" and d.tries == 2


def test_individual_counter_pins_name_who_keyed_them():
    match = PinMatch("demo", "moderator", "4321", counter_pins=(("Ana", "5151"), ("Bia", "6262")))

    def enter(*keyed: str) -> PinEntry:
        d = PinEntry({"9999": match}.get, max_tries=3)
        d.start()
        for ch in "".join(keyed):
            d.digit(ch)
        return d

    d = enter("9999#", "6262#")
    assert d.outcome.kind == "joined" and d.counter_name == "Bia"
    assert "counter-pin ok name=Bia" in d.events
    d = enter("9999#", "4321#")  # the collective one still works, unnamed
    assert d.outcome.kind == "joined" and d.counter_name is None
    d = enter("9999#", "7777#")  # anything else is refused as before
    assert d.outcome is None and d.counter_name is None and "counter-pin failed" in d.events
    d = enter("9999#", "#")  # nothing keyed is not the (absent) collective PIN
    assert d.outcome is None and "counter-pin failed" in d.events
    only = PinMatch("demo", "moderator", None, counter_pins=(("Ana", "5151"),))
    d = PinEntry({"9999": only}.get)
    d.start()
    for ch in "9999#5151#":
        d.digit(ch)
    assert d.outcome.kind == "joined" and d.counter_name == "Ana"


def test_billing_keeps_the_counter_pin_name_crash_included(tmp_path):
    db = BillingStore(tmp_path / "b.db")
    sid = db.open_session("demo", 1000.0)
    rec = LegRecord(sid, 1, "ana", "moderator", None, 1000.0, 1030.0, "caller", "dial-in", "Ana")
    db.leg_ended(rec)
    db.leg_joined(
        "n1", LegRecord(sid, 2, "bia", "moderator", None, 1000.0, 0, "", "dial-in", "Bia")
    )
    assert db.close_crashed("n1") == (1, 1)
    assert {r["leg"]: r["counter_pin_name"] for r in db.legs(sid)} == {1: "Ana", 2: "Bia"}


def test_billing_rows_commit_per_event(tmp_path):
    db = BillingStore(tmp_path / "b.db")
    sid = db.open_session("demo", 1000.0)
    db.leg_ended(LegRecord(sid, 1, "ana", "moderator", None, 1000.0, 1090.5, "caller"))
    db.leg_ended(LegRecord(sid, 2, "bia", "participant", None, 1010.0, 1020.0, "moderator_exit"))
    db.close_session(sid, 1090.5)
    again = BillingStore(tmp_path / "b.db")  # a new connection sees it all
    (s,) = list(again.sessions())
    assert s["legs"] == 2 and s["billed_minutes"] == 3 and s["participant_minutes"] == 1.68
    legs = list(again.legs(sid))
    assert [leg["seconds"] for leg in legs] == [90.5, 10.0]


def test_the_join_page_gets_each_buttons_key_from_the_key_map():
    """The browser's buttons send the key map's keys (shortest first); an
    action remapped moves its button, one left unbound hides it."""
    assert web_keys(DEFAULT_KEYS) == {"mute": "*6", "hand": "*94", "help": "*0"}
    remapped = {"*0": "help", "*11": "mute", "*1": "mute", "*5": "lecture"}
    assert web_keys(remapped) == {"mute": "*1", "help": "*0"}
    assert set(WEB_ACTIONS) <= set(ACTIONS)
