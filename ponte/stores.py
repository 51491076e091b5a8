"""The records database as the app server uses it: one object per table set,
opened at start, and the writer every record write goes through."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from bridge.billing import BillingStore
from lines.usage import UsageStore
from ponte.database import RecordWriter, check_database, mark_created
from ponte.known_callers import KnownCallerStore
from ponte.records import RecordStore
from provisioning.files import private
from store.engine import Database, is_postgres
from store.migrate import open_database


class StoreNotOpen(RuntimeError):
    """A store was used before `Stores.open` (a bug: start() opens them first)."""


class Stores:
    """Billing, usage, call history/audit and known callers, in one database."""

    def __init__(self, database: str | Path, state_dir: Path, node: str = "local") -> None:
        # A file path (SQLite) or a postgresql:// URL (shared by several nodes).
        self.database = database if is_postgres(database) else Path(database)
        self.db: Database | None = None
        # This app server's name in the live tables (several nodes may share them).
        self.node = node
        self.state_dir = Path(state_dir)
        # Writes that a full disk refused wait here and are retried in order.
        self.writer = RecordWriter()
        self._billing: BillingStore | None = None
        self._usage: UsageStore | None = None
        self._calls: RecordStore | None = None
        self._known: KnownCallerStore | None = None

    def open(self) -> None:
        """Check the database is ours, bring its schema up to date, open
        every table set, keep a SQLite file private."""
        local = self.database if isinstance(self.database, Path) else None
        if local:
            check_database(local, self.state_dir)
        self.db = db = open_database(self.database)
        self._billing = BillingStore(db)
        self._usage = UsageStore(db)
        self._calls = RecordStore(db)
        self._known = KnownCallerStore(db)
        if local:
            # Call records, billing, audit: the service's user alone reads them.
            private(local)
            mark_created(local, self.state_dir)

    def checkpoint(self, at: float) -> None:
        """The calls and room legs this node carries all lasted until `at`."""
        self.calls.checkpoint(self.node, at)
        self.billing.checkpoint(self.node, at)

    def close_crashed(self) -> tuple[int, int, int]:
        """Close what this node was carrying when it died, at its last
        checkpoint: (history rows, conference legs, sessions)."""
        calls = self.calls.close_crashed(self.node)
        legs, sessions = self.billing.close_crashed(self.node)
        return calls, legs, sessions

    @property
    def opened(self) -> bool:
        """Whether `open` ran."""
        return self._calls is not None

    @property
    def billing(self) -> BillingStore:
        """Conference sessions and their legs."""
        return _opened(self._billing)

    @property
    def usage(self) -> UsageStore:
        """Usage counters per line and cycle, and quota alerts."""
        return _opened(self._usage)

    @property
    def calls(self) -> RecordStore:
        """Call history, audit, restores and read marks."""
        return _opened(self._calls)

    @property
    def known(self) -> KnownCallerStore:
        """Caller IDs that keyed a valid PIN per number."""
        return _opened(self._known)


T = TypeVar("T")


def _opened(store: T | None) -> T:
    if store is None:
        raise StoreNotOpen("the records database is not open yet")
    return store
