"""Rooms as plain state: membership in, media connections out.

The bridge decides who hears whom and returns Connect/Disconnect commands; the
SIP adapter carries them out on pjmedia's conference bridge. A member hears
every other member of its room and never itself; nothing crosses rooms.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

LegId = Hashable


@dataclass(frozen=True)
class Connect:
    """Send `src`'s audio to `dst`."""

    src: LegId
    dst: LegId


@dataclass(frozen=True)
class Disconnect:
    """Stop sending `src`'s audio to `dst`."""

    src: LegId
    dst: LegId


MediaCommand = Connect | Disconnect


@dataclass
class Member:
    """A leg in a room."""

    leg: LegId
    role: str
    joined_at: float


@dataclass
class Room:
    """One conference: its members and the connections between them."""

    name: str
    members: dict[LegId, Member] = field(default_factory=dict)
    links: set[tuple[LegId, LegId]] = field(default_factory=set)

    def join(self, leg: LegId, role: str, now: float) -> list[MediaCommand]:
        """Add a leg; it hears everyone present and they hear it."""
        if leg in self.members:
            return []
        cmds: list[MediaCommand] = []
        for other in self.members:
            for pair in ((other, leg), (leg, other)):
                self.links.add(pair)
                cmds.append(Connect(*pair))
        self.members[leg] = Member(leg, role, now)
        return cmds

    def leave(self, leg: LegId) -> list[MediaCommand]:
        """Remove a leg and every connection to or from it."""
        if self.members.pop(leg, None) is None:
            return []
        gone = [pair for pair in self.links if leg in pair]
        self.links.difference_update(gone)
        return [Disconnect(*pair) for pair in sorted(gone, key=repr)]


class Bridge:
    """All rooms, and which room each leg is in."""

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self.room_of: dict[LegId, str] = {}

    def join(self, room: str, leg: LegId, role: str, now: float) -> list[MediaCommand]:
        """Put a leg in a room (leaving any room it was in)."""
        cmds = self.leave(leg)
        r = self.rooms.setdefault(room, Room(room))
        self.room_of[leg] = room
        return cmds + r.join(leg, role, now)

    def leave(self, leg: LegId) -> list[MediaCommand]:
        """Take a leg out of its room; an empty room is forgotten."""
        name = self.room_of.pop(leg, None)
        if name is None:
            return []
        room = self.rooms[name]
        cmds = room.leave(leg)
        if not room.members:
            del self.rooms[name]
        return cmds

    def members(self, room: str) -> list[Member]:
        """Members of a room, in join order."""
        r = self.rooms.get(room)
        return list(r.members.values()) if r else []

    def link_count(self) -> int:
        """Live connections across all rooms (0 when every room is empty)."""
        return sum(len(r.links) for r in self.rooms.values())
