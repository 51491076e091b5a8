"""`ponte report ...`: tables on a terminal, CSV with --csv, JSON with --json,
an Excel workbook with `--format xlsx --output FILE`."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from lines.usage import UsageStore


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


FORMATS = ("table", "csv", "json", "xlsx")
TABLE_SAMPLE = 200  # rows read before a streamed table fixes its column widths


def emit(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str],
    fmt: str = "table",
    out: TextIO | None = None,
) -> int:
    """Print rows as a table, CSV or a JSON array, streaming; return the count.

    A table sizes its columns on the first rows and then streams the rest, so
    a long report starts at once and never sits whole in memory.
    """
    if fmt == "xlsx":
        raise ValueError("xlsx is a file: use write_xlsx (the CLI's --output FILE)")
    out = out or sys.stdout
    n = 0
    if fmt == "csv":
        w = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow(row)
            n += 1
        return n
    if fmt == "json":
        out.write("[")
        for row in rows:
            item = {c: row.get(c) for c in columns}
            out.write(("," if n else "") + "\n" + json.dumps(item, ensure_ascii=False))
            n += 1
        out.write("\n]\n" if n else "]\n")
        return n
    it = iter(rows)
    head = [_cells(r, columns) for r in itertools.islice(it, TABLE_SAMPLE)]
    widths = [max([len(c), *(len(row[i]) for row in head)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    print(line(columns), file=out)
    print(line(["-" * w for w in widths]), file=out)
    for cells in itertools.chain(head, (_cells(r, columns) for r in it)):
        print(line(cells), file=out)
        n += 1
    return n


def write_xlsx(
    rows: Iterable[dict[str, Any]], columns: Sequence[str], path: Path, title: str = "report"
) -> int:
    """Write rows as one sheet of an Excel workbook (a header row, then one
    row per record, the same values as the JSON report); return the count.

    Streams (openpyxl's write-only mode), like the other formats. Text is
    always text: a caller ID or a name that starts with "=" stays a string,
    never a formula a spreadsheet would run, and characters XML cannot hold
    are dropped. The file appears whole or not at all (written beside, then
    renamed).
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    book = Workbook(write_only=True)
    sheet = book.create_sheet(title=title[:31])

    def cell(value: Any) -> Any:  # a write-only Cell (WriteOnlyCell is a factory)
        if value is not None and not isinstance(value, bool | int | float | str):
            value = json.dumps(value, ensure_ascii=False, default=str)
        if isinstance(value, str):
            value = ILLEGAL_CHARACTERS_RE.sub("", value)
        made = WriteOnlyCell(sheet, value=value)
        if isinstance(value, str):
            made.data_type = "s"  # never a formula
        return made

    sheet.append([cell(c) for c in columns])
    n = 0
    for row in rows:
        sheet.append([cell(row.get(c)) for c in columns])
        n += 1
    path = Path(path)
    part = path.with_name(f".{path.name}.part")
    try:
        book.save(part)
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)
    return n


def _cells(row: dict[str, Any], columns: Sequence[str]) -> list[str]:
    return ["" if row.get(c) is None else str(row.get(c)) for c in columns]


def with_progress(
    rows: Iterable[dict[str, Any]], column: str, start: float | None, end: float | None
) -> Iterator[dict[str, Any]]:
    """Show a progress bar on a terminal (stderr) while a long window streams.

    Progress is how far the rows' timestamps have got through the window.
    """
    if start is None or not sys.stderr.isatty() or (end or time.time()) - start < LONG_WINDOW:
        yield from rows
        return
    from tqdm import tqdm

    stop = end or time.time()
    total = int(stop - start)
    with tqdm(total=total, unit="s", file=sys.stderr, leave=False, desc="reading") as bar:
        done = 0
        for row in rows:
            stamp = row.get(column)
            if stamp:
                at = int(dt.datetime.fromisoformat(stamp).timestamp() - start)
                if at > done:
                    bar.update(min(at, total) - done)
                    done = min(at, total)
            yield row


LONG_WINDOW = 7 * 86400  # a week or more of records: worth a progress bar


def iso_bound(ts: float | None) -> str | None:
    """Epoch seconds -> the ISO text the records compare against."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


SESSION_COLUMNS = (
    "id",
    "room",
    "started_at",
    "ended_at",
    "ended_by",
    "legs",
    "peak_members",
    "participant_minutes",
    "billed_minutes",
    "counter_pins",
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
    "counter_pin_name",
    "name_file",
)
USAGE_COLUMNS = ("key", "profile", "cycle", "limit", "used_min", "limit_min", "pct", "alerts")
AUDIT_COLUMNS = ("at", "by", "unix_user", "source", "object", "action", "summary")
RESTORE_COLUMNS = ("at", "by", "archive", "parts", "status", "detail")
CALL_COLUMNS = (
    "started_at",
    "origin",
    "destination",
    "call_type",
    "duration",
    "disposition",
    "sip_code",
    "trunk",
    "line",
    "profile_rule",
    "cut_at_limit",
    "ended_by",
    "loss_in",
    "loss_out",
    "jitter_in",
    "jitter_out",
    "rtt_ms",
    "mos",
)
ALERT_COLUMNS = (
    "at",
    "line",
    "key",
    "cycle",
    "limit_name",
    "threshold",
    "used_min",
    "limit_min",
    "webhook",
)


def usage_rows(
    cfg: Any,
    line: str | None = None,
    department: str | None = None,
    store: UsageStore | None = None,
) -> Iterator[dict[str, Any]]:
    """Usage against each limit in this billing cycle, one row per profile
    key and limit (a shared pool once), with the first line drawing on it and
    that line's department (`store`: the running server's, else opened)."""
    from lines.policy import cycle_start, limit_types, resolve

    if store is None:
        store = UsageStore(cfg.database)
    today = dt.datetime.now(ZoneInfo(cfg.timezone)).date()
    cycle = cycle_start(today, cfg.billing_cycle_day)
    sent: dict[tuple[str, str], list[int]] = {}
    for a in store.alerts():
        if a["cycle"] == cycle.isoformat():
            sent.setdefault((a["key"], a["limit_name"]), []).append(a["threshold"])
    seen: set[str] = set()
    for line_id, spec in sorted(cfg.lines.items()):
        if line and line_id != line or department and spec.department != department:
            continue
        resolved = resolve(cfg, line_id, today)
        if resolved is None:
            continue
        pname, prof, key = resolved
        if key in seen:
            continue
        seen.add(key)
        entries = dict(prof.limits)
        if prof.mode == "accumulated" and prof.accumulated is not None:
            entries["accumulated"] = prof.accumulated.minutes
        for limit, value in entries.items():
            used = store.used(key, cycle, limit_types(prof, limit)) / 60
            minutes = value if isinstance(value, float) else None
            yield {
                "key": key,
                "profile": pname,
                "cycle": cycle.isoformat(),
                "limit": limit,
                "used_min": round(used, 2),
                "limit_min": value if minutes is None else round(minutes, 2),
                "pct": round(100 * used / minutes, 1) if minutes else "",
                "alerts": ",".join(f"{t}%" for t in sorted(sent.get((key, limit), []))),
                "line": line_id,
                "department": spec.department,
            }
