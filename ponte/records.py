"""Admin records in SQLite: the audit (transaction) history, the restore
history and the call history (CDRs), beside the billing and usage tables.

Every query streams rows from a cursor, so a long report never holds the
whole window in memory.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from provisioning.diff import Change

AUDIT_KEEP_DAYS = 180  # as the portal: transactions are kept 180 days

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at TEXT NOT NULL, "
    "by TEXT NOT NULL, unix_user TEXT, source TEXT NOT NULL, object TEXT NOT NULL, "
    "action TEXT NOT NULL, changes TEXT NOT NULL DEFAULT '{}', summary TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
    "CREATE TABLE IF NOT EXISTS restores (id INTEGER PRIMARY KEY, at TEXT NOT NULL, "
    "by TEXT NOT NULL, archive TEXT NOT NULL, parts TEXT NOT NULL, status TEXT NOT NULL, "
    "detail TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY, leg INTEGER, "
    "origin TEXT, destination TEXT, call_type TEXT, started_at TEXT NOT NULL, "
    "answered_at TEXT, ended_at TEXT NOT NULL, duration REAL NOT NULL DEFAULT 0, "
    "disposition TEXT NOT NULL, sip_code INTEGER, trunk TEXT, line TEXT, profile_rule TEXT, "
    "cut_at_limit INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at)",
    # Answered calls still going: their history row as of the last checkpoint,
    # per app-server node. A crash leaves them here; start-up closes them.
    "CREATE TABLE IF NOT EXISTS live_calls (node TEXT NOT NULL, leg INTEGER NOT NULL, "
    "record TEXT NOT NULL, checkpoint REAL NOT NULL, PRIMARY KEY (node, leg))",
    # Watermarks of what was read from other programs' tables (Kamailio's acc).
    "CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)
# Columns added after the calls table first shipped: (name, SQL type).
# Network quality per call, as rtpengine measured it from RTP and RTCP:
# "in" is what reached the appliance from the phone, "out" what reached the
# phone from us (its own RTCP reports).
CALL_COLUMNS = (
    ("loss_in", "REAL"),
    ("loss_out", "REAL"),
    ("jitter_in", "REAL"),
    ("jitter_out", "REAL"),
    ("rtt_ms", "REAL"),
    ("mos", "REAL"),
    ("sip_call_id", "TEXT"),
    # Who ended it: "caller", "moderator_exit", "admin"... or "crash" for a
    # call the app server was carrying when it died (closed at its restart).
    ("ended_by", "TEXT"),
)
CRASH = "crash"


def now_iso() -> str:
    """The current UTC time as ISO 8601 (what every table stores)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def iso(ts: float) -> str:
    """Epoch seconds -> ISO 8601 UTC with milliseconds."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class CallRecord:
    """One call's history row, filled in as the call goes."""

    leg: int
    origin: str
    destination: str
    started: float
    call_type: str = "internal"
    answered: float | None = None
    disposition: str = "failed"
    sip_code: int | None = None
    trunk: str | None = None
    line: str | None = None
    profile_rule: str | None = None
    cut_at_limit: bool = False
    sip_call_id: str | None = None
    # Network quality (see CALL_COLUMNS), filled in when the call ends.
    loss_in: float | None = None
    loss_out: float | None = None
    jitter_in: float | None = None
    jitter_out: float | None = None
    rtt_ms: float | None = None
    mos: float | None = None
    ended_by: str | None = None

    def row(self, ended: float) -> dict[str, Any]:
        """The row written when the call ends."""
        d = asdict(self)
        started, answered = d.pop("started"), d.pop("answered")
        return {
            **d,
            "started_at": iso(started),
            "answered_at": iso(answered) if answered else None,
            "ended_at": iso(ended),
            "duration": round(ended - answered, 3) if answered else 0.0,
            "cut_at_limit": int(self.cut_at_limit),
        }


def open_db(path: Path) -> sqlite_utils.Database:
    """The records database (WAL, so reports never block the server's writes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class RecordStore:
    """The audit, restore and call-history tables of the records database."""

    def __init__(self, path: Path) -> None:
        self.db = open_db(path)
        with self.db.conn:
            for statement in SCHEMA:
                self.db.execute(statement)
            have = {row[1] for row in self.db.execute("PRAGMA table_info(calls)").fetchall()}
            for name, kind in CALL_COLUMNS:
                if name not in have:
                    self.db.execute(f"ALTER TABLE calls ADD COLUMN {name} {kind}")

    # -- audit ------------------------------------------------------------
    def audit(
        self,
        changes: Iterable[Change],
        by: str,
        source: str,
        unix_user: str | None = None,
        at: str | None = None,
    ) -> int:
        """One row per changed object, in one transaction; drop rows past 180 days."""
        at = at or now_iso()
        rows = [
            (at, by, unix_user, source, c.object, c.action, c.as_json(), c.describe())
            for c in changes
        ]
        cutoff = (dt.datetime.now(dt.UTC) - dt.timedelta(days=AUDIT_KEEP_DAYS)).isoformat()
        with self.db.conn:
            self.db.conn.executemany(
                "INSERT INTO audit (at, by, unix_user, source, object, action, changes, summary) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self.db.execute("DELETE FROM audit WHERE at < ?", [cutoff])
        return len(rows)

    def audit_rows(
        self,
        start: str | None = None,
        end: str | None = None,
        obj: str | None = None,
        by: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Audit rows oldest first; `obj` matches a kind (room) or an object (room:demo)."""
        where, args = _window("at", start, end)
        if obj:
            where.append("(object = ? OR object LIKE ?)")
            args += [obj, f"{obj}:%"]
        if by:
            where.append("by = ?")
            args.append(by)
        yield from self._query("audit", where, args, "at, id")

    # -- restores ---------------------------------------------------------
    def restore_done(
        self, archive: str, parts: list[str], status: str, by: str, detail: Any = ""
    ) -> None:
        """Record a restore: success, partial (with what was rejected) or error."""
        with self.db.conn:
            self.db.execute(
                "INSERT INTO restores (at, by, archive, parts, status, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    now_iso(),
                    by,
                    archive,
                    ",".join(parts),
                    status,
                    detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False),
                ],
            )

    def restore_rows(
        self, start: str | None = None, end: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The restore history, oldest first."""
        where, args = _window("at", start, end)
        yield from self._query("restores", where, args, "at, id")

    # -- call history -----------------------------------------------------
    def call_ended(self, row: dict[str, Any], node: str | None = None) -> None:
        """Write one call's history row (one commit: it survives a crash),
        and forget its live checkpoint on `node` in the same commit."""
        with self.db.conn:
            self.db.table("calls").insert(row)
            if node is not None:
                self.db.execute(
                    "DELETE FROM live_calls WHERE node = ? AND leg = ?", [node, row["leg"]]
                )

    # -- calls in progress (crash recovery) -------------------------------
    def call_answered(self, node: str, record: CallRecord) -> None:
        """An answered call's record, kept until its history row replaces it."""
        assert record.answered is not None
        with self.db.conn:
            self.db.execute(
                "INSERT OR REPLACE INTO live_calls (node, leg, record, checkpoint) "
                "VALUES (?, ?, ?, ?)",
                [node, record.leg, json.dumps(asdict(record)), record.answered],
            )

    def checkpoint(self, node: str, at: float) -> None:
        """Every live call of `node` lasted at least until `at` (one statement)."""
        with self.db.conn:
            self.db.execute("UPDATE live_calls SET checkpoint = ? WHERE node = ?", [at, node])

    def close_crashed(self, node: str) -> int:
        """History rows for the calls `node` was carrying when it died, ended
        at their last checkpoint with `ended_by: crash`; returns how many."""
        fields = set(CallRecord.__dataclass_fields__)
        with self.db.conn:
            live = self.db.execute(
                "SELECT record, checkpoint FROM live_calls WHERE node = ?", [node]
            ).fetchall()
            for text, checkpoint in live:
                data = {k: v for k, v in json.loads(text).items() if k in fields}
                record = CallRecord(**data)
                record.disposition = "cut_at_limit" if record.cut_at_limit else "answered"
                record.ended_by = CRASH
                self.db.table("calls").insert(record.row(checkpoint))
            self.db.execute("DELETE FROM live_calls WHERE node = ?", [node])
        return len(live)

    def has_call(self, sip_call_id: str, call_type: str) -> bool:
        """Whether a history row of this type exists for the SIP Call-ID."""
        row = self.db.execute(
            "SELECT 1 FROM calls WHERE sip_call_id = ? AND call_type = ? LIMIT 1",
            [sip_call_id, call_type],
        ).fetchone()
        return row is not None

    def mark(self, name: str) -> int:
        """A watermark kept across restarts (0 when never set)."""
        row = self.db.execute("SELECT value FROM marks WHERE name = ?", [name]).fetchone()
        return int(row[0]) if row else 0

    def set_mark(self, name: str, value: int) -> None:
        """Move a watermark (one commit)."""
        with self.db.conn:
            self.db.execute(
                "INSERT INTO marks (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [name, value],
            )

    def call_rows(
        self,
        start: str | None = None,
        end: str | None = None,
        line: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Calls by start time, oldest first."""
        where, args = _window("started_at", start, end)
        if line:
            where.append("(origin = ? OR line = ?)")
            args += [line, line]
        yield from self._query("calls", where, args, "started_at, id")

    def _query(
        self, table: str, where: list[str], args: list[Any], order: str
    ) -> Iterator[dict[str, Any]]:
        sql = f"SELECT * FROM {table}"  # noqa: S608 - table and columns are ours
        if where:
            sql += " WHERE " + " AND ".join(where)
        cursor = self.db.conn.execute(f"{sql} ORDER BY {order}", args)
        names = [d[0] for d in cursor.description]
        try:
            for values in cursor:
                yield dict(zip(names, values, strict=True))
        finally:
            cursor.close()


def _window(column: str, start: str | None, end: str | None) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if start:
        where.append(f"{column} >= ?")
        args.append(start)
    if end:
        where.append(f"{column} < ?")
        args.append(end)
    return where, args


def readable(path: Path) -> bool:
    """Whether the records database exists and opens."""
    try:
        sqlite3.connect(f"file:{path}?mode=ro", uri=True).close()
    except sqlite3.Error:
        return False
    return Path(path).exists()
