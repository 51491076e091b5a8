"""Conference PIN guessing: 3 per call, the 20-in-10-minutes lockout, and no way
around it through Kamailio without credentials (the attack suite:
tests/attack_helpers.py; a rotating caller ID: tests/test_attacks_pin.py)."""

from __future__ import annotations

import re

from tests import audio, ports
from tests.attack_helpers import FAST_IVR, THREE_WRONG, PhoneFactory, ServerFactory
from tests.harness import Server
from tests.pbx_helpers import pbx_overrides, proxy


def calls_from(srv: Server, ip: str) -> list[int]:
    """Server call ids of the calls that came from `ip`."""
    return [int(n) for n in re.findall(rf"call (\d+) incoming .* src={re.escape(ip)}:", srv.log())]


def joined(srv: Server, leg: int) -> bool:
    return re.search(rf"call {leg} join room=", srv.log()) is not None


def test_third_wrong_pin_ends_the_call(server_factory: ServerFactory, phone: PhoneFactory) -> None:
    """Three wrong PINs keyed back to back (barging into the prompts): the
    server says goodbye and hangs up itself, for that reason and no other."""
    srv = server_factory(ivr=FAST_IVR)
    p = phone(srv.uri("conf-en"), THREE_WRONG.format(pin="123"), record=False)
    r = p.result()
    assert r["hung_up_by"] == "remote" and "end_timeout" not in r, r
    log = srv.log()
    assert log.count("pin failed") == 3
    # The cause, not a time bound: the server's one reason to end this call.
    assert re.findall(r"call \d+ ending: (.*)", log) == ["too many wrong PINs"], log[-2000:]
    assert "join room=" not in log


def test_twenty_wrong_pins_lock_the_source_out(
    server_factory: ServerFactory, phone: PhoneFactory
) -> None:
    """7 calls of 3 wrong PINs (21 > 20 in 10 minutes) from one source: that
    source's next call, even keying the right PIN, hears "try later" as early
    media and gets 403; a call from another address still gets in."""
    srv = server_factory(ivr=FAST_IVR)
    attacker = ports.loopback_ip()
    guesses = phone(
        srv.uri("conf"),
        THREE_WRONG,
        record=False,
        bind=attacker,
        calls=7,
        rate=2,
        extra=["--pins", ",".join(f"{n:03d}" for n in range(7))],  # 0001 .. 0063
    )
    reports = guesses.result(timeout=90)
    assert all(r["hung_up_by"] == "remote" for r in reports), reports
    assert srv.log().count("pin failed") == 21
    assert f"PIN guessing: ip:{attacker} locked out" in srv.log()

    locked = phone(srv.uri("conf"), "wait_media 8; dtmf 1111#; wait_end 10", bind=attacker)
    elsewhere = ports.loopback_ip()
    other = phone(
        srv.uri("conf"), "wait_media 8; dtmf 1111#; wait 1.5; hangup", record=False, bind=elsewhere
    )
    rl, ro = locked.result(), other.result()
    legs = calls_from(srv, attacker)
    assert len(legs) == 8 and not joined(srv, legs[-1]), legs
    assert rl.get("code") == 403, rl
    assert "confirmed_at" not in rl, "refused before any answer: no PIN is asked"
    samples, rate = audio.load(locked.record)
    assert audio.speech_like(samples, rate), "the locked-out caller hears why"
    assert f"ip:{attacker} is locked out" in srv.log()
    assert ro["hung_up_by"] == "local" and joined(srv, calls_from(srv, elsewhere)[-1]), (
        "another source is not locked out"
    )


def test_a_guesser_cannot_reach_the_ivr_through_kamailio_without_credentials(
    server_factory: ServerFactory, phone: PhoneFactory
) -> None:
    """Only trunk providers may reach the app server through Kamailio without
    digest auth (by a preloaded Route): anyone else is challenged, so a PIN
    guesser cannot pick a new caller ID per call to dodge the lockout."""
    srv = server_factory(ivr=FAST_IVR, **pbx_overrides())
    r = phone(
        f"sip:conf@{proxy(srv)}",
        "wait_end 5",
        record=False,
        bind=ports.loopback_ip(),
        extra=["--proxy", f"sip:{proxy(srv)};lr", "--user", "guess0"],
    ).result()
    assert r.get("code") == 407, r
    assert " incoming " not in srv.log()
