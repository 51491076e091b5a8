"""Operator help's edges, in-process on the fake user agent (tests/fakeua.py):
who hangs up first, busy phones, two answers, the caller's own key, the
operator's keys and a wrong PIN. What phones hear is checked by
tests/test_operator_calls.py; these check what the server decides."""

from __future__ import annotations

from typing import Any

from tests.pbx_helpers import EXTENSIONS
from tests.test_inprocess import Rig
from tests.test_inprocess import rig as rig  # the fixture

OPERATORS = {"extensions": EXTENSIONS, "operator": ["1001", "1002"]}


def rung(r: Rig) -> list[int]:
    """The operator legs placed so far (outbound calls to an extension)."""
    return [leg.id for leg in r.ua.legs.values() if leg.uri.startswith(("sip:1001@", "sip:1002@"))]


def ask(r: Rig) -> tuple[int, int, list[int]]:
    """A moderator and a participant in the room; the participant keys *90."""
    m, p = r.join("9999"), r.join("1111")
    r.ua.digits(p, "*90")
    r.run(0.5)
    return m, p, rung(r)


def pending(r: Rig) -> list[dict[str, Any]]:
    return r.srv.svc.helpdesk.pending()


def test_the_caller_hanging_up_stops_every_phone(rig):
    r = rig(**OPERATORS)
    m, p, ops = ask(r)
    assert len(ops) == 2 and (p, m) not in r.ua.links
    assert pending(r)[0]["state"] == "ringing" and pending(r)[0]["ringing"] == ["1001", "1002"]
    r.ua.hang_up(p)
    r.run(1)
    assert all(r.ua.legs[o].gone for o in ops)
    assert pending(r) == [] and set(r.room().members) == {m}


def test_busy_phones_send_the_caller_back_at_once_and_a_late_answer_is_dropped(rig):
    r = rig(**OPERATORS)
    m, p, ops = ask(r)
    r.ua.hang_up(ops[0], 486)
    r.run(0.5)
    assert (p, m) not in r.ua.links, "one phone still rings"
    r.ua.hang_up(ops[1], 486)
    r.run(0.5)
    assert (p, m) in r.ua.links and "operator_unavailable" in r.ua.prompts(p)
    assert [x["state"] for x in pending(r)] == ["unanswered"]
    # Two phones answer the next request: the second is hung up.
    r.ua.digits(p, "*90")
    r.run(0.5)
    first, second = rung(r)[2:]
    r.ua.answer_out(first)
    r.ua.answer_out(second)
    r.run(0.5)
    assert r.ua.legs[second].gone and not r.ua.legs[first].gone
    assert (p, first) in r.ua.links and (first, p) in r.ua.links
    assert [x["state"] for x in pending(r)] == ["talking"]


def test_the_callers_key_and_the_operator_hanging_up_bring_the_caller_back(rig):
    r = rig(**OPERATORS)
    m, p, ops = ask(r)
    r.ua.answer_out(ops[1])
    r.run(0.5)
    assert r.ua.legs[ops[0]].gone, "the other phone stopped ringing"
    r.ua.digits(p, "*2")  # the caller's own way back
    r.run(0.5)
    assert (p, m) in r.ua.links and r.ua.legs[ops[1]].gone
    assert r.ua.prompts(p)[-1] == "dialout_back"
    r.ua.digits(p, "*90")
    r.run(0.5)
    op = rung(r)[-1]
    r.ua.answer_out(op)
    r.run(0.5)
    r.ua.hang_up(op)
    r.run(0.5)
    assert (p, m) in r.ua.links and r.ua.prompts(p)[-1] == "operator_left"
    assert pending(r) == []


def test_the_operators_hangup_key_ends_the_callers_call(rig):
    r = rig(**OPERATORS)
    m, p, ops = ask(r)
    r.ua.answer_out(ops[0])
    r.run(0.5)
    r.ua.digits(ops[0], "*7")
    r.run(5)
    assert r.ua.legs[p].gone and r.ua.legs[ops[0]].gone
    assert set(r.room().members) == {m}


def test_at_the_pin_prompt_a_wrong_pin_from_the_operator_changes_nothing(rig):
    r = rig(**OPERATORS)
    c = r.ua.call("conf")
    r.run(0.5)
    r.ua.digits(c, "*0")
    r.run(0.5)
    (op, other) = rung(r)
    r.ua.answer_out(op)
    r.run(0.5)
    assert (c, op) in r.ua.links and r.ua.legs[other].gone
    assert "operator_entry_caller" in r.ua.prompts(op)
    r.ua.digits(op, "4444#")
    r.run(0.5)
    assert r.ua.prompts(op)[-1] == "invalid_pin" and (c, op) in r.ua.links
    assert r.room() is None
    r.ua.digits(op, "*3")  # no room to join from the PIN prompt
    r.run(2)
    assert r.ua.prompts(op)[-1] == "not_available" and (c, op) in r.ua.links
    r.ua.digits(op, "*2")  # back to the PIN prompt
    r.run(0.5)
    assert r.ua.legs[op].gone and r.ua.prompts(c)[-1] == "enter_pin"
    r.ua.digits(c, "1111#")
    r.run(0.5)
    assert set(r.room().members) == {c}


def test_without_an_operator_star0_and_star90_do_nothing(rig):
    r = rig(extensions=EXTENSIONS)
    c = r.ua.call("conf")
    r.run(0.5)
    r.ua.digits(c, "*0")
    r.run(0.5)
    m = r.join("9999")
    r.ua.digits(m, "*90")
    r.run(0.5)
    assert rung(r) == [] and r.ua.prompts(m)[-1] == "not_available"
