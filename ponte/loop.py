"""A single-threaded event loop around pjsua2's poll.

pjsua2 must be driven from one thread, so the app's timers and cross-thread
requests (control socket) run on that same thread between polls.
"""

from __future__ import annotations

import heapq
import itertools
import math
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class TimerHandle:
    """A scheduled callback; `cancel()` makes it a no-op."""

    when: float
    seq: int
    fn: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        """Do not run this callback."""
        self.cancelled = True


class Loop:
    """Timers plus a thread-safe inbox, run between `poll` calls."""

    def __init__(
        self,
        poll: Callable[[int], None],
        max_wait_ms: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._poll = poll
        self._clock = clock
        self.max_wait_ms = max_wait_ms
        self._timers: list[TimerHandle] = []
        self._seq = itertools.count()
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.stopping = False

    def now(self) -> float:
        """Monotonic seconds (the clock every timer uses)."""
        return self._clock()

    def call_later(self, delay: float, fn: Callable[[], None]) -> TimerHandle:
        """Run `fn` on the loop thread after `delay` seconds."""
        handle = TimerHandle(self.now() + max(0.0, delay), next(self._seq), fn)
        heapq.heappush(self._timers, handle)
        return handle

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the loop thread soon; safe from any thread."""
        self._inbox.put(fn)

    def run_once(self) -> None:
        """Poll SIP/media events once, then run due timers and inbox items."""
        wait = self.max_wait_ms
        if self._timers:
            # Rounded up: a timer due in 0.4 ms must not make a 0 ms poll
            # that returns before it is due (a busy spin until it is).
            wait = math.ceil(max(0.0, min(wait / 1000, self._timers[0].when - self.now())) * 1000)
        self._poll(wait)
        while True:
            try:
                fn = self._inbox.get_nowait()
            except queue.Empty:
                break
            fn()
        now = self.now()
        while self._timers and self._timers[0].when <= now:
            handle = heapq.heappop(self._timers)
            if not handle.cancelled:
                handle.fn()

    def run(self) -> None:
        """Run until `stopping` is set."""
        while not self.stopping:
            self.run_once()
