"""The wrong PINs every node keyed, in the records database (`guard_wrong`),
so the PIN guard of each app-server node counts them all (ponte/pinshare.py).
Rows older than the guard's window plus its lockout are dropped: they can no
longer count nor lock anyone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from store.engine import Database
from store.migrate import as_database
from store.schema import guard_wrong as TABLE

INSERT = sa.insert(TABLE)


@dataclass(frozen=True)
class WrongPin:
    """One wrong PIN as stored."""

    id: int
    at: float  # epoch seconds
    number: str  # "" for a browser's guess (per source only)
    source: str
    run: str


class GuardEventStore:
    """The `guard_wrong` table."""

    def __init__(self, db: Database | str | Path) -> None:
        self.db = as_database(db)

    def add(self, run: str, at: float, number: str, source: str) -> None:
        """One wrong PIN (one commit)."""
        with self.db.begin() as conn:
            conn.execute(INSERT, {"run": run, "at": at, "number": number, "source": source})

    def since(self, after: int, oldest: float) -> list[WrongPin]:
        """The wrong PINs stored after id `after`, none older than `oldest`, in order."""
        c = TABLE.c
        stmt = sa.select(c.id, c.at, c.number, c.source, c.run).where(c.id > after, c.at >= oldest)
        return [WrongPin(**row) for row in self.db.rows(stmt.order_by(c.id))]

    def forget_before(self, at: float) -> None:
        """Drop the wrong PINs older than `at`."""
        with self.db.begin() as conn:
            conn.execute(sa.delete(TABLE).where(TABLE.c.at < at))
