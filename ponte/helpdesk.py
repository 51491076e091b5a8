"""Operator help (seed 003's `*0`: "Solicite o auxílio de nossas operadoras
durante a reunião ou caso tenha dificuldades em se conectar").

A caller asks for help with `*90` in a room, or `*0` / `0` at the PIN prompt
("trouble connecting"). The operators' extensions (`operator:`, the room's own
or the global one) are rung at once through Kamailio, as the app server calls
any extension; the first to answer wins and the others are cancelled.

Meanwhile the caller is out of the room's audio (as a moderator keying a
dial-out number is) and hears hold music; the caller's leg is handed to a
`HelpCaller` handler and given back afterwards. Once an operator answers, the
two talk privately. The operator's phone then has keys (`ivr.keys.OPERATOR_KEYS`):
send the caller back where they were, join the caller's room with them (the
operator becomes a member), end the caller's call, or (a caller at the PIN
prompt) key a room's PIN and `#` to put the caller in that room. The caller
may go back by a key too (`HELP_CALLER_KEYS`). Nobody answers within
`operator_ring_seconds`: the caller goes back, told that no operator is
available.

An admin may also ring the operators for a room member from the console:
into a private talk (as `*90`), or straight into the room (`join`: the
operator who answers enters the room; the member never leaves it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.controls import Say, digits_prompts
from ivr.keys import HELP_CALLER_KEYS, OPERATOR_KEYS, KeyReader, KeyResult
from pbx.sipua import SipError
from pbx.useragent import UserAgent
from ponte.calllog import CallLog
from ponte.clock import WallClock
from ponte.entry import Entry, EntryIvr
from ponte.legs import Idle, Leg, LegHandler, LegTable
from ponte.loop import Loop, TimerHandle
from ponte.media import Media
from ponte.records import CallRecord
from ponte.rooms import Member, RoomService
from provisioning.schema import Config

log = logging.getLogger("ponte.call")

# Where the caller came from.
ROOM = "room"
ENTRY = "entry"
# How long an unanswered request stays pending (console, status) unless served.
UNANSWERED_KEEP = 600.0
# An event for the console: (type, fields).
Listener = Callable[[str, dict[str, Any]], None]


@dataclass
class HelpCall:
    """One caller's request for an operator, from ringing to its end."""

    caller: int
    origin: str  # ROOM | ENTRY
    room: str | None  # the caller's room (ROOM), None at the PIN prompt
    back: LegHandler  # the caller's handler before (a room's Member, an Entry), given back after
    join: bool = False  # the answering operator goes straight into the room
    rings: dict[int, str] = field(default_factory=dict)  # operator legs ringing -> extension
    operator: int | None = None  # the leg that answered
    extension: str | None = None
    linked: bool = False
    done: bool = False
    timer: TimerHandle | None = None
    since: float = 0.0  # wall clock, for the status and the console
    pin: str = ""  # digits the operator keyed outside a star key


class HelpDesk:
    """Help calls, on the loop thread (the rooms' and the entry's `OperatorDesk`)."""

    def __init__(
        self,
        config: Config,
        clock: WallClock,
        loop: Loop,
        ua: UserAgent,
        legs: LegTable,
        media: Media,
        rooms: RoomService,
        entry: EntryIvr,
        calllog: CallLog,
    ) -> None:
        self.config = config
        self.clock = clock
        self.loop = loop
        self.ua = ua
        self.legs = legs
        self.media = media
        self.rooms = rooms
        self.entry = entry
        self.calllog = calllog
        self.calls: dict[int, HelpCall] = {}  # by caller leg
        self.by_operator: dict[int, HelpCall] = {}  # by operator leg (ringing or answered)
        # Requests nobody answered, by caller leg: (room, caller, wall time).
        self.unanswered: dict[int, tuple[str | None, str, float]] = {}
        self.listeners: list[Listener] = []
        legs.ended.append(self._leg_ended)

    def reloaded(self, config: Config) -> None:
        """The next request rings the new operators for the new time."""
        self.config = config

    # -- asking ---------------------------------------------------------------
    def request(self, leg_id: int, join: bool = False) -> None:
        """A room member asks for help (*90), or an admin asks for them."""
        leg = self.legs.get(leg_id)
        if leg is None or leg.seat is None or leg_id in self.calls:
            return
        if not isinstance(leg.handler, Member):
            return  # keying a dial-out number: the dial-out owns the leg for now
        room = leg.seat.room
        call = HelpCall(leg_id, ROOM, room, leg.handler, join=join)
        if not join:
            leg.handler = HelpCaller(self, call)
        self._start(leg, call)

    def trouble_connecting(self, leg: Leg, entry: Entry) -> None:
        """A caller at the PIN prompt keyed `*0` / `0`."""
        if leg.id in self.calls:
            return
        call = HelpCall(leg.id, ENTRY, None, entry)
        leg.handler = HelpCaller(self, call)
        self._start(leg, call)

    def operators_for(self, call: HelpCall) -> tuple[str, ...]:
        """Who to ring: the room's operators, or (PIN prompt) the access
        number's room's, else the global ones."""
        if call.origin == ROOM:
            return self.config.operators(call.room)
        leg = self.legs.get(call.caller)
        return self.entry.operators(leg) if leg is not None else ()

    def _start(self, leg: Leg, call: HelpCall) -> None:
        operators = self.operators_for(call)
        call.since = self.clock.ts()
        self.calls[leg.id] = call
        self.unanswered.pop(leg.id, None)
        log.info(
            "call %d asks for an operator (%s%s): ringing %s",
            leg.id,
            call.origin,
            f" room={call.room}" if call.room else "",
            ",".join(operators) or "nobody",
        )
        if not call.join:
            self._say(leg.id, "operator_calling")
            self.media.loop_file(leg.id, self.media.signal("hold_music"), "help")
        for ext in operators:
            self._ring(call, ext, leg)
        self._notify("help_requested", call)
        if not call.rings:
            self.finish(call, ("operator_unavailable",), "no operator could be called")
            return
        seconds = self.config.operator_ring_seconds
        call.timer = self.loop.call_later(seconds, lambda: self._no_answer(call))

    def _ring(self, call: HelpCall, ext: str, caller: Leg) -> None:
        uri = f"sip:{ext}@{self.config.pbx.internal}"
        try:
            op = self.ua.make_call(uri)
        except SipError as exc:
            log.info("call %d cannot ring operator %s: %s", call.caller, ext, exc)
            return
        record = CallRecord(op, caller.caller, ext, self.clock.ts(), call_type="operator")
        self.legs.add(op, caller.caller, ext, caller.language, OperatorLeg(self, call), record)
        call.rings[op] = ext
        self.by_operator[op] = call
        log.info("call %d ringing operator %s as call %d", call.caller, ext, op)

    def _no_answer(self, call: HelpCall) -> None:
        if not call.done and call.operator is None:
            self.finish(call, ("operator_unavailable",), "no operator answered")

    # -- answered -------------------------------------------------------------
    def answered(self, call: HelpCall, op: Leg) -> None:
        """The first operator to answer wins; the other phones stop ringing."""
        if call.done or call.operator is not None:
            self.by_operator.pop(op.id, None)
            self.ua.hangup(op.id)  # answered too late: another operator has the caller
            return
        call.operator, call.extension = op.id, call.rings.pop(op.id, None)
        if call.timer is not None:
            call.timer.cancel()
        self._cancel_rings(call)
        self.calllog.answered(op)
        log.info("call %d operator %s answered (call %d)", call.caller, call.extension, op.id)
        self._notify("help_answered", call)
        if call.join:
            self.join(call)
            return
        self.media.stop(call.caller, "help")
        self._say(op.id, *self._operator_keys(call))
        self.link(call)

    def _operator_keys(self, call: HelpCall) -> tuple[str, ...]:
        """What the operator hears on answering: who calls, then the keys (data)."""
        items: list[str] = [
            "operator_room_caller" if call.origin == ROOM else "operator_entry_caller"
        ]
        for key, action in OPERATOR_KEYS.items():
            if action == "join" and call.origin != ROOM:
                continue
            items += [f"operator_key_{action}", *digits_prompts(key)]
        if call.origin == ENTRY:
            items.append("operator_key_pin")
        return tuple(items)

    def link(self, call: HelpCall) -> None:
        """Caller and operator hear each other, once both have audio."""
        op = call.operator
        if call.linked or call.done or op is None or call.join:
            return
        if self.ua.has_media(op) and self.ua.has_media(call.caller):
            call.linked = True
            self.ua.connect(call.caller, op)
            self.ua.connect(op, call.caller)

    # -- the operator's keys ----------------------------------------------------
    def operator_action(self, call: HelpCall, action: str) -> None:
        """A key of the operator's phone (OPERATOR_KEYS)."""
        if call.done:
            return
        log.info("call %d operator key action=%s", call.caller, action)
        if action == "return":
            self.finish(call, ("dialout_back",) if call.origin == ROOM else (), "operator")
        elif action == "join" and call.origin == ROOM:
            self.join(call)
        elif action == "hangup":
            caller = self.legs.get(call.caller)
            self.finish(call, (), "operator ended the call", keep_operator=False)
            if caller is not None:
                caller.ended_by = "operator"
                self.media.play_then_hangup(caller, ("goodbye",), "ended by the operator")
        elif call.operator is not None:
            self._say(call.operator, "not_available")

    def operator_pin(self, call: HelpCall, pin: str) -> None:
        """The operator keyed a room's PIN and `#`: the caller (at the PIN
        prompt) goes into that room, and the operator's call ends."""
        op = call.operator
        if call.done or op is None:
            return
        match = self.rooms.pins.get(pin) if call.origin == ENTRY else None
        if match is None:
            self._say(op, "invalid_pin" if call.origin == ENTRY else "not_available")
            return
        refused = self.rooms.gate(match)
        if refused is not None:
            self._say(op, refused)
            return
        caller = self.legs.get(call.caller)
        log.info(
            "call %d put in room=%s role=%s by the operator", call.caller, match.room, match.role
        )
        self.finish(call, (), "placed in a room by the operator", resume=False)
        if caller is not None:
            if isinstance(call.back, Entry):
                call.back.dialogue.placed(match)
            self.entry.handoff.join(caller, match.room, match.role, None, self.loop.now())

    def join(self, call: HelpCall) -> None:
        """The operator enters the caller's room; the caller is back in it."""
        op_leg = self.legs.get(call.operator) if call.operator is not None else None
        room = call.room
        if op_leg is None or room is None:
            return
        self.finish(call, (), "the operator joins the room", keep_operator=True)
        if room in self.rooms.live.rooms:
            self.rooms.enter(op_leg, room, "participant", joined_by="operator")
        else:
            self.ua.hangup(op_leg.id)

    # -- the end ------------------------------------------------------------------
    def finish(
        self,
        call: HelpCall,
        said: tuple[str, ...],
        why: str,
        keep_operator: bool = False,
        resume: bool = True,
    ) -> None:
        """The caller goes back where they were (told `said`), the phones stop."""
        if call.done:
            return
        call.done = True
        self.calls.pop(call.caller, None)
        if call.timer is not None:
            call.timer.cancel()
        self._cancel_rings(call)
        op = call.operator
        if op is not None:
            self.by_operator.pop(op, None)
            if call.linked:
                self.ua.disconnect(call.caller, op)
                self.ua.disconnect(op, call.caller)
            if not keep_operator:
                operator = self.legs.get(op)
                if operator is not None:
                    operator.handler = Idle()  # its end is ours: nothing more to tell
                self.ua.hangup(op)
        elif "no operator" in why:
            caller = self.legs.get(call.caller)
            self.unanswered[call.caller] = (
                call.room,
                caller.caller if caller else str(call.caller),
                call.since,
            )
        self._notify("help_ended", call, outcome=why)
        leg = self.legs.get(call.caller)
        log.info("call %d back from the operator (%s)", call.caller, why)
        if leg is None:
            return
        self.media.stop(leg.id, "help")
        if isinstance(leg.handler, HelpCaller):
            leg.handler = call.back
        if call.origin == ROOM:
            live = self.rooms.live.rooms.get(call.room or "")
            if live is not None and not call.join:
                self.rooms.apply(live.set_away(leg.id, False))
            if said:
                self._say(leg.id, *said)
        elif resume and isinstance(call.back, Entry):
            call.back.resume(leg, said)

    def _cancel_rings(self, call: HelpCall) -> None:
        for op in list(call.rings):
            self.by_operator.pop(op, None)
            leg = self.legs.get(op)
            if leg is not None:
                leg.handler = Idle()
            self.ua.hangup(op)
        call.rings.clear()

    def ring_ended(self, call: HelpCall, leg: Leg, code: int) -> None:
        """An operator's phone stopped ringing (busy, declined, unreachable)
        or the operator hung up."""
        self.by_operator.pop(leg.id, None)
        if call.done:
            return
        if leg.id == call.operator:
            self.finish(call, ("operator_left",), "operator hung up")
            return
        call.rings.pop(leg.id, None)
        log.info("call %d operator call %d ended unanswered (%d)", call.caller, leg.id, code)
        if not call.rings and call.operator is None:
            self.finish(call, ("operator_unavailable",), "no operator answered")

    def _leg_ended(self, leg: Leg) -> None:
        """A room member who hung up is no longer waiting for help."""
        self.unanswered.pop(leg.id, None)

    def caller_hung_up(self, call: HelpCall, leg: Leg, code: int, reason: str) -> None:
        """The caller hung up while waiting or talking: the phones stop; the
        handler before (the room, the PIN entry) learns of the end."""
        self.finish(call, (), "caller hung up", resume=False)
        call.back.on_disconnected(leg, code, reason)

    # -- what admins see ------------------------------------------------------
    def pending(self) -> list[dict[str, Any]]:
        """Requests ringing, being served, or unanswered (newest last)."""
        now = self.clock.ts()
        out: list[dict[str, Any]] = []
        for call in self.calls.values():
            leg = self.legs.get(call.caller)
            out.append(
                {
                    "call": call.caller,
                    "caller": leg.caller if leg else str(call.caller),
                    "from": call.origin,
                    "room": call.room,
                    "state": "talking" if call.operator is not None else "ringing",
                    "ringing": sorted(call.rings.values()),
                    "operator": call.extension,
                    "seconds": round(now - call.since, 1),
                }
            )
        for leg_id, (room, caller, since) in list(self.unanswered.items()):
            if now - since > UNANSWERED_KEEP:
                del self.unanswered[leg_id]
                continue
            out.append(
                {
                    "call": leg_id,
                    "caller": caller,
                    "from": ROOM if room else ENTRY,
                    "room": room,
                    "state": "unanswered",
                    "ringing": [],
                    "operator": None,
                    "seconds": round(now - since, 1),
                }
            )
        return sorted(out, key=lambda r: -r["seconds"])

    def wants_help(self, leg_id: int) -> bool:
        """Whether a member has a request ringing, being served or unanswered."""
        return leg_id in self.calls or leg_id in self.unanswered

    def _notify(self, kind: str, call: HelpCall, **extra: Any) -> None:
        leg = self.legs.get(call.caller)
        fields = {
            "room": call.room or "",
            "member": call.caller,
            "caller": leg.caller if leg else str(call.caller),
            "from": call.origin,
            **extra,
        }
        for fn in self.listeners:
            fn(kind, fields)

    def _say(self, leg_id: int, *items: str) -> None:
        self.rooms.apply([Say(leg_id, tuple(items))])


class _Keyed(Idle):
    """A help-call leg whose star keys come from a data map (ivr/keys.py)."""

    def __init__(self, desk: HelpDesk, call: HelpCall, keys: dict[str, str]) -> None:
        self.desk = desk
        self.call = call
        self.keys = KeyReader(keys)

    def _result(self, leg: Leg, result: KeyResult) -> None:
        media = self.desk.media
        if result.cancel_wait:
            media.cancel_timer(leg, "help_key")
        if result.wait is not None:
            media.start_timer(
                leg, "help_key", result.wait, lambda: self._result(leg, self.keys.timeout())
            )
        if result.action is not None:
            self.act(leg, result.action)
        elif result.unknown is not None:
            self.desk.rooms.apply([Say(leg.id, ("not_available",))])

    def act(self, leg: Leg, action: str) -> None:
        """Run the key's action."""


class HelpCaller(_Keyed):
    """The caller's leg while with (or waiting for) an operator."""

    def __init__(self, desk: HelpDesk, call: HelpCall) -> None:
        super().__init__(desk, call, HELP_CALLER_KEYS)

    def on_digit(self, leg: Leg, digit: str) -> None:
        """The caller's own way back (HELP_CALLER_KEYS)."""
        self._result(leg, self.keys.digit(digit))

    def act(self, leg: Leg, action: str) -> None:
        """`return`: back to the room (or the PIN prompt) now."""
        if action == "return":
            said = ("dialout_back",) if self.call.origin == ROOM else ()
            self.desk.finish(self.call, said, "the caller went back")

    def on_media_ready(self, leg: Leg) -> None:
        """Audio (re)connected: link it if an operator is on."""
        self.desk.link(self.call)

    def on_disconnected(self, leg: Leg, code: int, reason: str) -> None:
        """The caller hung up."""
        self.desk.caller_hung_up(self.call, leg, code, reason)


class OperatorLeg(_Keyed):
    """An operator's phone, rung for one help call."""

    def __init__(self, desk: HelpDesk, call: HelpCall) -> None:
        super().__init__(desk, call, OPERATOR_KEYS)

    def on_confirmed(self, leg: Leg) -> None:
        """Answered: the first one takes the caller."""
        self.desk.answered(self.call, leg)

    def on_media_ready(self, leg: Leg) -> None:
        """Audio up: link it to the caller (if this operator answered)."""
        if self.call.operator == leg.id:
            self.desk.link(self.call)

    def on_digit(self, leg: Leg, digit: str) -> None:
        """A star key (OPERATOR_KEYS), or a PIN's digit, or its `#`."""
        call = self.call
        if call.operator != leg.id:
            return
        if digit == "#" and not self.keys.buffer:
            pin, call.pin = call.pin, ""
            if pin:
                self.desk.operator_pin(call, pin)
            return
        if digit.isdigit() and not self.keys.buffer:
            call.pin = (call.pin + digit)[-16:]
            return
        call.pin = ""
        self._result(leg, self.keys.digit(digit))

    def act(self, leg: Leg, action: str) -> None:
        """A key of OPERATOR_KEYS."""
        self.desk.operator_action(self.call, action)

    def on_disconnected(self, leg: Leg, code: int, reason: str) -> None:
        """Declined, unreachable, or the operator hung up."""
        self.desk.ring_ended(self.call, leg, code)
