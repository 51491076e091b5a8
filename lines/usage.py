"""Minutes used per line (or department pool) per call type per billing
cycle, and the alerts sent, in the records database (SQLite or PostgreSQL).

Running calls add their seconds every few seconds and when they end. The add
is one atomic upsert (`seconds = seconds + n`), so app-server nodes sharing a
PostgreSQL never lose each other's increments, and each reads the pool's
total as all nodes left it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from store.engine import UNAVAILABLE, Database, excluded, rounded
from store.migrate import as_database
from store.schema import alerts, usage


class UsageStore:
    """The usage and alerts tables."""

    def __init__(self, db: Database | str | Path) -> None:
        self.db = as_database(db)
        self._add = self.db.upsert(
            usage,
            ("key", "cycle", "call_type"),
            {"seconds": usage.c.seconds + excluded(usage, "seconds")},
        )
        self._alert = self.db.upsert(alerts, ("key", "cycle", "limit_name", "threshold")).returning(
            alerts.c.id
        )
        # The last total read per (key, cycle, types): what a decision uses
        # while the database is away (plus the adds still waiting to land).
        self._seen: dict[tuple[str, str, tuple[str, ...]], float] = {}

    def used(self, key: str, cycle: dt.date, types: Iterable[str], fresh: bool = True) -> float:
        """Seconds used by `key` in the cycle over these call types (as last
        read when the database cannot be reached, or when not `fresh`)."""
        kinds = tuple(sorted(types))
        if not kinds:
            return 0.0
        memo = (key, cycle.isoformat(), kinds)
        if not fresh:
            return self._seen.get(memo, 0.0)
        stmt = sa.select(sa.func.coalesce(sa.func.sum(usage.c.seconds), 0)).where(
            usage.c.key == key,
            usage.c.cycle == memo[1],
            usage.c.call_type.in_(kinds),
        )
        try:
            value = float(self.db.scalar(stmt))
        except UNAVAILABLE:
            return self._seen.get(memo, 0.0)
        self._seen[memo] = value
        return value

    def add(self, key: str, cycle: dt.date, call_type: str, seconds: float) -> None:
        """Add seconds to a counter: one atomic statement, one commit."""
        if seconds <= 0:
            return
        row = {"key": key, "cycle": cycle.isoformat(), "call_type": call_type, "seconds": seconds}
        with self.db.begin() as conn:
            conn.execute(self._add, row)

    def record_alert(
        self,
        key: str,
        cycle: dt.date,
        limit: str,
        threshold: int,
        line: str,
        used: float,
        limit_seconds: float,
        at: dt.datetime,
    ) -> bool:
        """Note a threshold crossing; False if it was already alerted this
        cycle (by this node or another: the row is unique)."""
        row = {
            "key": key,
            "cycle": cycle.isoformat(),
            "limit_name": limit,
            "threshold": threshold,
            "line": line,
            "at": at.isoformat(),
            "used_seconds": used,
            "limit_seconds": limit_seconds,
        }
        with self.db.begin() as conn:
            # A row comes back only when this INSERT made it (rowcount is not
            # reliable across drivers for ON CONFLICT DO NOTHING).
            return conn.execute(self._alert, row).first() is not None

    def webhook_outcome(
        self, key: str, cycle: dt.date | str, limit: str, threshold: int, outcome: str
    ) -> None:
        """Note what became of an alert's webhook (delivered, or failed after
        its retries), for the alerts report."""
        c = alerts.c
        stmt = (
            sa.update(alerts)
            .where(
                c.key == key,
                c.cycle == (cycle if isinstance(cycle, str) else cycle.isoformat()),
                c.limit_name == limit,
                c.threshold == threshold,
            )
            .values(webhook=outcome)
        )
        with self.db.begin() as conn:
            conn.execute(stmt)

    def rows(self, key: str | None = None) -> Iterator[dict[str, Any]]:
        """Usage rows, optionally for one key."""
        stmt = sa.select(
            usage.c.key,
            usage.c.cycle,
            usage.c.call_type,
            rounded(usage.c.seconds, 1).label("seconds"),
        ).order_by(usage.c.key, usage.c.cycle, usage.c.call_type)
        if key:
            stmt = stmt.where(usage.c.key == key)
        yield from self.db.rows(stmt)

    def alerts(self, key: str | None = None) -> Iterator[dict[str, Any]]:
        """Alerts sent, oldest first."""
        c = alerts.c
        stmt = sa.select(
            c.key,
            c.cycle,
            c.limit_name,
            c.threshold,
            c.line,
            c.at,
            rounded(c.used_seconds, 1).label("used"),
            c.limit_seconds,
            c.webhook,
        ).order_by(c.at)
        if key:
            stmt = stmt.where(c.key == key)
        yield from self.db.rows(stmt)
