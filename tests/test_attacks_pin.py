"""PIN guessing with a rotating caller ID (issue 16, item 3), on real calls.

The probe: 7 DID calls with 3 wrong PINs each, each from a new caller ID,
locked those 7 caller IDs, and the next call, from yet another one, got in:
the lockout was keyed on a caller ID the caller chooses. Now each number has
a budget of wrong PINs whatever the caller IDs; once spent, wrong PINs end
their calls and, for the lockout, only caller IDs that keyed a valid PIN on
that number get in, one try per call and a small budget each.

The calls come as a trunk provider's do: from the provider's address, with a
Route to Kamailio, which relays them to the app server unauthenticated, each
with the From user (the caller ID) the test picks. The lockout runs on a
monotonic clock; the test moves it forward through the test-mode file
PONTE_TEST_LOCKOUT_CLOCK (ponte/lockout_clock.py) instead of waiting 15 minutes.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import audio
from tests.attack_helpers import FAST_IVR, THREE_WRONG, kamailio_log, wait_for
from tests.harness import Server
from tests.pbx_helpers import Provider, pbx_overrides, via_proxy
from tests.test_spine_calls import window

ServerFactory = Callable[..., Server]
PhoneFactory = Callable[..., Any]

DID = "+551130001000"  # pbx_overrides' DID, routed to the `conf` entry IVR
LIMIT = 5  # the number's budget of wrong PINs (in 10 minutes) for this test
PIN_IVR = {
    **FAST_IVR,
    "lockout_after": LIMIT,
    "lockout_window": 600,
    "lockout_seconds": 900,
    "lockout_known_tries": 1,  # a known caller ID's wrong PINs during the lockout
}
KNOWN = "5511988887777"  # a regular caller: keyed the right PIN before the attack
RIGHT_PIN = "wait_media 8; dtmf 1111#; wait 1.5; hangup"


def did_call(
    phone: PhoneFactory, srv: Server, caller_id: str, script: str, record: bool = False
) -> Any:
    """A call to the DID from the provider's address through Kamailio, with
    `caller_id` as the From user; returns the softphone (`.result()`)."""
    return phone(
        srv.uri(DID),
        script,
        record=record,
        bind="127.0.0.1",  # the provider's address: Kamailio lets its calls in
        extra=[*via_proxy(srv), "--user", caller_id],
    )


def leg_of(srv: Server, caller_id: str) -> int:
    """The server's call id of the last call from `caller_id`."""
    legs = re.findall(rf"call (\d+) incoming from={re.escape(caller_id)} ", srv.log())
    assert legs, f"no call from {caller_id} reached the app server"
    return int(legs[-1])


def call_log(srv: Server, caller_id: str) -> str:
    """The log lines of the last call from `caller_id` (call ids start again
    at 1 after the restart, so earlier lines are left out)."""
    leg = leg_of(srv, caller_id)
    log = srv.log()
    start = log.rindex(f"call {leg} incoming from={caller_id} ")
    return "\n".join(line for line in log[start:].splitlines() if f" call {leg} " in line)


def wrong_pins(srv: Server, caller_id: str) -> int:
    return call_log(srv, caller_id).count(" pin failed ")


def joined(srv: Server, caller_id: str) -> bool:
    return " join room=" in call_log(srv, caller_id)


def assert_refused(srv: Server, caller: Any, caller_id: str, why: str) -> None:
    """Refused before any answer: "try later" as early media (183), then 403."""
    r = caller.result()
    assert r.get("code") == 403 and "confirmed_at" not in r, r
    samples, rate = audio.load(caller.record)
    assert audio.speech_like(samples, rate), f"{caller_id} hears why"
    assert f"cid:{caller_id} is locked out (PIN guessing on {DID}: {why})" in srv.log()
    # The phone's ACK of the 403 is hop by hop, with its outbound-proxy Route
    # and no dialog token: Kamailio's tm takes it (refused as a forged
    # in-dialog request, it left tm retransmitting the 403 until Timer H).
    assert "in-dialog ACK" not in kamailio_log(srv), "the ACK of the 403 was refused"


def known_rows(srv: Server) -> list[tuple[str, str]]:
    db = sqlite3.connect(srv.config["database"])
    try:
        return db.execute("SELECT access_number, caller FROM pin_known_callers").fetchall()
    finally:
        db.close()


def test_a_rotating_caller_id_spends_the_numbers_budget_and_a_known_caller_still_gets_in(
    server_factory: ServerFactory,
    phone: PhoneFactory,
    provider: Provider,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A regular caller keys the right PIN (remembered in the database, which
    survives a restart). Then guessers, a new caller ID per call, key wrong
    PINs: the one that spends the number's budget ends its call mid-call; a
    new caller ID is refused even with the right PIN; the regular caller gets
    in with the right PIN, and with a wrong one its call ends after one try
    and its small budget is spent; 15 minutes later (the lockout's clock moved
    forward) a new caller ID gets in again."""
    skew = tmp_path / "lockout-skew"
    monkeypatch.setenv("PONTE_TEST_LOCKOUT_CLOCK", str(skew))
    for var in ("INVOCATION_ID", "NOTIFY_SOCKET"):  # a CI runner under systemd
        monkeypatch.delenv(var, raising=False)
    srv = server_factory(ivr=PIN_IVR, **pbx_overrides(provider.port))
    assert "TEST MODE: the PIN lockout's clock" in srv.log()

    # A regular caller: the right PIN, remembered on disk for this number.
    known = did_call(phone, srv, KNOWN, RIGHT_PIN).result()
    assert known["hung_up_by"] == "local", known
    # What the phone sent, and when, beside what the server heard.
    assert joined(srv, KNOWN), (known.get("digits_sent"), call_log(srv, KNOWN))
    wait_for(lambda: (DID, f"cid:{KNOWN}") in known_rows(srv), 5, "the valid PIN on disk")
    # Memory lost with the process: what exempts it below is the database.
    srv.stop()
    assert srv.restart() == 0
    wait_for(lambda: srv.log().count("trunk:provider1 registration 200") >= 2, 15, "the trunk")

    # Guessers, a new caller ID per call: 3 wrong PINs (the call's own limit).
    first = did_call(phone, srv, "5521900000001", THREE_WRONG.format(pin="123")).result()
    assert first["hung_up_by"] == "remote", first
    assert wrong_pins(srv, "5521900000001") == 3
    assert f"number {DID} locked" not in srv.log()
    # The next call's 2nd wrong PIN is the 5th on the number: it spends the
    # budget and ends that call there, with a try left.
    t0 = time.monotonic()
    spender = did_call(phone, srv, "5521900000002", THREE_WRONG.format(pin="456"), record=True)
    rs = spender.result()
    leg = leg_of(srv, "5521900000002")
    assert rs["hung_up_by"] == "remote" and wrong_pins(srv, "5521900000002") == 2, rs
    assert f"PIN guessing: number {DID} locked for 900 s after {LIMIT} wrong PINs" in srv.log()
    assert f"call {leg}: wrong PIN while {DID} is locked: ending the call" in srv.log()
    assert f"call {leg} ending: wrong PIN on a locked number" in srv.log()
    second = [t for d, _m, t in rs["digits_sent"] if d == "#"][1]
    samples, rate = audio.load(spender.record)
    told = audio.segment(samples, rate, *window(rs, second + 0.3, rs["ended_at"] - 0.2))
    assert audio.speech_like(told, rate), 'the caller hears "try later" before the BYE'
    print(
        f"spending call: BYE {rs['ended_at'] - second:.1f} s after its 2nd wrong PIN's #, "
        f"{rs['ended_at'] - t0:.1f} s after it was placed"
    )

    # A new caller ID is refused, even keying the right PIN.
    stranger = did_call(phone, srv, "5521900000003", "wait_media 8; dtmf 1111#; wait_end 10", True)
    assert_refused(
        srv,
        stranger,
        "5521900000003",
        "the number is locked and this caller ID keyed no valid PIN on it",
    )

    # The regular caller gets in...
    assert did_call(phone, srv, KNOWN, RIGHT_PIN).result()["hung_up_by"] == "local"
    assert joined(srv, KNOWN)
    # ...but a wrong PIN from that caller ID (it may be spoofed) ends the call
    # at the first try, and spends its budget (1 here) for this lockout.
    spoof = did_call(phone, srv, KNOWN, THREE_WRONG.format(pin="789")).result()
    assert spoof["hung_up_by"] == "remote" and wrong_pins(srv, KNOWN) == 1, spoof
    again = did_call(phone, srv, KNOWN, "wait_media 8; dtmf 1111#; wait_end 10", True)
    assert_refused(srv, again, KNOWN, "the number is locked and this caller ID spent its tries")

    # 15 minutes later (on the lockout's clock): a new caller ID gets in again.
    skew.write_text("901\n")
    later = did_call(phone, srv, "5521900000004", RIGHT_PIN).result()
    assert later["hung_up_by"] == "local" and joined(srv, "5521900000004"), later
    assert srv.log().count("pin failed") == 3 + 2 + 1, "no guess got past the budget"
