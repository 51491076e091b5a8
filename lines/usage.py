"""Minutes used per line (or department pool) per call type per billing
cycle, and the alerts sent, in SQLite.

Running calls are committed every 10 s and when they end, so a crash loses
at most 10 s of counting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlite_utils


class UsageStore:
    """The usage and alerts tables (same database file as the call records)."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self.db.conn:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS usage (key TEXT NOT NULL, cycle TEXT NOT NULL, "
                "call_type TEXT NOT NULL, seconds REAL NOT NULL DEFAULT 0, "
                "PRIMARY KEY (key, cycle, call_type))"
            )
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY, key TEXT NOT NULL, "
                "cycle TEXT NOT NULL, limit_name TEXT NOT NULL, threshold INTEGER NOT NULL, "
                "line TEXT, at TEXT NOT NULL, used_seconds REAL, limit_seconds REAL, "
                "UNIQUE (key, cycle, limit_name, threshold))"
            )

    def used(self, key: str, cycle: dt.date, types: Iterable[str]) -> float:
        """Seconds used by `key` in the cycle over these call types."""
        types = list(types)
        if not types:
            return 0.0
        marks = ",".join("?" * len(types))
        row = self.db.execute(
            f"SELECT COALESCE(SUM(seconds), 0) FROM usage WHERE key = ? AND cycle = ? "
            f"AND call_type IN ({marks})",
            [key, cycle.isoformat(), *types],
        ).fetchone()
        return float(row[0])

    def add(self, key: str, cycle: dt.date, call_type: str, seconds: float) -> None:
        """Add seconds to a counter (one commit)."""
        if seconds <= 0:
            return
        with self.db.conn:
            self.db.execute(
                "INSERT INTO usage (key, cycle, call_type, seconds) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key, cycle, call_type) DO UPDATE SET seconds = seconds + "
                "excluded.seconds",
                [key, cycle.isoformat(), call_type, seconds],
            )

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
        """Note a threshold crossing; False if it was already alerted this cycle."""
        with self.db.conn:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO alerts (key, cycle, limit_name, threshold, line, at, "
                "used_seconds, limit_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    key,
                    cycle.isoformat(),
                    limit,
                    threshold,
                    line,
                    at.isoformat(),
                    used,
                    limit_seconds,
                ],
            )
            return cur.rowcount == 1

    def rows(self, key: str | None = None) -> Iterator[dict[str, Any]]:
        """Usage rows, optionally for one key."""
        where, args = ("WHERE key = ?", [key]) if key else ("", [])
        yield from self.db.query(
            f"SELECT key, cycle, call_type, ROUND(seconds, 1) AS seconds FROM usage {where} "
            "ORDER BY key, cycle, call_type",
            args,
        )

    def alerts(self, key: str | None = None) -> Iterator[dict[str, Any]]:
        """Alerts sent, oldest first."""
        where, args = ("WHERE key = ?", [key]) if key else ("", [])
        yield from self.db.query(
            f"SELECT key, cycle, limit_name, threshold, line, at, ROUND(used_seconds, 1) AS used, "
            f"limit_seconds FROM alerts {where} ORDER BY at",
            args,
        )
