"""The records database as the app server uses it: one object per table set,
opened at start, and the writer every record write goes through."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from bridge.billing import ID_BLOCK, BillingStore
from lines.usage import UsageStore
from ponte.database import RecordWriter, check_database, mark_created
from ponte.guard_events import GuardEventStore
from ponte.known_callers import KnownCallerStore
from ponte.records import RecordStore
from provisioning.files import private
from store.engine import UNAVAILABLE, Database, describe, is_postgres
from store.migrate import open_database

log = logging.getLogger("ponte.records")


class DatabaseUnreachable(OSError):
    """The records database server did not answer at start (may be transient:
    the start fails with exit 1, which systemd retries)."""


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
        self.writer = RecordWriter(where=describe(database))
        self._billing: BillingStore | None = None
        self._claiming = False  # a claim of session ids waits in the writer
        self._usage: UsageStore | None = None
        self._calls: RecordStore | None = None
        self._known: KnownCallerStore | None = None
        self._guard: GuardEventStore | None = None

    def open(self) -> None:
        """Check the database is ours, bring its schema up to date, open
        every table set, keep a SQLite file private."""
        local = self.database if isinstance(self.database, Path) else None
        if local:
            check_database(local, self.state_dir)
        try:
            self.db = db = open_database(self.database)
        except UNAVAILABLE as exc:
            text = str(exc).strip()
            raise DatabaseUnreachable(
                f"cannot reach the records database at {describe(self.database)} "
                f"({text.splitlines()[0] if text else type(exc).__name__}); "
                "calls are not taken until it answers (systemd retries the start)"
            ) from None
        self._billing = BillingStore(db)
        # Session ids in hand before any outage: a room opens without the database.
        self._billing.claim_ids()
        self._usage = UsageStore(db)
        self._calls = RecordStore(db)
        self._known = KnownCallerStore(db)
        self._guard = GuardEventStore(db)
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

    def new_session_id(self) -> int | None:
        """A new conference session's id, from those this node holds, so a
        room opens while the database is away or the disk full. When half a
        block is left the next is claimed through the writer (now, or when
        the database is back). None when none is left and the database is
        away: that session goes unbilled, and the log says so."""
        billing = self.billing
        if billing.ids_in_hand() <= ID_BLOCK // 2 and not self._claiming:
            self._claiming = True
            self.writer.write(self._claim_ids)
        try:
            return billing.new_session_id()
        except UNAVAILABLE as exc:
            text = str(exc).strip()
            log.error(
                "no conference session id left and the records database %s is away (%s): "
                "this room's session is not billed",
                describe(self.database),
                text.splitlines()[0] if text else type(exc).__name__,
            )
            return None

    def _claim_ids(self) -> None:
        self.billing.claim_ids()
        self._claiming = False

    def used(self, key: str, cycle: dt.date, types: Iterable[str]) -> float:
        """Seconds `key` used in the cycle: what the database holds (all
        nodes' adds; as last read while it is away) plus this node's adds
        still waiting in the writer. Every quota decision reads this."""
        kinds = frozenset(types)
        day = cycle.isoformat()
        waiting = sum(
            float(args[3])
            for fn, args in list(self.writer.pending)
            if getattr(fn, "__func__", None) is UsageStore.add
            and args[0] == key
            and args[1].isoformat() == day
            and args[2] in kinds
        )
        # While writes fail, the database is not asked: the last figure read.
        return self.usage.used(key, cycle, kinds, fresh=not self.writer.away) + waiting

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
    def shared(self) -> bool:
        """Whether other app-server nodes may write the same records (PostgreSQL)."""
        return is_postgres(self.database)

    @property
    def guard(self) -> GuardEventStore:
        """The wrong PINs of every node (the shared PIN guard)."""
        return _opened(self._guard)

    @property
    def known(self) -> KnownCallerStore:
        """Caller IDs that keyed a valid PIN per number."""
        return _opened(self._known)


T = TypeVar("T")


def _opened(store: T | None) -> T:
    if store is None:
        raise StoreNotOpen("the records database is not open yet")
    return store
