"""The entry dialogue as a plain state machine (no SIP here: these test
decisions; the real-call tests check that calls work)."""

from ivr.commands import CancelTimer, Hangup, JoinRoom, Play, StartTimer, StopPlayback
from ivr.pin_entry import TOTAL, PinEntry, PinMatch

PINS = {"1111": PinMatch("demo", "participant"), "9999": PinMatch("demo", "moderator")}


def make(**kw) -> PinEntry:
    return PinEntry(PINS.get, **kw)


def feed(d: PinEntry, digits: str) -> list:
    out = []
    for ch in digits:
        out += d.digit(ch)
    return out


def test_prompt_then_right_pin_joins_with_role():
    d = make()
    assert d.start() == [Play(("enter_pin",))]
    assert d.prompt_finished() == [StartTimer(TOTAL, 15.0)]
    cmds = feed(d, "9999#")
    assert cmds[-1] == JoinRoom("demo", "moderator")
    assert d.outcome.kind == "joined" and d.outcome.match.role == "moderator"


def test_digit_during_prompt_barges_in_and_is_kept():
    d = make()
    d.start()
    cmds = d.digit("1")
    assert StopPlayback() in cmds
    assert feed(d, "111#")[-1] == JoinRoom("demo", "participant")


def test_three_wrong_pins_say_goodbye_and_hang_up():
    d = make()
    d.start()
    assert feed(d, "12#")[-1] == Play(("invalid_pin", "enter_pin"))
    assert feed(d, "34#")[-1] == Play(("invalid_pin", "enter_pin"))
    cmds = feed(d, "56#")
    assert cmds[-2:] == [
        Play(("invalid_pin", "goodbye"), barge_in=False),
        Hangup("too many wrong PINs"),
    ]
    assert d.outcome.kind == "failed" and d.outcome.pin_tries == 3
    assert feed(d, "1111#") == []  # nothing after the end


def test_interdigit_timeout_submits_what_was_keyed():
    d = make()
    d.start()
    d.prompt_finished()
    feed(d, "1111")
    assert d.timeout("interdigit")[-1] == JoinRoom("demo", "participant")


def test_total_timeout_without_digits_counts_as_a_try():
    d = make(max_tries=2)
    d.start()
    d.prompt_finished()
    assert d.timeout(TOTAL)[-1] == Play(("no_input", "enter_pin"))
    d.prompt_finished()
    assert d.timeout(TOTAL)[-1] == Hangup("too many wrong PINs")


def test_star_is_ignored_and_empty_pin_is_wrong():
    d = make()
    d.start()
    assert feed(d, "*1111#")[-1] == JoinRoom("demo", "participant")
    d2 = make()
    d2.start()
    assert CancelTimer(TOTAL) in d2.digit("#")
    assert d2.tries == 1
