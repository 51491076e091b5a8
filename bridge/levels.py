"""PIN security levels 1-3 (ClaireExpress manual, "Níveis de senha").

| | level 1 | level 2 | level 3 |
|---|---|---|---|
| hours the PINs work | 06:00-24:00 | 24 h | 24 h |
| moderator may lock (*7) | no | if allow_lock | yes |
| moderator dial-out | no | if allow_dial_out | yes |
| moderator blast dial-out | no | if allow_blast | yes |
| moderator records (*93) | no | if allow_recording | if allow_recording |
| PIN validity | 12 months from `issued` | same | same |
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

VALID_MONTHS = 12
LEVEL1_OPEN = dt.time(6, 0)


@dataclass(frozen=True)
class LevelPolicy:
    """The part of a room's settings that the level rules read."""

    level: int
    timezone: str
    issued: dt.date | None = None
    allow_lock: bool = False
    allow_dial_out: bool = False
    allow_blast: bool = False
    allow_recording: bool = False


def _add_months(day: dt.date, months: int) -> dt.date:
    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    for d in (day.day, 30, 29, 28):  # 31 Jan + 1 month -> 28/29 Feb
        try:
            return dt.date(year, month, d)
        except ValueError:
            continue
    raise ValueError(day)


def expires(policy: LevelPolicy) -> dt.date | None:
    """The first day the PINs no longer work (None: no issue date set)."""
    return _add_months(policy.issued, VALID_MONTHS) if policy.issued else None


def refusal(policy: LevelPolicy, now: dt.datetime) -> str | None:
    """Why a right PIN may not enter now (None when it may)."""
    local = now.astimezone(ZoneInfo(policy.timezone))
    end = expires(policy)
    if policy.issued and local.date() < policy.issued:
        return "not yet issued"
    if end is not None and local.date() >= end:
        return f"expired on {end.isoformat()}"
    if policy.level == 1 and local.time() < LEVEL1_OPEN:
        return "outside the hours of a level-1 PIN (06:00-24:00)"
    return None


def permits(policy: LevelPolicy, need: str | None) -> bool:
    """Whether the room's level grants a moderator permission."""
    if need is None:
        return True
    if "|" in need:
        return any(permits(policy, n) for n in need.split("|"))
    if need == "lock":
        return policy.level == 3 or (policy.level == 2 and policy.allow_lock)
    if need == "dial_out":
        return policy.level == 3 or (policy.level == 2 and policy.allow_dial_out)
    if need == "blast":
        return policy.level == 3 or (policy.level == 2 and policy.allow_blast)
    if need == "record":
        # Recording needs the room's consent at every level: a level only
        # ever takes it away (level 1 rooms are never recorded).
        return policy.level >= 2 and policy.allow_recording
    return False  # "reserved" and anything unknown
