"""Brazilian dial strings -> call types, from a line in area code 11."""

import pytest

from lines.classify import DialError, classify, dial_string

CASES = [
    # emergency and utility short codes
    ("190", "emergency"),
    ("192", "emergency"),
    ("193", "emergency"),
    ("100", "emergency"),
    ("112", "emergency"),
    ("911", "emergency"),
    ("128", "emergency"),
    ("199", "emergency"),
    ("180", "emergency"),
    ("181", "emergency"),
    ("188", "emergency"),
    ("197", "emergency"),
    ("102", "utility"),
    ("156", "utility"),
    ("10315", "utility"),
    # local, no prefix
    ("33334444", "local_fixed"),
    ("988887777", "local_mobile"),
    ("2345-6789", "local_fixed"),
    ("98888-7777", "local_mobile"),
    # 0 + DDD + number
    ("01133334444", "local_fixed"),
    ("011988887777", "local_mobile"),
    ("01933334444", "regional_fixed"),
    ("019988887777", "regional_mobile"),
    ("01233334444", "regional_fixed"),
    ("02133334444", "national_fixed"),
    ("021988887777", "national_mobile"),
    ("06133334444", "national_fixed"),
    ("085988887777", "national_mobile"),
    # 0 + CSP + DDD + number
    ("0211133334444", "local_fixed"),
    ("02111988887777", "local_mobile"),
    ("0151933334444", "regional_fixed"),
    ("0412133334444", "national_fixed"),
    ("02121988887777", "national_mobile"),
    ("0145133334444", "national_fixed"),
    # +E.164
    ("+551133334444", "local_fixed"),
    ("+5511988887777", "local_mobile"),
    ("+551633334444", "regional_fixed"),
    ("+553133334444", "national_fixed"),
    ("+5571988887777", "national_mobile"),
    ("+12125551234", "international"),
    ("+442079460000", "international"),
    ("+351213456789", "international"),
    # 00 + CSP + CC + number
    ("002112125551234", "international"),
    ("0015442079460000", "international"),
    ("0021351213456789", "international"),
    # collect calls
    ("909033334444", "collect_local"),
    ("9090988887777", "collect_local"),
    ("90212133334444", "collect_national"),
    ("902121988887777", "collect_national"),
    # non-geographic
    ("08001234567", "toll_free"),
    ("0800123456", "toll_free"),
    ("03001234567", "shared_cost"),
    ("03031234567", "shared_cost"),
    ("40041234", "shared_cost"),
    ("30031234", "shared_cost"),
    ("40201234", "shared_cost"),
    ("05001234567", "premium"),
    ("09001234567", "premium"),
]


@pytest.mark.parametrize(("dialed", "kind"), CASES)
def test_call_type(dialed, kind):
    assert classify(dialed, "11").call_type == kind


def test_the_table_is_large():
    assert len(CASES) >= 50


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "0",
        "123456",
        "0001",
        "00215512345678",
        "+999123",
        "0001133334444",
        "90211133",
        "12345678901234567",
    ],
)
def test_bad_dial_strings_are_errors(bad):
    with pytest.raises(DialError):
        classify(bad, "11")


def test_carrier_rewrite():
    c = classify("02111988887777", "11")
    assert dial_string(c, "21", True) == "988887777"  # local: no carrier
    c = classify("0412133334444", "11")
    assert dial_string(c, "21", True) == "0212133334444"  # forced CSP 21
    assert dial_string(c, "21", False) == "0412133334444"  # keyed CSP kept
    assert dial_string(classify("02133334444", "11"), "21", False) == "0212133334444"
    assert dial_string(classify("+12125551234", "11"), "21", True) == "00211 2125551234".replace(
        " ", ""
    )
    assert dial_string(classify("90412133334444", "11"), "21", True) == "90212133334444"
    assert dial_string(classify("190", "11"), "21", True) == "190"
