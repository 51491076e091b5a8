"""Locking out PIN guessers.

Each call already ends after 3 wrong PINs. Across calls, three rules:

* Per source: the wrong PINs against the access numbers are counted over a
  sliding window: once they reach the limit (20 in 10 minutes, from any
  sources), every source that keyed at least a call's worth of them (3) is
  locked out for 15 minutes, and its new calls hear "try later". A caller who
  mistyped once or twice while an attack crossed the limit is spared.
* Per number: a caller ID is whatever the caller (or its provider) puts in
  From, so a guesser rotating it would never be one source for long. Each
  number dialed through Kamailio therefore has its own budget (the same 20 in
  10 minutes), whatever the caller IDs. The wrong PIN that spends it, and any
  wrong PIN on that number while it is locked, ends its call at once, and for
  15 minutes new calls from caller IDs get in only if that caller ID keyed a
  valid PIN on that number recently (`KnownCallers`, 90 days).
* Known caller IDs during a lockout: the exemption is for a caller ID, which
  can be spoofed too, so each call from one gets a single try (a wrong PIN
  ends it, as above) and each such caller ID may key only `known_tries`
  wrong PINs during the lockout, after which it is refused like the rest.

A source is an extension (`ext:`, authenticated by Kamailio), a caller ID
(`cid:`, a call relayed by Kamailio from a trunk) or an IP address (`ip:`,
a call straight to the app server, or a browser). Extensions are not
spoofable: they spend the number's budget and get one try per call while it
is locked, but are never refused for it (only by their own per-source
lockout). Addresses keep the per-source rule alone: they neither spend a
number's budget nor are refused for it.

Plain state machines: every method takes the time (`now`: monotonic seconds
for the windows and lockouts; `when`: epoch seconds for the memory of valid
PINs, which must outlive a restart).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

CALLER_ID = "cid:"
EXTENSION = "ext:"
ADDRESS = "ip:"
DAY = 86400.0

# Why `PinGuard.admit` refuses a call (for the log line).
SOURCE_LOCKED = "too many wrong PINs from it"
NUMBER_LOCKED = "the number is locked and this caller ID keyed no valid PIN on it"
KNOWN_TRIES_SPENT = "the number is locked and this caller ID spent its tries"


def is_caller_id(source: str) -> bool:
    """Whether `source` is a caller ID (chosen by the caller, so spoofable)."""
    return source.startswith(CALLER_ID)


def spends_number_budget(source: str) -> bool:
    """Calls relayed by Kamailio (caller IDs, extensions) count per number;
    a direct source is known by its address and judged by it alone."""
    return source.startswith((CALLER_ID, EXTENSION))


@dataclass(frozen=True)
class WrongPinVerdict:
    """What one wrong PIN led to."""

    locked_sources: list[str]  # sources locked out by it (per-source rule)
    number_locked: bool = False  # it spent the number's budget: a lockout begins
    end_call: bool = False  # the call must end now (the number is locked)


@dataclass
class PinGuard:
    """Sliding-window counts of wrong PINs, per source and per number, and
    who is locked out."""

    limit: int = 20
    window: float = 600.0
    lockout: float = 900.0
    per_source: int = 3  # wrong PINs in the window that make a source an offender
    known_tries: int = 3  # wrong PINs a known caller ID may key on a locked number
    wrong: deque[tuple[float, str]] = field(default_factory=deque)
    locked_until: dict[str, float] = field(default_factory=dict)
    number_wrong: dict[str, deque[float]] = field(default_factory=dict)
    number_locked_until: dict[str, float] = field(default_factory=dict)
    # number -> caller ID -> wrong PINs it keyed while that number was locked
    # (cleared when the lockout ends, so each lockout starts a fresh budget).
    known_wrong: dict[str, Counter[str]] = field(default_factory=dict)

    # -- per source -----------------------------------------------------------
    def record_wrong(self, source: str, now: float) -> list[str]:
        """Count one wrong PIN against `source` alone; return the sources
        this locks out now (the web /join counts its guesses here)."""
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
        """Whether new calls from `source` must hear "try later" (per-source rule)."""
        until = self.locked_until.get(source)
        if until is None:
            return False
        if until <= now:
            del self.locked_until[source]
            return False
        return True

    # -- per number -----------------------------------------------------------
    def number_locked(self, number: str, now: float) -> bool:
        """Whether `number`'s budget of wrong PINs is spent (its lockout runs)."""
        until = self.number_locked_until.get(number)
        if until is None:
            return False
        if until <= now:
            del self.number_locked_until[number]
            self.known_wrong.pop(number, None)
            return False
        return True

    def admit(self, number: str, source: str, now: float, known: bool = False) -> str | None:
        """None if a new call from `source` to `number` may key PINs, else why
        not. `known`: this source keyed a valid PIN on `number` recently."""
        if self.is_locked(source, now):
            return SOURCE_LOCKED
        if not is_caller_id(source) or not self.number_locked(number, now):
            return None
        if not known:
            return NUMBER_LOCKED
        if self.known_wrong.get(number, Counter())[source] >= self.known_tries:
            return KNOWN_TRIES_SPENT
        return None

    def wrong_pin(self, number: str, source: str, now: float) -> WrongPinVerdict:
        """Count one wrong PIN keyed by `source` on a call to `number`."""
        locked_sources = self.record_wrong(source, now)
        if not spends_number_budget(source):
            return WrongPinVerdict(locked_sources)
        was_locked = self.number_locked(number, now)
        times = self.number_wrong.setdefault(number, deque())
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if was_locked and is_caller_id(source):
            self.known_wrong.setdefault(number, Counter())[source] += 1
        if len(times) < self.limit:
            return WrongPinVerdict(locked_sources, end_call=was_locked)
        # Spent (again): the lockout runs until `lockout` after the last wrong
        # PIN that found the budget spent, so a steady trickle cannot outlast it.
        self.number_locked_until[number] = now + self.lockout
        return WrongPinVerdict(locked_sources, number_locked=not was_locked, end_call=True)


@dataclass
class KnownCallers:
    """Which caller IDs keyed a valid PIN on which number, and when (epoch
    seconds: this memory is kept in the records database across restarts)."""

    keep: float = 90 * DAY
    last_ok: dict[tuple[str, str], float] = field(default_factory=dict)

    def remember(self, number: str, caller: str, when: float) -> None:
        """`caller` keyed a valid PIN on `number` at `when`."""
        key = (number, caller)
        self.last_ok[key] = max(when, self.last_ok.get(key, when))

    def knows(self, number: str, caller: str, when: float) -> bool:
        """Whether `caller` keyed a valid PIN on `number` within `keep` of `when`."""
        at = self.last_ok.get((number, caller))
        if at is None:
            return False
        if when - at > self.keep:
            del self.last_ok[(number, caller)]
            return False
        return True
