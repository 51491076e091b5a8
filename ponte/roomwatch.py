"""What the web console and the events API see of the rooms, and what changed.

The app server hands `RoomWatch.update` a view of its rooms and the members'
speech levels a few times a second (on its loop thread); the watch keeps the
last snapshot and returns the events between the two: joins, leaves, mutes,
locks, lecture mode, raised hands, help requested (ponte/helpdesk.py), talking
started/stopped and rooms ended.
Diffing views instead of hooking every code path that changes a room means
a mute by DTMF, by the CLI or by the web all show up the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# pjmedia's signal levels are 0-255 on a mu-law-like scale: ~0-5 for the
# silence of a muted phone or comfort noise, ~40 for quiet speech (-30 dBFS),
# ~88 for a -12 dBFS tone (measured: `ponte status` shows each member's levels).
TALK_LEVEL = 30
# Talking ends after this long below the level (speech has short pauses).
TALK_HANGOVER = 0.6


@dataclass(frozen=True)
class MemberView:
    """One member as the console shows it."""

    id: int
    caller: str
    role: str
    name: bool  # a recorded name exists
    muted: bool
    hand: bool
    via: str  # "sip" | "web"
    held: bool = False  # the phone holds the call
    help: bool = False  # asked for an operator: ringing, with one, or unanswered


@dataclass(frozen=True)
class RoomView:
    """One live room as the console shows it."""

    department: str | None
    locked: bool
    lecture: bool
    started: float | None  # epoch seconds
    members: tuple[MemberView, ...]
    recording: bool = False


# (attribute, event when it turns True, event when it turns False)
ROOM_FLAGS = (("locked", "locked", "unlocked"), ("lecture", "lecture_on", "lecture_off"))
MEMBER_FLAGS = (
    ("muted", "muted", "unmuted"),
    ("hand", "hand_raised", "hand_lowered"),
    ("held", "on_hold", "off_hold"),
    ("help", "help_requested", "help_ended"),
)


@dataclass
class _Talk:
    talking: bool = False
    last_loud: float = 0.0


@dataclass
class RoomWatch:
    """Keeps the last view and turns the next one into events."""

    talk_level: int = TALK_LEVEL
    hangover: float = TALK_HANGOVER
    rooms: dict[str, RoomView] = field(default_factory=dict)
    _talk: dict[int, _Talk] = field(default_factory=dict)

    def update(
        self, rooms: dict[str, RoomView], levels: dict[int, int], now: float, wall: float
    ) -> list[dict[str, Any]]:
        """Take a new view (`levels`: member id -> what they say, 0-255) and
        return the events since the last one, each stamped with `wall`."""
        events: list[dict[str, Any]] = []

        def emit(kind: str, room: str, member: MemberView | None = None) -> None:
            event: dict[str, Any] = {"type": kind, "room": room, "ts": wall}
            if member is not None:
                event["member"] = member.id
                event["caller"] = member.caller
            events.append(event)

        for name, old in self.rooms.items():
            new = rooms.get(name)
            before = {m.id: m for m in old.members}
            after = {m.id: m for m in new.members} if new else {}
            for mid, m in before.items():
                if mid not in after:
                    if self._talk.pop(mid, _Talk()).talking:
                        emit("talking_stopped", name, m)
                    emit("member_left", name, m)
            if new is None:
                emit("room_ended", name)
        for name, new in rooms.items():
            earlier = self.rooms.get(name)
            if earlier is None:
                emit("room_started", name)
            else:
                for attr, on, off in ROOM_FLAGS:
                    if getattr(earlier, attr) != getattr(new, attr):
                        emit(on if getattr(new, attr) else off, name)
            before = {m.id: m for m in earlier.members} if earlier else {}
            for m in new.members:
                prev = before.get(m.id)
                if prev is None:
                    emit("member_joined", name, m)
                else:
                    for attr, on, off in MEMBER_FLAGS:
                        if getattr(prev, attr) != getattr(m, attr):
                            emit(on if getattr(m, attr) else off, name, m)
                talk = self._talk.setdefault(m.id, _Talk())
                loud = levels.get(m.id, 0) >= self.talk_level and not m.muted
                if loud:
                    talk.last_loud = now
                if loud and not talk.talking:
                    talk.talking = True
                    emit("talking_started", name, m)
                elif talk.talking and not loud and now - talk.last_loud >= self.hangover:
                    talk.talking = False
                    emit("talking_stopped", name, m)
        self.rooms = dict(rooms)
        return events

    def talking(self, member: int) -> bool:
        """Whether the member is talking now (as of the last update)."""
        talk = self._talk.get(member)
        return bool(talk and talk.talking)

    def snapshot(self) -> dict[str, Any]:
        """{"rooms": {name: {...room, "members": [{...member, "talking"}]}}}."""
        out: dict[str, Any] = {}
        for name, view in self.rooms.items():
            room = asdict(view)
            room["members"] = [{**asdict(m), "talking": self.talking(m.id)} for m in view.members]
            out[name] = room
        return {"rooms": out}
