"""The conference entry dialogue: ask for a PIN, collect digits up to `#`,
then the moderator's counter-PIN, then (in rooms that announce names) record
the caller's name, and hand the caller to a room.

Where an operator is configured, `*0`, or `0` alone (then `#` or silence),
before any PIN asks for one ("trouble connecting"): no PIN has 1 digit, so
neither can be taken for one. The dialogue waits while the caller is with the
operator and `resume`s at the PIN prompt if the caller comes back.

A plain state machine: feed it events, it returns commands.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ivr.commands import (
    CallOperator,
    CancelTimer,
    Command,
    Hangup,
    JoinRoom,
    Play,
    RecordName,
    StartTimer,
    StopPlayback,
    WrongPin,
)

INTERDIGIT = "interdigit"
TOTAL = "total"


@dataclass(frozen=True)
class PinMatch:
    """What a right PIN leads to."""

    room: str
    role: str  # "participant" | "moderator"
    counter_pin: str | None = None  # the room's collective counter-PIN
    record_name: bool = False
    # The moderators' own counter-PINs: (name, PIN) pairs, asked for like the
    # collective one; the name of the one keyed is `PinEntry.counter_name`.
    counter_pins: tuple[tuple[str, str], ...] = ()

    @property
    def asks_counter_pin(self) -> bool:
        """Whether a counter-PIN must follow this PIN."""
        return bool(self.counter_pin or self.counter_pins)


PinLookup = Callable[[str], PinMatch | None]
# Returns the prompt that refuses entry (e.g. "pin_not_valid_now") or None.
Gate = Callable[[PinMatch], str | None]


class State(enum.Enum):
    PROMPTING = "prompting"  # a prompt plays; digits barge in
    COLLECTING = "collecting"
    RECORDING = "recording"  # the caller says their name
    AWAY = "away"  # with an operator: nothing to do until `resume`
    DONE = "done"


class Step(enum.Enum):
    PIN = "pin"
    COUNTER = "counter"


@dataclass
class Outcome:
    """Why the dialogue ended (for logs and call records)."""

    kind: str  # "joined" | "failed" | "refused" | "hangup"
    pin_tries: int
    match: PinMatch | None = None


class PinEntry:
    """Collects a PIN (and counter-PIN) and decides where the caller goes."""

    def __init__(
        self,
        lookup: PinLookup,
        interdigit_timeout: float = 5.0,
        total_timeout: float = 15.0,
        max_tries: int = 3,
        max_digits: int = 16,
        gate: Gate | None = None,
        operator: bool = False,
    ) -> None:
        self.lookup = lookup
        self.gate = gate or (lambda _m: None)
        self.interdigit_timeout = interdigit_timeout
        self.total_timeout = total_timeout
        self.max_tries = max_tries
        self.max_digits = max_digits
        self.operator = operator  # whether `*0` / `0` reach an operator
        self.star = False  # the last key was `*` (for `*0`)
        self.state = State.PROMPTING
        self.step = Step.PIN
        self.digits = ""
        self.tries = 0
        self.match: PinMatch | None = None
        self.name_path: str | None = None
        # The name of the individual counter-PIN keyed (None: the collective
        # one, or none asked): for the log and the billing.
        self.counter_name: str | None = None
        self.outcome: Outcome | None = None
        self.events: list[str] = []  # what happened, for the call's log lines

    # -- events -----------------------------------------------------------
    def start(self) -> list[Command]:
        """The call was answered and media is up."""
        return [Play(("enter_pin",))]

    def prompt_finished(self) -> list[Command]:
        """The prompt played to its end without being interrupted."""
        if self.state is State.PROMPTING:
            if self.step is Step.PIN and self.match is not None:  # "say your name" ended
                self.state = State.RECORDING
                return [RecordName()]
            self.state = State.COLLECTING
            # The caller gets the whole window from the end of the prompt.
            return [StartTimer(TOTAL, self.total_timeout)]
        return []

    def digit(self, d: str) -> list[Command]:
        """A deduplicated key press."""
        if self.state in (State.DONE, State.RECORDING, State.AWAY):
            return []
        if self.match is not None and self.step is Step.PIN:
            return []  # past the PINs (the name prompt plays): keys wait for the room
        cmds: list[Command] = []
        if self.state is State.PROMPTING:
            # Barge-in: a caller who knows the PIN does not wait for the prompt.
            self.state = State.COLLECTING
            cmds += [StopPlayback(), StartTimer(TOTAL, self.total_timeout)]
        star, self.star = self.star, d == "*"
        if self._wants_operator(d, star):
            return cmds + self._to_operator()
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
        if self.operator and self.step is Step.PIN and self.digits == "0":
            return self._to_operator()
        if self.digits:
            # Digits then silence: take what was keyed, as if `#` had come.
            return self._submit()
        if name == TOTAL:
            self.events.append("no input")
            return self._wrong(("no_input",))
        return []

    def name_recorded(self, path: str | None) -> list[Command]:
        """The name recording finished (None: nothing usable was said)."""
        if self.state is not State.RECORDING or self.match is None:
            return []
        self.name_path = path
        return self._admit(self.match)

    def resume(self, said: tuple[str, ...]) -> list[Command]:
        """Back from the operator: say why, then ask for the PIN again."""
        if self.state is not State.AWAY:
            return []
        self.state = State.PROMPTING
        return [Play((*said, "enter_pin"))]

    def placed(self, match: PinMatch) -> None:
        """An operator put the caller in a room (keyed its PIN for them)."""
        if self.state is State.AWAY:
            self.state = State.DONE
            self.events.append(f"placed by the operator room={match.room} role={match.role}")
            self.outcome = Outcome("joined", self.tries, match)

    def hangup(self) -> None:
        """The caller hung up during the dialogue."""
        if self.state is not State.DONE:
            self.state = State.DONE
            self.outcome = Outcome("hangup", self.tries)

    # -- internals --------------------------------------------------------
    def _wants_operator(self, d: str, star: bool) -> bool:
        if not self.operator or self.step is not Step.PIN:
            return False
        if d == "0" and star and not self.digits:
            return True  # *0
        return d == "#" and self.digits == "0"  # 0#

    def _to_operator(self) -> list[Command]:
        self.digits, self.star = "", False
        self.state = State.AWAY
        self.events.append("operator requested")
        return [CancelTimer(INTERDIGIT), CancelTimer(TOTAL), StopPlayback(), CallOperator()]

    def _submit(self) -> list[Command]:
        entered, self.digits = self.digits, ""
        cancel: list[Command] = [CancelTimer(INTERDIGIT), CancelTimer(TOTAL)]
        if self.step is Step.COUNTER:
            assert self.match is not None
            named = [name for name, pin in self.match.counter_pins if pin == entered]
            if named:
                self.counter_name = named[0]
                self.events.append(f"counter-pin ok name={named[0]}")
                return cancel + self._after_pins(self.match)
            if entered and entered == self.match.counter_pin:
                self.events.append("counter-pin ok")
                return cancel + self._after_pins(self.match)
            self.events.append("counter-pin failed")
            self.match, self.step = None, Step.PIN
            return [*cancel, WrongPin(), *self._wrong(("invalid_pin",), count=False)]
        match = self.lookup(entered) if entered else None
        if match is None:
            self.events.append("pin failed")
            return [*cancel, WrongPin(), *self._wrong(("invalid_pin",))]
        self.tries += 1
        refused = self.gate(match)
        if refused is not None:
            self.events.append(f"pin refused: {refused}")
            self.state = State.DONE
            self.outcome = Outcome("refused", self.tries, match)
            return [*cancel, Play((refused, "goodbye"), barge_in=False), Hangup(refused)]
        self.events.append(f"pin ok room={match.room} role={match.role}")
        if match.asks_counter_pin:
            self.match, self.step = match, Step.COUNTER
            self.state = State.PROMPTING
            return [*cancel, Play(("enter_counter_pin",))]
        return cancel + self._after_pins(match)

    def _after_pins(self, match: PinMatch) -> list[Command]:
        self.match, self.step = match, Step.PIN
        if match.record_name:
            self.state = State.PROMPTING
            return [Play(("say_name",), barge_in=False)]
        return self._admit(match)

    def _admit(self, match: PinMatch) -> list[Command]:
        self.state = State.DONE
        self.outcome = Outcome("joined", self.tries, match)
        return [JoinRoom(match.room, match.role)]

    def _wrong(self, said: tuple[str, ...], count: bool = True) -> list[Command]:
        # A PIN + counter-PIN attempt is one try: the right PIN already counted it.
        if count:
            self.tries += 1
        self.digits = ""
        cancel: list[Command] = [CancelTimer(INTERDIGIT), CancelTimer(TOTAL)]
        if self.tries >= self.max_tries:
            self.state = State.DONE
            self.outcome = Outcome("failed", self.tries)
            return [
                *cancel,
                Play((*said, "goodbye"), barge_in=False),
                Hangup("too many wrong PINs"),
            ]
        self.state = State.PROMPTING
        return [*cancel, Play((*said, "enter_pin"))]
