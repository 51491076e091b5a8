"""The wall clock rules read (PIN hours, validity, billing timestamps).

Injectable so tests can move time: PONTE_NOW=2026-11-23T03:00:00-03:00 starts
the clock at that instant (it then advances normally). Timers use the
monotonic clock and are not affected.
"""

from __future__ import annotations

import datetime as dt
import os
import time


class WallClock:
    """Real time, optionally shifted to start at a given instant."""

    def __init__(self, start_at: dt.datetime | None = None) -> None:
        self.offset = (start_at.timestamp() - time.time()) if start_at else 0.0

    @classmethod
    def from_env(cls) -> WallClock:
        """A clock honouring PONTE_NOW (for tests and demos)."""
        value = os.environ.get("PONTE_NOW")
        if not value:
            return cls()
        start = dt.datetime.fromisoformat(value)
        if start.tzinfo is None:
            raise ValueError("PONTE_NOW needs a UTC offset, e.g. 2026-11-23T03:00:00-03:00")
        return cls(start)

    def ts(self) -> float:
        """Epoch seconds."""
        return time.time() + self.offset

    def now(self) -> dt.datetime:
        """An aware UTC datetime."""
        return dt.datetime.fromtimestamp(self.ts(), dt.UTC)
