"""Live metering of allowed outbound calls: count, warn, cut, alert.

Plain state, ticked once a second by the app server. A shared quota is drawn
by several live calls at once, so each tick sums what the pool had used
(committed) with every live call's unflushed seconds, and cuts all of the
pool's cuttable calls when it runs dry. Seconds are flushed to the counters
every `flush_every` seconds (every tick, four a second, when the pool is near
its limit) and when a call ends. With several app-server nodes on one shared database, each
node's committed figure includes the others' flushed seconds, so two nodes
drawing on one pool overshoot its limit by at most what each has not yet
flushed: a quarter second's worth per call near the limit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lines.policy import Decision

WARN_BEFORE = 30.0  # seconds of quota left when the caller hears the warning tone
# A pool this close to its limit is flushed at every tick instead of every
# `flush_every`: app-server nodes sharing a pool see only each other's
# flushed seconds, so near the limit they must not keep 10 s to themselves.
NEAR_LIMIT = 60.0
# How often to tick: once a second, and four times a second while any pool is
# near its limit, so a cut comes within a quarter second of it running dry and
# the other nodes see this one's seconds as soon.
TICK = 1.0
NEAR_TICK = 0.25

UsedFn = Callable[[str, dt.date, Iterable[str]], float]


@dataclass
class Metered:
    """One allowed, answered call being counted."""

    call: int
    decision: Decision
    cycle: dt.date
    types: frozenset[str]  # the types its limit covers
    started: float  # monotonic time of the answer
    flushed: float = 0.0  # seconds already written to the counters
    warned: bool = False


@dataclass(frozen=True)
class Flush:
    """Add seconds to a counter."""

    key: str
    cycle: dt.date
    call_type: str
    seconds: float


@dataclass(frozen=True)
class Cut:
    """End the call: its quota ran out."""

    call: int
    used: float
    limit: float


@dataclass(frozen=True)
class Warn:
    """Play the limit-warning tone to the caller."""

    call: int


@dataclass(frozen=True)
class Crossed:
    """Usage crossed an alert threshold of a limit."""

    key: str
    cycle: dt.date
    limit: str
    threshold: int
    line: str
    used: float
    limit_seconds: float
    call: int | None = None  # the call that crossed it (its language words the alert)


Action = Flush | Cut | Warn | Crossed


@dataclass
class Meter:
    """All metered calls; `tick` says what to do now."""

    used: UsedFn
    thresholds: list[int] = field(default_factory=lambda: [60, 80, 100])
    flush_every: float = 10.0
    calls: dict[int, Metered] = field(default_factory=dict)
    _last_flush: float = 0.0
    near: bool = False  # whether a pool was near its limit at the last tick

    def next_tick(self) -> float:
        """Seconds until the next tick is due."""
        return NEAR_TICK if self.near else TICK

    def start(
        self, call: int, decision: Decision, cycle: dt.date, types: frozenset[str], now: float
    ) -> None:
        """The call was answered: start counting."""
        if decision.counts and decision.usage_key and decision.call_type:
            self.calls[call] = Metered(call, decision, cycle, types, now)

    def stop(self, call: int, now: float) -> list[Action]:
        """The call ended: flush what is left, and check thresholds once more."""
        m = self.calls.pop(call, None)
        if m is None:
            return []
        actions: list[Action] = [*self._flush(m, now)]
        # The call's seconds are committed now (by the caller of stop), so
        # count them in the pool's total explicitly.
        return actions + self._thresholds(
            m, extra=sum(a.seconds for a in actions if isinstance(a, Flush))
        )

    def _flush(self, m: Metered, now: float) -> list[Flush]:
        total = now - m.started
        delta = total - m.flushed
        if delta <= 0:
            return []
        m.flushed = total
        d = m.decision
        assert d.usage_key and d.call_type
        return [Flush(d.usage_key, m.cycle, d.call_type, delta)]

    def pool_used(self, m: Metered, now: float) -> float:
        """Seconds the call's pool has used, live calls included."""
        d = m.decision
        assert d.usage_key
        committed = self.used(d.usage_key, m.cycle, m.types)
        live = sum(
            (now - o.started) - o.flushed
            for o in self.calls.values()
            if o.decision.usage_key == d.usage_key and o.cycle == m.cycle and o.types & m.types
        )
        return committed + live

    def _thresholds(self, m: Metered, now: float | None = None, extra: float = 0.0) -> list[Action]:
        d = m.decision
        if d.limit_seconds is None or not d.limit or not d.usage_key:
            return []
        used = (
            self.pool_used(m, now)
            if now is not None
            else self.used(d.usage_key, m.cycle, m.types) + extra
        )
        pct = 100 * used / d.limit_seconds if d.limit_seconds else 100
        return [
            Crossed(d.usage_key, m.cycle, d.limit, t, d.line, used, d.limit_seconds, m.call)
            for t in self.thresholds
            if pct >= t
        ]

    def tick(self, now: float) -> list[Action]:
        """Every `next_tick()` seconds: cuts, warnings, threshold crossings,
        periodic flushes."""
        actions: list[Action] = []
        near: list[Metered] = []
        pools: dict[tuple[str, dt.date, frozenset[str]], list[Metered]] = {}
        for m in self.calls.values():
            assert m.decision.usage_key
            pools.setdefault((m.decision.usage_key, m.cycle, m.types), []).append(m)
        for members in pools.values():
            first = members[0]
            limit = first.decision.limit_seconds
            if limit is None:
                continue
            used = self.pool_used(first, now)
            if limit - used <= NEAR_LIMIT:
                near += members
            actions += self._thresholds(first, now)
            cuttable = [m for m in members if m.decision.cut]
            if used >= limit:
                actions += [Cut(m.call, used, limit) for m in cuttable]
                continue
            # At the pool's current burn rate, WARN_BEFORE seconds are left.
            if cuttable and (limit - used) / len(members) <= WARN_BEFORE:
                for m in cuttable:
                    if not m.warned:
                        m.warned = True
                        actions.append(Warn(m.call))
        self.near = bool(near)
        due = now - self._last_flush >= self.flush_every
        if due:
            self._last_flush = now
        for m in self.calls.values() if due else near:
            actions += self._flush(m, now)
        return actions
