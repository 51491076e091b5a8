"""The caller IDs that keyed a valid PIN, per number, in the records database.

While a number is locked out after PIN guessing (ivr/guard.py), only caller
IDs that keyed a valid PIN on it in the last 90 days get in. That memory must
survive a restart (else restarting the appliance would shut out every regular
caller of a number under attack), so it lives in the records database beside
the call records: one row per (access_number, caller), the last valid PIN's time.
The server writes it through its RecordWriter, so a full disk never holds a
call up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from ponte.records import iso
from store.engine import Database, excluded
from store.migrate import as_database
from store.schema import pin_known_callers as TABLE


class KnownCallerStore:
    """The `pin_known_callers` table."""

    def __init__(self, db: Database | str | Path) -> None:
        self.db = as_database(db)
        self._remember = self.db.upsert(
            TABLE,
            ("access_number", "caller"),
            {"last_ok_at": self.db.greatest(TABLE.c.last_ok_at, excluded(TABLE, "last_ok_at"))},
        )

    def remember(self, number: str, caller: str, when: float) -> None:
        """`caller` keyed a valid PIN on `number` at `when` (epoch seconds; one commit)."""
        row = {"access_number": number, "caller": caller, "last_ok_at": iso(when)}
        with self.db.begin() as conn:
            conn.execute(self._remember, row)

    def since(self, when: float) -> Iterator[tuple[str, str, float]]:
        """(number, caller, epoch seconds) of the valid PINs keyed after `when`."""
        c = TABLE.c
        rows = self.db.rows(
            sa.select(c.access_number, c.caller, c.last_ok_at).where(c.last_ok_at > iso(when))
        )
        for row in rows:
            at = dt.datetime.fromisoformat(row["last_ok_at"]).timestamp()
            yield row["access_number"], row["caller"], at

    def last_ok(self, number: str, caller: str) -> float | None:
        """When `caller` last keyed a valid PIN on `number` (epoch seconds), on any node."""
        c = TABLE.c
        at = self.db.scalar(
            sa.select(c.last_ok_at).where(c.access_number == number, c.caller == caller)
        )
        return None if at is None else dt.datetime.fromisoformat(at).timestamp()

    def forget_before(self, when: float) -> None:
        """Drop the rows older than `when` (they no longer exempt anyone)."""
        with self.db.begin() as conn:
            conn.execute(sa.delete(TABLE).where(TABLE.c.last_ok_at <= iso(when)))
