"""Commands a dialogue issues; the app server carries them out on a call.

Dialogues never touch SIP or media: they take events and return these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Play:
    """Play prompts in sequence; digits stop them when `barge_in`."""

    prompts: tuple[str, ...]
    barge_in: bool = True


@dataclass(frozen=True)
class StopPlayback:
    """Stop whatever prompt is playing."""


@dataclass(frozen=True)
class StartTimer:
    """(Re)start the named timer; a running one of that name is replaced."""

    name: str
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    """Cancel the named timer if it runs."""

    name: str


@dataclass(frozen=True)
class JoinRoom:
    """Move the caller into a room with a role."""

    room: str
    role: str


@dataclass(frozen=True)
class RecordName:
    """Record the caller's name (after a beep) for `seconds`."""

    seconds: float = 3.0


@dataclass(frozen=True)
class WrongPin:
    """A wrong PIN was keyed: it counts against the caller's source."""


@dataclass(frozen=True)
class Hangup:
    """End the call once prompts queued before it have played."""

    reason: str


@dataclass(frozen=True)
class CallOperator:
    """The caller asked for an operator ("trouble connecting") before any PIN."""


Command = (
    Play
    | StopPlayback
    | StartTimer
    | CancelTimer
    | JoinRoom
    | RecordName
    | WrongPin
    | Hangup
    | CallOperator
)
