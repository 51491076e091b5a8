"""The caller IDs that keyed a valid PIN, per number, in the records database.

While a number is locked out after PIN guessing (ivr/guard.py), only caller
IDs that keyed a valid PIN on it in the last 90 days get in. That memory must
survive a restart (else restarting the appliance would shut out every regular
caller of a number under attack), so it lives in SQLite beside the call
records: one row per (access_number, caller), the last valid PIN's time.
The server writes it through its RecordWriter, so a full disk never holds a
call up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from ponte.records import iso, open_db

TABLE = "pin_known_callers"


class KnownCallerStore:
    """The `pin_known_callers` table (same database file as the call records)."""

    def __init__(self, path: Path) -> None:
        self.db = open_db(path)
        with self.db.conn:
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (access_number TEXT NOT NULL, "
                "caller TEXT NOT NULL, last_ok_at TEXT NOT NULL, "
                "PRIMARY KEY (access_number, caller))"
            )

    def remember(self, number: str, caller: str, when: float) -> None:
        """`caller` keyed a valid PIN on `number` at `when` (epoch seconds; one commit)."""
        with self.db.conn:
            self.db.execute(
                f"INSERT INTO {TABLE} (access_number, caller, last_ok_at) VALUES (?, ?, ?) "
                "ON CONFLICT (access_number, caller) DO UPDATE SET "
                "last_ok_at = MAX(last_ok_at, excluded.last_ok_at)",
                [number, caller, iso(when)],
            )

    def since(self, when: float) -> Iterator[tuple[str, str, float]]:
        """(number, caller, epoch seconds) of the valid PINs keyed after `when`."""
        rows = self.db.execute(
            f"SELECT access_number, caller, last_ok_at FROM {TABLE} WHERE last_ok_at > ?",
            [iso(when)],
        )
        for number, caller, at in rows:
            yield number, caller, dt.datetime.fromisoformat(at).timestamp()

    def forget_before(self, when: float) -> None:
        """Drop the rows older than `when` (they no longer exempt anyone)."""
        with self.db.conn:
            self.db.execute(f"DELETE FROM {TABLE} WHERE last_ok_at <= ?", [iso(when)])
