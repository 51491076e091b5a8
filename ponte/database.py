"""Keeping the records safe: refuse a damaged or vanished database at start,
and ride out a full disk, or a database server gone away, without dropping
calls or records.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from store.engine import UNAVAILABLE

log = logging.getLogger("ponte.records")

MARKER = "database.created"
ERROR_LOG_EVERY = 60.0  # seconds between repeated "cannot write" errors
GATHER_SECONDS = 0.01  # the writer thread waits this long after a wake-up, for company
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
    retries until they land.

    After `start()` the writes run on a thread of their own: the loop thread
    (SIP, DTMF, rooms) never waits for a commit, a full disk or a database
    server that stopped answering. `away` (set by a failed write, cleared by
    one that lands) tells the loop's own reads to use what they last knew
    instead of waiting for a connection timeout.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, where: str = "") -> None:
        self.clock = clock
        # Where the records go, for the error line (a URL has no password here).
        self.where = where
        self.pending: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self.away = False
        self._last_error = -ERROR_LOG_EVERY
        self._retry_at = 0.0
        self.failures = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        """Carry out the writes on the writer thread from now on."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="records", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Let the thread land what it can within `timeout`, then end it;
        True when nothing is left waiting."""
        done = self.flush(timeout)
        thread = self._thread
        if thread is not None:
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            thread.join(timeout)
            self._thread = None
        return done

    def write(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` after the writes already waiting (at once, on the
        writer thread once started). Without the thread, while the last
        attempt failed less than RETRY_SECONDS ago, the write only queues."""
        with self._cond:
            self.pending.append((fn, args))
            if self._thread is not None:
                self._cond.notify_all()
                return
        if len(self.pending) == 1 or self.clock() >= self._retry_at:
            self._drain()

    def flush(self, timeout: float = 0.0) -> bool:
        """Try the waiting writes now (without the thread), or wait up to
        `timeout` for the thread to land them; True when none is left."""
        if self._thread is None:
            return self._drain()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self.pending and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(min(left, 0.05))
            return not self.pending

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self.pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
            # Let a few more writes gather: one wake-up for several (a call's
            # answer and end, a room's join) instead of a thread switch each.
            time.sleep(GATHER_SECONDS)
            if self._drain():
                with self._cond:
                    self._cond.notify_all()  # a flush may be waiting
            else:
                with self._cond:  # wait before retrying (a stop cuts it short)
                    self._cond.wait_for(lambda: self._stopping, RETRY_SECONDS)

    def _drain(self) -> bool:
        """Run the waiting writes in order; False at the first that fails."""
        while self.pending:
            fn, args = self.pending[0]
            try:
                fn(*args)
            except UNAVAILABLE as exc:
                self._failed(exc)
                return False
            self.pending.popleft()
            if self.away or (not self.pending and self.failures):
                self.away = False
                log.info("call records written again after %d failed attempts", self.failures)
                self.failures = 0
        return True

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.away = True
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


class LatestWriter:
    """A thread that writes the latest job put in each named slot, off the
    loop and apart from the records' queue: a newer job replaces one not yet
    run. For heartbeats and leases: only the last one matters, and one stuck
    behind a backlog of call records made a live node look dead to the
    others (its heartbeat 5 s old after a burst of calls)."""

    def __init__(self, name: str) -> None:
        self._slots: dict[str, Callable[[], object]] = {}
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, slot: str, fn: Callable[..., object], *args: Any) -> None:
        """Run `fn(*args)` soon, unless a newer job for `slot` comes first."""
        with self._cv:
            self._slots[slot] = lambda: fn(*args)
            self._cv.notify()

    def stop(self, timeout: float = 2.0) -> None:
        """Write what is pending, then end the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._slots and not self._stopping:
                    self._cv.wait()
                jobs, self._slots = list(self._slots.values()), {}
                stopping = self._stopping
            for job in jobs:
                try:
                    job()
                except UNAVAILABLE as exc:
                    log.debug("heartbeat not written (database away): %s", exc)
            if stopping:
                return
