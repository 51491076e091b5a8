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
