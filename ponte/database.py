"""Keeping the records safe: refuse a damaged or vanished database at start,
and ride out a full disk, or a database server gone away, without dropping
calls or records.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from store.engine import UNAVAILABLE

log = logging.getLogger("ponte.records")

MARKER = "database.created"
ERROR_LOG_EVERY = 60.0  # seconds between repeated "cannot write" errors
RETRY_SECONDS = 2.0  # after a failed write, new writes queue this long before a retry


class DatabaseRefused(Exception):
    """The database cannot be used as it is; nothing was changed."""


def check_database(path: Path, state_dir: Path) -> None:
    """Refuse a corrupt file, or a missing one that existed before.

    A marker in the state directory remembers that the database was created,
    so a vanished file is never silently replaced by an empty one.
    """
    path, marker = Path(path), Path(state_dir) / MARKER
    if path.exists():
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                result = conn.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise DatabaseRefused(
                f"{path} is not a usable SQLite database ({exc}); it was left untouched: "
                "restore it from a backup or move it away"
            ) from None
        if result != "ok":
            raise DatabaseRefused(
                f"{path} failed its integrity check ({result}); it was left untouched"
            )
    elif marker.exists():
        raise DatabaseRefused(
            f"{path} is missing, but {marker} records that it was created "
            f"({marker.read_text().strip()}); restore it from a backup, or delete the "
            "marker to start with an empty database"
        )


def mark_created(path: Path, state_dir: Path) -> None:
    """Remember that the database exists (see check_database)."""
    marker = Path(state_dir) / MARKER
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{path} created {dt.datetime.now(dt.UTC).isoformat()}\n")


class RecordWriter:
    """Runs record writes in order; on a write error (disk full, I/O, the
    database server away) keeps them queued, logs at most once a minute, and
    retries until they land."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, where: str = "") -> None:
        self.clock = clock
        # Where the records go, for the error line (a URL has no password here).
        self.where = where
        self.pending: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._last_error = -ERROR_LOG_EVERY
        self._retry_at = 0.0
        self.failures = 0

    def write(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` now, or after the writes already waiting. While
        the last attempt failed less than RETRY_SECONDS ago the write just
        joins the queue: an unreachable server must not cost every call a
        connection timeout on the loop thread."""
        self.pending.append((fn, args))
        if len(self.pending) == 1 or self.clock() >= self._retry_at:
            self.flush()

    def flush(self) -> bool:
        """Try the waiting writes in order; True when none is left."""
        while self.pending:
            fn, args = self.pending[0]
            try:
                fn(*args)
            except UNAVAILABLE as exc:
                self.failures += 1
                now = self.clock()
                self._retry_at = now + RETRY_SECONDS
                if now - self._last_error >= ERROR_LOG_EVERY:
                    self._last_error = now
                    text = str(exc).strip()
                    log.error(
                        "cannot write call records%s (%s); %d writes kept in memory, retrying",
                        f" to {self.where}" if self.where else "",
                        text.splitlines()[0] if text else type(exc).__name__,
                        len(self.pending),
                    )
                return False
            self.pending.popleft()
            if not self.pending and self.failures:
                log.info("call records written again after %d failed attempts", self.failures)
                self.failures = 0
        return True
