"""The PIN-guessing lockout as a plain state machine, with an injected clock
(every call takes the time), its memory of valid PINs and its test clock."""

from __future__ import annotations

from ivr.guard import (
    DAY,
    KNOWN_TRIES_SPENT,
    NUMBER_LOCKED,
    SOURCE_LOCKED,
    KnownCallers,
    PinGuard,
    WrongPinVerdict,
)
from ponte.known_callers import KnownCallerStore
from ponte.lockout_clock import ENV, LockoutClock


def test_twenty_wrong_pins_in_ten_minutes_lock_their_sources_for_fifteen():
    g = PinGuard(limit=20, window=600, lockout=900)
    for i in range(19):
        assert g.record_wrong("ip:10.0.0.1" if i % 2 else "ip:10.0.0.2", i * 10.0) == []
    assert not g.is_locked("ip:10.0.0.1", 200)
    assert g.record_wrong("ip:10.0.0.1", 200) == ["ip:10.0.0.1", "ip:10.0.0.2"]
    assert g.is_locked("ip:10.0.0.2", 200 + 899)
    assert not g.is_locked("ip:10.0.0.2", 200 + 901), "15 minutes later it may call again"
    assert not g.is_locked("ip:10.0.0.3", 300), "a source without wrong PINs is never locked"


def test_wrong_pins_spread_over_more_than_the_window_never_lock():
    g = PinGuard(limit=20, window=600, lockout=900)
    for i in range(100):
        assert g.record_wrong("ip:10.0.0.1", i * 32.0) == []  # at most 19 in any 600 s
    assert not g.is_locked("ip:10.0.0.1", 3200)


def test_a_caller_who_mistyped_during_an_attack_is_spared():
    g = PinGuard(limit=20, window=600, lockout=900)
    assert g.record_wrong("ip:10.0.0.9", 0.0) == []  # a bystander's typo
    for i in range(18):
        g.record_wrong("ip:10.0.0.1", 1.0 + i)
    assert g.record_wrong("ip:10.0.0.1", 30.0) == ["ip:10.0.0.1"]
    assert not g.is_locked("ip:10.0.0.9", 31.0)
    # Attackers spread over sources are locked once each keyed a call's worth.
    g2 = PinGuard(limit=20, window=600, lockout=900)
    locked: list[str] = []
    for i in range(21):
        locked += g2.record_wrong(f"ip:10.0.1.{i % 7}", float(i))
    assert sorted(set(locked)) == [f"ip:10.0.1.{n}" for n in range(7)]


# -- per number (issue 16, item 3: a rotating caller ID) -----------------------

DID = "+551130001000"


def guard(**kw: float) -> PinGuard:
    return PinGuard(**{"limit": 20, "window": 600, "lockout": 900, "known_tries": 3, **kw})


def spend(g: PinGuard, number: str, t0: float, n: int = 20) -> list[WrongPinVerdict]:
    """`n` wrong PINs on `number` from as many caller IDs, one a second."""
    return [g.wrong_pin(number, f"cid:551199{i:07d}", t0 + i) for i in range(n)]


def test_a_rotating_caller_id_spends_the_numbers_budget():
    """The probe: 7 calls x 3 wrong PINs, each from a new caller ID. Per source
    none reaches anything; per number the 20th spends the budget, ends its
    call, and the next new caller ID is refused for 15 minutes."""
    g = guard()
    verdicts = [
        g.wrong_pin(DID, f"cid:55119{call:08d}", call * 10.0 + k)
        for call in range(7)
        for k in range(3)
    ]
    assert [v.end_call for v in verdicts] == [False] * 19 + [True, True]
    assert [v.number_locked for v in verdicts].index(True) == 19, "the 20th locks the number"
    assert sum(v.number_locked for v in verdicts) == 1, "one lockout, not one per PIN"
    assert g.admit(DID, "cid:5511000000099", 70.0) == NUMBER_LOCKED
    assert g.admit(DID, "cid:5511000000099", 62.0 + 899) == NUMBER_LOCKED
    assert g.admit(DID, "cid:5511000000099", 62.0 + 901) is None, "15 minutes after the last"
    assert g.admit("conf", "cid:5511000000099", 70.0) is None, "other numbers are not locked"


def test_the_wrong_pin_that_spends_the_budget_ends_its_call_and_so_does_every_next_one():
    g = guard(limit=4)
    assert not any(v.end_call for v in spend(g, DID, 0.0, 3))
    v = g.wrong_pin(DID, "cid:a", 3.0)
    assert v.number_locked and v.end_call
    # A call already in the IVR (admitted before) gets no second try either.
    v = g.wrong_pin(DID, "cid:b", 4.0)
    assert v.end_call and not v.number_locked
    assert g.wrong_pin(DID, "ext:1001", 5.0).end_call, "an extension too: one try per call"


def test_a_known_caller_id_gets_in_with_its_own_small_budget():
    g = guard(limit=4, known_tries=2)
    spend(g, DID, 0.0, 4)
    known, stranger = "cid:5511988887777", "cid:5511955554444"
    assert g.admit(DID, stranger, 10.0, known=False) == NUMBER_LOCKED
    assert g.admit(DID, known, 10.0, known=True) is None
    assert g.wrong_pin(DID, known, 11.0).end_call, "one try per call"
    assert g.admit(DID, known, 12.0, known=True) is None
    assert g.wrong_pin(DID, known, 13.0).end_call
    assert g.admit(DID, known, 14.0, known=True) == KNOWN_TRIES_SPENT
    assert g.admit(DID, "cid:5511911112222", 14.0, known=True) is None, "its budget is its own"


def test_known_tries_zero_exempts_no_caller_id():
    g = guard(limit=2, known_tries=0)
    spend(g, DID, 0.0, 2)
    assert g.admit(DID, "cid:1", 5.0, known=True) == KNOWN_TRIES_SPENT


def test_each_lockout_gives_known_caller_ids_a_fresh_budget():
    g = guard(limit=2, known_tries=1)
    spend(g, DID, 0.0, 2)  # locked until 901
    g.wrong_pin(DID, "cid:known", 10.0)  # spends its one try; window still full: until 910
    assert g.admit(DID, "cid:known", 20.0, known=True) == KNOWN_TRIES_SPENT
    assert g.admit(DID, "cid:known", 911.0, known=True) is None, "the lockout ended"
    spend(g, DID, 2000.0, 2)
    assert g.admit(DID, "cid:known", 2005.0, known=True) is None, "a new lockout, a new budget"


def test_wrong_pins_keep_a_spent_number_locked_for_fifteen_minutes_after_the_last():
    g = guard(limit=3)
    spend(g, DID, 0.0, 3)  # spent at 2: locked until 902
    assert g.wrong_pin(DID, "cid:x", 500.0).end_call  # window still holds 4 >= 3: until 1400
    assert g.admit(DID, "cid:new", 1000.0) == NUMBER_LOCKED
    assert g.admit(DID, "cid:new", 1401.0) is None
    # The window moved on: one wrong PIN is only the first of a new budget.
    assert not g.wrong_pin(DID, "cid:y", 1402.0).end_call


def test_a_budget_spread_over_more_than_the_window_never_locks_the_number():
    g = guard()
    for i in range(100):
        assert not g.wrong_pin(DID, f"cid:{i}", i * 32.0).end_call  # 19 in any 600 s
    assert g.admit(DID, "cid:new", 3200.0) is None


def test_extensions_spend_the_budget_but_are_not_refused_for_it():
    """An extension is authenticated by Kamailio, not a caller ID anyone can
    claim: it is keyed per extension, never refused for the number's lockout,
    and only its own per-source lockout shuts it out."""
    g = guard(limit=4)
    for t in range(3):
        g.wrong_pin("conf", "ext:1002", float(t))
    assert g.wrong_pin("conf", "cid:a", 3.0).number_locked, "the extension's 3 counted"
    assert g.admit("conf", "ext:1001", 4.0) is None, "another extension still gets in"
    assert g.admit("conf", "ext:1002", 4.0) == SOURCE_LOCKED, "the guesser itself is locked"
    assert g.admit("conf", "cid:b", 4.0) == NUMBER_LOCKED


def test_direct_sources_stay_keyed_by_address():
    """A call straight to the app server is known by its address: it spends
    no number's budget and is not refused for a number's lockout."""
    g = guard(limit=4)
    for t in range(3):
        assert not g.wrong_pin(DID, "ip:127.0.0.9", float(t)).end_call
    assert g.wrong_pin(DID, "ip:127.0.0.9", 3.0) == WrongPinVerdict(["ip:127.0.0.9"])
    assert not g.number_locked(DID, 4.0)
    spend(g, DID, 10.0, 4)
    assert g.admit(DID, "ip:127.0.0.10", 20.0) is None
    assert g.admit(DID, "ip:127.0.0.9", 20.0) == SOURCE_LOCKED


def test_known_callers_are_remembered_for_ninety_days():
    k = KnownCallers(keep=90 * DAY)
    k.remember(DID, "cid:a", 1000.0)
    assert k.knows(DID, "cid:a", 1000.0 + 89 * DAY)
    assert not k.knows("conf", "cid:a", 1001.0), "per number"
    assert not k.knows(DID, "cid:b", 1001.0)
    k.remember(DID, "cid:a", 500.0)  # an older report never moves it back
    assert k.knows(DID, "cid:a", 1000.0 + 90 * DAY)
    assert not k.knows(DID, "cid:a", 1000.0 + 90 * DAY + 1)


def test_the_known_caller_table_outlives_the_process(tmp_path):
    db = tmp_path / "ponte.db"
    KnownCallerStore(db).remember(DID, "cid:a", 1_700_000_000.0)
    KnownCallerStore(db).remember(DID, "cid:a", 1_600_000_000.0)  # older: kept the newer
    KnownCallerStore(db).remember(DID, "cid:old", 1_690_000_000.0)
    again = KnownCallerStore(db)
    assert sorted(again.since(1_650_000_000.0)) == [
        (DID, "cid:a", 1_700_000_000.0),
        (DID, "cid:old", 1_690_000_000.0),
    ]
    again.forget_before(1_695_000_000.0)
    assert list(again.since(0.0)) == [(DID, "cid:a", 1_700_000_000.0)]


# -- the lockout's clock (test mode only) --------------------------------------


def test_the_lockout_clock_moves_only_in_test_mode_and_only_forward(tmp_path):
    skew = tmp_path / "skew"
    base = iter(range(100, 200)).__next__
    assert LockoutClock.from_env(base, {}).skew_file is None
    clock = LockoutClock.from_env(base, {ENV: str(skew)})
    assert clock.now() == 100, "no file yet: no offset"
    skew.write_text("901\n")
    skew.chmod(0o600)
    assert clock.now() == 101 + 901
    skew.write_text("5")
    assert clock.now() == 102 + 901, "never backwards"
    skew.write_text("nonsense")
    assert clock.now() == 103 + 901


def test_the_lockout_clock_refuses_systemd_and_a_file_others_can_write(tmp_path):
    skew = tmp_path / "skew"
    skew.write_text("901")
    for var in ("INVOCATION_ID", "NOTIFY_SOCKET"):
        clock = LockoutClock.from_env(lambda: 0.0, {ENV: str(skew), var: "x"})
        assert clock.skew_file is None and clock.now() == 0.0, var
    skew.chmod(0o622)
    clock = LockoutClock.from_env(lambda: 0.0, {ENV: str(skew)})
    assert clock.now() == 0.0, "a group- or world-writable file is not read"
    skew.chmod(0o600)
    assert clock.now() == 901.0
