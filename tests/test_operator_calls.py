"""Operator help (*90 in a room, `0` at the PIN prompt) with real calls: the
operators are softphones registered to Kamailio as extensions, rung by the
app server through it, and what each side hears is checked by tone."""

from __future__ import annotations

import asyncio
import json
import sqlite3

from tests import audio, ports
from tests.consoleclient import ConsoleClient, next_event
from tests.harness import report
from tests.pbx_helpers import pbx_overrides, register, wait_registered
from tests.test_console_calls import ADMINS, PASSWORD
from tests.test_spine_calls import window

CALLER_HZ, OPERATOR_HZ, MODERATOR_HZ = 440, 900, 700


def config(operator: str | list[str], ring: float = 30.0) -> dict:
    return pbx_overrides(operator=operator, operator_ring_seconds=ring)


def operator_phone(phone, srv, number: str, script: str, after: float = 0.0, record: bool = True):
    """An operator's phone: registered as `number`, answering after `after` s."""
    extra = [*register(number, srv), "--answer", "--max-seconds", "60"]
    if after:
        extra += ["--answer-after", str(after)]
    p = phone("", script, record=record, bind=ports.loopback_ip(), extra=extra)
    wait_registered(srv, number)
    return p


def mark(r: dict, name: str) -> float:
    return r["marks"][name]


def hears(p, r: dict, start: float, end: float, hz: float) -> float:
    """The fraction of what phone `p` heard in [start, end] (monotonic) at `hz`."""
    samples, rate = audio.load(p.record)
    return audio.band_fraction(audio.segment(samples, rate, *window(r, start, end)), rate, hz)


def test_star90_talks_privately_then_the_operators_key_returns_the_caller(server_factory, phone):
    srv = server_factory(**config("1002"))
    op = operator_phone(
        phone,
        srv,
        "1002",
        f"wait_media 8; mark answered; tone {OPERATOR_HZ}; wait 5; mark star2; dtmf *2; "
        "wait_end 10",
    )
    mod = phone(
        srv.uri("conf-en"), f"wait_media 5; dtmf 9999#; tone {MODERATOR_HZ}; wait 22; hangup"
    )
    caller = phone(
        srv.uri("conf-en"),
        f"wait_media 5; wait 0.5; dtmf 1111#; tone {CALLER_HZ}; wait 2; mark asked; "
        "dtmf *90; wait 14; mark end; hangup",
    )
    ro, rm, rc = op.result(), mod.result(), caller.result()
    assert "confirmed_at" in ro and ro["hung_up_by"] == "remote", ro
    private = (mark(ro, "answered") + 1.5, mark(ro, "star2") - 0.3)
    assert hears(caller, rc, *private, OPERATOR_HZ) > 0.3, "the caller hears the operator"
    assert hears(caller, rc, *private, MODERATOR_HZ) < 0.02, "and not the room"
    assert hears(op, ro, *private, CALLER_HZ) > 0.3, "the operator hears the caller"
    assert hears(mod, rm, *private, CALLER_HZ) < 0.02, "the room does not hear the caller"
    assert hears(mod, rm, *private, OPERATOR_HZ) < 0.02, "nor the operator"
    after = (mark(ro, "star2") + 1.5, mark(rc, "end") - 0.3)
    assert hears(mod, rm, *after, CALLER_HZ) > 0.1, "*2: the caller is back in the room"
    assert hears(caller, rc, *after, MODERATOR_HZ) > 0.1, "and hears it again"
    log = srv.log()
    assert "asks for an operator (room room=demo): ringing 1002" in log
    assert "operator key action=return" in log


def test_two_operators_ring_together_and_the_join_key_makes_one_a_member(server_factory, phone):
    srv = server_factory(**config(["1001", "1002"]))
    late = operator_phone(phone, srv, "1002", "wait_end 30", after=60, record=False)
    op = operator_phone(
        phone,
        srv,
        "1001",
        f"wait_media 8; mark answered; tone {OPERATOR_HZ}; wait 3; mark star3; dtmf *3; "
        "wait 7; mark end; hangup",
        after=2.0,
    )
    mod = phone(
        srv.uri("conf-en"), f"wait_media 5; dtmf 9999#; tone {MODERATOR_HZ}; wait 22; hangup"
    )
    caller = phone(
        srv.uri("conf-en"),
        f"wait_media 5; wait 0.5; dtmf 1111#; tone {CALLER_HZ}; wait 2; dtmf *90; wait 17; hangup",
    )
    ro, rl, rm = op.result(), late.result(), mod.result()
    caller.result()
    # Both phones rang together (the late one before the first answered, not
    # after a ring time ran out); the one that did not answer was cancelled
    # while the operator talked. Order, not milliseconds.
    assert rl["ringing_at"] < ro["confirmed_at"], (rl, ro)
    assert "confirmed_at" not in rl and rl["hung_up_by"] == "remote", rl
    assert rl["ended_at"] < mark(ro, "star3"), (rl, ro)
    private = (mark(ro, "answered") + 1.5, mark(ro, "star3") - 0.3)
    assert hears(mod, rm, *private, CALLER_HZ) < 0.02
    after = (mark(ro, "star3") + 1.5, mark(ro, "end") - 0.3)
    assert hears(mod, rm, *after, OPERATOR_HZ) > 0.1, "*3: the operator is a member"
    assert hears(mod, rm, *after, CALLER_HZ) > 0.1, "with the caller"
    assert hears(op, ro, *after, MODERATOR_HZ) > 0.1, "the operator hears the room"
    db = sqlite3.connect(srv.config["database"])
    joined = [r[0] for r in db.execute("SELECT joined_by FROM conference_legs")]
    assert "operator" in joined, joined


def test_no_answer_sends_the_caller_back_with_a_message(server_factory, phone):
    srv = server_factory(**config("1002", ring=5.0))
    ringing = operator_phone(phone, srv, "1002", "wait_end 30", after=60, record=False)
    mod = phone(srv.uri("conf-en"), "wait_media 5; dtmf 9999#; wait 20; hangup")
    caller = phone(
        srv.uri("conf-en"),
        f"wait_media 5; wait 0.5; dtmf 1111#; wait 1; tone {CALLER_HZ}; wait 1; mark asked; "
        "dtmf *90; wait 13; mark end; hangup",
    )
    rr, rm, rc = ringing.result(), mod.result(), caller.result()
    assert "confirmed_at" not in rr and "ringing_at" in rr, rr
    asked = mark(rc, "asked")
    assert hears(mod, rm, asked + 1.0, asked + 4.5, CALLER_HZ) < 0.02, "away while it rings"
    samples, rate = audio.load(caller.record)
    told = audio.segment(samples, rate, *window(rc, asked + 5.6, asked + 7.3))
    assert audio.speech_like(told, rate), "the caller hears that no operator is available"
    assert hears(mod, rm, asked + 6.5, mark(rc, "end") - 0.3, CALLER_HZ) > 0.3, "back in the room"
    assert "no operator answered" in srv.log()


def test_zero_at_the_pin_prompt_reaches_the_operator_who_keys_the_rooms_pin(server_factory, phone):
    srv = server_factory(**config("1002"))
    op = operator_phone(
        phone,
        srv,
        "1002",
        f"wait_media 8; mark answered; tone {OPERATOR_HZ}; wait 3; mark wrong; dtmf 12345#; "
        "wait 2.5; mark pin; dtmf 1111#; wait_end 10",
    )
    mod = phone(
        srv.uri("conf-en"), f"wait_media 5; dtmf 9999#; tone {MODERATOR_HZ}; wait 22; hangup"
    )
    caller = phone(
        srv.uri("conf-en"), f"wait_media 5; wait 1; dtmf 0#; tone {CALLER_HZ}; wait 16; hangup"
    )
    ro, rm, rc = op.result(), mod.result(), caller.result()
    assert "confirmed_at" in ro and ro["hung_up_by"] == "remote", ro
    private = (mark(ro, "answered") + 1.5, mark(ro, "pin") - 0.2)
    assert hears(caller, rc, *private, OPERATOR_HZ) > 0.3, "the caller talks with the operator"
    assert hears(op, ro, *private, CALLER_HZ) > 0.3
    assert hears(mod, rm, *private, CALLER_HZ) < 0.02, "a wrong PIN put nobody in the room"
    after = (mark(ro, "pin") + 2.5, rc["hangup_sent_at"] - 0.3)
    assert hears(mod, rm, *after, CALLER_HZ) > 0.1, "the operator's PIN put the caller in"
    assert hears(caller, rc, *after, MODERATOR_HZ) > 0.1
    log = srv.log()
    assert "asks for an operator (entry): ringing 1002" in log
    assert "put in room=demo role=participant by the operator" in log


def test_console_shows_the_request_and_rings_an_operator_into_the_room(server_factory, phone):
    port = ports.allocate(1)
    base = f"http://127.0.0.1:{port}"
    srv = server_factory(
        **config("1002", ring=5.0), web={"listen": f"127.0.0.1:{port}"}, admins=ADMINS
    )
    mod = phone(
        srv.uri("conf-en"), f"wait_media 5; dtmf 9999#; tone {MODERATOR_HZ}; wait 25; hangup"
    )
    caller = phone(
        srv.uri("conf-en"),
        f"wait_media 5; wait 0.5; dtmf 1111#; tone {CALLER_HZ}; wait 2; dtmf *90; wait 20; hangup",
    )
    ops: list = []

    async def scenario() -> None:
        ana, carla = ConsoleClient(base), ConsoleClient(base)
        try:
            assert await ana.login("ana", PASSWORD) == 303
            assert await carla.login("carla", PASSWORD) == 303
            ws = await ana.events()
            # The operator's phone is not registered yet: nobody can answer.
            asked = await next_event(ws, {"help_requested"}, 20)
            member = asked["member"]
            pending = await asyncio.to_thread(lambda: srv.status()["help_requests"])
            assert [(p["call"], p["room"], p["state"]) for p in pending] == [
                (member, "demo", "unanswered")
            ], pending
            rooms = json.loads((await ana.get("/api/rooms"))[1])["rooms"]
            assert [m["help"] for m in rooms["demo"]["members"] if m["id"] == member] == [True]
            # Bad input and a read-only admin: refused, nothing rings.
            code, body = await ana.act("demo", "operator-join", 424242)
            assert code >= 400 and "no member" in body["error"], body
            code, body = await carla.act("demo", "operator-join", member)
            assert code == 403, body
            op = await asyncio.to_thread(
                operator_phone,
                phone,
                srv,
                "1002",
                f"wait_media 8; mark answered; tone {OPERATOR_HZ}; wait 5; mark end; hangup",
            )
            ops.append(op)
            code, body = await ana.act("demo", "operator-join", member)
            assert code == 200 and body["ok"], body
            ended = await next_event(ws, {"help_ended"}, 20)
            assert ended["member"] == member
            await ws.close()
        finally:
            await ana.close()
            await carla.close()

    asyncio.run(scenario())
    ro, rm = ops[0].result(), mod.result()
    caller.result()
    joined = (mark(ro, "answered") + 1.5, mark(ro, "end") - 0.3)
    assert hears(mod, rm, *joined, OPERATOR_HZ) > 0.1, "the operator joined the room"
    assert hears(mod, rm, *joined, CALLER_HZ) > 0.1, "where the caller stayed"
    assert "no operator answered" in srv.log()
    audit = [(r["action"], r["by"]) for r in report(srv, "audit") if r["source"] == "web"]
    assert audit == [("operator-join", "ana")], audit
