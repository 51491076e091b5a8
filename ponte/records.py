"""Admin records: the audit (transaction) history, the restore
history and the call history (CDRs), beside the billing and usage tables.

Every query streams rows from a cursor, so a long report never holds the
whole window in memory.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from provisioning.diff import Change
from store import schema as t
from store.engine import Database, excluded
from store.migrate import as_database

AUDIT_KEEP_DAYS = 180  # as the portal: transactions are kept 180 days

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
    # Network quality (store/schema.py's calls), filled in when the call ends.
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


# The statements written per call, built once and run with each call's values
# as parameters (compiled once by SQLAlchemy).
INSERT_CALL = sa.insert(t.calls)
DROP_LIVE_CALL = sa.delete(t.live_calls).where(
    t.live_calls.c.node == sa.bindparam("n"), t.live_calls.c.leg == sa.bindparam("l")
)
CHECKPOINT_CALLS = (
    sa.update(t.live_calls)
    .where(t.live_calls.c.node == sa.bindparam("n"))
    .values(checkpoint=sa.bindparam("at"))
)


class RecordStore:
    """The audit, restore and call-history tables of the records database."""

    def __init__(self, db: Database | str | Path) -> None:
        self.db = as_database(db)
        live = t.live_calls
        self._live_call = self.db.upsert(
            live,
            ("node", "leg"),
            {"record": excluded(live, "record"), "checkpoint": excluded(live, "checkpoint")},
        )
        self._set_mark = self.db.upsert(t.marks, ("name",), {"value": excluded(t.marks, "value")})

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
            {
                "at": at,
                "by": by,
                "unix_user": unix_user,
                "source": source,
                "object": c.object,
                "action": c.action,
                "changes": c.as_json(),
                "summary": c.describe(),
            }
            for c in changes
        ]
        cutoff = (dt.datetime.now(dt.UTC) - dt.timedelta(days=AUDIT_KEEP_DAYS)).isoformat()
        with self.db.begin() as conn:
            if rows:
                conn.execute(sa.insert(t.audit), rows)
            conn.execute(sa.delete(t.audit).where(t.audit.c.at < cutoff))
        return len(rows)

    def audit_rows(
        self,
        start: str | None = None,
        end: str | None = None,
        obj: str | None = None,
        by: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Audit rows oldest first; `obj` matches a kind (room) or an object (room:demo)."""
        c = t.audit.c
        where = _window(c.at, start, end)
        if obj:
            where.append(sa.or_(c.object == obj, c.object.like(f"{obj}:%")))
        if by:
            where.append(c.by == by)
        yield from self.db.rows(sa.select(t.audit).where(*where).order_by(c.at, c.id))

    # -- restores ---------------------------------------------------------
    def restore_done(
        self, archive: str, parts: list[str], status: str, by: str, detail: Any = ""
    ) -> None:
        """Record a restore: success, partial (with what was rejected) or error."""
        with self.db.begin() as conn:
            conn.execute(
                sa.insert(t.restores).values(
                    at=now_iso(),
                    by=by,
                    archive=archive,
                    parts=",".join(parts),
                    status=status,
                    detail=detail
                    if isinstance(detail, str)
                    else json.dumps(detail, ensure_ascii=False),
                )
            )

    def restore_rows(
        self, start: str | None = None, end: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The restore history, oldest first."""
        c = t.restores.c
        where = _window(c.at, start, end)
        yield from self.db.rows(sa.select(t.restores).where(*where).order_by(c.at, c.id))

    # -- call history -----------------------------------------------------
    def call_ended(self, row: dict[str, Any], node: str | None = None) -> None:
        """Write one call's history row (one commit: it survives a crash),
        and forget its live checkpoint on `node` in the same commit."""
        with self.db.begin() as conn:
            conn.execute(INSERT_CALL, row)
            if node is not None:
                conn.execute(DROP_LIVE_CALL, {"n": node, "l": row["leg"]})

    # -- calls in progress (crash recovery) -------------------------------
    def call_answered(self, node: str, record: CallRecord) -> None:
        """An answered call's record, kept until its history row replaces it."""
        assert record.answered is not None
        values = {
            "node": node,
            "leg": record.leg,
            "record": json.dumps(asdict(record)),
            "checkpoint": record.answered,
        }
        with self.db.begin() as conn:
            conn.execute(self._live_call, values)

    def checkpoint(self, node: str, at: float) -> None:
        """Every live call of `node` lasted at least until `at` (one statement)."""
        with self.db.begin() as conn:
            conn.execute(CHECKPOINT_CALLS, {"n": node, "at": at})

    def close_crashed(self, node: str) -> int:
        """History rows for the calls `node` was carrying when it died, ended
        at their last checkpoint with `ended_by: crash`; returns how many."""
        fields = set(CallRecord.__dataclass_fields__)
        live = t.live_calls
        with self.db.begin() as conn:
            found = conn.execute(
                sa.select(live.c.record, live.c.checkpoint).where(live.c.node == node)
            ).all()
            for text, checkpoint in found:
                data = {k: v for k, v in json.loads(text).items() if k in fields}
                record = CallRecord(**data)
                record.disposition = "cut_at_limit" if record.cut_at_limit else "answered"
                record.ended_by = CRASH
                conn.execute(INSERT_CALL, record.row(checkpoint))
            conn.execute(_live(node))
        return len(found)

    def has_call(self, sip_call_id: str, call_type: str) -> bool:
        """Whether a history row of this type exists for the SIP Call-ID."""
        c = t.calls.c
        stmt = (
            sa.select(sa.literal(1))
            .where(c.sip_call_id == sip_call_id, c.call_type == call_type)
            .limit(1)
        )
        return self.db.scalar(stmt) is not None

    def mark(self, name: str) -> int:
        """A watermark kept across restarts (0 when never set)."""
        value = self.db.scalar(sa.select(t.marks.c.value).where(t.marks.c.name == name))
        return int(value) if value is not None else 0

    def set_mark(self, name: str, value: int) -> None:
        """Move a watermark (one commit)."""
        with self.db.begin() as conn:
            conn.execute(self._set_mark, {"name": name, "value": value})

    def call_rows(
        self,
        start: str | None = None,
        end: str | None = None,
        line: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Calls by start time, oldest first."""
        c = t.calls.c
        where = _window(c.started_at, start, end)
        if line:
            where.append(sa.or_(c.origin == line, c.line == line))
        yield from self.db.rows(sa.select(t.calls).where(*where).order_by(c.started_at, c.id))


def _live(node: str) -> sa.Delete:
    return sa.delete(t.live_calls).where(t.live_calls.c.node == node)


def _window(
    column: sa.ColumnElement[str], start: str | None, end: str | None
) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if start:
        where.append(column >= start)
    if end:
        where.append(column < end)
    return where
