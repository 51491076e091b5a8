"""One digit stream from RFC 2833 and SIP INFO."""

from ivr.dtmf import DtmfDeduper


def test_same_digit_both_ways_counts_once():
    d = DtmfDeduper()
    assert d.accept("1", "rfc2833", 0.00)
    assert not d.accept("1", "info", 0.03)


def test_repeated_digit_both_ways_counts_twice():
    d = DtmfDeduper()
    got = [
        d.accept("1", m, t)
        for m, t in (("rfc2833", 0.0), ("info", 0.02), ("rfc2833", 0.2), ("info", 0.22))
    ]
    assert got == [True, False, True, False]


def test_same_method_repeats_are_real_presses():
    d = DtmfDeduper()
    assert d.accept("5", "info", 0.0)
    assert d.accept("5", "info", 0.1)


def test_other_method_after_window_is_a_new_press():
    d = DtmfDeduper(window=0.5)
    assert d.accept("7", "rfc2833", 0.0)
    assert d.accept("7", "info", 0.9)


def test_junk_digits_are_dropped():
    d = DtmfDeduper()
    assert not d.accept("x", "info", 0.0)
    assert d.accept("a", "info", 0.0)  # A-D are valid DTMF
