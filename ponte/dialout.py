"""Dial-out (*1, *2, *3) and blast dial-out (*92) from a conference room.

The moderator's reach outward (ClaireExpress manual): every guest call is
decided by the room's line profile (`room:NAME`), paced by the trunk's
calls-per-second window, metered like any outbound call, and billed with
`joined_by` once the guest is in the room.

While a moderator keys the guest's number, the moderator's leg is handed to a
`NumberEntry` handler (its digits and prompts are the entry's); afterwards the
room's handler gets it back. A guest's leg has a `Guest` handler, a blast
callee's a `BlastCallee`, until they enter the room.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridge.controls import Say, SayItem
from ivr.commands import CancelTimer, Play, StartTimer, StopPlayback
from ivr.dialout import Abandon, DialOutEntry, PlaceCall
from ivr.numbers import Number
from ivr.prompts import wav_seconds
from lines.policy import Decision, decide
from pbx.sipua import SipError
from pbx.useragent import UserAgent
from ponte.calllog import CallLog
from ponte.clock import WallClock
from ponte.legs import Idle, Leg, LegHandler, LegTable
from ponte.loop import Loop, TimerHandle
from ponte.media import Media
from ponte.records import CallRecord
from ponte.rooms import RoomService
from ponte.routing import Router
from ponte.stores import Stores
from provisioning.schema import Config

log = logging.getLogger("ponte.call")

NO_ANSWER_SECONDS = 30.0
BUSY = {486, 600}
NO_ANSWER = {408, 480, 487}


def unanswered(code: int, rang_out: bool) -> str:
    """Why a call placed out ended unanswered: "busy", "no_answer" or
    "failed" (`rang_out`: we gave up on its ringing)."""
    if code in BUSY:
        return "busy"
    if rang_out or code in NO_ANSWER:
        return "no_answer"
    return "failed"


class Stage(enum.Enum):
    """Where a moderator's dial-out is."""

    ENTERING = "entering"  # keying the number
    WAITING = "waiting"  # the trunk's pacing holds the call back
    RINGING = "ringing"
    TALKING = "talking"  # moderator and guest, privately


@dataclass
class Session:
    """One moderator's dial-out, from *1 to *2/*3 or the guest's hang-up."""

    moderator: int
    room: str
    entry: DialOutEntry
    room_handler: LegHandler  # the moderator's handler in the room, given back after
    stage: Stage = Stage.ENTERING
    guest: int | None = None
    decision: Decision | None = None
    linked: bool = False
    no_answer: bool = False
    timers: list[TimerHandle] = field(default_factory=list)


@dataclass
class BlastCall:
    """One callee of a blast."""

    run: Blast
    leg: int
    number: str
    decision: Decision | None
    role: str = "participant"  # the role it joins the room with
    answered: bool = False
    joined: bool = False
    no_answer: bool = False  # rang out (the run's ring_seconds)


PACED_RETRIES = 3  # a number refused by the trunk's pacing is tried again this often


@dataclass
class Blast:
    """A running blast dial-out in one room."""

    room: str
    moderator: int  # -1: an admin's invitation (web console) or a schedule
    pending: list[tuple[str, Decision | None, str]]  # (dial, decision, role)
    calls: dict[int, BlastCall] = field(default_factory=dict)
    timer: TimerHandle | None = None
    cancelled: bool = False
    joined_by: str = "blast"
    # A scheduled run (ponte/scheduler.py) is told each callee's outcome
    # ("calling", "answered", "joined", "busy", "no_answer", "failed"), rings
    # each call at most `ring_seconds`, opens the room if nobody is in it,
    # and hears `done` once nothing of it is pending or ringing.
    report: Callable[[BlastCall, str, str], None] | None = None
    ring_seconds: float | None = None
    done: Callable[[], None] | None = None
    finished: bool = False
    language: str | None = None  # the callees' (None: the moderator's)
    # Numbers the edge's trunk pacing refused (503), each tried again a few
    # times: this node's window and Kamailio's see the INVITEs at slightly
    # different moments, so under load a paced pair can still land in one
    # of the edge's windows.
    repaced: dict[str, int] = field(default_factory=dict)


class DialOut:
    """Dial-out sessions and blasts (the rooms' `Outreach`), on the loop thread."""

    def __init__(
        self,
        config: Config,
        clock: WallClock,
        loop: Loop,
        ua: UserAgent,
        legs: LegTable,
        media: Media,
        rooms: RoomService,
        calllog: CallLog,
        router: Router,
        stores: Stores,
    ) -> None:
        self.config = config
        self.clock = clock
        self.loop = loop
        self.ua = ua
        self.legs = legs
        self.media = media
        self.rooms = rooms
        self.calllog = calllog
        self.router = router
        self.stores = stores
        self.sessions: dict[int, Session] = {}  # by moderator leg
        self.guests: dict[int, Session] = {}  # by guest leg
        self.blasts: dict[str, Blast] = {}  # by room
        self.blast_calls: dict[int, BlastCall] = {}  # by callee leg
        legs.ended.append(self._leg_ended)

    def reloaded(self, config: Config) -> None:
        """The next dial-out uses the new line profiles and trunks."""
        self.config = config

    # -- helpers ----------------------------------------------------------
    def _area(self, room: str) -> str:
        line = self.config.lines.get(f"room:{room}")
        return self.rooms.configs[room].area_code or (line.area_code if line else "11")

    def _decide(self, room: str, dial: str) -> Decision | None:
        """The room line's decision (None: no line profiles configured)."""
        if not self.config.lines or not self.stores.opened:
            return None
        d = decide(self.config, f"room:{room}", dial, self.clock.now(), self.stores.used)
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

    def _say(self, leg: int, *items: SayItem) -> None:
        self.rooms.apply([Say(leg, tuple(items))])

    def ringback(self, leg: int, on: bool) -> None:
        """Start or stop the ringback the moderator hears while the guest rings."""
        if on:
            self.media.loop_file(leg, self.media.signal("ringback"), "ringback")
        else:
            self.media.stop(leg, "ringback")

    def _call_trunk(
        self, dial: str, room: str, decision: Decision | None, language: str, handler: LegHandler
    ) -> int:
        """Place a call to the trunk serving `dial` (SipError if none can),
        with its leg and call-history row (the room's line is the origin)."""
        route = self.config.trunk_for_number(dial)
        if route is None:
            raise SipError(f"no trunk serves {dial}")
        trunk, number = route
        leg_id = self.ua.make_call(trunk.uri(number), account=f"trunk:{trunk.name}")
        line = f"room:{room}"
        record = CallRecord(
            leg_id,
            line,
            dial,
            self.clock.ts(),
            call_type=(decision.call_type if decision else None) or "outbound",
            trunk=trunk.name,
            line=line,
            profile_rule=decision.rule if decision else None,
        )
        self.legs.add(leg_id, dial, dial, language, handler, record)
        return leg_id

    def _language(self, leg_id: int) -> str:
        leg = self.legs.get(leg_id)
        return leg.language if leg is not None else "pt-BR"

    # -- *1 ---------------------------------------------------------------
    def start(self, leg_id: int) -> None:
        """*1: the moderator is out of the room's audio; ask for the number."""
        leg = self.legs.get(leg_id)
        if leg is None or leg.seat is None or leg_id in self.sessions:
            return
        room = leg.seat.room
        entry = DialOutEntry(self._area(room), list(self.rooms.configs[room].dial_out_carriers))
        s = self.sessions[leg_id] = Session(leg_id, room, entry, leg.handler)
        leg.handler = NumberEntry(self, s)
        log.info("call %d dial-out started in room=%s", leg_id, room)
        self.entry_cmds(s, entry.start())

    def entry_cmds(self, s: Session, cmds: Sequence[object]) -> None:
        """Carry out what the number entry decided."""
        leg = self.legs.get(s.moderator)
        if leg is None:
            return
        for cmd in cmds:
            match cmd:
                case Play(prompts, barge_in):
                    self.media.play(leg, prompts, barge_in)
                case StopPlayback():
                    self.media.stop_prompt(leg)
                case StartTimer(name, seconds):
                    self.media.start_timer(leg, name, seconds, self._entry_timeout(s, name))
                case CancelTimer(name):
                    self.media.cancel_timer(leg, name)
                case PlaceCall(dial):
                    self._place(s, dial)
                case Abandon(prompts):
                    self.back(s, prompts)

    def _entry_timeout(self, s: Session, name: str) -> Callable[[], None]:
        def fire() -> None:
            if s.stage is Stage.ENTERING:
                self.entry_cmds(s, list(s.entry.timeout(name)))

        return fire

    def _give_back(self, s: Session) -> None:
        """The moderator's digits and prompts are the room's again."""
        leg = self.legs.get(s.moderator)
        if leg is not None and isinstance(leg.handler, NumberEntry):
            leg.handler = s.room_handler

    def _place(self, s: Session, dial: str) -> None:
        decision = self._decide(s.room, dial)
        if decision is not None and decision.decision == "deny":
            self.back(s, (decision.prompt,))
            return
        s.decision = decision
        target = decision.dial if decision and decision.dial else dial
        limiter = self.router.limiter_for(target)
        if limiter is None:
            log.info("call %d dial-out: no trunk serves %s", s.moderator, target)
            self.back(s, ("dialout_failed",))
            return
        s.stage = Stage.WAITING
        self._give_back(s)
        self.ringback(s.moderator, True)
        now = self.loop.now()
        delay = limiter.next_free(now) - now  # paced, never refused: the moderator waits

        def go() -> None:
            if s.moderator not in self.sessions:
                return
            limiter.try_acquire(self.loop.now())
            try:
                s.guest = self._call_trunk(
                    target, s.room, s.decision, self._language(s.moderator), Guest(self, s)
                )
            except SipError as exc:
                log.info("call %d dial-out failed: %s", s.moderator, exc)
                self.back(s, ("dialout_failed",))
                return
            s.stage = Stage.RINGING
            self.guests[s.guest] = s
            log.info("call %d dial-out to %s as call %d", s.moderator, target, s.guest)
            s.timers.append(self.loop.call_later(NO_ANSWER_SECONDS, lambda: self._timeout(s)))

        s.timers.append(self.loop.call_later(max(0.0, delay), go))

    def _timeout(self, s: Session) -> None:
        if s.stage is Stage.RINGING and s.guest is not None:
            s.no_answer = True
            self.ua.hangup(s.guest)

    def back(self, s: Session, prompts: tuple[str, ...]) -> None:
        """The moderator returns to the room's audio, told why."""
        self.sessions.pop(s.moderator, None)
        s.entry.close()
        self._give_back(s)
        for t in s.timers:
            t.cancel()
        self.ringback(s.moderator, False)
        if s.guest is not None and s.linked:
            self.ua.disconnect(s.moderator, s.guest)
            self.ua.disconnect(s.guest, s.moderator)
        live = self.rooms.live.rooms.get(s.room)
        if live is not None:
            self.rooms.apply(live.set_away(s.moderator, False))
        if prompts and s.moderator in self.legs:
            self._say(s.moderator, *prompts)
        log.info("call %d back in room=%s (%s)", s.moderator, s.room, ", ".join(prompts))

    # -- *2 / *3 ----------------------------------------------------------
    def end(self, leg_id: int, with_guest: bool) -> None:
        """*2 brings the guest in; *3 drops the guest (or cancels a blast)."""
        s = self.sessions.get(leg_id)
        leg = self.legs.get(leg_id)
        if s is None:
            blast = self.blasts.get(leg.seat.room) if leg and leg.seat else None
            if blast is not None and not with_guest:
                self.cancel_blast(blast)
                return
            self._say(leg_id, "not_available")
            return
        if with_guest and s.stage is Stage.TALKING and s.guest is not None:
            guest = self.legs.get(s.guest)
            self.guests.pop(s.guest, None)
            self.back(s, ())
            if guest is not None:
                self.rooms.enter(guest, s.room, "participant", joined_by="dial-out")
            return
        if s.guest is not None:
            self.guests.pop(s.guest, None)
            self.ua.hangup(s.guest)
        self.back(s, ("dialout_back",))

    def link(self, s: Session) -> None:
        """Moderator and answered guest hear each other (once)."""
        if s.linked or s.guest is None or s.stage is not Stage.TALKING:
            return
        if self.ua.has_media(s.guest) and self.ua.has_media(s.moderator):
            s.linked = True
            self.ua.connect(s.moderator, s.guest)
            self.ua.connect(s.guest, s.moderator)

    def relink(self, leg_id: int) -> None:
        """A re-INVITE gave the moderator or the guest of a private talk a
        new conference port: link the two again (a hold is theirs to hear,
        as on any call)."""
        s = self.sessions.get(leg_id) or self.guests.get(leg_id)
        if s is not None and s.linked and s.guest is not None:
            self.ua.connect(s.moderator, s.guest)
            self.ua.connect(s.guest, s.moderator)

    def _leg_ended(self, leg: Leg) -> None:
        """A moderator hung up: a guest still ringing or talking is dropped."""
        s = self.sessions.pop(leg.id, None)
        if s is not None:
            for t in s.timers:
                t.cancel()
            if s.guest is not None:
                self.guests.pop(s.guest, None)
                guest = self.legs.get(s.guest)
                if guest is not None:
                    guest.handler = Idle()  # its end needs no more telling
                self.ua.hangup(s.guest)

    # -- *92 --------------------------------------------------------------
    def start_blast(self, leg_id: int) -> None:
        """Dial the room's invitation list, paced by the trunk's window."""
        leg = self.legs.get(leg_id)
        if leg is None or leg.seat is None:
            return
        room = leg.seat.room
        blast = self.rooms.configs[room].blast
        if blast is None:
            self._say(leg_id, "not_available")
            return
        if room in self.blasts:
            return
        pending: list[tuple[str, Decision | None, str]] = []
        for number in blast.numbers:
            d = self._decide(room, number)
            if d is None or d.decision == "allow":
                pending.append(((d.dial if d and d.dial else number), d, "participant"))
        run = Blast(room, leg_id, pending)
        self.blasts[room] = run
        log.info(
            "call %d blast in room=%s: %d of %d numbers allowed",
            leg_id,
            room,
            len(pending),
            len(blast.numbers),
        )
        # A count, said as a number ("twelve participants"); "participant" for one.
        noun = "blast_participant" if len(pending) == 1 else "blast_participants"
        self._say(leg_id, "blast_calling", Number(len(pending)), noun)
        self._blast_next(run)

    def invite(self, room: str, number: str) -> str | None:
        """An admin dials `number` into a live room (the web console): the
        room line's profile decides, the trunk's pacing applies, and the callee
        hears the room's invitation and joins. Returns why it was refused."""
        d = self._decide(room, number)
        if d is not None and d.decision != "allow":
            return f"refused by the line profile: {d.reason}"
        if self.config.trunk_for_number(d.dial if d and d.dial else number) is None:
            return f"no trunk serves {number}"
        run = self.blasts.get(room)
        if run is None:
            run = self.blasts[room] = Blast(room, -1, [], joined_by="admin")
        run.pending.append(((d.dial if d and d.dial else number), d, "participant"))
        log.info("room=%s admin invites %s", room, number)
        if run.timer is None:
            self._blast_next(run)
        return None

    def check(self, room: str, number: str) -> tuple[str, Decision | None] | str:
        """The number to dial for `number` from `room`'s line and the line
        profile's decision, or why it may not be called (refused by the
        profile, no trunk)."""
        d = self._decide(room, number)
        if d is not None and d.decision != "allow":
            return f"refused by the line profile: {d.reason}"
        dial = d.dial if d and d.dial else number
        if self.config.trunk_for_number(dial) is None:
            return f"no trunk serves {number}"
        return dial, d

    def call_list(
        self,
        room: str,
        calls: list[tuple[str, Decision | None, str]],
        report: Callable[[BlastCall, str, str], None],
        done: Callable[[], None],
        ring_seconds: float,
        language: str,
    ) -> Blast:
        """Call `calls` ((dial, decision, role), checked by `check`) into
        `room` as a blast does (the trunks' pacing, the invitation, then into
        the room with its role), telling `report` each outcome. Kept apart
        from the room's *92 blast: *3 does not stop it."""
        run = Blast(
            room,
            -1,
            list(calls),
            joined_by="schedule",
            report=report,
            ring_seconds=ring_seconds,
            done=done,
            language=language,
        )
        log.info("room=%s scheduled dial-out of %d numbers", room, len(calls))
        self._blast_next(run)
        return run

    def _blast_next(self, run: Blast) -> None:
        run.timer = None
        if run.cancelled:
            return
        while run.pending:
            dial, decision, role = run.pending[0]
            limiter = self.router.limiter_for(dial)
            now = self.loop.now()
            if limiter is not None and not limiter.try_acquire(now):
                run.timer = self.loop.call_later(
                    limiter.next_free(now) - now, lambda: self._blast_next(run)
                )
                return
            run.pending.pop(0)
            b = BlastCall(run, -1, dial, decision, role)
            try:
                language = run.language or self._language(run.moderator)
                b.leg = self._call_trunk(dial, run.room, decision, language, BlastCallee(self, b))
            except SipError as exc:
                log.info("blast to %s failed: %s", dial, exc)
                if run.report is not None:
                    run.report(b, "failed", str(exc))
                continue
            run.calls[b.leg] = b
            self.blast_calls[b.leg] = b
            log.info("blast call %d to %s", b.leg, dial)
            if run.report is not None:
                run.report(b, "calling", "")
            if run.ring_seconds is not None:
                self.loop.call_later(run.ring_seconds, functools.partial(self._ring_out, b))
        self.blast_done(run)

    def _ring_out(self, b: BlastCall) -> None:
        """A scheduled call still ringing after the run's ring_seconds: dropped."""
        if not b.answered and self.blast_calls.get(b.leg) is b:
            b.no_answer = True
            self.ua.hangup(b.leg)

    def blast_answered(self, b: BlastCall, leg: Leg) -> None:
        """A callee answered: the invitation, then into the room."""
        message = self.rooms.blast_message(b.run.room, leg.language)
        self.ua.play(b.leg, [message], slot="prompt")

        def join() -> None:
            if b.leg not in self.legs or b.leg not in self.blast_calls:
                return
            self.media.stop(b.leg, "prompt")
            b.joined = True
            self.blast_calls.pop(b.leg, None)
            b.run.calls.pop(b.leg, None)
            # A schedule opens its room (nobody may be in it yet); a blast or
            # an invitation joins one that is live, else the callee is dropped.
            opens = b.run.report is not None and b.run.room in self.rooms.configs
            if b.run.room in self.rooms.live.rooms or opens:
                self.rooms.enter(leg, b.run.room, b.role, joined_by=b.run.joined_by)
                if b.run.moderator in self.legs:
                    self.rooms.apply([Say(b.run.moderator, ("join_tone",), slot="signal")])
                if b.run.report is not None:
                    b.run.report(b, "joined", "")
            else:
                self.ua.hangup(b.leg)
                if b.run.report is not None:
                    b.run.report(b, "failed", "the room is gone")
            self.blast_done(b.run)

        self.loop.call_later(wav_seconds(Path(message)) + 0.2, join)

    def cancel_blast(self, run: Blast) -> None:
        """*3 within a blast: stop the pacing, hang up the unanswered calls."""
        dropped = self.stop_list(run)
        log.info(
            "call %d blast in room=%s cancelled (%d calls dropped)",
            run.moderator,
            run.room,
            dropped,
        )
        self._say(run.moderator, "blast_cancelled")

    def stop_list(self, run: Blast) -> int:
        """Stop a blast or a scheduled call list (*3, `ponte schedule cancel`):
        no number still waiting for the pacing is dialled and the ringing calls
        are hung up; an answered callee hears the invitation and joins. The
        number of calls dropped."""
        run.cancelled = True
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        dropped = len(run.pending)
        run.pending.clear()
        for leg_id, b in list(run.calls.items()):
            if not b.answered:
                self.ua.hangup(leg_id)
                dropped += 1
        self.blast_done(run)
        return dropped

    def blast_done(self, run: Blast) -> None:
        """Forget a blast once nothing of it is pending or ringing."""
        if run.pending or run.calls or run.finished:
            return
        if self.blasts.get(run.room) is run:
            del self.blasts[run.room]
        run.finished = True
        if run.done is not None:
            run.done()


class NumberEntry(Idle):
    """The moderator's leg while keying a guest's number."""

    def __init__(self, dialout: DialOut, session: Session) -> None:
        self.dialout = dialout
        self.session = session

    def on_digit(self, leg: Leg, digit: str) -> None:
        """A digit of the number; `*` leaves the entry for the room's keys."""
        s = self.session
        if digit == "*":
            self.dialout.back(s, ("dialout_back",))
            s.room_handler.on_digit(leg, digit)
            return
        self.dialout.entry_cmds(s, list(s.entry.digit(digit)))

    def on_prompt_done(self, leg: Leg) -> None:
        """The entry's prompt ended: its timers start."""
        self.dialout.entry_cmds(self.session, list(self.session.entry.prompt_finished()))

    def on_disconnected(self, leg: Leg, code: int, reason: str) -> None:
        """The moderator hung up while keying: out of the room too."""
        self.session.room_handler.on_disconnected(leg, code, reason)


class Guest(Idle):
    """A guest's leg, called by a moderator's dial-out."""

    def __init__(self, dialout: DialOut, session: Session) -> None:
        self.dialout = dialout
        self.session = session

    def on_confirmed(self, leg: Leg) -> None:
        """Answered: stop the ringback, meter it, link it to the moderator."""
        d, s = self.dialout, self.session
        d.calllog.answered(leg)
        s.stage = Stage.TALKING
        d.ringback(s.moderator, False)
        log.info("call %d guest %d answered", s.moderator, leg.id)
        d.calllog.meter_from_answer(leg.id, s.decision)
        d.calllog.start_meter(leg.id)
        d.link(s)

    def on_media_ready(self, leg: Leg) -> None:
        """Audio up: link it (if answered)."""
        self.dialout.link(self.session)

    def on_media_changed(self, leg: Leg, held: bool) -> None:
        """A re-INVITE from the guest's phone: linked again."""
        self.dialout.relink(leg.id)

    def on_disconnected(self, leg: Leg, code: int, reason: str) -> None:
        """The guest hung up or never answered: the moderator is told why."""
        d, s = self.dialout, self.session
        if d.guests.pop(leg.id, None) is None or s.moderator not in d.sessions:
            return
        if s.stage is Stage.TALKING:
            why = "dialout_guest_left"
        else:
            why = f"dialout_{unanswered(code, s.no_answer)}"
        d.back(s, (why,))


class BlastCallee(Idle):
    """A blast callee's leg, until it enters the room."""

    def __init__(self, dialout: DialOut, call: BlastCall) -> None:
        self.dialout = dialout
        self.call = call

    def on_confirmed(self, leg: Leg) -> None:
        """Answered: meter it and play the invitation."""
        d, b = self.dialout, self.call
        d.calllog.answered(leg)
        b.answered = True
        d.calllog.meter_from_answer(leg.id, b.decision)
        d.calllog.start_meter(leg.id)
        if b.run.report is not None:
            b.run.report(b, "answered", "")
        d.blast_answered(b, leg)

    def on_disconnected(self, leg: Leg, code: int, reason: str) -> None:
        """Ended before joining: the blast may be done."""
        d, b = self.dialout, self.call
        ringing = d.blast_calls.pop(leg.id, None) is not None
        b.run.calls.pop(leg.id, None)
        log.info("blast call %d to %s ended before joining (%d)", leg.id, b.number, code)
        run = b.run
        tries = run.repaced.get(b.number, 0)
        if code == 503 and not b.answered and not run.cancelled and tries < PACED_RETRIES:
            # Refused by the trunk's pacing (Retry-After: 1): not the callee's
            # answer, so the number goes back to the head of the queue.
            run.repaced[b.number] = tries + 1
            run.pending.insert(0, (b.number, b.decision, b.role))
            if run.timer is None:
                run.timer = d.loop.call_later(1.0, lambda: d._blast_next(run))
            return
        if b.run.report is not None and ringing:  # (not: dropped at join, already told)
            # "left": hung up during the invitation.
            outcome = "left" if b.answered else unanswered(code, b.no_answer)
            b.run.report(b, outcome, f"{code} {reason}".strip())
        d.blast_done(b.run)
