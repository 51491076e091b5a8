"""The wall clock rules read (PIN hours, validity, billing timestamps).

Injectable so tests can move time: PONTE_NOW=2026-11-23T03:00:00-03:00 starts
the clock at that instant (it then advances normally). Timers use the
monotonic clock and are not affected.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable


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


class CpuMeter:
    """The CPU this process used between two readings, in percent of one core
    (a node's load in the registry: 100 is one core busy, the loop thread
    and pjsua2's included)."""

    # Readings closer than this give the last figure again (a quick second
    # `ponte status` would otherwise divide by next to nothing).
    MIN_SPAN = 0.5

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self._clock, self._cpu = clock, cpu
        self._at, self._used = clock(), cpu()
        self._last: float | None = None

    def read(self) -> float:
        """Percent of one core since the last reading (or since made)."""
        now, used = self._clock(), self._cpu()
        span = now - self._at
        if self._last is not None and span < self.MIN_SPAN:
            return self._last
        self._last = round(100.0 * (used - self._used) / span, 1) if span > 0 else 0.0
        self._at, self._used = now, used
        return self._last
