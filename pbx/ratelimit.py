"""New-call pacing towards a trunk (anti-fraud: at most N calls per second).

A sliding window, not a token bucket: a bucket of 2 tokens refilled at 2/s
lets 3 calls into some 1-second window (2 at t=0, 1 at t=0.5). The provider
counts per window, so we do too: at most `rate` attempts in any window of
`window` seconds, counting every attempt sent, answered or not.
"""

from __future__ import annotations

import math
from collections import deque

# Arrival jitter can bring two sends exactly one window apart closer at the
# provider; keeping them this much further apart keeps its count honest too.
GUARD = 0.02


class SlidingWindowLimiter:
    """At most `rate` events in any `window`-second interval."""

    def __init__(self, rate: float, window: float = 1.0, guard: float = GUARD) -> None:
        self.limit = max(1, math.floor(rate * window))
        self.window = window + guard
        self._sent: deque[float] = deque()

    def _trim(self, now: float) -> None:
        while self._sent and now - self._sent[0] >= self.window - 1e-9:
            self._sent.popleft()

    def try_acquire(self, now: float) -> bool:
        """Take a slot now if one is free."""
        self._trim(now)
        if len(self._sent) < self.limit:
            self._sent.append(now)
            return True
        return False

    def next_free(self, now: float) -> float:
        """The earliest time a slot frees up (now if one is free)."""
        self._trim(now)
        if len(self._sent) < self.limit:
            return now
        return self._sent[-self.limit] + self.window
