"""The trunk's calls-per-second window."""

from pbx.ratelimit import SlidingWindowLimiter


def test_two_per_second_in_any_window():
    lim = SlidingWindowLimiter(2, guard=0)
    assert [lim.try_acquire(0.0) for _ in range(3)] == [True, True, False]
    assert not lim.try_acquire(0.5)
    assert not lim.try_acquire(0.999)
    assert lim.try_acquire(1.0) and lim.try_acquire(1.0)
    assert not lim.try_acquire(1.5)


def test_paced_attempts_never_exceed_the_rate():
    lim = SlidingWindowLimiter(2)
    t, sent = 0.0, []
    for _ in range(30):
        t = lim.next_free(t)
        assert lim.try_acquire(t)
        sent.append(t)
    for i, start in enumerate(sent):
        assert sum(1 for x in sent[i:] if x < start + 1.0) <= 2


def test_the_guard_keeps_sends_a_little_more_than_a_window_apart():
    lim = SlidingWindowLimiter(2)
    assert lim.try_acquire(0.0) and lim.try_acquire(0.0)
    assert not lim.try_acquire(1.0)
    assert lim.next_free(1.0) == 1.02
