"""Locking out PIN guessers.

Each call already ends after 3 wrong PINs. Across calls, the wrong PINs
against the access numbers are counted over a sliding window: once they reach
the limit (20 in 10 minutes, from any sources), every source that keyed at
least a call's worth of them (3) is locked out for 15 minutes, and its new
calls hear "try later". A caller who mistyped once or twice while an attack
crossed the limit is spared.
A source is an extension (calls through Kamailio), a caller ID (a trunk's
calls) or an IP address (direct calls).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field


@dataclass
class PinGuard:
    """Sliding-window count of wrong PINs, and the sources locked out."""

    limit: int = 20
    window: float = 600.0
    lockout: float = 900.0
    per_source: int = 3  # wrong PINs in the window that make a source an offender
    wrong: deque[tuple[float, str]] = field(default_factory=deque)
    locked_until: dict[str, float] = field(default_factory=dict)

    def record_wrong(self, source: str, now: float) -> list[str]:
        """Count one wrong PIN; return the sources this locks out now."""
        self.wrong.append((now, source))
        while self.wrong and self.wrong[0][0] <= now - self.window:
            self.wrong.popleft()
        if len(self.wrong) < self.limit:
            return []
        counts = Counter(who for _, who in self.wrong)
        newly = []
        for offender, n in counts.items():
            if n < min(self.per_source, self.limit):
                continue
            if self.locked_until.get(offender, 0.0) <= now:
                newly.append(offender)
            self.locked_until[offender] = now + self.lockout
        return sorted(newly)

    def is_locked(self, source: str, now: float) -> bool:
        """Whether new calls from `source` must hear "try later"."""
        until = self.locked_until.get(source)
        if until is None:
            return False
        if until <= now:
            del self.locked_until[source]
            return False
        return True
