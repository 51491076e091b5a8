"""The app server: routes calls, runs IVR dialogues and rooms, steers media.

It owns one SipUA (the pjsua2 adapter) and feeds its events into plain state
machines (ivr.pin_entry, bridge.room), then carries out the commands they
return. Everything runs on the loop thread.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge.room import (
    Bridge,
    Connect,
    Disconnect,
    EndLeg,
    RoomCommand,
    RoomRules,
    Signal,
    StartMusic,
    StopMusic,
)
from ivr.commands import CancelTimer, Command, Hangup, JoinRoom, Play, StartTimer, StopPlayback
from ivr.dtmf import DtmfDeduper
from ivr.pin_entry import PinEntry, PinMatch
from ivr.prompts import PromptLibrary
from ivr.tones import signal_path
from pbx.sipua import IncomingCall, SipUA
from ponte.control import ControlServer
from ponte.loop import Loop, TimerHandle
from provisioning.schema import Config

log = logging.getLogger("ponte.call")

# Margin after a prompt's nominal length before we call it finished: covers
# the jitter between the bridge clock and ours.
PROMPT_TAIL = 0.15


@dataclass
class Leg:
    """Per-call state kept by the app server."""

    leg: int
    caller: str
    dialed: str
    language: str
    dedupe: DtmfDeduper = field(default_factory=DtmfDeduper)
    dialogue: PinEntry | None = None
    room: str | None = None
    role: str | None = None
    timers: dict[str, TimerHandle] = field(default_factory=dict)
    prompt_timer: TimerHandle | None = None
    barge_in: bool = True
    hangup_after_prompt: str | None = None
    hash_at: float | None = None  # when the PIN's `#` arrived (latency stats)


class AppServer:
    """Conference entry IVR and rooms on top of one SIP user agent."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = Loop(self._poll)
        sip = config.sip
        self.ua = SipUA(
            self, sip.host, sip.port, sip.rtp_range, codecs=sip.codecs, user_agent=sip.user_agent
        )
        self.prompts = PromptLibrary(config.prompts.cache_dir, config.prompts.override_dir)
        self.bridge = Bridge()
        self.legs: dict[int, Leg] = {}
        self.join_latencies: list[float] = []
        self.control = ControlServer(config.control.socket, self._control, self.loop)
        self._pins = self._pin_table(config)
        self._rooms = {r.name: r for r in config.rooms}
        self._stop_reason = ""

    @staticmethod
    def _pin_table(config: Config) -> dict[str, PinMatch]:
        table: dict[str, PinMatch] = {}
        for room in config.rooms:
            table[room.participant_pin] = PinMatch(room.name, "participant")
            table[room.moderator_pin] = PinMatch(room.name, "moderator")
        return table

    # -- process ----------------------------------------------------------
    def start(self) -> None:
        """Render missing prompts, bind SIP, open the control socket."""
        rendered = self.prompts.render_all()
        if rendered:
            log.info("rendered %d prompts into %s", rendered, self.prompts.cache_dir)
        self.ua.start()
        self.control.start()
        log.info(
            "listening on sip:%s:%d, %d rooms, access numbers %s",
            self.config.sip.host,
            self.ua.bound_port,
            len(self.config.rooms),
            ", ".join(a.user for a in self.config.access_numbers) or "(none)",
        )

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop (safe from a signal handler)."""
        self._stop_reason = reason
        self.loop.stopping = True

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT end every call with BYE and stop."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, _f: self.request_stop(signal.Signals(s).name))

    def serve_forever(self) -> None:
        """Run until a stop is requested, then hang up and tear down."""
        try:
            self.loop.run()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Hang up all calls (BYE), release pjsua2, close the control socket."""
        n = self.ua.call_count() if self.ua._ep is not None else 0
        log.info("stopping (%s): hanging up %d calls", self._stop_reason or "requested", n)
        self.control.stop()
        for leg in self.legs.values():
            for t in leg.timers.values():
                t.cancel()
        self.ua.shutdown(timeout=2.0)
        self.legs.clear()

    def _poll(self, ms: int) -> None:
        self.ua.poll(ms)

    # -- SIP events -------------------------------------------------------
    def on_incoming(self, call: IncomingCall) -> None:
        """Route a new call by the dialed user part."""
        access = self.config.access_number(call.request_user)
        log.info(
            "call %d incoming from=%s to=%s src=%s",
            call.leg,
            call.from_user or call.from_uri,
            call.request_user,
            call.source,
        )
        if access is None:
            log.info("call %d refused: %r is not a number here (404)", call.leg, call.request_user)
            self.ua.answer(call.leg, 404)
            return
        leg = Leg(call.leg, call.from_user or call.from_uri, call.request_user, access.language)
        ivr = self.config.ivr
        leg.dialogue = PinEntry(
            self._pins.get, ivr.interdigit_timeout, ivr.total_timeout, ivr.max_tries
        )
        self.legs[call.leg] = leg
        self.ua.answer(call.leg, 200)
        log.info("call %d answer", call.leg)

    def on_media_ready(self, leg_id: int) -> None:
        """Audio is up: start the dialogue."""
        leg = self.legs.get(leg_id)
        if leg is not None and leg.dialogue is not None:
            self._run(leg, leg.dialogue.start())

    def on_confirmed(self, leg_id: int) -> None:
        """ACK received (nothing to do: media already started the dialogue)."""

    def on_digit(self, leg_id: int, digit: str, method: str) -> None:
        """A DTMF digit by either method; duplicates across methods are dropped."""
        leg = self.legs.get(leg_id)
        if leg is None:
            return
        now = self.loop.now()
        if not leg.dedupe.accept(digit, method, now):
            log.debug("call %d digit %r via %s dropped as duplicate", leg_id, digit, method)
            return
        log.debug("call %d digit %r via %s", leg_id, digit, method)
        if leg.dialogue is not None and leg.room is None:
            if digit == "#":
                leg.hash_at = now
            self._dialogue(leg, leg.dialogue.digit, digit)

    def on_disconnected(self, leg_id: int, code: int, reason: str) -> None:
        """The call ended, whoever ended it."""
        leg = self.legs.pop(leg_id, None)
        if leg is None:
            return
        for t in leg.timers.values():
            t.cancel()
        if leg.prompt_timer:
            leg.prompt_timer.cancel()
        if leg.dialogue is not None:
            leg.dialogue.hangup()
        if leg.room is not None:
            room = leg.room
            self._room_cmds(self.bridge.leave(leg_id))
            log.info(
                "call %d leave room=%s members=%d", leg_id, room, len(self.bridge.members(room))
            )
        log.info("call %d hangup code=%d cause=%s", leg_id, code, reason)

    # -- commands ---------------------------------------------------------
    def _dialogue(self, leg: Leg, event: Callable[..., list[Command]], *args: Any) -> None:
        """Feed one event to the leg's dialogue, log what it decided, run it."""
        dialogue = leg.dialogue
        assert dialogue is not None
        seen = len(dialogue.events)
        cmds = event(*args)
        for what in dialogue.events[seen:]:
            log.info("call %d %s (try %d)", leg.leg, what, dialogue.tries)
        self._run(leg, cmds)

    def _run(self, leg: Leg, cmds: Iterable[Command]) -> None:
        for cmd in cmds:
            if not self.ua.has_leg(leg.leg):
                return
            match cmd:
                case Play(prompts, barge_in):
                    self._play(leg, prompts, barge_in)
                case StopPlayback():
                    if leg.barge_in:
                        self._stop_prompt(leg)
                case StartTimer(name, seconds):
                    self._start_timer(leg, name, seconds)
                case CancelTimer(name):
                    t = leg.timers.pop(name, None)
                    if t:
                        t.cancel()
                case JoinRoom(room, role):
                    self._join(leg, room, role)
                case Hangup(reason):
                    if leg.prompt_timer is not None:
                        leg.hangup_after_prompt = reason
                    else:
                        self._hangup(leg, reason)

    def _play(self, leg: Leg, ids: tuple[str, ...], barge_in: bool) -> None:
        prompts = [self.prompts.get(pid, leg.language) for pid in ids]
        self._stop_prompt(leg)
        self.ua.play(leg.leg, [p.path for p in prompts])
        leg.barge_in = barge_in
        seconds = sum(p.seconds for p in prompts) + PROMPT_TAIL
        leg.prompt_timer = self.loop.call_later(seconds, lambda: self._prompt_done(leg))

    def _stop_prompt(self, leg: Leg) -> None:
        if leg.prompt_timer is not None:
            leg.prompt_timer.cancel()
            leg.prompt_timer = None
        self.ua.stop_play(leg.leg)

    def _prompt_done(self, leg: Leg) -> None:
        leg.prompt_timer = None
        self.ua.stop_play(leg.leg)
        if leg.hangup_after_prompt is not None:
            self._hangup(leg, leg.hangup_after_prompt)
        elif leg.dialogue is not None and leg.room is None:
            self._dialogue(leg, leg.dialogue.prompt_finished)

    def _start_timer(self, leg: Leg, name: str, seconds: float) -> None:
        old = leg.timers.pop(name, None)
        if old:
            old.cancel()

        def fire() -> None:
            leg.timers.pop(name, None)
            if leg.dialogue is not None and leg.room is None and leg.leg in self.legs:
                self._dialogue(leg, leg.dialogue.timeout, name)

        leg.timers[name] = self.loop.call_later(seconds, fire)

    def _hangup(self, leg: Leg, reason: str) -> None:
        log.info("call %d ending: %s", leg.leg, reason)
        self.ua.hangup(leg.leg)

    def _rules(self, room: str) -> RoomRules:
        r = self._rooms[room]
        return RoomRules(r.entry_signal, r.end_on_moderator_exit, r.max_members)

    def _join(self, leg: Leg, room: str, role: str) -> None:
        self._stop_prompt(leg)
        live = self.bridge.rooms.get(room)
        if live is not None and live.is_full():
            log.info("call %d refused: room=%s is full", leg.leg, room)
            self._run(
                leg,
                [Play(("conference_full", "goodbye"), barge_in=False), Hangup("conference full")],
            )
            return
        leg.room, leg.role = room, role
        self._room_cmds(self.bridge.join(room, leg.leg, role, self.loop.now(), self._rules(room)))
        if leg.hash_at is not None:
            self.join_latencies.append(self.loop.now() - leg.hash_at)
        log.info(
            "call %d join room=%s role=%s members=%d",
            leg.leg,
            room,
            role,
            len(self.bridge.members(room)),
        )

    def _room_cmds(self, cmds: Iterable[RoomCommand]) -> None:
        cache = self.prompts.cache_dir
        for cmd in cmds:
            match cmd:
                case Connect(src, dst):
                    self.ua.connect(src, dst)
                case Disconnect(src, dst):
                    self.ua.disconnect(src, dst)
                case StartMusic(leg_id):
                    room = self._rooms.get(self.bridge.room_of.get(leg_id, ""))
                    music = room.music if room and room.music else signal_path(cache, "hold_music")
                    self.ua.play(leg_id, [music], loop=True, slot="music")
                case StopMusic(leg_id):
                    self.ua.stop_play(leg_id, slot="music")
                case Signal(legs, name):
                    path = signal_path(cache, name)
                    for leg_id in legs:
                        self.ua.play(leg_id, [path], slot="signal")
                case EndLeg(leg_id, prompts):
                    leg = self.legs.get(leg_id)
                    if leg is not None:
                        self._play(leg, prompts, barge_in=False)
                        leg.hangup_after_prompt = f"sent away by the room ({', '.join(prompts)})"

    # -- control socket ---------------------------------------------------
    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "status":
            return {
                "calls": self.ua.call_count(),
                "legs": len(self.legs),
                "conf_ports": self.ua.conf_ports(),
                "links": self.bridge.link_count(),
                "rooms": {
                    name: [
                        {"leg": m.leg, "role": m.role, "caller": self.legs[m.leg].caller}
                        for m in room.members.values()
                        if m.leg in self.legs
                    ]
                    for name, room in self.bridge.rooms.items()
                },
                "join_latencies": list(self.join_latencies),
            }
        return {"error": f"unknown command {cmd!r}"}
