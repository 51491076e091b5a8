"""Dial-out (*1, *2, *3) and blast dial-out (*92) from a conference room.

The moderator's reach outward (ClaireExpress manual): every guest call is
decided by the room's line profile (`room:NAME`), paced by the trunk's
calls-per-second window, metered like any outbound call, and billed with
`joined_by` once the guest is in the room.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.controls import Say
from ivr.commands import CancelTimer, Play, StartTimer, StopPlayback
from ivr.dialout import Abandon, DialOutEntry, PlaceCall, spoken
from ivr.prompts import wav_seconds
from ivr.tones import signal_path
from lines.policy import Decision, decide
from pbx.sipua import SipError

if TYPE_CHECKING:
    from ponte.server import AppServer, Leg

log = logging.getLogger("ponte.call")

NO_ANSWER_SECONDS = 30.0
BUSY = {486, 600}
NO_ANSWER = {408, 480, 487}


@dataclass
class Session:
    """One moderator's dial-out, from *1 to *2/*3 or the guest's hang-up."""

    moderator: int
    room: str
    entry: DialOutEntry
    state: str = "entering"  # entering | waiting | ringing | talking
    guest: int | None = None
    decision: Decision | None = None
    linked: bool = False
    no_answer: bool = False
    timers: list[Any] = field(default_factory=list)


@dataclass
class BlastCall:
    """One callee of a blast."""

    run: Blast
    leg: int
    number: str
    decision: Decision | None
    answered: bool = False
    joined: bool = False


@dataclass
class Blast:
    """A running blast dial-out in one room."""

    room: str
    moderator: int  # -1: an admin's invitation from the web console
    pending: list[tuple[str, Decision | None]]
    calls: dict[int, BlastCall] = field(default_factory=dict)
    timer: Any = None
    cancelled: bool = False
    joined_by: str = "blast"


class DialOut:
    """Dial-out sessions and blasts, driven by the app server's events."""

    def __init__(self, srv: AppServer) -> None:
        self.srv = srv
        self.sessions: dict[int, Session] = {}  # by moderator leg
        self.guests: dict[int, Session] = {}  # by guest leg
        self.blasts: dict[str, Blast] = {}  # by room
        self.blast_calls: dict[int, BlastCall] = {}  # by callee leg

    # -- helpers ----------------------------------------------------------
    def _room_cfg(self, room: str) -> Any:
        return self.srv._rooms[room]

    def _area(self, room: str) -> str:
        cfg = self._room_cfg(room)
        line = self.srv.config.lines.get(f"room:{room}")
        return cfg.area_code or (line.area_code if line else "11")

    def _decide(self, room: str, dial: str) -> Decision | None:
        """The room line's decision (None: no line profiles configured)."""
        srv = self.srv
        if not srv.config.lines or srv.usage is None:
            return None
        d = decide(srv.config, f"room:{room}", dial, srv.clock.now(), srv.usage.used)
        log.info(
            "room=%s dial-out number=%s type=%s decision=%s rule=%s: %s",
            room,
            dial,
            d.call_type,
            d.decision,
            d.rule,
            d.reason,
        )
        return d

    def _say(self, leg: int, *items: str) -> None:
        self.srv._room_cmds([Say(leg, tuple(items))])

    def _ringback(self, leg: int, on: bool) -> None:
        if on:
            path = signal_path(self.srv.prompts.cache_dir, "ringback")
            self.srv.ua.play(leg, [path], loop=True, slot="ringback")
        else:
            self.srv.ua.stop_play(leg, slot="ringback")

    def _call_trunk(self, dial: str, room: str, decision: Decision | None) -> int:
        """Place a call to the trunk serving `dial` (SipError if none can),
        with its call-history row (the room's line is the origin)."""
        from ponte.records import CallRecord

        srv = self.srv
        route = srv.config.trunk_for_number(dial)
        if route is None:
            raise SipError(f"no trunk serves {dial}")
        trunk, number = route
        port = f":{trunk.port}" if trunk.port else ""
        leg = srv.ua.make_call(f"sip:{number}@{trunk.host}{port}", account=f"trunk:{trunk.name}")
        line = f"room:{room}"
        srv.cdrs[leg] = CallRecord(
            leg,
            line,
            dial,
            srv.clock.ts(),
            call_type=(decision.call_type if decision else None) or "outbound",
            trunk=trunk.name,
            line=line,
            profile_rule=decision.rule if decision else None,
        )
        return leg

    def _limiter(self, dial: str) -> Any:
        route = self.srv.config.trunk_for_number(dial)
        return self.srv.limiters[route[0].name] if route else None

    def _guest_leg(self, leg_id: int, number: str, language: str) -> Leg:
        from ponte.server import Leg

        leg = Leg(leg_id, number, number, language)
        self.srv.legs[leg_id] = leg
        return leg

    # -- *1 ---------------------------------------------------------------
    def start(self, mod: int) -> None:
        """*1: the moderator is out of the room's audio; ask for the number."""
        srv = self.srv
        leg = srv.legs.get(mod)
        if leg is None or leg.room is None or mod in self.sessions:
            return
        cfg = self._room_cfg(leg.room)
        entry = DialOutEntry(self._area(leg.room), list(cfg.dial_out_carriers))
        self.sessions[mod] = Session(mod, leg.room, entry)
        log.info("call %d dial-out started in room=%s", mod, leg.room)
        self._entry_cmds(self.sessions[mod], entry.start())

    def _entry_cmds(self, s: Session, cmds: list[Any]) -> None:
        srv = self.srv
        leg = srv.legs.get(s.moderator)
        if leg is None:
            return
        for cmd in cmds:
            match cmd:
                case Play(prompts, barge_in):
                    srv._play(leg, prompts, barge_in)
                case StopPlayback():
                    srv._stop_prompt(leg)
                case StartTimer(name, seconds):
                    srv._start_timer(leg, name, seconds, lambda _l, n: self._entry_timeout(s, n))
                case CancelTimer(name):
                    srv._cancel_timer(leg, name)
                case PlaceCall(dial):
                    self._place(s, dial)
                case Abandon(prompts):
                    self._back(s, prompts)

    def _entry_timeout(self, s: Session, name: str) -> None:
        self._entry_cmds(s, s.entry.timeout(name))

    def prompt_done(self, leg_id: int) -> bool:
        """A moderator's prompt ended; True if it belonged to a dial-out entry."""
        s = self.sessions.get(leg_id)
        if s is None or s.state != "entering":
            return False
        self._entry_cmds(s, s.entry.prompt_finished())
        return True

    def digit(self, leg_id: int, digit: str) -> bool:
        """A moderator's digit while entering the number; True if consumed."""
        s = self.sessions.get(leg_id)
        if s is None or s.state != "entering":
            return False
        if digit == "*":
            # Keys still work while entering: `*` leaves the entry for the key map.
            s.entry.state = s.entry.state.__class__.DONE
            self._back(s, ("dialout_back",))
            return False
        self._entry_cmds(s, s.entry.digit(digit))
        return True

    def _place(self, s: Session, dial: str) -> None:
        decision = self._decide(s.room, dial)
        if decision is not None and decision.decision == "deny":
            self._back(s, (decision.prompt,))
            return
        s.decision = decision
        target = decision.dial if decision and decision.dial else dial
        limiter = self._limiter(target)
        if limiter is None:
            log.info("call %d dial-out: no trunk serves %s", s.moderator, target)
            self._back(s, ("dialout_failed",))
            return
        s.state = "waiting"
        self._ringback(s.moderator, True)
        now = self.srv.loop.now()
        delay = limiter.next_free(now) - now  # paced, never refused: the moderator waits

        def go() -> None:
            if s.moderator not in self.sessions:
                return
            limiter.try_acquire(self.srv.loop.now())
            try:
                s.guest = self._call_trunk(target, s.room, s.decision)
            except SipError as exc:
                log.info("call %d dial-out failed: %s", s.moderator, exc)
                self._back(s, ("dialout_failed",))
                return
            s.state = "ringing"
            self.guests[s.guest] = s
            mod = self.srv.legs.get(s.moderator)
            self._guest_leg(s.guest, target, mod.language if mod else "pt-BR")
            log.info("call %d dial-out to %s as call %d", s.moderator, target, s.guest)
            s.timers.append(self.srv.loop.call_later(NO_ANSWER_SECONDS, lambda: self._timeout(s)))

        s.timers.append(self.srv.loop.call_later(max(0.0, delay), go))

    def _timeout(self, s: Session) -> None:
        if s.state == "ringing" and s.guest is not None:
            s.no_answer = True
            self.srv.ua.hangup(s.guest)

    def _back(self, s: Session, prompts: tuple[str, ...]) -> None:
        """The moderator returns to the room's audio, told why."""
        self.sessions.pop(s.moderator, None)
        for t in s.timers:
            t.cancel()
        srv = self.srv
        self._ringback(s.moderator, False)
        if s.guest is not None and s.linked:
            srv.ua.disconnect(s.moderator, s.guest)
            srv.ua.disconnect(s.guest, s.moderator)
        live = srv.bridge.rooms.get(s.room)
        if live is not None:
            srv._room_cmds(live.set_away(s.moderator, False))
        if prompts and s.moderator in srv.legs:
            self._say(s.moderator, *prompts)
        log.info("call %d back in room=%s (%s)", s.moderator, s.room, ", ".join(prompts))

    # -- *2 / *3 ----------------------------------------------------------
    def end(self, mod: int, with_guest: bool) -> None:
        """*2 brings the guest in; *3 drops the guest (or cancels a blast)."""
        s = self.sessions.get(mod)
        leg = self.srv.legs.get(mod)
        if s is None:
            blast = self.blasts.get(leg.room) if leg and leg.room else None
            if blast is not None and not with_guest:
                self.cancel_blast(blast)
                return
            self._say(mod, "not_available")
            return
        if with_guest and s.state == "talking" and s.guest is not None:
            guest = self.srv.legs.get(s.guest)
            self.guests.pop(s.guest, None)
            self._back(s, ())
            if guest is not None:
                self.srv.enter_room(guest, s.room, "participant", joined_by="dial-out")
            return
        if s.guest is not None:
            self.guests.pop(s.guest, None)
            self.srv.ua.hangup(s.guest)
        self._back(s, ("dialout_back",))

    # -- guest call events -------------------------------------------------
    def on_confirmed(self, leg_id: int) -> bool:
        s = self.guests.get(leg_id)
        if s is not None:
            s.state = "talking"
            self._ringback(s.moderator, False)
            log.info("call %d guest %d answered", s.moderator, leg_id)
            if s.decision is not None:
                self.srv._to_meter[leg_id] = s.decision
                self.srv._start_meter(leg_id)
            self._link(s)
            return True
        b = self.blast_calls.get(leg_id)
        if b is not None:
            b.answered = True
            if b.decision is not None:
                self.srv._to_meter[leg_id] = b.decision
                self.srv._start_meter(leg_id)
            self._blast_message(b)
            return True
        return False

    def on_media_ready(self, leg_id: int) -> bool:
        s = self.guests.get(leg_id)
        if s is not None:
            self._link(s)
            return True
        return leg_id in self.blast_calls

    def _link(self, s: Session) -> None:
        srv = self.srv
        if s.linked or s.guest is None or s.state != "talking":
            return
        if srv.ua.has_media(s.guest) and srv.ua.has_media(s.moderator):
            s.linked = True
            srv.ua.connect(s.moderator, s.guest)
            srv.ua.connect(s.guest, s.moderator)

    def on_disconnected(self, leg_id: int, code: int) -> bool:
        """A guest or blast callee ended; True if nothing more is to be done."""
        srv = self.srv
        srv._stop_meter(leg_id)
        s = self.guests.pop(leg_id, None)
        if s is not None:
            srv.legs.pop(leg_id, None)
            if s.moderator in self.sessions:
                if s.state == "talking":
                    why = "dialout_guest_left"
                elif code in BUSY:
                    why = "dialout_busy"
                elif s.no_answer or code in NO_ANSWER:
                    why = "dialout_no_answer"
                else:
                    why = "dialout_failed"
                self._back(s, (why,))
            return True
        b = self.blast_calls.pop(leg_id, None)
        if b is not None:
            b.run.calls.pop(leg_id, None)
            if not b.joined:
                srv.legs.pop(leg_id, None)
                log.info("blast call %d to %s ended before joining (%d)", leg_id, b.number, code)
                self._blast_done(b.run)
                return True
        return False

    def moderator_gone(self, leg_id: int) -> None:
        """The moderator hung up: a guest still ringing or talking is dropped."""
        s = self.sessions.pop(leg_id, None)
        if s is not None:
            for t in s.timers:
                t.cancel()
            if s.guest is not None:
                self.guests.pop(s.guest, None)
                self.srv.legs.pop(s.guest, None)
                self.srv.ua.hangup(s.guest)

    # -- *92 --------------------------------------------------------------
    def start_blast(self, mod: int) -> None:
        """Dial the room's invitation list, paced by the trunk's window."""
        leg = self.srv.legs.get(mod)
        if leg is None or leg.room is None:
            return
        cfg = self._room_cfg(leg.room)
        if cfg.blast is None:
            self._say(mod, "not_available")
            return
        if leg.room in self.blasts:
            return
        pending: list[tuple[str, Decision | None]] = []
        for number in cfg.blast.numbers:
            d = self._decide(leg.room, number)
            if d is None or d.decision == "allow":
                pending.append(((d.dial if d and d.dial else number), d))
        run = Blast(leg.room, mod, pending)
        self.blasts[leg.room] = run
        log.info(
            "call %d blast in room=%s: %d of %d numbers allowed",
            mod,
            leg.room,
            len(pending),
            len(cfg.blast.numbers),
        )
        self._say(mod, "blast_calling", *spoken(str(len(pending))), "blast_participants")
        self._blast_next(run)

    def invite(self, room: str, number: str) -> str | None:
        """An admin dials `number` into a live room (the web console): the
        room line's profile decides, the trunk's pacing applies, and the callee
        hears the room's invitation and joins. Returns why it was refused."""
        d = self._decide(room, number)
        if d is not None and d.decision != "allow":
            return f"refused by the line profile: {d.reason}"
        if self.srv.config.trunk_for_number(d.dial if d and d.dial else number) is None:
            return f"no trunk serves {number}"
        run = self.blasts.get(room)
        if run is None:
            run = self.blasts[room] = Blast(room, -1, [], joined_by="admin")
        run.pending.append(((d.dial if d and d.dial else number), d))
        log.info("room=%s admin invites %s", room, number)
        if run.timer is None:
            self._blast_next(run)
        return None

    def _blast_next(self, run: Blast) -> None:
        run.timer = None
        if run.cancelled:
            return
        srv = self.srv
        while run.pending:
            dial, decision = run.pending[0]
            limiter = self._limiter(dial)
            now = srv.loop.now()
            if limiter is not None and not limiter.try_acquire(now):
                run.timer = srv.loop.call_later(
                    limiter.next_free(now) - now, lambda: self._blast_next(run)
                )
                return
            run.pending.pop(0)
            try:
                leg_id = self._call_trunk(dial, run.room, decision)
            except SipError as exc:
                log.info("blast to %s failed: %s", dial, exc)
                continue
            b = BlastCall(run, leg_id, dial, decision)
            run.calls[leg_id] = b
            self.blast_calls[leg_id] = b
            mod = srv.legs.get(run.moderator)
            self._guest_leg(leg_id, dial, mod.language if mod else "pt-BR")
            log.info("blast call %d to %s", leg_id, dial)
        self._blast_done(run)

    def _blast_message(self, b: BlastCall) -> None:
        srv = self.srv
        message = srv.blast_message(b.run.room, srv.legs[b.leg].language)
        srv.ua.play(b.leg, [message], slot="prompt")

        def join() -> None:
            leg = srv.legs.get(b.leg)
            if leg is None or b.leg not in self.blast_calls:
                return
            srv.ua.stop_play(b.leg, slot="prompt")
            b.joined = True
            self.blast_calls.pop(b.leg, None)
            b.run.calls.pop(b.leg, None)
            if b.run.room in srv.bridge.rooms:
                srv.enter_room(leg, b.run.room, "participant", joined_by=b.run.joined_by)
                if b.run.moderator in srv.legs:
                    srv._room_cmds([Say(b.run.moderator, ("join_tone",), slot="signal")])
            else:
                srv.ua.hangup(b.leg)
            self._blast_done(b.run)

        srv.loop.call_later(wav_seconds(Path(message)) + 0.2, join)

    def cancel_blast(self, run: Blast) -> None:
        """*3 within a blast: stop the pacing, hang up the unanswered calls."""
        run.cancelled = True
        if run.timer is not None:
            run.timer.cancel()
        dropped = len(run.pending)
        run.pending.clear()
        for leg_id, b in list(run.calls.items()):
            if not b.answered:
                self.srv.ua.hangup(leg_id)
                dropped += 1
        log.info(
            "call %d blast in room=%s cancelled (%d calls dropped)",
            run.moderator,
            run.room,
            dropped,
        )
        self._say(run.moderator, "blast_cancelled")
        self._blast_done(run)

    def _blast_done(self, run: Blast) -> None:
        if not run.pending and not run.calls and self.blasts.get(run.room) is run:
            del self.blasts[run.room]
