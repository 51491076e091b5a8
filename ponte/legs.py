"""Every call the app server holds, in one table, each with the handler that owns it.

A leg is one pjsua2 call (or a browser's media port). Its *handler* is the
object that decides what the leg's events mean right now: the entry IVR while
the caller keys a PIN, the room once the caller is in, the dial-out while a
moderator keys a guest's number, a bridged pair for a trunk call. SIP events
reach a leg through `LegTable.get(id).handler`, never by asking each module
"is this yours?". Handing a leg to another owner is one assignment.

`LegTable.add` is the only place that makes a leg and its call-history row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ivr.dtmf import DtmfDeduper
from ponte.loop import TimerHandle
from ponte.records import CallRecord


class LegHandler(Protocol):
    """What a leg's owner does with its events (all on the loop thread)."""

    def on_media_ready(self, leg: Leg) -> None:
        """The leg's audio is connected to the conference bridge."""

    def on_media_changed(self, leg: Leg, held: bool) -> None:
        """The leg's media was renegotiated (re-INVITE) after it was ready:
        its conference port may be new, without links; `held`: the far end
        holds the call."""

    def on_confirmed(self, leg: Leg) -> None:
        """The call is established (ACKed or answered)."""

    def on_progress(self, leg: Leg, code: int) -> None:
        """An outbound leg rings (180/183)."""

    def on_digit(self, leg: Leg, digit: str) -> None:
        """A DTMF digit, duplicates across methods already dropped."""

    def on_prompt_done(self, leg: Leg) -> None:
        """The prompt started by `Media.play` finished."""

    def on_disconnected(self, leg: Leg, code: int, reason: str) -> None:
        """The call ended; the leg is already out of the table."""


class Idle:
    """A handler that ignores everything: the base of the others."""

    def on_media_ready(self, leg: Leg) -> None:  # noqa: D102 - see LegHandler
        return None

    def on_media_changed(self, leg: Leg, held: bool) -> None:  # noqa: D102
        return None

    def on_confirmed(self, leg: Leg) -> None:  # noqa: D102
        return None

    def on_progress(self, leg: Leg, code: int) -> None:  # noqa: D102
        return None

    def on_digit(self, leg: Leg, digit: str) -> None:  # noqa: D102
        return None

    def on_prompt_done(self, leg: Leg) -> None:  # noqa: D102
        return None

    def on_disconnected(self, leg: Leg, code: int, reason: str) -> None:  # noqa: D102
        return None


IDLE = Idle()


@dataclass
class Playback:
    """What `Media` tracks for a leg: its prompt, timers and slot players."""

    timers: dict[str, TimerHandle] = field(default_factory=dict)
    prompt_timer: TimerHandle | None = None
    barge_in: bool = True
    # After the current prompt: hang up with this reason (and `hangup_code`).
    hangup_after: str | None = None
    hangup_code: int = 0
    slot_gen: dict[str, int] = field(default_factory=dict)


@dataclass
class Seat:
    """A leg's place in a room (set by `RoomService.enter`)."""

    room: str
    role: str
    joined_by: str
    joined_wall: float
    session_id: int | None = None
    name_path: str | None = None
    counter_pin_name: str | None = None  # whose individual counter-PIN let a moderator in


@dataclass
class Leg:
    """One call the app server holds."""

    id: int
    caller: str
    dialed: str
    language: str
    handler: LegHandler = IDLE
    record: CallRecord | None = None  # its call-history row (None: none is kept)
    dedupe: DtmfDeduper = field(default_factory=DtmfDeduper)
    playback: Playback = field(default_factory=Playback)
    seat: Seat | None = None
    ended_by: str = "caller"
    digit_at: float = 0.0  # when the last digit arrived (key latency stats)
    # The name of the individual counter-PIN keyed at entry (None: none, or
    # the room's collective one); RoomService.enter seats it.
    counter_pin_name: str | None = None


class LegTable:
    """The legs by id; whoever needs to know when one ends subscribes."""

    def __init__(self) -> None:
        self._legs: dict[int, Leg] = {}
        # Called with each leg the table drops (after its handler was told).
        self.ended: list[Callable[[Leg], None]] = []

    def add(
        self,
        leg_id: int,
        caller: str,
        dialed: str,
        language: str = "pt-BR",
        handler: LegHandler = IDLE,
        record: CallRecord | None = None,
    ) -> Leg:
        """Make the leg, with its call-history row when it keeps one."""
        leg = Leg(leg_id, caller, dialed, language, handler, record)
        self._legs[leg_id] = leg
        return leg

    def get(self, leg_id: int) -> Leg | None:
        """The live leg with that id."""
        return self._legs.get(leg_id)

    def __contains__(self, leg_id: object) -> bool:
        return leg_id in self._legs

    def __iter__(self) -> Iterator[Leg]:
        return iter(list(self._legs.values()))

    def __len__(self) -> int:
        return len(self._legs)

    def drop(self, leg_id: int) -> Leg | None:
        """Take a leg out of the table (its call ended), telling the subscribers."""
        leg = self._legs.pop(leg_id, None)
        if leg is not None:
            for fn in self.ended:
                fn(leg)
        return leg

    def records(self) -> dict[int, CallRecord]:
        """The call-history rows of the live legs that keep one."""
        return {leg.id: leg.record for leg in self._legs.values() if leg.record is not None}

    def clear(self) -> None:
        """Forget every leg (shutdown: pjsua2 is gone)."""
        self._legs.clear()
