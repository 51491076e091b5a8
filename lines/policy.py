"""The line-profile decision for one outbound call (Claro manuals' rules).

Order:
    1. emergency          -> allow (never blocked, counted or cut)
    2. deny list          -> refuse
    3. allow list         -> allow
    4. calendar           -> refuse when closed (days, holidays, windows)
    5. the type's rule    -> blocked / unlimited / minutes
    6. quota left in the billing cycle

Plain logic: the caller supplies the time and a function giving seconds used.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypedDict
from zoneinfo import ZoneInfo

import holidays as holidays_lib

from lines.classify import CALL_TYPES, GROUPS, Classified, DialError, classify, dial_string
from provisioning.schema import DAYS, Config, HolidaysConfig, Limit, Line, Profile

# seconds used so far this cycle by `key` over `types`
UsedFn = Callable[[str, dt.date, Iterable[str]], float]

REASON_PROMPTS = {
    "calendar": "refused_not_now",
    "type": "refused_type_blocked",
    "quota": "refused_limit_reached",
    "deny_list": "refused_number_blocked",
    "invalid": "refused_invalid_number",
    "no_profile": "refused_type_blocked",
}


class _Whose(TypedDict):
    """The `Decision` fields naming whose call it is, once the line has a profile."""

    line: str
    profile: str | None
    usage_key: str | None


@dataclass(frozen=True)
class Decision:
    """What to do with one dialed number, and why."""

    decision: str  # "allow" | "deny"
    call_type: str | None
    reason: str
    rule: str  # which step decided
    dial: str | None  # the string sent to the trunk
    max_seconds: float | None  # None: no cut
    line: str = ""
    profile: str | None = None
    usage_key: str | None = None  # whose quota the call draws on
    limit: str | None = None  # the limit entry (type or group) it counts against
    limit_seconds: float | None = None
    counts: bool = True  # whether its seconds go into the counters
    cut: bool = False  # cut the call when the quota runs out

    @property
    def prompt(self) -> str:
        """The spoken reason for a refusal."""
        return REASON_PROMPTS.get(self.rule, "refused_type_blocked")

    def as_json(self) -> dict[str, str | float | None]:
        """The fields `ponte dial-check` prints."""
        return {
            "decision": self.decision,
            "call_type": self.call_type,
            "reason": self.reason,
            "rule": self.rule,
            "dial": self.dial,
            "max_seconds": self.max_seconds,
            "line": self.line,
            "profile": self.profile,
            "usage_key": self.usage_key,
            "limit": self.limit,
        }


def covered(name: str) -> frozenset[str]:
    """The call types a limit entry (type or group) covers."""
    return GROUPS.get(name, frozenset({name}) if name in CALL_TYPES else frozenset())


def cycle_start(day: dt.date, cycle_day: int) -> dt.date:
    """The first day of the billing cycle containing `day`."""
    if day.day >= cycle_day:
        return day.replace(day=cycle_day)
    first = day.replace(day=1) - dt.timedelta(days=1)
    return first.replace(day=cycle_day)


@functools.lru_cache(maxsize=64)
def _holidays(country: str, subdivision: str | None, year: int) -> dict[dt.date, str]:
    return dict(holidays_lib.country_holidays(country, subdiv=subdivision, years=year))


def load_calendar(cfg: HolidaysConfig, day: dt.date) -> None:
    """Load the year's holidays now. The `holidays` package imports its
    country tables on first use (0.1-0.5 s, seen stalling the loop thread at a
    first outbound call); a server calls this at start and when it reloads."""
    _holidays(cfg.country, cfg.subdivision, day.year)


def holiday(day: dt.date, cfg: HolidaysConfig, area_code: str) -> str | None:
    """The holiday's name if `day` is one for a line in `area_code`."""
    for extra in cfg.extra:
        if extra.date == day and (not extra.area_codes or area_code in extra.area_codes):
            return extra.name
    return _holidays(cfg.country, cfg.subdivision, day.year).get(day)


def resolve(cfg: Config, line_id: str, day: dt.date) -> tuple[str, Profile, str] | None:
    """(profile name, profile, usage key) for a line on a day.

    A temporary profile beats the permanent one between its dates; a line's
    own profile beats its department's; a shared quota is drawn by the
    department (or, assigned directly, by every line of the profile).
    """
    line = cfg.lines.get(line_id)
    if line is None:
        return None
    name = None
    if line.temporary and line.temporary.start <= day <= line.temporary.end:
        name = line.temporary.profile
    own = name or line.profile
    if own:
        prof = cfg.profiles[own]
        if prof.quota == "shared":
            key = f"dept:{line.department}" if line.department else f"profile:{own}"
        else:
            key = f"line:{line_id}"
        return own, prof, key
    assert line.department is not None
    dep_profile = cfg.departments[line.department].profile
    prof = cfg.profiles[dep_profile]
    key = f"dept:{line.department}" if prof.quota == "shared" else f"line:{line_id}"
    return dep_profile, prof, key


def limit_for(profile: Profile, call_type: str) -> tuple[str, Limit] | None:
    """The limit entry for a call type: a type named directly beats a group."""
    if profile.mode == "accumulated" and profile.accumulated is not None:
        for t in profile.accumulated.types:
            if call_type in covered(t):
                return "accumulated", profile.accumulated.minutes
    if call_type in profile.limits:
        return call_type, profile.limits[call_type]
    for name, value in profile.limits.items():
        if call_type in covered(name):
            return name, value
    return None


def limit_types(profile: Profile, limit: str) -> frozenset[str]:
    """The types whose seconds count against a limit entry."""
    if limit == "accumulated" and profile.accumulated is not None:
        return frozenset().union(*(covered(t) for t in profile.accumulated.types))
    return covered(limit)


def _matches(patterns: list[str], c: Classified) -> str | None:
    digits = "".join(ch for ch in c.dialed if ch.isdigit() or ch == "+")
    for p in patterns:
        for candidate in filter(None, (digits, c.e164)):
            if fnmatch.fnmatchcase(candidate, p):
                return p
    return None


def _open(profile: Profile, local: dt.datetime, holiday_name: str | None) -> str | None:
    """Why the calendar is closed at `local` (None when open)."""
    cal = profile.calendar
    if DAYS[local.weekday()] not in cal.days:
        return f"calls are not allowed on {local.strftime('%A')}"
    if holiday_name and cal.holidays == "deny":
        return f"calls are not allowed on a holiday ({holiday_name})"
    hhmm = local.strftime("%H:%M")
    if not any(w[:5] <= hhmm < w[6:] for w in cal.windows):
        return f"calls are allowed only {', '.join(cal.windows)}"
    return None


def decide(cfg: Config, line_id: str, dialed: str, now: dt.datetime, used: UsedFn) -> Decision:
    """The decision for `line_id` dialing `dialed` at `now`."""
    line: Line | None = cfg.lines.get(line_id)
    area = line.area_code if line else "11"
    try:
        c = classify(dialed, area)
    except DialError as exc:
        return Decision("deny", None, str(exc), "invalid", None, None, line_id)
    carrier = cfg.carrier
    dial = dial_string(c, carrier.csp if carrier else None, bool(carrier and carrier.force))
    if c.call_type == "emergency":
        return Decision(
            "allow",
            "emergency",
            "emergency numbers always go through",
            "emergency",
            c.national,
            None,
            line_id,
            counts=False,
        )
    local = now.astimezone(ZoneInfo(cfg.timezone))
    resolved = resolve(cfg, line_id, local.date()) if line else None
    if resolved is None:
        return Decision(
            "deny", c.call_type, f"line {line_id} has no profile", "no_profile", None, None, line_id
        )
    pname, prof, key = resolved
    base: _Whose = {"line": line_id, "profile": pname, "usage_key": key}
    hit = _matches(prof.deny_numbers, c)
    if hit:
        return Decision(
            "deny", c.call_type, f"number blocked ({hit})", "deny_list", None, None, **base
        )
    whitelisted = _matches(prof.allow_numbers, c)
    if whitelisted and not prof.whitelist_counts:
        return Decision(
            "allow",
            c.call_type,
            f"number allowed ({whitelisted})",
            "allow_list",
            dial,
            None,
            counts=False,
            **base,
        )
    if not whitelisted:
        closed = _open(prof, local, holiday(local.date(), cfg.holidays, area))
        if closed:
            return Decision("deny", c.call_type, closed, "calendar", None, None, **base)
    entry = limit_for(prof, c.call_type)
    if entry is None or entry[1] == "blocked":
        if whitelisted:
            return Decision(
                "allow",
                c.call_type,
                f"number allowed ({whitelisted})",
                "allow_list",
                dial,
                None,
                **base,
            )
        return Decision(
            "deny", c.call_type, f"{c.call_type} calls are blocked", "type", None, None, **base
        )
    limit, value = entry
    if value == "unlimited":
        rule = "allow_list" if whitelisted else "type"
        return Decision(
            "allow",
            c.call_type,
            f"{c.call_type} is unlimited",
            rule,
            dial,
            None,
            limit=limit,
            **base,
        )
    seconds = float(value) * 60
    spent = used(key, cycle_start(local.date(), cfg.billing_cycle_day), limit_types(prof, limit))
    left = seconds - spent
    if left <= 0 and not whitelisted:
        return Decision(
            "deny",
            c.call_type,
            f"limit reached ({value:g} min of {limit})",
            "quota",
            None,
            None,
            limit=limit,
            limit_seconds=seconds,
            **base,
        )
    cut = prof.cut_at_limit and not whitelisted
    return Decision(
        "allow",
        c.call_type,
        f"{max(0.0, left):.0f} s left of {value:g} min ({limit})",
        "allow_list" if whitelisted else "quota",
        dial,
        max(0.0, left) if cut else None,
        limit=limit,
        limit_seconds=seconds,
        cut=cut,
        **base,
    )
