"""What the in-conference keys do, as plain logic over a Room.

Each action is a function (room, member, context) -> commands, found through
the ACTION_HANDLERS table; who may use which key is data in ivr.keys.ACTIONS
plus the room's security level (bridge.levels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bridge.levels import LevelPolicy, permits
from bridge.room import LegId, Member, Room, RoomCommand
from ivr.keys import ACTIONS, MODERATOR, KeyReader
from ivr.numbers import Number

# (listening level, confirmation prompt), cycled by *4: normal -> +6 dB -> -6 dB.
GAIN_STEPS: tuple[tuple[float, str], ...] = (
    (1.0, "volume_normal"),
    (2.0, "volume_up"),
    (0.5, "volume_down"),
)

# A prompt id, a recorded file, or a count (said in the listener's language).
SayItem = str | Path | Number


@dataclass(frozen=True)
class Say:
    """Play prompts and recordings to one leg (over the room audio)."""

    leg: LegId
    items: tuple[SayItem, ...]
    slot: str = "prompt"


@dataclass(frozen=True)
class StopSay:
    """Stop what plays to a leg in a slot."""

    leg: LegId
    slot: str


@dataclass(frozen=True)
class SetGain:
    """Set the level of what a leg hears."""

    leg: LegId
    level: float


@dataclass(frozen=True)
class StartDialOut:
    """*1: the moderator leaves the room's audio to call a guest."""

    leg: LegId


@dataclass(frozen=True)
class EndDialOut:
    """*2 (with the guest) or *3 (alone, or cancel a blast)."""

    leg: LegId
    with_guest: bool


@dataclass(frozen=True)
class StartBlast:
    """*92: call the room's invitation list."""

    leg: LegId


@dataclass(frozen=True)
class StartRecording:
    """Open the room's recorders (the shell then calls `Room.set_recording`).
    `by`: who asked (an admin's name, or "leg N" for a member's key)."""

    room: str
    by: str


@dataclass(frozen=True)
class StopRecording:
    """Close the room's recorders and record the files."""

    room: str
    by: str


@dataclass(frozen=True)
class CallOperator:
    """*90 (or an admin for a member): the member leaves the room's audio and
    hears hold music while the operators' phones ring. `join`: the operator who
    answers goes straight into the room (the console's "join the room")."""

    leg: LegId
    join: bool = False


ControlCommand = (
    RoomCommand
    | Say
    | StopSay
    | SetGain
    | StartDialOut
    | EndDialOut
    | StartBlast
    | StartRecording
    | StopRecording
    | CallOperator
)


@dataclass(frozen=True)
class Context:
    """What an action may need besides the room."""

    policy: LevelPolicy
    keys: KeyReader
    operators: tuple[str, ...] = ()  # the extensions *90 rings (none: no operator)


def digits_prompts(text: str) -> tuple[str, ...]:
    """'*92' -> ('star', 'digit_9', 'digit_2'): keys, as keyed. Counts are
    `Number`s instead ("twelve", not "one two")."""
    return tuple("star" if ch == "*" else f"digit_{ch}" for ch in text)


def allowed(member: Member, action: str, policy: LevelPolicy) -> bool:
    """Whether this member may run this action in a room of this level."""
    a = ACTIONS[action]
    if a.who == MODERATOR and not member.moderator:
        return False
    return permits(policy, a.needs)


def _help(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    items: list[SayItem] = []
    offer: list[SayItem] = []  # the operator comes last, after the key list
    for key, action in ctx.keys.keys.items():
        if action == "operator":
            if ctx.operators:
                offer += [ACTIONS[action].help_prompt, *digits_prompts(key)]
        elif allowed(m, action, ctx.policy):
            items += [ACTIONS[action].help_prompt, *digits_prompts(key)]
    return [Say(m.leg, tuple(items + offer))]


def _gain(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    m.gain_step = (m.gain_step + 1) % len(GAIN_STEPS)
    level, prompt = GAIN_STEPS[m.gain_step]
    return [SetGain(m.leg, level), Say(m.leg, (prompt,))]


# -- the room actions every trigger shares --------------------------------
# A key, the CLI (ponte/roomops.py) and the web console all call these, so a
# mute sounds the same whoever asked for it.


def mute(room: Room, leg: LegId, on: bool) -> list[ControlCommand]:
    """Mute or unmute a member, and tell that member."""
    cmds: list[ControlCommand] = list(room.set_muted(leg, on))
    return [*cmds, Say(leg, ("muted" if on else "unmuted",))]


def lecture(room: Room, on: bool) -> list[ControlCommand]:
    """Lecture mode on or off (only moderators talk), told to every member."""
    cmds: list[ControlCommand] = list(room.set_lecture(on))
    word = "lecture_on" if on else "lecture_off"
    return cmds + [Say(leg, (word,)) for leg in room.members]


def lock(room: Room, on: bool) -> list[ControlCommand]:
    """Lock or unlock the room to new callers, told to every member."""
    room.locked = on
    word = "locked" if on else "unlocked"
    return [Say(leg, (word,)) for leg in room.members]


def hands_prompts(count: int) -> tuple[SayItem, ...]:
    """'3 hands raised' as prompts ("one hand raised" for one); "mãos" is
    feminine: "duas mãos levantadas"."""
    return ("one_hand_raised",) if count == 1 else (Number(count, feminine=True), "hands_raised")


def set_hand(room: Room, leg: LegId, up: bool) -> list[ControlCommand]:
    """Raise or lower a member's hand (a key, a browser's button, an admin),
    and tell that member. On a raise, every other moderator hears how many
    hands are up, in a slot of its own so it cuts no help list short."""
    if leg not in room.members:
        return []
    changed = room.set_hand(leg, up)
    cmds: list[ControlCommand] = [Say(leg, ("your_hand_raised" if up else "your_hand_lowered",))]
    if up and changed:
        count = hands_prompts(len(room.hands))
        cmds += [
            Say(other.leg, count, slot="hands")
            for other in room.members.values()
            if other.moderator and other.leg != leg and not other.away
        ]
    return cmds


def next_hand(room: Room) -> tuple[list[ControlCommand], LegId | None]:
    """Give the floor to the oldest raised hand: lowered, unmuted, heard even
    in lecture mode, and told so. Returns the member (None: no hand is up)."""
    if not room.hands:
        return [], None
    leg = room.hands[0]
    room.set_hand(leg, False)
    cmds: list[ControlCommand] = list(room.give_floor(leg))
    return [*cmds, Say(leg, ("your_turn",))], leg


def _hand(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    return set_hand(room, m.leg, m.leg not in room.hands)


def _count(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    n = len(room.members)
    items: tuple[SayItem, ...] = (
        ("one_participant",) if n == 1 else (Number(n), "participants_count")
    )
    return [Say(m.leg, items)]


def _next_hand(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    cmds, leg = next_hand(room)
    if leg is None:
        return [Say(m.leg, ("no_hands_raised",))]
    left = hands_prompts(len(room.hands)) if room.hands else ()
    return [*cmds, Say(m.leg, ("floor_given", *left))]


def record(room: Room, on: bool, by: str) -> list[ControlCommand]:
    """Start or stop recording the room, told to every member (nothing
    when it already is as asked)."""
    if on == (room.recording is not None):
        return []
    start: ControlCommand = StartRecording(room.name, by) if on else StopRecording(room.name, by)
    word = "recording_on" if on else "recording_off"
    return [start, *(Say(leg, (word,), slot="recording") for leg in room.members)]


def _mute(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    return mute(room, m.leg, not m.muted)


def _lecture(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    return lecture(room, not room.lecture)


def _lock(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    return lock(room, not room.locked)


def _roll_call(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    items: list[SayItem] = []
    for n, other in enumerate(room.members.values(), start=1):
        if other.leg == m.leg:
            continue
        if other.name_path is not None:
            items.append(Path(other.name_path))
        else:
            items += ["caller", Number(n)]  # "Caller twelve", not "one two"
    return [Say(m.leg, tuple(items) or ("nobody_else",), slot="roll_call")]


def _stop_roll_call(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    return [StopSay(m.leg, "roll_call")]


def _dial_out(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    return [*room.set_away(m.leg, True), StartDialOut(m.leg)]


def _with_guest(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    return [EndDialOut(m.leg, with_guest=True)]


def _alone(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    return [EndDialOut(m.leg, with_guest=False)]


def _blast(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    return [StartBlast(m.leg)]


def _record(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    return record(room, room.recording is None, f"leg {m.leg}")


def call_operator(room: Room, leg: LegId, join: bool = False) -> list[ControlCommand]:
    """Take a member out of the room's audio to talk with an operator (a key,
    or an admin on the console); `join`: ring the operators into the room instead."""
    if leg not in room.members:
        return []
    if join:  # the operator comes to the member, who stays in the room
        return [CallOperator(leg, join=True)]
    return [*room.set_away(leg, True), CallOperator(leg)]


def _operator(room: Room, m: Member, ctx: Context) -> list[ControlCommand]:
    if not ctx.operators:
        return [Say(m.leg, ("not_available",))]
    return call_operator(room, m.leg)


Handler = Callable[[Room, Member, Context], list[ControlCommand]]
ACTION_HANDLERS: dict[str, Handler] = {
    "help": _help,
    "gain": _gain,
    "mute": _mute,
    "lecture": _lecture,
    "lock": _lock,
    "roll_call": _roll_call,
    "stop_roll_call": _stop_roll_call,
    "dial_out": _dial_out,
    "dial_out_with_guest": _with_guest,
    "dial_out_alone": _alone,
    "blast": _blast,
    "hand": _hand,
    "count": _count,
    "next_hand": _next_hand,
    "record": _record,
    "operator": _operator,
}


def run_action(room: Room, leg: LegId, action: str, ctx: Context) -> list[ControlCommand]:
    """Run a key's action for a member, or say "not available"."""
    m = room.members.get(leg)
    if m is None:
        return []
    handler = ACTION_HANDLERS.get(action)
    if handler is None or not allowed(m, action, ctx.policy):
        return [Say(leg, ("not_available",))]
    return handler(room, m, ctx)
