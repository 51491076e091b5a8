"""Brazilian dial strings: what kind of call a dialed number is.

The dial string is parsed here (prefixes, carrier code, collect prefix), and
`phonenumbers` judges the number that remains: its BR metadata rejects some
carrier codes and loses the collect prefix, so it cannot parse the dial
string alone.

Accepted formats:
    0 + CSP + DDD + number      national/regional with a carrier code
    0 + DDD + number            without a carrier code
    00 + CSP + CC + number      international
    +E.164                      any country
    number                      local: 8 digits fixed, 9 digits mobile (starts with 9)
    9090 + number               local collect call
    90 + CSP + DDD + number     national collect call
    0800 / 0300 / 0303 / 0500 / 0900 + number, 400x / 3003 / 4020 + 4 digits
    1xx(x)                      emergency and public-utility short codes
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType

# Emergency numbers always go through: kept in code, never configurable.
EMERGENCY = frozenset(
    {
        "100",
        "112",
        "128",
        "180",
        "181",
        "188",
        "190",
        "191",
        "192",
        "193",
        "194",
        "197",
        "198",
        "199",
        "911",
    }
)

CALL_TYPES = (
    "emergency",
    "utility",
    "local_fixed",
    "local_mobile",
    "regional_fixed",
    "regional_mobile",
    "national_fixed",
    "national_mobile",
    "international",
    "collect_local",
    "collect_national",
    "toll_free",
    "shared_cost",
    "premium",
)
GROUPS: dict[str, frozenset[str]] = {
    "local": frozenset({"local_fixed", "local_mobile"}),
    "regional": frozenset({"regional_fixed", "regional_mobile"}),
    "national": frozenset({"national_fixed", "national_mobile"}),
    "collect": frozenset({"collect_local", "collect_national"}),
    "mobile": frozenset({"local_mobile", "regional_mobile", "national_mobile"}),
    "fixed": frozenset({"local_fixed", "regional_fixed", "national_fixed"}),
}
# Types that cross area codes: the forced carrier (CSP) applies to them.
LONG_DISTANCE = frozenset(
    {
        "regional_fixed",
        "regional_mobile",
        "national_fixed",
        "national_mobile",
        "international",
        "collect_national",
    }
)

_NON_GEO = (
    (re.compile(r"^0800\d{6,7}$"), "toll_free"),
    (re.compile(r"^030[03]\d{6,7}$"), "shared_cost"),
    (re.compile(r"^(?:400\d|3003|4020)\d{4}$"), "shared_cost"),
    (re.compile(r"^0[59]00\d{6,7}$"), "premium"),
)


class DialError(ValueError):
    """A dial string that is not a number we can place."""


@dataclass(frozen=True)
class Classified:
    """A dialed number understood."""

    dialed: str
    call_type: str
    e164: str | None = None  # None for short codes and non-geographic numbers
    csp: str | None = None  # carrier code keyed by the caller, if any
    area_code: str | None = None  # DDD of the destination (Brazil)
    country_code: int | None = None
    national: str = ""  # what follows the prefixes (DDD + number, CC + number, …)

    def types(self) -> frozenset[str]:
        """This type and every group containing it."""
        return frozenset({self.call_type} | {g for g, ts in GROUPS.items() if self.call_type in ts})


def _br(ddd: str, number: str, dialed: str) -> int:
    """The number's PhoneNumberType (an int constant) when it is fixed or mobile."""
    try:
        parsed = phonenumbers.parse(f"+55{ddd}{number}")
    except phonenumbers.NumberParseException as exc:
        raise DialError(f"{dialed}: not a Brazilian number ({exc})") from None
    if not phonenumbers.is_valid_number(parsed):
        raise DialError(f"{dialed}: area code {ddd} with number {number} is not a valid number")
    kind = phonenumbers.number_type(parsed)
    if kind not in (
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise DialError(f"{dialed}: not a fixed or mobile number")
    return kind


def _geo_type(line_ddd: str, ddd: str, number: str, dialed: str) -> str:
    kind = _br(ddd, number, dialed)
    suffix = (
        "mobile"
        if kind == PhoneNumberType.MOBILE
        or (kind == PhoneNumberType.FIXED_LINE_OR_MOBILE and number.startswith("9"))
        else "fixed"
    )
    if ddd == line_ddd:
        scope = "local"
    elif ddd[0] == line_ddd[0]:
        scope = "regional"
    else:
        scope = "national"
    return f"{scope}_{suffix}"


def _split_subscriber(rest: str, dialed: str) -> tuple[str, str]:
    """'11988887777' -> ('11', '988887777')."""
    if len(rest) not in (10, 11):
        raise DialError(f"{dialed}: expected an area code and an 8- or 9-digit number")
    return rest[:2], rest[2:]


def classify(dialed: str, line_area_code: str) -> Classified:
    """What kind of call `dialed` is from a line in area `line_area_code`."""
    s = re.sub(r"[\s().-]", "", dialed or "")
    csp: str | None  # the carrier code, where the format has one
    if not s:
        raise DialError("empty number")
    if s.startswith("+"):
        return _e164(s, dialed, line_area_code)
    if not s.isdigit():
        raise DialError(f"{dialed}: only digits (and a leading +) may be dialed")
    if s in EMERGENCY:
        return Classified(dialed, "emergency", national=s)
    for pattern, kind in _NON_GEO:
        if pattern.match(s):
            return Classified(dialed, kind, national=s)
    if s.startswith("9090"):
        rest = s[4:]
        if len(rest) == 8 or (len(rest) == 9 and rest[0] == "9"):
            _br(line_area_code, rest, dialed)
            return Classified(
                dialed,
                "collect_local",
                f"+55{line_area_code}{rest}",
                area_code=line_area_code,
                country_code=55,
                national=rest,
            )
        raise DialError(f"{dialed}: a local collect call is 9090 + an 8- or 9-digit number")
    if s.startswith("90") and len(s) in (14, 15):
        csp, (ddd, number) = s[2:4], _split_subscriber(s[4:], dialed)
        _br(ddd, number, dialed)
        return Classified(
            dialed, "collect_national", f"+55{ddd}{number}", csp, ddd, 55, ddd + number
        )
    if s.startswith("00"):
        if len(s) < 8:
            raise DialError(f"{dialed}: too short for 00 + carrier + country + number")
        csp, rest = s[2:4], s[4:]
        c = _e164("+" + rest, dialed, line_area_code)
        if c.country_code == 55:
            raise DialError(f"{dialed}: 00 is for international calls; dial 0 + carrier + DDD")
        return Classified(dialed, c.call_type, c.e164, csp, None, c.country_code, rest)
    if s.startswith("0"):
        rest = s[1:]
        csp = None
        if len(rest) in (12, 13):  # carrier code + DDD + number
            csp, rest = rest[:2], rest[2:]
        ddd, number = _split_subscriber(rest, dialed)
        if ddd[0] == "0":
            raise DialError(f"{dialed}: {ddd} is not an area code")
        kind = _geo_type(line_area_code, ddd, number, dialed)
        return Classified(dialed, kind, f"+55{ddd}{number}", csp, ddd, 55, ddd + number)
    if s[0] == "1" and 3 <= len(s) <= 5:
        return Classified(dialed, "utility", national=s)
    if len(s) == 8 or (len(s) == 9 and s[0] == "9"):
        kind = _geo_type(line_area_code, line_area_code, s, dialed)
        return Classified(dialed, kind, f"+55{line_area_code}{s}", None, line_area_code, 55, s)
    raise DialError(f"{dialed}: not a number format this appliance knows")


def _e164(s: str, dialed: str, line_ddd: str) -> Classified:
    try:
        parsed = phonenumbers.parse(s)
    except phonenumbers.NumberParseException as exc:
        raise DialError(f"{dialed}: {exc}") from None
    cc = parsed.country_code
    if cc is None or phonenumbers.region_code_for_country_code(cc) == "ZZ":
        raise DialError(f"{dialed}: unknown country code {cc}")
    nsn = phonenumbers.national_significant_number(parsed)
    if cc == 55:
        ddd, number = _split_subscriber(nsn, dialed)
        kind = _geo_type(line_ddd, ddd, number, dialed)
        return Classified(dialed, kind, f"+55{nsn}", None, ddd, 55, nsn)
    if not phonenumbers.is_possible_number(parsed):
        raise DialError(f"{dialed}: not a possible number for country code {cc}")
    return Classified(dialed, "international", f"+{cc}{nsn}", None, None, cc, f"{cc}{nsn}")


def dial_string(c: Classified, csp: str | None, force: bool) -> str:
    """The string sent to the trunk: the carrier rewrite applied to long distance."""
    if c.call_type not in LONG_DISTANCE:
        if c.call_type == "collect_local":
            return "9090" + c.national
        if c.call_type.startswith("local_") and len(c.national) in (10, 11):
            return c.national[2:]  # same area code: the subscriber number alone
        return c.national
    carrier = csp if (force or not c.csp) and csp else c.csp
    if carrier is None:
        # No carrier keyed and none configured: send the E.164 form, the trunk picks.
        return c.e164 or c.dialed
    if c.call_type == "international":
        return f"00{carrier}{c.national}"
    if c.call_type == "collect_national":
        return f"90{carrier}{c.national}"
    return f"0{carrier}{c.national}"
