"""Operator help as plain logic: the keys (data), the *0 help's offer, the
PIN prompt's `*0` / `0#`, and the `operator:` settings (bad ones refused)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bridge.controls import CallOperator, Context, Say, call_operator, run_action
from bridge.levels import LevelPolicy
from bridge.room import RoomSet
from ivr.commands import CallOperator as AskOperator
from ivr.commands import JoinRoom, Play
from ivr.keys import DEFAULT_KEYS, HELP_CALLER_KEYS, OPERATOR_KEYS, KeyReader, validate_key_map
from ivr.pin_entry import TOTAL, PinEntry, PinMatch
from provisioning.schema import Config

PINS = {"1111": PinMatch("demo", "participant")}
EXT = [
    {"number": "1001", "name": "Ana", "password": "ana-Secret-xk27q"},
    {"number": "1002", "name": "Bruno", "password": "bruno-Secret-m4w"},
]
ROOM = {"name": "demo", "participant_pin": "1111", "moderator_pin": "9999"}


def test_the_help_keys_are_data_and_valid():
    assert DEFAULT_KEYS["*90"] == "operator"
    validate_key_map(DEFAULT_KEYS, 1.0)
    for keys in (OPERATOR_KEYS, HELP_CALLER_KEYS):
        validate_key_map({"*0": "help", **{k: "help" for k in keys}}, 1.0)  # well-formed star keys
    assert set(OPERATOR_KEYS.values()) == {"return", "join", "hangup"}
    r = KeyReader(DEFAULT_KEYS)
    r.digit("*")
    r.digit("9")
    assert r.digit("0").action == "operator"  # *9 waits, *90 acts at once


def said(cmds: list[Any]) -> tuple[Any, ...]:
    """The items of the one Say in `cmds`."""
    (say,) = cmds
    assert isinstance(say, Say)
    return say.items


def room():
    b = RoomSet()
    b.join("demo", 1, "moderator", 0)
    b.join("demo", 2, "participant", 0)
    return b.rooms["demo"]


def test_star0_offers_the_operator_last_and_star90_leaves_the_room_audio():
    r = room()
    keys = KeyReader(DEFAULT_KEYS)
    ctx = Context(LevelPolicy(3, "UTC"), keys, ("1001",))
    items = said(run_action(r, 2, "help", ctx))
    assert items[-4:] == ("help_operator", "star", "digit_9", "digit_0")
    assert items.count("help_operator") == 1
    # No operator configured: not offered, and *90 is "not available".
    bare = Context(LevelPolicy(3, "UTC"), keys)
    assert "help_operator" not in said(run_action(r, 2, "help", bare))
    assert run_action(r, 2, "operator", bare) == [Say(2, ("not_available",))]
    cmds = run_action(r, 2, "operator", ctx)
    assert cmds[-1] == CallOperator(2) and r.members[2].away
    # The console's "join": the member stays in the room's audio.
    r.members[2].away = False
    assert call_operator(r, 2, join=True) == [CallOperator(2, True)] and not r.members[2].away
    assert call_operator(r, 99) == []


def test_pin_prompt_star0_and_0_pound_reach_the_operator_then_resume():
    d = PinEntry(PINS.get, operator=True)
    d.start()
    d.prompt_finished()
    assert d.digit("*") == [] and d.digit("0")[-1] == AskOperator()
    assert d.digit("1") == [] and d.timeout(TOTAL) == [], "keys wait while away"
    assert d.resume(("operator_unavailable",)) == [Play(("operator_unavailable", "enter_pin"))]
    d.prompt_finished()
    cmds = d.digit("0") + d.digit("#")
    assert cmds[-1] == AskOperator()
    d.resume(())
    assert [*d.digit("1"), *d.digit("1"), *d.digit("1"), *d.digit("1"), *d.digit("#")][
        -1
    ] == JoinRoom("demo", "participant"), "a PIN after coming back still works"
    # `0` then silence asks too; without an operator `*0` and `0#` are a wrong PIN.
    d = PinEntry(PINS.get, operator=True)
    d.start()
    d.digit("0")
    assert d.timeout("interdigit")[-1] == AskOperator()
    plain = PinEntry(PINS.get)
    plain.start()
    cmds = plain.digit("*") + plain.digit("0") + plain.digit("#")
    assert AskOperator() not in cmds and Play(("invalid_pin", "enter_pin")) in cmds


def test_operator_settings_name_extensions():
    cfg = Config.model_validate(
        {"extensions": EXT, "operator": "1001", "rooms": [dict(ROOM, operator=["1002", "1001"])]}
    )
    assert cfg.operators("demo") == ("1002", "1001") and cfg.operators(None) == ("1001",)
    assert cfg.operators("other") == ("1001",) and cfg.operator_ring_seconds == 30.0
    assert Config.model_validate({"extensions": EXT}).operators("demo") == ()
    bad: list[tuple[dict[str, Any], str]] = [
        ({"operator": "1009"}, "operator 1009 is not an extension"),
        ({"rooms": [dict(ROOM, operator="1009")]}, "room demo: operator 1009 is not an ext"),
        ({"operator": "12"}, "String should match pattern"),
        ({"operator": []}, "at least 1 item"),
        ({"operator": 1001}, "valid string"),
        ({"operator_ring_seconds": 1}, "greater than or equal to 5"),
    ]
    for extra, message in bad:
        with pytest.raises(ValidationError, match=message):
            Config.model_validate({"extensions": EXT, **extra})
