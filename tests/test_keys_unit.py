"""Key map, level rules, key actions and billing as plain logic."""

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from bridge.billing import BillingStore, LegRecord
from bridge.controls import Context, Say, SetGain, run_action
from bridge.levels import LevelPolicy, expires, permits, refusal
from bridge.room import Disconnect, RoomSet
from ivr.keys import DEFAULT_KEYS, KeyReader, validate_key_map
from ivr.pin_entry import PinEntry, PinMatch
from provisioning.schema import KeysConfig

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
    assert r.digit("5").unknown == "*95"
    assert r.digit("6").action is None  # digits outside a sequence mean nothing


def test_key_map_validation():
    with pytest.raises(ValueError, match="unknown action"):
        validate_key_map({"*6": "explode"}, 1.0)
    with pytest.raises(ValueError, match="prefix"):
        validate_key_map({"*9": "stop_roll_call", "*92": "blast"}, 0)
    with pytest.raises(ValueError, match="followed by"):
        validate_key_map({"6": "mute"}, 1.0)
    with pytest.raises(ValidationError):
        KeysConfig(map={"*6": "explode"})
    validate_key_map({"*9": "stop_roll_call"}, 0)


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
    assert say.items == (Path("/x/ana.wav"), "caller", "digit_3") and say.slot == "roll_call"


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
