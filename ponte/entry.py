"""The entry IVR: a caller on an access number keys a PIN (and maybe records a
name) and is put in the room, or refused.

`EntryIvr` holds what all entry calls share (the PIN-guessing guard, the
caller IDs known per number); each call gets an `Entry` handler that feeds its
events to the pure `ivr.pin_entry.PinEntry` dialogue and carries out the
commands it returns.
"""

from __future__ import annotations

import logging
import wave
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from ivr.commands import (
    CallOperator,
    CancelTimer,
    Command,
    Hangup,
    JoinRoom,
    Play,
    RecordName,
    StartTimer,
    StopPlayback,
    WrongPin,
)
from ivr.guard import DAY, KnownCallers, PinGuard, is_caller_id
from ivr.pin_entry import PinEntry
from ivr.prompts import wav_seconds
from pbx.useragent import UserAgent
from ponte.calllog import CallLog
from ponte.clock import WallClock
from ponte.handoff import HandoffService
from ponte.legs import Idle, Leg
from ponte.lockout_clock import LockoutClock
from ponte.loop import Loop
from ponte.media import Media, Refusal
from ponte.pinshare import SharedPinGuard
from ponte.rooms import RoomService
from ponte.stores import Stores
from provisioning.schema import Config
from store.engine import UNAVAILABLE

log = logging.getLogger("ponte.call")

# A recorded name quieter than this (RMS of 16-bit samples) is taken as silence.
NAME_SILENCE_RMS = 150


class OperatorDesk(Protocol):
    """The operator help (ponte/helpdesk.py, above this layer)."""

    def trouble_connecting(self, leg: Leg, entry: Entry) -> None:
        """`*0` / `0` at the PIN prompt: ring the operators for this caller."""


class EntryIvr:
    """PIN entry for every caller on an access number (loop thread)."""

    def __init__(
        self,
        config: Config,
        clock: WallClock,
        loop: Loop,
        ua: UserAgent,
        media: Media,
        rooms: RoomService,
        calllog: CallLog,
        stores: Stores,
    ) -> None:
        self.config = config
        self.clock = clock
        self.loop = loop
        self.ua = ua
        self.media = media
        self.rooms = rooms
        self.calllog = calllog
        self.stores = stores
        ivr = config.ivr
        # One count for all nodes on the records database (ponte/pinshare.py),
        # on the wall clock, which a test may move (ponte/lockout_clock.py).
        self.pin_guard = SharedPinGuard(
            PinGuard(
                ivr.lockout_after,
                ivr.lockout_window,
                ivr.lockout_seconds,
                known_tries=ivr.lockout_known_tries,
            ),
            stores,
            LockoutClock.from_env(clock.ts).now,
        )
        # Caller IDs that keyed a valid PIN per number: exempt from a number's
        # lockout. Loaded from (and written to) the records database at start.
        self.known_callers = KnownCallers(ivr.lockout_known_days * DAY)
        self.names_dir = Path(config.state_dir) / "names"
        # Rooms shared with other nodes: a right PIN may hand the caller over.
        self.handoff = HandoffService(config, clock, loop, ua, rooms.legs, media, rooms, stores)
        # PIN `#` arrival -> joined (bench/dtmf.py, bench/legs.py).
        self.join_latencies: list[float] = []
        self.desk: OperatorDesk | None = None  # set once the help desk exists
        # Browsers in a room here, by the console's token (the join page's
        # buttons name their leg by it: web/join.py, ponte/console.py).
        self.web_legs: dict[str, int] = {}
        rooms.legs.ended.append(self._web_ended)

    def reloaded(self, config: Config) -> None:
        """New timeouts and tries apply to the next caller."""
        self.config = config
        self.handoff.config = config

    def load_known_callers(self) -> None:
        """Read the known caller IDs back (start-up), forgetting expired ones."""
        store = self.stores.known
        since = self.clock.ts() - self.known_callers.keep
        for number, caller, at in store.since(since):
            self.known_callers.remember(number, caller, at)
        self.stores.writer.write(store.forget_before, since)

    def _known(self, number: str, caller: str) -> bool:
        """Whether `caller` keyed a valid PIN on `number` recently: on this
        node, or (asked only while the number is locked) on any other."""
        now = self.clock.ts()
        if self.known_callers.knows(number, caller, now):
            return True
        stores = self.stores
        if not (stores.shared and stores.opened and self.pin_guard.number_locked(number)):
            return False
        if stores.writer.away:
            return False
        try:
            at = stores.known.last_ok(number, caller)
        except UNAVAILABLE:
            return False
        if at is None:
            return False
        self.known_callers.remember(number, caller, at)
        return self.known_callers.knows(number, caller, now)

    def operators(self, leg: Leg) -> tuple[str, ...]:
        """Who `0` at the PIN prompt rings: the operators of the access
        number's room, if it serves one, else the global ones."""
        access = self.config.access_number(leg.dialed)
        return self.config.operators(access.room if access else None)

    def answer(self, leg: Leg, source_key: str) -> None:
        """A caller reached an access number: ask for the PIN, or refuse a
        source locked out for guessing (told why in early media, then 403)."""
        known = self._known(leg.dialed, source_key)
        why = self.pin_guard.admit(leg.dialed, source_key, known)
        if why is not None:
            log.info(
                "call %d refused: %s is locked out (PIN guessing on %s: %s)",
                leg.id,
                source_key,
                leg.dialed,
                why,
            )
            leg.handler = Refusal(self.media, "try_later", "locked out after wrong PINs", 403)
            self.ua.answer(leg.id, 183)
            return
        ivr = self.config.ivr
        dialogue = PinEntry(
            self.rooms.pins.get,
            ivr.interdigit_timeout,
            ivr.total_timeout,
            ivr.max_tries,
            gate=self.rooms.gate,
            operator=self.desk is not None and bool(self.operators(leg)),
        )
        leg.handler = Entry(self, dialogue, source_key)
        self.ua.answer(leg.id, 200)
        log.info("call %d answer", leg.id)

    # -- browsers (README "Browsers") -------------------------------------------
    def web(self, leg: Leg, header: str) -> None:
        """A browser's INVITE, through Kamailio's WebSocket: the console
        checked its PIN (guard, lockout, hours, lock, full) and handed the
        one-time token to Kamailio, which took it and says so in X-Ponte-Web
        ("<token> <room> <address>"). Answered and, once its audio is up,
        put in the room as a participant, as a phone after a right PIN."""
        token, room, peer = ([*header.split(), "", "", ""])[:3]
        if room not in self.rooms.configs or len(token) != WEB_TOKEN_LENGTH:
            log.warning("call %d browser refused (403): bad X-Ponte-Web %r", leg.id, header)
            leg.record = None
            self.ua.answer(leg.id, 403, "Forbidden")
            return
        leg.caller = f"web:{peer}" if peer and peer != "-" else "web"
        leg.language = self.config.web.language
        if leg.record is not None:
            leg.record.origin = leg.caller
            leg.record.destination = f"room:{room}"
            leg.record.call_type = "web"
        self.web_legs[token] = leg.id
        leg.handler = WebJoin(self, room, token)
        self.ua.answer(leg.id, 200)
        log.info("call %d browser from %s for room=%s", leg.id, peer, room)

    def _web_ended(self, leg: Leg) -> None:
        for token, leg_id in list(self.web_legs.items()):
            if leg_id == leg.id:
                del self.web_legs[token]


# The console's tokens: 16 random bytes in hex (Kamailio checks the form).
WEB_TOKEN_LENGTH = 32
# A browser whose RTP stopped this long is gone (a closed tab, a dead
# network: no BYE comes); it leaves the room. Browsers send RTP without pause.
WEB_RTP_SILENCE = 10.0


class WebJoin(Idle):
    """A browser the console admitted, until its audio is up."""

    def __init__(self, ivr: EntryIvr, room: str, token: str) -> None:
        self.ivr = ivr
        self.room = room
        self.token = token

    def on_media_ready(self, leg: Leg) -> None:
        """Audio up (pjsua says so at our 200, before the ACK, whose
        on_confirmed then goes to the room's handler): the history counts
        from now, and into the room (or to its home node), as after a right PIN."""
        self.ivr.calllog.answered(leg)
        self.ivr.handoff.join(leg, self.room, "participant", None, self.ivr.loop.now(), "web")
        self._watch(leg, -1)

    def _watch(self, leg: Leg, seen: int) -> None:
        """End the leg once its RTP stops for WEB_RTP_SILENCE (checked that often)."""
        ivr = self.ivr
        got = ivr.ua.rx_packets(leg.id)
        if ivr.rooms.legs.get(leg.id) is not leg or got is None:
            return
        if got == seen:
            log.warning(
                "call %d: the browser sent no audio for %g s (closed, or its network is gone): "
                "ending it",
                leg.id,
                WEB_RTP_SILENCE,
            )
            leg.ended_by = "browser_lost"
            ivr.ua.hangup(leg.id)
            return
        ivr.loop.call_later(WEB_RTP_SILENCE, lambda: self._watch(leg, got))


class Entry(Idle):
    """One caller keying a PIN."""

    def __init__(self, ivr: EntryIvr, dialogue: PinEntry, source_key: str) -> None:
        self.ivr = ivr
        self.dialogue = dialogue
        self.source_key = source_key  # who keyed the PINs, for the guessing lockout
        self.hash_at: float | None = None  # when the PIN's `#` arrived (latency stats)

    # -- LegHandler -----------------------------------------------------------
    def on_media_ready(self, leg: Leg) -> None:
        """Audio is up: the greeting."""
        self._feed(leg, self.dialogue.start)

    def on_confirmed(self, leg: Leg) -> None:
        """Answered: the call's history counts from now."""
        self.ivr.calllog.answered(leg)

    def on_digit(self, leg: Leg, digit: str) -> None:
        """A digit of the PIN."""
        if digit == "#":
            self.hash_at = self.ivr.loop.now()
        self._feed(leg, self.dialogue.digit, digit)

    def on_prompt_done(self, leg: Leg) -> None:
        """A prompt ended: the dialogue may start its timers."""
        self._feed(leg, self.dialogue.prompt_finished)

    def on_disconnected(self, leg: Leg, code: int, reason: str) -> None:
        """Hung up while keying: the dialogue ignores anything later."""
        self.dialogue.hangup()

    def resume(self, leg: Leg, said: tuple[str, ...]) -> None:
        """Back from the operator (the help desk gave the leg back): say why,
        then the PIN prompt again."""
        leg.handler = self
        self._feed(leg, self.dialogue.resume, said)

    # -- carrying out the dialogue's commands ---------------------------------
    def _feed(self, leg: Leg, event: Callable[..., list[Command]], *args: object) -> None:
        """Feed one event to the dialogue, log what it decided, run it."""
        seen = len(self.dialogue.events)
        cmds = event(*args)
        for what in self.dialogue.events[seen:]:
            log.info("call %d %s (try %d)", leg.id, what, self.dialogue.tries)
        self._run(leg, cmds)

    def _run(self, leg: Leg, cmds: Iterable[Command]) -> None:
        ivr, media = self.ivr, self.ivr.media
        for cmd in cmds:
            if not ivr.ua.has_leg(leg.id):
                return
            match cmd:
                case Play(prompts, barge_in):
                    media.play(leg, prompts, barge_in)
                case StopPlayback():
                    media.barge(leg)
                case StartTimer(name, seconds):
                    media.start_timer(leg, name, seconds, self._timeout(leg, name))
                case CancelTimer(name):
                    media.cancel_timer(leg, name)
                case RecordName(seconds):
                    self._record_name(leg, seconds)
                case JoinRoom(room, role):
                    self._right_pin(leg)
                    self._join(leg, room, role)
                case WrongPin():
                    if self._wrong_pin(leg):
                        return  # the call ends now: the dialogue's next steps are moot
                case Hangup(reason):
                    self._right_pin(leg)  # a right PIN refused (hours, lock) still counts
                    media.hangup_after_prompt(leg, reason)
                case CallOperator() if ivr.desk is not None:
                    ivr.desk.trouble_connecting(leg, self)

    def _timeout(self, leg: Leg, name: str) -> Callable[[], None]:
        def fire() -> None:
            if leg.handler is self:  # still keying, not in a room
                self._feed(leg, self.dialogue.timeout, name)

        return fire

    def _join(self, leg: Leg, room: str, role: str) -> None:
        # Carried on the leg into its seat, the billing and the join's log line.
        leg.counter_pin_name = self.dialogue.counter_name
        hash_at = self.hash_at if self.hash_at is not None else self.ivr.loop.now()
        entered = self.ivr.handoff.join(leg, room, role, self.dialogue.name_path, hash_at)
        if entered and self.hash_at is not None:
            self.ivr.join_latencies.append(self.ivr.loop.now() - self.hash_at)

    def _wrong_pin(self, leg: Leg) -> bool:
        """Count a wrong PIN against its source and number; True if that ends
        the call (the number's budget is spent: no caller gets a second try)."""
        ivr = self.ivr
        shared = ivr.pin_guard
        guard = shared.guard
        verdict = shared.wrong_pin(leg.dialed, self.source_key)
        for source in verdict.locked_sources:
            log.warning(
                "PIN guessing: %s locked out for %g s after %d wrong PINs",
                source,
                guard.lockout,
                len(guard.wrong),
            )
        if verdict.number_locked:
            log.warning(
                "PIN guessing: number %s locked for %g s after %d wrong PINs in %g s: "
                "only caller IDs that keyed a valid PIN on it in the last %g days get in",
                leg.dialed,
                guard.lockout,
                guard.limit,
                guard.window,
                ivr.known_callers.keep / DAY,
            )
        if not verdict.end_call:
            return False
        log.info("call %d: wrong PIN while %s is locked: ending the call", leg.id, leg.dialed)
        self.dialogue.hangup()  # done: later digits and timers are ignored
        for name in list(leg.playback.timers):
            ivr.media.cancel_timer(leg, name)
        # "too many wrong PINs, try later"
        ivr.media.play_then_hangup(leg, ("try_later",), "wrong PIN on a locked number")
        return True

    def _right_pin(self, leg: Leg) -> None:
        """Remember a caller ID that keyed a valid PIN on this number (it may
        get in while the number is locked out)."""
        outcome = self.dialogue.outcome
        if outcome is None or outcome.match is None or not is_caller_id(self.source_key):
            return
        ivr = self.ivr
        when = ivr.clock.ts()
        ivr.known_callers.remember(leg.dialed, self.source_key, when)
        if ivr.stores.opened:
            ivr.stores.writer.write(ivr.stores.known.remember, leg.dialed, self.source_key, when)

    def _record_name(self, leg: Leg, seconds: float) -> None:
        ivr, media = self.ivr, self.ivr.media
        beep = media.signal("record_beep")
        ivr.ua.play(leg.id, [beep], slot="signal")
        stamp = ivr.clock.now().strftime("%Y%m%d")
        path = ivr.names_dir / stamp / f"leg{leg.id}-{int(ivr.clock.ts() * 1000)}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)

        def start() -> None:
            ivr.ua.record(leg.id, path)
            media.start_timer(leg, "name", seconds, done)

        def done() -> None:
            ivr.ua.stop_record(leg.id)
            kept = str(path) if _voiced(path) else None
            if kept is None:
                path.unlink(missing_ok=True)
            log.info("call %d name %s", leg.id, "recorded" if kept else "silent")
            self._feed(leg, self.dialogue.name_recorded, kept)

        media.start_timer(leg, "name", wav_seconds(beep), start)


def _voiced(path: Path) -> bool:
    """Whether a recorded name holds more than silence."""
    try:
        with wave.open(str(path), "rb") as w:
            data = w.readframes(w.getnframes())
            width = w.getsampwidth()
    except (OSError, EOFError, wave.Error):
        return False
    if width != 2 or not data:
        return False
    samples = np.frombuffer(data, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) > NAME_SILENCE_RMS
