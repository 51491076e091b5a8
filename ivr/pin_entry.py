"""The conference entry dialogue: ask for a PIN, collect digits up to `#`,
retry on a wrong PIN, and hand the caller to a room.

A plain state machine: feed it events, it returns commands.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ivr.commands import CancelTimer, Command, Hangup, JoinRoom, Play, StartTimer, StopPlayback

INTERDIGIT = "interdigit"
TOTAL = "total"


@dataclass(frozen=True)
class PinMatch:
    """What a right PIN leads to."""

    room: str
    role: str  # "participant" | "moderator"


PinLookup = Callable[[str], PinMatch | None]


class State(enum.Enum):
    PROMPTING = "prompting"  # the PIN prompt plays; digits barge in
    COLLECTING = "collecting"
    RETRY_PROMPT = "retry_prompt"  # "invalid PIN" + "enter PIN" play
    DONE = "done"


@dataclass
class Outcome:
    """Why the dialogue ended (for logs and call records)."""

    kind: str  # "joined" | "failed" | "hangup"
    pin_tries: int
    match: PinMatch | None = None


class PinEntry:
    """Collects a PIN and decides where the caller goes."""

    def __init__(
        self,
        lookup: PinLookup,
        interdigit_timeout: float = 5.0,
        total_timeout: float = 15.0,
        max_tries: int = 3,
        max_digits: int = 16,
    ) -> None:
        self.lookup = lookup
        self.interdigit_timeout = interdigit_timeout
        self.total_timeout = total_timeout
        self.max_tries = max_tries
        self.max_digits = max_digits
        self.state = State.PROMPTING
        self.digits = ""
        self.tries = 0
        self.outcome: Outcome | None = None
        self.events: list[str] = []  # what happened, for the call's log line

    # -- events -----------------------------------------------------------
    def start(self) -> list[Command]:
        """The call was answered and media is up."""
        return [Play(("enter_pin",))]

    def prompt_finished(self) -> list[Command]:
        """The prompt played to its end without being interrupted."""
        if self.state in (State.PROMPTING, State.RETRY_PROMPT):
            self.state = State.COLLECTING
            # The caller gets the whole window from the end of the prompt.
            return [StartTimer(TOTAL, self.total_timeout)]
        return []

    def digit(self, d: str) -> list[Command]:
        """A deduplicated key press."""
        if self.state is State.DONE:
            return []
        cmds: list[Command] = []
        if self.state in (State.PROMPTING, State.RETRY_PROMPT):
            # Barge-in: a caller who knows the PIN does not wait for the prompt.
            self.state = State.COLLECTING
            cmds += [StopPlayback(), StartTimer(TOTAL, self.total_timeout)]
        if d == "#":
            return cmds + self._submit()
        if d in "0123456789":
            if len(self.digits) < self.max_digits:
                self.digits += d
            cmds.append(StartTimer(INTERDIGIT, self.interdigit_timeout))
        # '*' and A-D mean nothing in a PIN: ignored.
        return cmds

    def timeout(self, name: str) -> list[Command]:
        """A timer started by this dialogue fired."""
        if self.state is not State.COLLECTING:
            return []
        if self.digits:
            # Digits then silence: take what was keyed, as if `#` had come.
            return self._submit()
        if name == TOTAL:
            self.events.append("no input")
            return self._wrong(("no_input",))
        return []

    def hangup(self) -> None:
        """The caller hung up during the dialogue."""
        if self.state is not State.DONE:
            self.state = State.DONE
            self.outcome = Outcome("hangup", self.tries)

    # -- internals --------------------------------------------------------
    def _submit(self) -> list[Command]:
        pin, self.digits = self.digits, ""
        cancel = [CancelTimer(INTERDIGIT), CancelTimer(TOTAL)]
        match = self.lookup(pin) if pin else None
        if match is not None:
            self.tries += 1
            self.state = State.DONE
            self.outcome = Outcome("joined", self.tries, match)
            self.events.append("pin ok")
            return [*cancel, JoinRoom(match.room, match.role)]
        self.events.append("pin failed")
        return cancel + self._wrong(("invalid_pin",))

    def _wrong(self, said: tuple[str, ...]) -> list[Command]:
        self.tries += 1
        self.digits = ""
        if self.tries >= self.max_tries:
            self.state = State.DONE
            self.outcome = Outcome("failed", self.tries)
            return [
                CancelTimer(INTERDIGIT),
                CancelTimer(TOTAL),
                Play((*said, "goodbye"), barge_in=False),
                Hangup("too many wrong PINs"),
            ]
        self.state = State.RETRY_PROMPT
        return [CancelTimer(INTERDIGIT), CancelTimer(TOTAL), Play((*said, "enter_pin"))]
