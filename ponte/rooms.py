"""Live rooms: admission, enter and leave with billing, keys, and carrying out
the commands the pure room logic (bridge.room, bridge.controls) returns.

Every action on a room, whoever triggers it (a member's keys, the CLI, the web
console), goes through `RoomService.apply` with the commands of one pure
function, so each sounds the same whatever asked for it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from bridge.billing import LegRecord
from bridge.controls import (
    GAIN_STEPS,
    CallOperator,
    Context,
    ControlCommand,
    EndDialOut,
    Say,
    SetGain,
    StartBlast,
    StartDialOut,
    StartRecording,
    StopRecording,
    StopSay,
    run_action,
)
from bridge.levels import LevelPolicy, refusal
from bridge.room import (
    CloseTrack,
    Connect,
    Disconnect,
    EndLeg,
    EndRecording,
    OpenTrack,
    Room,
    RoomRules,
    RoomSet,
    Signal,
    StartMusic,
    StopMusic,
)
from ivr.keys import KeyReader, KeyResult
from ivr.pin_entry import PinMatch
from pbx.useragent import UserAgent
from ponte.clock import WallClock
from ponte.legs import Idle, Leg, LegTable, Seat
from ponte.loop import Loop
from ponte.media import Media
from ponte.recordings import Recordings
from ponte.stores import Stores
from provisioning.schema import Config
from provisioning.schema import Room as RoomConfig

log = logging.getLogger("ponte.call")

# What a callee invited into a room hears first, when the room has no message.
INVITATION = {
    "pt-BR": "Você foi convidado para uma conferência. Conectando agora.",
    "en": "You are invited to a conference call. Connecting you now.",
}


class Outreach(Protocol):
    """The dial-out side of the room keys (*1, *2/*3, *92), above this layer."""

    def start(self, leg_id: int) -> None:
        """*1: take the moderator out of the audio and ask for a number."""

    def end(self, leg_id: int, with_guest: bool) -> None:
        """*2 brings the guest in; *3 drops the guest or cancels a blast."""

    def start_blast(self, leg_id: int) -> None:
        """*92: call the room's invitation list."""

    def relink(self, leg_id: int) -> None:
        """The leg's media was renegotiated: its private talk, if any, is linked again."""


class Helpline(Protocol):
    """The operator side of the room keys (*90), above this layer."""

    def request(self, leg_id: int, join: bool = False) -> None:
        """Ring the operators for a member (`join`: the one who answers enters the room)."""


def policy(room: RoomConfig) -> LevelPolicy:
    """A room's security level and options, as the pure rules read them."""
    return LevelPolicy(
        room.security_level,
        room.timezone,
        room.issued,
        room.allow_lock,
        room.allow_dial_out,
        room.allow_blast,
        room.allow_recording,
    )


def pin_table(config: Config) -> dict[str, PinMatch]:
    """Every PIN of the configuration -> its room and role."""
    table: dict[str, PinMatch] = {}
    for room in config.rooms:
        named = room.entry_signal == "name"
        table[room.participant_pin] = PinMatch(room.name, "participant", None, named)
        counters = tuple((c.name, c.pin) for c in room.counter_pins)
        table[room.moderator_pin] = PinMatch(
            room.name, "moderator", room.counter_pin, named, counters
        )
    return table


class RoomService:
    """The live rooms of this server (loop thread)."""

    def __init__(
        self,
        config: Config,
        clock: WallClock,
        loop: Loop,
        ua: UserAgent,
        legs: LegTable,
        media: Media,
        stores: Stores,
    ) -> None:
        self.clock = clock
        self.loop = loop
        self.ua = ua
        self.legs = legs
        self.media = media
        self.stores = stores
        self.live = RoomSet()
        self.outreach: Outreach | None = None  # set once the dial-out exists
        self.helpline: Helpline | None = None  # set once the help desk exists
        # Digit arrival -> the key's action applied to the room (bench/dtmf.py).
        self.action_latencies: deque[tuple[str, float]] = deque(maxlen=10000)
        self.config = config
        self.configs: dict[str, RoomConfig] = {r.name: r for r in config.rooms}
        self.pins = pin_table(config)
        self.recordings = Recordings(config, clock, loop, ua, legs, stores)

    def reloaded(self, config: Config) -> None:
        """New PINs and rooms for new calls; a removed room lives until it empties."""
        self.config = config
        live = {name: self.configs[name] for name in self.live.rooms if name in self.configs}
        self.configs = {**live, **{r.name: r for r in config.rooms}}
        self.pins = pin_table(config)
        self.recordings.config = config

    # -- admission ----------------------------------------------------------
    def gate(self, match: PinMatch) -> str | None:
        """Admission after a right PIN: hours, validity, lock (a prompt id, or None)."""
        room = self.configs[match.room]
        why = refusal(policy(room), self.clock.now())
        if why is not None:
            log.info("room=%s PIN not valid now: %s", room.name, why)
            return "pin_not_valid_now"
        live = self.live.rooms.get(match.room)
        if live is not None and live.locked:
            return "conference_locked"
        return None

    def full_or_locked(self, room: str) -> str | None:
        """Why one more member cannot enter right now (a prompt id), or None."""
        live = self.live.rooms.get(room)
        if live is None:
            return None
        if live.locked:
            return "conference_locked"
        return "conference_full" if live.is_full() else None

    def admit(
        self, leg: Leg, room: str, role: str, name_path: str | None, joined_by: str = "dial-in"
    ) -> bool:
        """A caller who keyed a right PIN enters, unless the room filled or locked
        meanwhile (then told why and hung up). True if the caller entered."""
        self.media.stop_prompt(leg)
        why = self.full_or_locked(room)
        if why is not None:
            log.info("call %d refused: room=%s %s", leg.id, room, why)
            self.media.play_then_hangup(leg, (why, "goodbye"), why)
            return False
        self.enter(leg, room, role, joined_by, name_path=name_path)
        return True

    # -- membership ---------------------------------------------------------
    def enter(
        self,
        leg: Leg,
        room: str,
        role: str,
        joined_by: str = "dial-in",
        name_path: str | None = None,
    ) -> None:
        """Put a leg in a room (no admission checks), with its billing record;
        the room's keys become the leg's handler."""
        keys = self.config.keys
        leg.handler = Member(
            self, KeyReader(keys.map, keys.feature_digit_timeout, keys.sequence_timeout)
        )
        r = self.configs[room]
        rules = RoomRules(r.entry_signal, r.end_on_moderator_exit, r.max_members)
        cmds = self.live.join(room, leg.id, role, self.loop.now(), rules, name_path, joined_by)
        live = self.live.rooms[room]
        counter = leg.counter_pin_name if role == "moderator" else None
        seat = leg.seat = Seat(
            room, role, joined_by, self.clock.ts(), name_path=name_path, counter_pin_name=counter
        )
        if self.stores.opened:
            billing, writer = self.stores.billing, self.stores.writer
            if live.session_id is None:
                live.session_id = self.stores.new_session_id()
                if live.session_id is not None:
                    writer.write(billing.open_session, room, seat.joined_wall, live.session_id)
            if live.session_id is not None:  # (None: an unbilled session, see new_session_id)
                seat.session_id = live.session_id
                writer.write(billing.note_peak, live.session_id, len(live.members))
                writer.write(billing.leg_joined, self.stores.node, self._leg_record(leg, seat, 0.0))
        self.apply(cmds)
        log.info(
            "call %d join room=%s role=%s members=%d%s",
            leg.id,
            room,
            role,
            len(live.members),
            f" counter_pin={counter}" if counter else "",
        )

    def leave(self, leg: Leg) -> None:
        """The leg left its room (hung up or was sent away): bill its time."""
        seat = leg.seat
        if seat is None:
            return
        live = self.live.rooms.get(seat.room)
        cmds = self.live.leave(leg.id)
        left = self.clock.ts()
        if self.stores.opened and seat.session_id is not None:
            billing, writer = self.stores.billing, self.stores.writer
            writer.write(billing.leg_ended, self._leg_record(leg, seat, left), self.stores.node)
            if seat.room not in self.live.rooms:
                writer.write(billing.close_session, seat.session_id, left)
        self.apply(cmds)
        remaining = len(live.members) if live is not None else 0
        log.info("call %d leave room=%s members=%d", leg.id, seat.room, remaining)

    @staticmethod
    def _leg_record(leg: Leg, seat: Seat, left: float) -> LegRecord:
        assert seat.session_id is not None
        return LegRecord(
            seat.session_id,
            leg.id,
            leg.caller,
            seat.role,
            seat.name_path,
            seat.joined_wall,
            left,
            leg.ended_by,
            seat.joined_by,
            seat.counter_pin_name,
        )

    def media_changed(self, leg: Leg, held: bool) -> None:
        """A member's phone renegotiated its media (hold, resume, a new
        codec): the room re-links it, and keeps it out of the mix while held.
        The member stays in the room and is billed throughout."""
        live = self.live.room_for(leg.id)
        member = live.members.get(leg.id) if live is not None else None
        if live is None or member is None:
            return
        was = member.held
        cmds: list[ControlCommand] = list(live.media_changed(leg.id, held))
        if member.gain_step:  # the listen level belonged to the old port
            cmds.append(SetGain(leg.id, GAIN_STEPS[member.gain_step][0]))
        if was != held:
            log.info("call %d %s room=%s", leg.id, "on hold" if held else "resumed", live.name)
        self.apply(cmds)
        if member.away and self.outreach is not None:  # talking privately with a guest
            self.outreach.relink(leg.id)

    def room_of(self, leg_id: int) -> Room | None:
        """The live room a leg is in."""
        return self.live.room_for(leg_id)

    # -- keys ----------------------------------------------------------------
    def act(self, leg: Leg, action: str, keys: KeyReader | None = None) -> None:
        """Run a key's action for a member (a key, or a browser's button)."""
        live = self.live.room_for(leg.id)
        if live is None or leg.seat is None:
            return
        cfg = self.configs[leg.seat.room]
        ctx = Context(
            policy(cfg),
            keys or KeyReader(self.config.keys.map),
            self.config.operators(leg.seat.room),
        )
        cmds = run_action(live, leg.id, action, ctx)
        refused = any(isinstance(c, Say) and c.items == ("not_available",) for c in cmds)
        log.info(
            "call %d key action=%s%s room=%s",
            leg.id,
            action,
            " refused" if refused else "",
            leg.seat.room,
        )
        self.apply(cmds)
        if leg.digit_at:
            self.action_latencies.append((action, self.loop.now() - leg.digit_at))

    # -- carrying out room commands ------------------------------------------
    def apply(self, cmds: Iterable[ControlCommand]) -> None:
        """Carry out what the room logic decided."""
        for cmd in cmds:
            match cmd:
                case Connect(src, dst):
                    self.ua.connect(src, dst)
                case Disconnect(src, dst):
                    self.ua.disconnect(src, dst)
                case StartMusic(leg_id):
                    name = self.live.room_of.get(leg_id, "")
                    room = self.configs.get(name)
                    music = room.music if room and room.music else None
                    live = self.live.rooms.get(name)
                    others = [leg for leg in live.members if leg != leg_id] if live else []
                    path = music or self.media.signal("hold_music")
                    self.media.loop_file(leg_id, path, "music", others)
                case StopMusic(legs):
                    self.media.stop_all(legs, "music")
                case Signal(legs, items):
                    self.media.say_to(legs, items, "signal")
                case Say(leg_id, items, slot):
                    self.media.say(leg_id, items, slot)
                case StopSay(leg_id, slot):
                    self.media.stop(leg_id, slot)
                case SetGain(leg_id, level):
                    self.ua.set_listen_level(leg_id, level)
                case StartDialOut(leg_id) if self.outreach is not None:
                    self.outreach.start(leg_id)
                case EndDialOut(leg_id, with_guest) if self.outreach is not None:
                    self.outreach.end(leg_id, with_guest)
                case StartBlast(leg_id) if self.outreach is not None:
                    self.outreach.start_blast(leg_id)
                case StartRecording(name, by):
                    live = self.live.rooms.get(name)
                    if live is not None:
                        self.apply(self.recordings.start(live, self.configs.get(name), by))
                case StopRecording(name, by):
                    self.apply(self.recordings.stop(self.live.rooms.get(name), name, by))
                case EndRecording(name):
                    self.recordings.stop(None, name, "room emptied")
                case OpenTrack(name, leg_id):
                    live = self.live.rooms.get(name)
                    if live is not None:
                        self.apply(self.recordings.open_track(live, leg_id))
                case CloseTrack(name, _leg, rec):
                    self.recordings.close_track(name, rec)
                case CallOperator(leg_id, join) if self.helpline is not None:
                    self.helpline.request(leg_id, join)
                case EndLeg(leg_id, prompts):
                    leg = self.legs.get(leg_id)
                    if leg is not None:
                        leg.ended_by = "moderator_exit"
                        why = f"sent away by the room ({', '.join(prompts)})"
                        self.media.play_then_hangup(leg, prompts, why)

    def end_leg(self, leg_id: int, by: str) -> None:
        """Hang a member up (an admin's kick or end), recording who ended it."""
        leg = self.legs.get(leg_id)
        if leg is not None:
            leg.ended_by = by
        self.ua.hangup(leg_id)

    def blast_message(self, room: str, language: str) -> Path:
        """The WAV a blast callee hears: the room's file, or its text spoken
        (a room without a blast list: the standard invitation)."""
        blast = self.configs[room].blast
        prompts = self.media.prompts
        if blast is None:
            return prompts.render_text(INVITATION.get(language, INVITATION["en"]), language)
        if blast.message.lower().endswith(".wav"):
            return Path(blast.message)
        return prompts.render_text(blast.message, language)


class Member(Idle):
    """A leg in a room: its digits are the room's keys."""

    def __init__(self, rooms: RoomService, keys: KeyReader) -> None:
        self.rooms = rooms
        self.keys = keys

    def on_digit(self, leg: Leg, digit: str) -> None:
        """A key of the key map (or part of one)."""
        leg.digit_at = self.rooms.loop.now()
        self._result(leg, self.keys.digit(digit))

    def _result(self, leg: Leg, result: KeyResult) -> None:
        media = self.rooms.media
        if result.cancel_wait:
            media.cancel_timer(leg, "key")
        if result.wait is not None:
            media.start_timer(leg, "key", result.wait, lambda: self._timeout(leg))
        if result.action is not None:
            self.rooms.act(leg, result.action, self.keys)
        elif result.unknown is not None:
            log.info("call %d key %s unknown", leg.id, result.unknown)
            self.rooms.apply([Say(leg.id, ("not_available",))])

    def _timeout(self, leg: Leg) -> None:
        self._result(leg, self.keys.timeout())

    def on_media_changed(self, leg: Leg, held: bool) -> None:
        """Hold, resume or a new codec: re-linked by the room."""
        self.rooms.media_changed(leg, held)

    def on_disconnected(self, leg: Leg, code: int, reason: str) -> None:
        """Hung up (or sent away): out of the room."""
        self.rooms.leave(leg)
