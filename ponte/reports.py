"""`ponte report ...`: tables on a terminal, CSV with --csv."""

from __future__ import annotations

import csv
import datetime as dt
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO
from zoneinfo import ZoneInfo


def parse_day(value: str, tz: str, end: bool = False) -> float:
    """'2026-11-23' (local midnight in tz) or a full ISO datetime -> epoch seconds.

    With `end`, a bare date means the end of that day (the range is inclusive).
    """
    try:
        if "T" in value or " " in value:
            moment = dt.datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=ZoneInfo(tz))
            return moment.timestamp()
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a date: {value!r} (use YYYY-MM-DD)") from None
    if end:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(), ZoneInfo(tz)).timestamp()


def emit(
    rows: Iterable[dict[str, Any]], columns: Sequence[str], as_csv: bool, out: TextIO = sys.stdout
) -> int:
    """Print rows as CSV (streamed) or as an aligned table; return the row count."""
    if as_csv:
        w = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        n = 0
        for row in rows:
            w.writerow(row)
            n += 1
        return n
    table = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in table)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)), file=out)
    return len(table)


SESSION_COLUMNS = (
    "id",
    "room",
    "started_at",
    "ended_at",
    "legs",
    "peak_members",
    "participant_minutes",
    "billed_minutes",
)
LEG_COLUMNS = (
    "leg",
    "caller",
    "role",
    "joined_at",
    "left_at",
    "seconds",
    "billed_minutes",
    "ended_by",
    "joined_by",
    "name_file",
)
USAGE_COLUMNS = ("key", "profile", "cycle", "limit", "used_min", "limit_min", "pct", "alerts")
