"""The moderator's dial-out entry (*1): carrier, area code and number, `#`,
read back, then 1 to confirm or 2 to re-enter.

Plain state: events in, commands out (ivr.commands plus PlaceCall/Abandon).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ivr.commands import CancelTimer, Command, Play, StartTimer, StopPlayback

TOTAL = "dialout_total"
MAX_TRIES = 3


@dataclass(frozen=True)
class PlaceCall:
    """Dial this string (as keyed by a Brazilian caller, with a leading 0)."""

    dial: str


@dataclass(frozen=True)
class Abandon:
    """Give up the dial-out and go back to the room, after saying why."""

    prompts: tuple[str, ...]


class State(enum.Enum):
    ASKING = "asking"
    COLLECTING = "collecting"
    CONFIRMING = "confirming"
    DONE = "done"


def spoken(number: str) -> tuple[str, ...]:
    """Digit prompts for a read-back."""
    return tuple(f"digit_{d}" for d in number)


class DialOutEntry:
    """Collects and confirms the number the moderator wants to call."""

    def __init__(self, own_area: str, carriers: list[str], timeout: float = 15.0) -> None:
        self.own_area = own_area
        self.carriers = carriers
        self.total_timeout = timeout  # not `timeout`: that is the method below
        self.state = State.ASKING
        self.digits = ""
        self.dial = ""
        self.tries = 0

    def start(self) -> list[Command]:
        return [Play(("dialout_enter_number",))]

    def close(self) -> None:
        """The moderator left the entry (a `*` for the key map): ignore the rest."""
        self.state = State.DONE

    def prompt_finished(self) -> list[Command]:
        if self.state is State.ASKING:
            self.state = State.COLLECTING
            return [StartTimer(TOTAL, self.total_timeout)]
        return []

    def parse(self, keyed: str) -> str | None:
        """Keyed digits -> a dial string, or None if they make no number.

        CSP + DDD + number, or (in the room line's own area) the number alone;
        a leading 0 is accepted too.
        """
        k = keyed[1:] if keyed.startswith("0") and len(keyed) in (13, 14) else keyed
        if len(k) == 8 or (len(k) == 9 and k[0] == "9"):
            return k  # local, own area code
        if len(k) in (12, 13) and k[:2] in self.carriers:
            return "0" + k
        return None

    def digit(self, d: str) -> list[Command | PlaceCall | Abandon]:
        if self.state is State.DONE:
            return []
        if self.state is State.CONFIRMING:
            if d == "1":
                self.state = State.DONE
                return [StopPlayback(), PlaceCall(self.dial)]
            if d == "2":
                self.state, self.digits = State.ASKING, ""
                return [StopPlayback(), Play(("dialout_enter_number",))]
            return []
        cmds: list[Command | PlaceCall | Abandon] = []
        if self.state is State.ASKING:
            self.state = State.COLLECTING
            cmds += [StopPlayback(), StartTimer(TOTAL, self.total_timeout)]
        if d == "#":
            return cmds + self._submit()
        if d.isdigit() and len(self.digits) < 16:
            self.digits += d
        return cmds

    def timeout(self, name: str) -> list[Command | PlaceCall | Abandon]:
        if self.state is State.COLLECTING:
            if self.digits:
                return self._submit()
            self.state = State.DONE
            return [Abandon(("no_input",))]
        return []

    def _submit(self) -> list[Command | PlaceCall | Abandon]:
        keyed, self.digits = self.digits, ""
        dial = self.parse(keyed)
        if dial is None:
            self.tries += 1
            if self.tries >= MAX_TRIES:
                self.state = State.DONE
                return [CancelTimer(TOTAL), Abandon(("refused_invalid_number",))]
            self.state = State.ASKING
            return [CancelTimer(TOTAL), Play(("refused_invalid_number", "dialout_enter_number"))]
        self.dial, self.state = dial, State.CONFIRMING
        return [CancelTimer(TOTAL), Play(("dialout_you_dialed", *spoken(keyed), "dialout_confirm"))]
