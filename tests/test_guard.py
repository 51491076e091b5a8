"""The PIN-guessing lockout as a plain state machine."""

from __future__ import annotations

from ivr.guard import PinGuard


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
