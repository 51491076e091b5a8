"""One PIN guard for every app-server node on a records database.

ivr/guard.py's `PinGuard` is a plain state machine fed with wrong PINs. Each
node keeps one, and every wrong PIN it sees is also written to the records
database; before it judges a call (or a wrong PIN), a node replays the wrong
PINs the *other* server processes wrote since it last looked into its own
guard. All nodes thus count the same wrong PINs, lock the same sources and
numbers, and a restart (or a crash) reloads the window instead of forgetting
an attack. On SQLite there is one node: the replay happens at start only.

The guard counts on the wall clock (epoch seconds, `LockoutClock` over
`WallClock.ts`): the one clock nodes on several machines share (NTP keeps
them within milliseconds; a step of the clock moves lockouts with it).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from ivr.guard import PinGuard, WrongPinVerdict
from ponte.stores import Stores
from store.engine import UNAVAILABLE

log = logging.getLogger("ponte.pinshare")

EXPIRE_EVERY = 60.0  # seconds between deletions of wrong PINs too old to matter
# At most one look at the other nodes' wrong PINs per this many seconds. The
# look is a query on the loop thread, and every new call asks twice: at 100
# calls/s one look per question was a quarter of a node's time (py-spy). A
# node may thus judge without the others' last 0.1 s of wrong PINs: under a
# guessing attack spread over nodes, a tenth of a second's guesses more.
SYNC_EVERY = 0.1


class SharedPinGuard:
    """The node's `PinGuard`, kept in step with the other nodes' wrong PINs."""

    def __init__(self, guard: PinGuard, stores: Stores, now: Callable[[], float]) -> None:
        self.guard = guard
        self.stores = stores
        self.now = now
        # This process's mark on the rows it writes (it applied them already).
        self.run = uuid.uuid4().hex
        self._seen = 0  # the last row id replayed
        self._loaded = False
        self._expired_at = float("-inf")
        self._synced_at = float("-inf")

    # -- what the entry IVR and the web join ask ---------------------------------
    def admit(self, number: str, source: str, known: bool = False) -> str | None:
        """None if a new call from `source` to `number` may key PINs, else why not."""
        now = self._sync()
        return self.guard.admit(number, source, now, known)

    def is_locked(self, source: str) -> bool:
        """Whether `source` is locked out (per-source rule)."""
        return self.guard.is_locked(source, self._sync())

    def number_locked(self, number: str) -> bool:
        """Whether `number`'s budget is spent (its lockout runs)."""
        return self.guard.number_locked(number, self._sync())

    def wrong_pin(self, number: str, source: str) -> WrongPinVerdict:
        """Count a wrong PIN keyed on a call to `number`, here and for all nodes."""
        now = self._sync()
        verdict = self.guard.wrong_pin(number, source, now)
        self._store(now, number, source)
        return verdict

    def record_wrong(self, source: str) -> list[str]:
        """Count a browser's wrong PIN against its source alone; the sources it locks."""
        now = self._sync()
        locked = self.guard.record_wrong(source, now)
        self._store(now, "", source)
        return locked

    # -- keeping in step ------------------------------------------------------
    def _sync(self) -> float:
        now = self.now()
        stores = self.stores
        if not stores.opened or (self._loaded and not stores.shared) or stores.writer.away:
            return now
        if self._loaded and 0 <= now - self._synced_at < SYNC_EVERY:
            return now
        self._synced_at = now
        g = self.guard
        try:
            rows = stores.guard.since(self._seen, now - g.window - g.lockout)
        except UNAVAILABLE:
            return now  # away: judge on what this node knows; it catches up on return
        for w in rows:
            self._seen = w.id
            if w.run == self.run:
                continue
            if w.number:
                g.wrong_pin(w.number, w.source, w.at)
            else:
                g.record_wrong(w.source, w.at)
        if not self._loaded:
            self._loaded = True
            if rows:
                log.info(
                    "PIN guard: %d wrong PINs of the last %g s reloaded",
                    len(rows),
                    g.window + g.lockout,
                )
        return now

    def _store(self, now: float, number: str, source: str) -> None:
        stores = self.stores
        if not stores.opened:
            return
        stores.writer.write(stores.guard.add, self.run, now, number, source)
        if now - self._expired_at >= EXPIRE_EVERY:
            self._expired_at = now
            g = self.guard
            stores.writer.write(stores.guard.forget_before, now - g.window - g.lockout)
