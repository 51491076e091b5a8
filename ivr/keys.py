"""In-conference star keys: the key map (data) and the reader that turns a
DTMF stream into actions.

Keys are `*` followed by digits, read from the same stream as the PIN. When
one key is a prefix of another (`*9` and `*92`), the reader waits
`feature_digit_timeout` for the longer one before acting, as Asterisk's
`featuredigittimeout` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ANYONE = "anyone"
MODERATOR = "moderator"


@dataclass(frozen=True)
class Action:
    """What a key does and who may use it."""

    name: str
    who: str  # ANYONE | MODERATOR
    help_prompt: str  # spoken in the *0 help list
    needs: str | None = None  # a room permission on top of the role: "lock" | "dial_out" | …


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("help", ANYONE, "help_help"),
        Action("gain", ANYONE, "help_gain"),
        Action("mute", ANYONE, "help_mute"),
        Action("lecture", MODERATOR, "help_lecture"),
        Action("lock", MODERATOR, "help_lock", needs="lock"),
        Action("roll_call", MODERATOR, "help_roll_call"),
        Action("stop_roll_call", MODERATOR, "help_stop_roll_call"),
        Action("dial_out", MODERATOR, "help_dial_out", needs="dial_out"),
        Action("dial_out_with_guest", MODERATOR, "help_dial_out_with_guest", needs="dial_out"),
        # *3 also cancels a blast, so either permission will do.
        Action("dial_out_alone", MODERATOR, "help_dial_out_alone", needs="dial_out|blast"),
        Action("blast", MODERATOR, "help_blast", needs="blast"),
        # What phone users of Zoom and Teams expect (issue 20). None of them
        # needs a level permission: a hand, a head count and giving the floor
        # change nobody's access to the room, unlike a lock or a dial-out.
        Action("hand", ANYONE, "help_hand"),
        Action("count", ANYONE, "help_count"),
        Action("next_hand", MODERATOR, "help_next_hand"),
        Action("record", MODERATOR, "help_record", needs="record"),
        # Spoken last in the *0 help, and only where an operator is configured.
        Action("operator", ANYONE, "help_operator"),
    )
}

DEFAULT_KEYS: dict[str, str] = {
    "*0": "help",
    "*1": "dial_out",
    "*2": "dial_out_with_guest",
    "*3": "dial_out_alone",
    "*92": "blast",
    "*93": "record",
    "*4": "gain",
    "*5": "lecture",
    "*6": "mute",
    "*7": "lock",
    "*8": "roll_call",
    "*9": "stop_roll_call",
    # The *9x family, after *92: the Claire map takes every single digit.
    "*94": "hand",
    "*95": "count",
    "*96": "next_hand",
    "*90": "operator",
}

# During a help call (*90, or 0 at the PIN prompt): the keys of the operator's
# phone, and the caller's own way back. Digits keyed by the operator outside a
# star sequence are a room's PIN, ended by `#`, that puts the caller in that
# room (a caller who had trouble connecting).
OPERATOR_KEYS: dict[str, str] = {
    "*2": "return",  # the caller goes back where they were; the operator's call ends
    "*3": "join",  # the operator enters the caller's room with them
    "*7": "hangup",  # end the caller's call (with a goodbye)
}
HELP_CALLER_KEYS: dict[str, str] = {
    "*2": "return",  # back to the room (or the PIN prompt) without waiting
}

# The join page's buttons (web/static/join.js): a browser keys these actions
# as a phone would, with DTMF on its own SIP leg, so they act on whichever node
# holds the leg. The page gets each one's key from the key map (`web_keys`).
WEB_ACTIONS = ("mute", "hand", "help")

# The key the manual promises for help: it must stay bound to help, whatever
# else an admin remaps, or a caller has no way to learn the others.
HELP_KEY = "*0"

KEY_PATTERN = re.compile(r"^\*[0-9#]{1,3}$")


def duplicate_keys(keys: Iterable[str]) -> list[str]:
    """The keys that appear more than once in a list of keys, in first-seen order.

    A YAML mapping keeps only the last of two equal keys, so the loader asks
    this of the keys as written before they become a dict."""
    seen: set[str] = set()
    twice: list[str] = []
    for key in keys:
        if key in seen and key not in twice:
            twice.append(key)
        seen.add(key)
    return twice


def validate_key_map(
    keys: Mapping[str, str] | Iterable[tuple[str, str]], feature_digit_timeout: float
) -> None:
    """Raise ValueError for a bad key, a key bound twice, an unknown action, an
    unresolvable prefix, or a map where `*0` no longer asks for help.

    `keys` may be pairs as written (so a key given twice is seen) or a dict."""
    pairs = list(keys.items()) if isinstance(keys, Mapping) else list(keys)
    twice = duplicate_keys(k for k, _ in pairs)
    if twice:
        raise ValueError(f"key {twice[0]} is bound twice: one key does one thing")
    for key, action in pairs:
        if not KEY_PATTERN.match(key):
            raise ValueError(f"key {key!r} must be * followed by 1 to 3 digits")
        if action not in ACTIONS:
            known = ", ".join(sorted(ACTIONS))
            raise ValueError(f"key {key} binds unknown action {action!r} (known: {known})")
    bound = dict(pairs)
    if bound.get(HELP_KEY) != "help":
        raise ValueError(f"key {HELP_KEY} must stay bound to help (the key the manual promises)")
    if feature_digit_timeout <= 0:
        for a in bound:
            for b in bound:
                if a != b and b.startswith(a):
                    raise ValueError(
                        f"key {a} is a prefix of {b}: set feature_digit_timeout above 0 "
                        "so the longer key can be keyed"
                    )


def web_keys(keys: Mapping[str, str]) -> dict[str, str]:
    """The key a browser's button sends for each of WEB_ACTIONS: the shortest
    bound to it (then the first); an action the map leaves unbound is left
    out, and the page hides its button."""
    found: dict[str, str] = {}
    for key, action in keys.items():
        if action in WEB_ACTIONS and (action not in found or len(key) < len(found[action])):
            found[action] = key
    return {a: found[a] for a in WEB_ACTIONS if a in found}


@dataclass(frozen=True)
class KeyResult:
    """What the reader decided after a digit or a timeout."""

    action: str | None = None  # an action to run
    unknown: str | None = None  # a complete sequence that maps to nothing
    wait: float | None = None  # start (or restart) the key timer for this long
    cancel_wait: bool = False


class KeyReader:
    """Turns digits into key actions. Plain state: the caller runs the timer."""

    def __init__(
        self,
        keys: dict[str, str],
        feature_digit_timeout: float = 1.0,
        sequence_timeout: float = 3.0,
    ) -> None:
        self.keys = dict(keys)
        self.feature_digit_timeout = feature_digit_timeout
        self.sequence_timeout = sequence_timeout
        self.buffer = ""

    def _is_prefix(self, seq: str) -> bool:
        return any(k != seq and k.startswith(seq) for k in self.keys)

    def digit(self, d: str) -> KeyResult:
        """One deduplicated DTMF digit."""
        if d == "*":
            self.buffer = "*"
            return KeyResult(wait=self.sequence_timeout)
        if not self.buffer:
            return KeyResult()  # digits outside a sequence mean nothing here
        self.buffer += d
        seq = self.buffer
        if seq in self.keys:
            if self._is_prefix(seq):
                return KeyResult(wait=self.feature_digit_timeout)
            self.buffer = ""
            return KeyResult(action=self.keys[seq], cancel_wait=True)
        if self._is_prefix(seq):
            return KeyResult(wait=self.sequence_timeout)
        self.buffer = ""
        return KeyResult(unknown=seq, cancel_wait=True)

    def timeout(self) -> KeyResult:
        """The key timer ran out: act on a complete shorter key, or drop."""
        seq, self.buffer = self.buffer, ""
        if seq in self.keys:
            return KeyResult(action=self.keys[seq])
        if len(seq) > 1:
            return KeyResult(unknown=seq)
        return KeyResult()  # a lone `*` then silence: nothing was asked

    def keys_for(self, action: str) -> list[str]:
        """The keys bound to an action (for the help list)."""
        return [k for k, a in self.keys.items() if a == action]
