"""Rooms as plain state: membership and rules in, media commands out.

The room decides who hears whom and returns commands; the app server carries
them out on pjmedia's conference bridge. The links wanted are recomputed from
the room's state after every change and diffed against the links in place, so
no change can leave a stale connection behind.

Rules (ClaireExpress manual): participants who arrive before a moderator hear
music and nobody hears them; the conference starts when a moderator enters;
when the last moderator leaves, the participants hear so and are disconnected
(unless the room keeps running). A member never hears itself; nothing crosses
rooms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# A leg is the app server's call id (pjsua2's, or a browser leg's).
LegId = int
MODERATOR = "moderator"
PARTICIPANT = "participant"


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


@dataclass(frozen=True)
class StartMusic:
    """Loop the room's hold music to a waiting leg (the music the room's
    other waiting legs already hear, if any: one source for all of them)."""

    leg: LegId


@dataclass(frozen=True)
class StopMusic:
    """Stop the hold music of these legs, all in the same instant."""

    legs: tuple[LegId, ...]


@dataclass(frozen=True)
class Signal:
    """Play signals, prompts or recordings (a Path) in turn to these legs."""

    legs: tuple[LegId, ...]
    items: tuple[str | Path, ...]


@dataclass(frozen=True)
class EndLeg:
    """Tell a leg why (prompt ids) and hang it up."""

    leg: LegId
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class OpenTrack:
    """The room records one track per member: open this member's recorder
    (the shell then calls `Room.set_track`)."""

    room: str
    leg: LegId


@dataclass(frozen=True)
class CloseTrack:
    """A member whose track was recorded left: close that recorder."""

    room: str
    leg: LegId
    rec: LegId


@dataclass(frozen=True)
class EndRecording:
    """The last member left a room being recorded: close the recording."""

    room: str


MediaCommand = Connect | Disconnect
RoomCommand = (
    Connect
    | Disconnect
    | StartMusic
    | StopMusic
    | Signal
    | EndLeg
    | OpenTrack
    | CloseTrack
    | EndRecording
)


@dataclass
class Recording:
    """A recording in progress, as the links see it: the bridge ports
    (recorders, addressed like legs) that hear the room."""

    mix: LegId  # hears every member the room hears
    per_member: bool  # one track per member besides the mix
    tracks: dict[LegId, LegId] = field(default_factory=dict)  # member -> its recorder


@dataclass(frozen=True)
class RoomRules:
    """Per-room options from provisioning."""

    entry_signal: str = "tone"  # "tone" | "name" | "none"
    end_on_moderator_exit: bool = True
    max_members: int | None = None


@dataclass
class Member:
    """A leg in a room."""

    leg: LegId
    role: str
    joined_at: float
    muted: bool = False
    gain_step: int = 0  # index into bridge.controls.GAIN_STEPS
    name_path: str | None = None  # the caller's recorded name
    away: bool = False  # out of the room's audio (a moderator dialing out), still a member
    # The phone holds the call (re-INVITE a=sendonly/inactive): still a
    # member, billed, and hearing the room, but what it sends (often its own
    # hold music) is mixed into nobody's audio.
    held: bool = False
    joined_by: str = "dial-in"

    @property
    def moderator(self) -> bool:
        return self.role == MODERATOR


@dataclass
class Room:
    """One conference: members, state, and the links in place."""

    name: str
    rules: RoomRules = field(default_factory=RoomRules)
    members: dict[LegId, Member] = field(default_factory=dict)
    links: set[tuple[LegId, LegId]] = field(default_factory=set)
    started: bool = False  # a moderator has entered
    lecture: bool = False
    locked: bool = False
    ending: bool = False  # the last moderator left; members are being sent away
    # Raised hands, oldest first: the moderator's "next hand" takes the head.
    # The room holds them (not the web console) so a hand raised by phone, by
    # browser or lowered by an admin is one state, shown and spoken the same.
    hands: list[LegId] = field(default_factory=list)
    # The participant a moderator gave the floor to: heard in lecture mode.
    floor: LegId | None = None
    session_id: int | None = None  # the billing session this room's life is recorded under
    recording: Recording | None = None

    # -- queries ----------------------------------------------------------
    @property
    def has_moderator(self) -> bool:
        return any(m.moderator for m in self.members.values())

    def is_full(self) -> bool:
        """No room for one more member."""
        cap = self.rules.max_members
        return cap is not None and len(self.members) >= cap

    def talks(self, m: Member) -> bool:
        """Whether the others hear this member."""
        if m.muted or m.held:
            return False
        return not (self.lecture and not m.moderator and m.leg != self.floor)

    def wanted_links(self) -> set[tuple[LegId, LegId]]:
        """Every (speaker, listener) pair the rules call for."""
        if not self.started or self.ending:
            return set()
        present = [m for m in self.members.values() if not m.away]
        talking = [m for m in present if self.talks(m)]
        links = {(a.leg, b.leg) for a in talking for b in present if a.leg != b.leg}
        rec = self.recording
        if rec is not None:
            # The mix hears what the room hears; a member's track hears that
            # member only, and only while the room does (a muted member, or a
            # participant in lecture mode, is not recorded).
            links |= {(m.leg, rec.mix) for m in talking}
            links |= {(m.leg, rec.tracks[m.leg]) for m in talking if m.leg in rec.tracks}
        return links

    # -- changes ----------------------------------------------------------
    def _sync(self) -> list[RoomCommand]:
        want = self.wanted_links()
        drop = sorted(self.links - want, key=repr)
        add = sorted(want - self.links, key=repr)
        self.links = want
        cmds: list[RoomCommand] = [Disconnect(*p) for p in drop]
        return cmds + [Connect(*p) for p in add]

    def _announce(self, who: Member, joined: bool) -> list[RoomCommand]:
        """The entry/exit signal for `who`, to everyone in the room: the one
        who joins hears it too (the manual's "bip" when someone enters).
        Everyone hears the same then, so the shared encode's listeners stay
        one group: a joiner who did not hear it kept an encoder lineage of
        its own after the tone, and later switched lineage with a click."""
        mode = self.rules.entry_signal
        legs = tuple(self.members)
        if mode == "none" or not self.started or self.ending or legs == (who.leg,):
            return []
        if mode == "name" and who.name_path:
            return [Signal(legs, (Path(who.name_path), "joined" if joined else "left"))]
        return [Signal(legs, ("join_tone" if joined else "leave_tone",))]

    def join(
        self,
        leg: LegId,
        role: str,
        now: float,
        name_path: str | None = None,
        joined_by: str = "dial-in",
    ) -> list[RoomCommand]:
        """Add a leg. Participants wait with music until a moderator is in."""
        if leg in self.members:
            return []
        if self.ending:
            # Someone arriving after the last moderator left starts afresh.
            self.ending = self.started = False
        member = Member(leg, role, now, name_path=name_path, joined_by=joined_by)
        self.members[leg] = member
        cmds: list[RoomCommand] = []
        if member.moderator and not self.started:
            self.started = True
            waiting = tuple(m.leg for m in self.members.values() if not m.moderator)
            cmds += [StopMusic(waiting)] if waiting else []
        elif not self.started:
            cmds.append(StartMusic(leg))
        cmds += self._sync()
        cmds += self._announce(member, joined=True)
        if self.recording is not None:
            # A late joiner is told, as everyone was when it started.
            cmds.append(Signal((leg,), ("recording_on",)))
            if self.recording.per_member:
                cmds.append(OpenTrack(self.name, leg))
        return cmds

    def leave(self, leg: LegId) -> list[RoomCommand]:
        """Remove a leg; the last moderator leaving may end the room."""
        member = self.members.pop(leg, None)
        if member is None:
            return []
        # A member who leaves drops out of the queue (and gives the floor back).
        if leg in self.hands:
            self.hands.remove(leg)
        if self.floor == leg:
            self.floor = None
        cmds: list[RoomCommand] = []
        cmds = self._leave_recording(leg)
        last_moderator = member.moderator and not self.has_moderator
        if self.started and not self.ending and last_moderator and self.rules.end_on_moderator_exit:
            self.ending = True
            cmds += self._sync()
            cmds += [EndLeg(m.leg, ("moderator_left",)) for m in self.members.values()]
            return cmds
        cmds += self._sync()
        cmds += self._announce(member, joined=False)
        return cmds

    def _leave_recording(self, leg: LegId) -> list[RoomCommand]:
        """Unlink and close a leaving member's track; the last one out ends
        the recording."""
        rec = self.recording
        if rec is None:
            return []
        cmds: list[RoomCommand] = []
        track = rec.tracks.pop(leg, None)
        if track is not None and (leg, track) in self.links:
            self.links.discard((leg, track))
            cmds.append(Disconnect(leg, track))
        if (leg, rec.mix) in self.links:
            self.links.discard((leg, rec.mix))
            cmds.append(Disconnect(leg, rec.mix))
        if track is not None:
            cmds.append(CloseTrack(self.name, leg, track))
        if not self.members:
            cmds.append(EndRecording(self.name))
        return cmds

    def set_recording(self, recording: Recording | None) -> list[RoomCommand]:
        """Start (the recorders exist) or stop recording: the links follow."""
        self.recording = recording
        return self._sync()

    def set_track(self, leg: LegId, rec: LegId) -> list[RoomCommand]:
        """A member's track recorder was opened: link it."""
        if self.recording is None or leg not in self.members:
            return []
        self.recording.tracks[leg] = rec
        return self._sync()

    def set_muted(self, leg: LegId, muted: bool) -> list[RoomCommand]:
        """A member's own mute."""
        m = self.members.get(leg)
        if m is None:
            return []
        m.muted = muted
        return self._sync()

    def set_away(self, leg: LegId, away: bool) -> list[RoomCommand]:
        """Take a member out of the room's audio (or bring it back)."""
        m = self.members.get(leg)
        if m is None:
            return []
        m.away = away
        return self._sync()

    def set_hand(self, leg: LegId, up: bool) -> bool:
        """Raise (to the back of the queue) or lower a member's hand; whether
        it changed."""
        if leg not in self.members or (leg in self.hands) == up:
            return False
        if up:
            self.hands.append(leg)
        else:
            self.hands.remove(leg)
        return True

    def give_floor(self, leg: LegId) -> list[RoomCommand]:
        """Let a member be heard: unmuted and, in lecture mode, a speaker (the
        floor moves: whoever had it before goes back to listening)."""
        m = self.members.get(leg)
        if m is None:
            return []
        m.muted = False
        self.floor = leg
        return self._sync()

    def media_changed(self, leg: LegId, held: bool) -> list[RoomCommand]:
        """The member's media was renegotiated (a re-INVITE): on hold or off
        it, with a conference port that may be new and bare. The links are
        recomputed for `held`, and every link of this member that stays is
        made again (the old port took its links with it; making a link that
        is there already changes nothing)."""
        m = self.members.get(leg)
        if m is None:
            return []
        m.held = held
        cmds = self._sync()
        done = {(c.src, c.dst) for c in cmds if isinstance(c, Connect)}
        again = sorted((p for p in self.links - done if leg in p), key=repr)
        return cmds + [Connect(*p) for p in again]

    def set_lecture(self, on: bool) -> list[RoomCommand]:
        """Lecture mode: only moderators (and whoever is given the floor after
        it starts) are heard; off restores own mutes."""
        self.lecture = on
        self.floor = None  # a new lecture starts with nobody given the floor
        cmds = self._sync()
        legs = tuple(self.members)
        return ([Signal(legs, ("join_tone",))] if legs else []) + cmds


class RoomSet:
    """All rooms, and which room each leg is in."""

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self.room_of: dict[LegId, str] = {}

    def room(self, name: str, rules: RoomRules | None = None) -> Room:
        """The live room of that name (created on first use)."""
        r = self.rooms.get(name)
        if r is None:
            r = self.rooms[name] = Room(name, rules or RoomRules())
        return r

    def join(
        self,
        room: str,
        leg: LegId,
        role: str,
        now: float,
        rules: RoomRules | None = None,
        name_path: str | None = None,
        joined_by: str = "dial-in",
    ) -> list[RoomCommand]:
        """Put a leg in a room (leaving any room it was in)."""
        cmds = self.leave(leg)
        r = self.room(room, rules)
        self.room_of[leg] = room
        return cmds + r.join(leg, role, now, name_path, joined_by)

    def leave(self, leg: LegId) -> list[RoomCommand]:
        """Take a leg out of its room; an empty room is forgotten."""
        name = self.room_of.pop(leg, None)
        if name is None:
            return []
        room = self.rooms[name]
        cmds = room.leave(leg)
        if not room.members:
            del self.rooms[name]
        return cmds

    def room_for(self, leg: LegId) -> Room | None:
        """The room a leg is in."""
        name = self.room_of.get(leg)
        return self.rooms.get(name) if name else None

    def members(self, room: str) -> list[Member]:
        """Members of a room, in join order."""
        r = self.rooms.get(room)
        return list(r.members.values()) if r else []

    def link_count(self) -> int:
        """Live connections across all rooms (0 when every room is empty)."""
        return sum(len(r.links) for r in self.rooms.values())
