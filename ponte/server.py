"""The app server: routes calls, runs IVR dialogues and rooms, steers media.

It owns one SipUA (the pjsua2 adapter) and feeds its events into plain state
machines (ivr.pin_entry, ivr.keys, bridge.room, bridge.controls), then
carries out the commands they return. Everything runs on the loop thread.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sqlite3
import threading
import time
import urllib.request
import wave
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np

from bridge.billing import BillingStore, LegRecord
from bridge.controls import (
    Context,
    ControlCommand,
    EndDialOut,
    Say,
    SetGain,
    StartBlast,
    StartDialOut,
    StopSay,
    run_action,
)
from bridge.levels import LevelPolicy, refusal
from bridge.room import (
    Bridge,
    Connect,
    Disconnect,
    EndLeg,
    RoomRules,
    Signal,
    StartMusic,
    StopMusic,
)
from ivr.commands import (
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
from ivr.dtmf import DtmfDeduper
from ivr.guard import DAY, KnownCallers, PinGuard, is_caller_id
from ivr.keys import KeyReader
from ivr.pin_entry import PinEntry, PinMatch
from ivr.prompts import PromptLibrary, wav_seconds
from ivr.tones import SIGNALS, signal_path
from lines.classify import EMERGENCY
from lines.meter import Action as MeterAction
from lines.meter import Crossed, Cut, Flush, Meter, Warn
from lines.policy import Decision, cycle_start, decide, limit_types, resolve
from lines.usage import UsageStore
from pbx.b2bua import B2BUA, Pair
from pbx.kamailio import Kamailio
from pbx.ratelimit import SlidingWindowLimiter
from pbx.rtpengine import (
    NgClient,
    RtpEngine,
    RtpEngineError,
    UnknownCallError,
    quality,
    summary,
)
from pbx.sipua import IncomingCall, SipUA
from ponte.clock import WallClock
from ponte.control import ControlServer
from ponte.database import RecordWriter, check_database, mark_created
from ponte.dialout import DialOut
from ponte.extcalls import DISPOSITIONS, AccReader
from ponte.known_callers import KnownCallerStore
from ponte.lockout_clock import LockoutClock
from ponte.loop import Loop, TimerHandle
from ponte.records import CallRecord, RecordStore
from ponte.roomops import room_command
from ponte.sdnotify import Notifier
from provisioning.admins import PermissionDenied, authorize_changes, may_act_as, who
from provisioning.advice import network_notes, refusals
from provisioning.diff import Change, diff_configs
from provisioning.files import private
from provisioning.schema import Config
from provisioning.schema import Room as RoomConfig

if TYPE_CHECKING:
    from ponte.console import Console

log = logging.getLogger("ponte.call")

# Margin after a prompt's nominal length before we call it finished: covers
# the jitter between the bridge clock and ours.
PROMPT_TAIL = 0.15
# After rtpengine fails to answer a quality query, none is sent for this long.
NG_BACKOFF = 10.0
# An answered call that has received no RTP this long after answer is logged.
NO_RTP_AFTER = 10.0
# A recorded name quieter than this (RMS of 16-bit samples) is taken as silence.
NAME_SILENCE_RMS = 150


@dataclass
class Leg:
    """Per-call state kept by the app server."""

    leg: int
    caller: str
    dialed: str
    language: str
    dedupe: DtmfDeduper = field(default_factory=DtmfDeduper)
    dialogue: PinEntry | None = None
    keys: KeyReader | None = None
    room: str | None = None
    role: str | None = None
    session_id: int | None = None
    joined_wall: float = 0.0
    name_path: str | None = None
    ended_by: str = "caller"
    timers: dict[str, TimerHandle] = field(default_factory=dict)
    prompt_timer: TimerHandle | None = None
    barge_in: bool = True
    hangup_after_prompt: str | None = None
    hash_at: float | None = None  # when the PIN's `#` arrived (latency stats)
    digit_at: float = 0.0  # when the last in-room digit arrived (key latency stats)
    source_key: str = ""  # who keyed the PINs, for the guessing lockout
    slot_gen: dict[str, int] = field(default_factory=dict)
    refusal: str | None = None  # a refused outbound call: the prompt to play, then 403
    hangup_code: int = 0
    joined_by: str = "dial-in"


@dataclass
class PreparedReload:
    """A provisioning file read and compared off the loop, waiting to be applied."""

    old: Config
    new: Config | None
    error: str | None
    changes: list[Change] = field(default_factory=list)


def _policy(room: RoomConfig) -> LevelPolicy:
    return LevelPolicy(
        room.security_level,
        room.timezone,
        room.issued,
        room.allow_lock,
        room.allow_dial_out,
        room.allow_blast,
    )


class AppServer:
    """Conference entry IVR and rooms on top of one SIP user agent."""

    def __init__(
        self,
        config: Config,
        clock: WallClock | None = None,
        config_path: Path | None = None,
        run_kamailio: bool = True,
    ) -> None:
        self.config = config
        # False under systemd, where ponte-kamailio.service runs the proxy.
        self.run_kamailio = run_kamailio
        self.config_path = config_path
        self.clock = clock or WallClock.from_env()
        self.loop = Loop(self._poll)
        sip = config.sip
        self.ua = SipUA(
            self, sip.host, sip.port, sip.rtp_range, codecs=sip.codecs, user_agent=sip.user_agent
        )
        self.prompts = PromptLibrary(config.prompts.cache_dir, config.prompts.override_dir)
        self.bridge = Bridge()
        self.billing: BillingStore | None = None
        self.legs: dict[int, Leg] = {}
        self.join_latencies: list[float] = []
        ivr = config.ivr
        self.pin_guard = PinGuard(
            ivr.lockout_after,
            ivr.lockout_window,
            ivr.lockout_seconds,
            known_tries=ivr.lockout_known_tries,
        )
        # Caller IDs that keyed a valid PIN per number: exempt from a number's
        # lockout. Loaded from (and written to) the records database at start.
        self.known_callers = KnownCallers(ivr.lockout_known_days * DAY)
        self.known_store: KnownCallerStore | None = None
        # Monotonic, like the loop's timers; a test may move it (see the module).
        self.pin_clock = LockoutClock.from_env(self.loop.now)
        # Digit arrival -> the key's action applied to the room (bench/dtmf.py).
        self.action_latencies: deque[tuple[str, float]] = deque(maxlen=10000)
        self.control = ControlServer(
            config.control.socket, self._control, self.loop, prepare=self._prepare_control
        )
        self._rooms = {r.name: r for r in config.rooms}
        self._pins = self._pin_table(config)
        self._stop_reason = ""
        self._names_dir = Path(config.state_dir) / "names"
        self.b2bua = B2BUA(self.ua, on_end=self._bridged_end, on_answer=self._bridged_answer)
        self.usage: UsageStore | None = None
        self.store: RecordStore | None = None  # audit, restores, call history
        self.cdrs: dict[int, CallRecord] = {}  # inbound legs -> their history row
        self.meter: Meter | None = None
        self._to_meter: dict[int, Decision] = {}
        self.dialout = DialOut(self)
        self.notifier = Notifier()
        self.accepting = True  # False while draining or stopping: new calls get 503
        self.records = RecordWriter()
        self._alerted: set[tuple] = set()
        self.kamailio = (
            Kamailio(config, Path(config.state_dir) / "kamailio")
            if config.extensions or config.trunks
            else None
        )
        self.limiters = {t.name: SlidingWindowLimiter(t.cps) for t in config.trunks}
        self.admission = SlidingWindowLimiter(config.sip.max_new_calls_per_second)
        self.shed = 0  # calls refused for overload (counted, not logged one by one)
        self._shed_logged = 0
        self._kamailio_restarts = 0
        # rtpengine relays every call's media wherever Kamailio runs.
        self.rtpengine = (
            RtpEngine(config, Path(config.state_dir) / "rtpengine")
            if self.kamailio is not None
            else None
        )
        self._rtpengine_restarts = 0
        # Queried on the loop thread, on loopback: a reply takes well under
        # a millisecond, and a dead relay costs at most this timeout once.
        self._ng = NgClient.for_config(config, timeout=0.2, retries=1) if self.rtpengine else None
        self._ng_down_until = 0.0  # a relay that stopped answering is left alone a while
        self._proxy_up: bool | None = None
        self.console: Console | None = None  # the web console, when web.listen is set

    @staticmethod
    def _pin_table(config: Config) -> dict[str, PinMatch]:
        table: dict[str, PinMatch] = {}
        for room in config.rooms:
            named = room.entry_signal == "name"
            table[room.participant_pin] = PinMatch(room.name, "participant", None, named)
            table[room.moderator_pin] = PinMatch(room.name, "moderator", room.counter_pin, named)
        return table

    # -- process ----------------------------------------------------------
    def start(self) -> None:
        """Open the records, render missing prompts, bind SIP, Kamailio, control socket.

        A failure part-way releases what was started (pjsua2 must be destroyed
        before the interpreter tears its Python callbacks down).
        """
        try:
            self._start()
        except BaseException:
            self.shutdown()
            raise

    def _start(self) -> None:
        check_database(self.config.database, self.config.state_dir)
        self.billing = BillingStore(self.config.database)
        self.usage = UsageStore(self.config.database)
        self.store = RecordStore(self.config.database)
        self.known_store = KnownCallerStore(self.config.database)
        since = self.clock.ts() - self.known_callers.keep
        for number, caller, at in self.known_store.since(since):
            self.known_callers.remember(number, caller, at)
        self.records.write(self.known_store.forget_before, since)
        # Call records, billing, audit: the service's user alone reads them.
        private(self.config.database)
        mark_created(self.config.database, self.config.state_dir)
        self.loop.call_later(5.0, self._flush_records)
        if self.kamailio is not None:
            self._acc = AccReader(self.kamailio.acc_db_path)
            if self.run_kamailio:  # Kamailio is not running yet: safe to write
                self._acc.prune(self.store.mark("acc"))
            self.loop.call_later(2.0, self._collect_extension_calls)
        self.meter = Meter(self.usage.used, list(self.config.alerts.thresholds))
        self.loop.call_later(1.0, self._meter_tick)
        rendered = self.prompts.render_all()
        if rendered:
            log.info("rendered %d prompts into %s", rendered, self.prompts.cache_dir)
        for name in SIGNALS:
            signal_path(self.prompts.cache_dir, name)
        # Blast invitations given as text are spoken now, not mid-call on the loop.
        languages = {a.language for a in self.config.access_numbers} or {"pt-BR"}
        for room in self.config.rooms:
            if room.blast and not room.blast.message.lower().endswith(".wav"):
                for lang in languages:
                    self.prompts.render_text(room.blast.message, lang)
        self.ua.start()
        for trunk in self.config.trunks:
            self._add_trunk(trunk)
        if self.kamailio is not None and self.run_kamailio:
            if self.rtpengine is not None:
                # First: Kamailio's rtpengine module asks it for every call.
                self.rtpengine.start()
                self.loop.call_later(1.0, self._watch_rtpengine)
            self.kamailio.start()
            self.loop.call_later(1.0, self._watch_kamailio)
        elif self.kamailio is not None:
            self.loop.call_later(1.0, self._watch_unit_kamailio)
        self.control.start()
        if self.config.web.listen:
            # Imported here: aiohttp and aiortc load only when the console is on.
            from ponte.console import Console

            self.console = Console(self)
            self.console.start()
        for level, note in network_notes(self.config):
            log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", note)
        log.info(
            "listening on sip:%s:%d, %d rooms, access numbers %s",
            self.config.sip.host,
            self.ua.bound_port,
            len(self.config.rooms),
            ", ".join(a.user for a in self.config.access_numbers) or "(none)",
        )
        # What start-up built (configuration, prompt tables, pjsua2 wrappers,
        # aiohttp/aiortc modules) lives as long as the process: out of the
        # collector's sight, a full collection no longer walks it. Those walks
        # stalled the web thread (browser legs' audio) for up to ~90 ms.
        gc.freeze()
        self.notifier.ready(f"listening on {self.config.sip.listen}")
        if self.notifier.watchdog_interval:
            self.loop.call_later(0, self._watchdog)

    def _flush_records(self) -> None:
        """Retry record writes a full disk held back."""
        self.records.flush()
        if not self.loop.stopping:
            self.loop.call_later(5.0, self._flush_records)

    def _collect_extension_calls(self) -> None:
        """History rows for calls between extensions (Kamailio's acc), with
        their network quality while rtpengine still holds the call."""
        if self.loop.stopping:
            return
        try:
            store = self.store
            if store is not None:
                before = store.mark("acc")
                rows, mark = self._acc.collect(before, self.clock.ts())
                for row in rows:
                    # After a restart the same acc rows may be read again.
                    if store.has_call(row["sip_call_id"], "extension"):
                        continue
                    row.update(self._quality(row["sip_call_id"]))
                    self.records.write(store.call_ended, row)
                if mark != before:
                    self.records.write(store.set_mark, "acc", mark)
        finally:
            self.loop.call_later(2.0, self._collect_extension_calls)

    def _quality(self, sip_call_id: str | None, remote_called: bool = False) -> dict[str, Any]:
        """A call's network quality (history columns) as rtpengine measured
        it; nothing when it does not know the call (or does not run)."""
        if self._ng is None or not sip_call_id or time.monotonic() < self._ng_down_until:
            return {}
        try:
            reply = self._ng.query(sip_call_id)
        except UnknownCallError:
            return {}
        except RtpEngineError as exc:
            # Not answering: skip the figures for a while rather than make
            # every call's end (on the loop thread) wait for a time-out.
            self._ng_down_until = time.monotonic() + NG_BACKOFF
            log.warning(
                "rtpengine did not answer a quality query (%s); retrying in %.0f s", exc, NG_BACKOFF
            )
            return {}
        return summary(quality(reply), remote_called)

    def _sip_call_id(self, leg_id: int) -> str | None:
        cdr = self.cdrs.get(leg_id)
        return cdr.sip_call_id if cdr is not None else None

    def _watchdog(self) -> None:
        # Pinged from the loop itself: if the loop is stuck, the pings stop.
        interval = self.notifier.watchdog_interval
        if interval and not self.loop.stopping:
            self.notifier.watchdog()
            self.loop.call_later(interval, self._watchdog)

    def request_stop(self, reason: str) -> None:
        """Stop gracefully (safe from a signal handler); a second request stops now."""
        if self._stop_reason:
            self.loop.stopping = True
            return
        self._stop_reason = reason
        self.loop.call_soon_threadsafe(self._begin_stop)

    def _begin_stop(self) -> None:
        """Refuse new calls, tell connected callers, then end everything."""
        self.accepting = False
        self.notifier.stopping(f"stopping ({self._stop_reason})")
        longest = 0.0
        for leg in list(self.legs.values()):
            if self.ua.has_media(leg.leg):
                self._play(leg, ("service_restarting",), barge_in=False)
                leg.hangup_after_prompt = "the service is restarting"
                prompt = self.prompts.get("service_restarting", leg.language)
                longest = max(longest, prompt.seconds)
        # Bounded well inside systemd's TimeoutStopSec (10 s).
        self.loop.call_later(min(longest + 0.5, 6.0), self._end_loop)

    def _end_loop(self) -> None:
        self.loop.stopping = True

    def drain(self) -> dict[str, Any]:
        """Stop taking new calls (503); calls in progress carry on."""
        self.accepting = False
        log.info("draining: new calls are refused, %d in progress", self.ua.call_count())
        return {"ok": True, "calls": self.ua.call_count()}

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT end every call with BYE and stop; SIGHUP reloads."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, _f: self.request_stop(signal.Signals(s).name))
        signal.signal(signal.SIGHUP, lambda _s, _f: self._reload_in_background("SIGHUP"))

    def _who(self, as_name: str | None, by: str | None, unix_user: str | None) -> str:
        """The name an admin change is recorded under (PermissionDenied if unknown)."""
        if as_name is None and by == "SIGHUP":
            return "SIGHUP"  # systemctl reload: root's signal, the service itself
        if as_name is None and by and not self.config.admins:
            return by
        return who(self.config, as_name, unix_user or "?")

    def _peer_refusal(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """A control request's `--as` checked against the Unix user the kernel
        reported (SO_PEERCRED): the refusal to send back, or None to go on."""
        uid, unix_user = request.get("unix_uid"), str(request.get("unix_user") or "?")
        if request.get("by") == "SIGHUP" and uid != 0:
            # The name reserved for root's signal would skip --as (see _who).
            request.pop("by")
        try:
            may_act_as(self.config, request.get("as"), unix_user, uid)
        except PermissionDenied as exc:
            log.warning("control %s refused, nothing changed: %s", request.get("cmd"), exc)
            return {"ok": False, "error": str(exc), "denied": True}
        return None

    def prepare_reload(self) -> PreparedReload:
        """Read, validate and diff the file: the slow part of a reload, safe on
        any thread (no pjsua2 here), so the loop keeps polling meanwhile."""
        from provisioning.loader import ConfigError, load_config

        old = self.config
        if self.config_path is None:
            return PreparedReload(old, None, "this server was not started from a file")
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            return PreparedReload(old, None, str(exc))
        refused = refusals(new)
        if refused:
            return PreparedReload(old, None, f"{self.config_path}: {'; '.join(refused)}")
        return PreparedReload(old, new, None, diff_configs(old, new))

    def _reload_in_background(self, by: str) -> None:
        """SIGHUP: read the file on a thread, apply it on the loop."""

        def work() -> None:
            prepared = self.prepare_reload()
            self.loop.call_soon_threadsafe(lambda: self.reload(by=by, prepared=prepared))

        threading.Thread(target=work, name="reload", daemon=True).start()

    def _prepare_control(self, request: dict[str, Any]) -> None:
        """Runs on the control socket's thread before the loop gets the request."""
        if request.get("cmd") == "status":
            # rtpengine is asked here, off the loop: a status of many members
            # (or a relay that stopped answering) never holds SIP up.
            calls = {leg: cdr.sip_call_id for leg, cdr in dict(self.cdrs).items()}
            request["_quality"] = {leg: self._quality(cid) for leg, cid in calls.items()}
        if request.get("cmd") == "reload":
            request["_prepared"] = self.prepare_reload()

    def reload(
        self,
        as_name: str | None = None,
        by: str | None = None,
        unix_user: str | None = None,
        source: str = "reload",
        prepared: PreparedReload | None = None,
    ) -> dict[str, Any]:
        """Re-read the provisioning file; on any error keep running as before.

        New calls use the new configuration; calls in progress carry on (a
        removed room lives until its last member leaves). Each changed object
        gets an audit row; an admin's role is checked against the running
        configuration before anything changes.
        """
        if prepared is None or prepared.old is not self.config:
            prepared = self.prepare_reload()  # another reload got in first
        if prepared.new is None:
            log.error("reload refused, configuration unchanged: %s", prepared.error)
            return {"ok": False, "error": prepared.error}
        old, new, changes = self.config, prepared.new, prepared.changes
        try:
            name = self._who(as_name, by, unix_user)
            authorize_changes(old, new, as_name, changes)
        except PermissionDenied as exc:
            log.error("reload refused, configuration unchanged: %s", exc)
            return {"ok": False, "error": str(exc), "denied": True}
        fixed = [
            key
            for key in ("sip", "pbx", "control", "database", "state_dir", "prompts")
            if getattr(new, key) != getattr(old, key)
        ]
        if new.web.listen != old.web.listen:
            fixed.append("web.listen")
        if fixed:
            msg = f"{', '.join(fixed)} changed: these take effect only on restart"
            log.error("reload refused, configuration unchanged: %s", msg)
            return {"ok": False, "error": f"{self.config_path}: {msg}"}
        self.config = new
        if self.console is not None:
            self.console.reloaded(new)
        live = {name: self._rooms[name] for name in self.bridge.rooms if name in self._rooms}
        self._rooms = {**live, **{r.name: r for r in new.rooms}}
        self._pins = self._pin_table(new)
        for trunk in old.trunks:
            if trunk not in new.trunks:
                self.ua.remove_account(f"trunk:{trunk.name}")
        for trunk in new.trunks:
            if trunk not in old.trunks:
                self._add_trunk(trunk)
        self.limiters = {
            t.name: self.limiters.get(t.name) or SlidingWindowLimiter(t.cps) for t in new.trunks
        }
        for t in new.trunks:
            if self.limiters[t.name].limit != SlidingWindowLimiter(t.cps).limit:
                self.limiters[t.name] = SlidingWindowLimiter(t.cps)
        if self.kamailio is not None:
            self.kamailio.reload_subscribers(new)
        elif new.extensions:
            log.warning("extensions added: Kamailio starts with the next restart")
        if self.store is not None and changes:
            self.records.write(self.store.audit, changes, name, source, unix_user)
        log.info(
            "reloaded %s by %s: %d objects changed; %d rooms, %d extensions, %d trunks",
            self.config_path,
            name,
            len(changes),
            len(new.rooms),
            len(new.extensions),
            len(new.trunks),
        )
        return {"ok": True, "changes": len(changes), "by": name}

    def serve_forever(self) -> None:
        """Run until a stop is requested, then hang up and tear down."""
        try:
            self.loop.run()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Hang up all calls (BYE), release pjsua2, close the control socket."""
        n = self.ua.call_count() if self.ua.started else 0
        log.info("stopping (%s): hanging up %d calls", self._stop_reason or "requested", n)
        self.control.stop()
        if self.console is not None:
            self.console.stop()
        for leg in self.legs.values():
            leg.ended_by = "server"
            for t in leg.timers.values():
                t.cancel()
        self.ua.shutdown(timeout=2.0)
        self.legs.clear()
        if not self.records.flush():
            log.error(
                "%d call-record writes could not be made (disk full?)", len(self.records.pending)
            )
        if self.kamailio is not None:
            self.kamailio.stop()
        if self.rtpengine is not None:
            self.rtpengine.stop()

    def _poll(self, ms: int) -> None:
        self.ua.poll(ms)

    def _add_trunk(self, trunk: Any) -> None:
        port = f":{trunk.port}" if trunk.port else ""
        pbx = self.config.pbx
        self.ua.add_account(
            f"trunk:{trunk.name}",
            f"sip:{trunk.username}@{trunk.host}{port}",
            registrar=trunk.registrar if trunk.registration else "",
            username=trunk.username,
            password=trunk.password,
            # Everything to and from the provider passes Kamailio (issue 9):
            # pjsip never talks to the network directly.
            proxy=f"sip:{pbx.internal};lr" if self.kamailio is not None else "",
        )

    def on_registration(self, account: str, code: int, reason: str, active: bool) -> None:
        """A trunk's registration answered (or failed; pjsua retries with back-off)."""
        level = logging.INFO if active or code // 100 == 2 else logging.WARNING
        log.log(level, "%s registration %d %s (active=%s)", account, code, reason, active)

    def _watch_kamailio(self) -> None:
        kam = self.kamailio
        if kam is None or self.loop.stopping:
            return
        if not kam.alive():
            self._kamailio_restarts += 1
            log.error("kamailio died; restarting it (restart %d)", self._kamailio_restarts)
            try:
                kam.start()
            except Exception:  # keep serving conference calls without the proxy
                log.exception("kamailio restart failed")
        delay = min(30.0, 1.0 * 2 ** min(self._kamailio_restarts, 5)) if not kam.alive() else 1.0
        self.loop.call_later(delay, self._watch_kamailio)

    def _watch_rtpengine(self) -> None:
        rtp = self.rtpengine
        if rtp is None or self.loop.stopping:
            return
        if not rtp.alive():
            self._rtpengine_restarts += 1
            log.error("rtpengine died; restarting it (restart %d)", self._rtpengine_restarts)
            try:
                rtp.start()
            except Exception:  # calls keep their signalling; media waits for the relay
                log.exception("rtpengine restart failed")
        n = min(self._rtpengine_restarts, 5)
        delay = min(30.0, 1.0 * 2**n) if not rtp.alive() else 1.0
        self.loop.call_later(delay, self._watch_rtpengine)

    def _watch_unit_kamailio(self) -> None:
        """Under systemd the proxy is its own unit (which restarts it): we only
        notice and say so, once per change."""
        kam = self.kamailio
        if kam is None or self.loop.stopping:
            return
        up = kam.running_elsewhere()
        if up != self._proxy_up:
            if up:
                log.info("kamailio is up (ponte-kamailio.service)")
            else:
                log.error("kamailio is down: extensions cannot register or call")
            self._proxy_up = up
        self.loop.call_later(2.0, self._watch_unit_kamailio)

    # -- SIP events -------------------------------------------------------
    def on_incoming(self, call: IncomingCall) -> None:
        """Route a new call: access number, DID, or an extension's outbound number."""
        cfg = self.config
        caller = self._caller(call)
        self.cdrs[call.leg] = CallRecord(
            call.leg,
            caller,
            call.request_user,
            self.clock.ts(),
            sip_call_id=call.sip_call_id,
        )
        if not self.accepting:
            log.info("call %d refused: draining or stopping (503)", call.leg)
            self.ua.answer(call.leg, 503, "Service Unavailable", {"Retry-After": "5"})
            return
        if self._overloaded(call):
            self.cdrs.pop(call.leg, None)  # a flood must not become a flood of writes
            self.ua.answer(call.leg, 503, "Service Unavailable", {"Retry-After": "2"})
            return
        log.info(
            "call %d incoming from=%s to=%s src=%s",
            call.leg,
            caller,
            call.request_user,
            call.source,
        )
        access = cfg.access_number(call.request_user)
        if access is not None:
            self.cdrs[call.leg].call_type = "conference"
            self._entry_ivr(call, access.language)
            return
        did = cfg.did_target(call.request_user)
        if did is not None:
            log.info("call %d DID %s", call.leg, call.request_user)
            self.cdrs[call.leg].call_type = "did" if did.extension else "conference"
            if did.extension:
                uri = f"sip:{did.extension}@{cfg.pbx.internal}"
                self.b2bua.bridge(call.leg, uri)
                return
            if did.room_access:
                target = cfg.access_number(did.room_access)
                self._entry_ivr(call, target.language if target else did.language)
                return
            self._entry_ivr(call, did.language)
            return
        # Only an extension Kamailio authenticated may call out: it says which
        # in X-Ponte-Line (and strips that header from everyone else).
        from_line = call.line is not None and call.source == cfg.pbx.internal
        route = cfg.trunk_for_number(call.request_user) if from_line else None
        if route is None and from_line and call.request_user in EMERGENCY and cfg.trunks:
            route = (cfg.trunks[0], call.request_user)  # emergency: any trunk will do
        if route is not None:
            self._outbound(call, *route)
            return
        log.info("call %d refused: %r is not a number here (404)", call.leg, call.request_user)
        self.ua.answer(call.leg, 404)

    def _caller(self, call: IncomingCall) -> str:
        """Who calls, for the history, the log and the rooms: the extension
        Kamailio authenticated (X-Ponte-Line, believed only from Kamailio),
        else the From URI's user (never its display name), else the URI."""
        if call.line is not None and call.source == self.config.pbx.internal:
            return call.line
        return call.from_user or call.from_uri

    def _overloaded(self, call: IncomingCall) -> bool:
        """Shed a new call beyond max_new_calls_per_second or max_calls
        (never an extension's emergency call)."""
        if call.line is not None and call.request_user in EMERGENCY:
            return False
        sip = self.config.sip
        now = self.loop.now()
        lo, hi = sip.rtp_range
        # Each call holds an RTP/RTCP pair: past the range, pjsua would scan it
        # all for every new call, which is what turns a flood into a stall.
        cap = min(sip.max_calls, (hi - lo + 1) // 2 - 8)
        if self.ua.call_count() <= cap and self.admission.try_acquire(now):
            return False
        self.shed += 1
        if now - self._shed_logged >= 1.0:  # one line a second, however hard the flood
            self._shed_logged = now
            log.warning("overload: shedding new calls with 503 (%d so far)", self.shed)
        return True

    def _outbound(self, call: IncomingCall, trunk: Any, number: str) -> None:
        """An extension's call to the outside: line profile, CPS limit, then the trunk."""
        decision: Decision | None = None
        dial = number
        line = call.line or call.from_user  # Kamailio's authenticated extension
        cdr = self.cdrs[call.leg]
        cdr.trunk, cdr.line, cdr.call_type = trunk.name, line, "outbound"
        if self.config.lines:
            assert self.usage is not None
            decision = decide(self.config, line, number, self.clock.now(), self.usage.used)
            cdr.call_type = decision.call_type or "outbound"
            cdr.profile_rule = decision.rule
            log.info(
                "call %d line=%s number=%s type=%s decision=%s rule=%s: %s",
                call.leg,
                line,
                number,
                decision.call_type,
                decision.decision,
                decision.rule,
                decision.reason,
            )
            if decision.decision == "deny":
                self._refuse(call, decision.prompt, decision.reason)
                return
            dial = decision.dial or number
        emergency = decision is not None and decision.call_type == "emergency"
        limiter = self.limiters[trunk.name]
        if emergency:
            limiter.try_acquire(self.loop.now())  # counted, never refused
        elif not limiter.try_acquire(self.loop.now()):
            log.warning(
                "call %d refused: trunk %s over %g calls/s (503, Retry-After: 1)",
                call.leg,
                trunk.name,
                trunk.cps,
            )
            self.ua.answer(call.leg, 503, "Service Unavailable", {"Retry-After": "1"})
            return
        port = f":{trunk.port}" if trunk.port else ""
        log.info(
            "call %d outbound ext=%s number=%s trunk=%s",
            call.leg,
            line,
            number,
            trunk.name,
        )
        self.b2bua.bridge(
            call.leg,
            f"sip:{dial}@{trunk.host}{port}",
            account=f"trunk:{trunk.name}",
            trunk=trunk.name,
        )
        if decision is not None:
            self._to_meter[call.leg] = decision

    def _refuse(self, call: IncomingCall, prompt: str, reason: str) -> None:
        """Say why as early media (183), then 403 Forbidden."""
        leg = Leg(call.leg, self._caller(call), call.request_user, "pt-BR")
        leg.refusal, leg.hangup_code = prompt, 403
        leg.hangup_after_prompt = f"refused: {reason}"
        self.legs[call.leg] = leg
        self.ua.answer(call.leg, 183)

    # -- metering ---------------------------------------------------------
    def _bridged_answer(self, pair: Pair) -> None:
        self._answered(pair.a)
        self._start_meter(pair.a)

    def _answered(self, leg_id: int) -> None:
        cdr = self.cdrs.get(leg_id)
        if cdr is not None and cdr.answered is None:
            cdr.answered = self.clock.ts()

    def _call_ended(self, leg_id: int, code: int) -> None:
        """Write the call's history row: who, where, how long, and how it ended."""
        cdr = self.cdrs.pop(leg_id, None)
        if cdr is None or self.store is None:
            return
        cdr.sip_code = code
        for key, value in self._quality(cdr.sip_call_id).items():
            setattr(cdr, key, value)
        if cdr.cut_at_limit:
            cdr.disposition = "cut_at_limit"
        elif cdr.answered is not None:
            cdr.disposition = "answered"
        else:
            cdr.disposition = DISPOSITIONS.get(code, "failed")
        self.records.write(self.store.call_ended, cdr.row(self.clock.ts()))

    def _start_meter(self, leg_id: int) -> None:
        """An allowed outbound call was answered: count it from now."""
        decision = self._to_meter.pop(leg_id, None)
        if decision is None or self.meter is None or not decision.usage_key:
            return
        local = self.clock.now().astimezone(ZoneInfo(self.config.timezone)).date()
        resolved = resolve(self.config, decision.line, local)
        types = (
            limit_types(resolved[1], decision.limit)
            if resolved and decision.limit
            else frozenset({decision.call_type or ""})
        )
        cycle = cycle_start(local, self.config.billing_cycle_day)
        self.meter.start(leg_id, decision, cycle, types, self.loop.now())

    def _bridged_end(self, pair: Pair, code: int, reason: str) -> None:
        self._stop_meter(pair.a)

    def _stop_meter(self, leg_id: int) -> None:
        self._to_meter.pop(leg_id, None)
        if self.meter is not None:
            self._meter_actions(self.meter.stop(leg_id, self.loop.now()))

    def _meter_tick(self) -> None:
        if self.loop.stopping or self.meter is None:
            return
        try:
            self._meter_actions(self.meter.tick(self.loop.now()))
        finally:
            self.loop.call_later(1.0, self._meter_tick)

    def _meter_actions(self, actions: Iterable[MeterAction]) -> None:
        assert self.usage is not None
        for a in actions:
            match a:
                case Flush(key, cycle, call_type, seconds):
                    self.records.write(self.usage.add, key, cycle, call_type, seconds)
                case Cut(call_id, used, limit):
                    log.info("call %d cut at the limit (%.1f of %.0f s used)", call_id, used, limit)
                    if call_id in self.cdrs:
                        self.cdrs[call_id].cut_at_limit = True
                    self.ua.hangup(call_id)
                case Warn(call_id):
                    log.info("call %d warned: 30 s of quota left", call_id)
                    warning = signal_path(self.prompts.cache_dir, "limit_warning")
                    self.ua.play(call_id, [warning], slot="signal")
                case Crossed():
                    self._alert(a)

    def _alert(self, a: Crossed) -> None:
        mark = (a.key, a.cycle, a.limit, a.threshold)
        if mark in self._alerted:
            return
        self._alerted.add(mark)
        assert self.usage is not None
        args = (
            a.key,
            a.cycle,
            a.limit,
            a.threshold,
            a.line,
            a.used,
            a.limit_seconds,
            self.clock.now(),
        )
        if self.records.pending:
            new = True  # the disk is full: alert now, the row waits with the others
            self.records.write(self.usage.record_alert, *args)
        else:
            try:
                new = self.usage.record_alert(*args)
            except sqlite3.OperationalError:
                new = True
                self.records.write(self.usage.record_alert, *args)
        if not new:
            return
        text = (
            f"ponte: {a.key} used {a.threshold}% of {a.limit} "
            f"({a.used / 60:.1f} of {a.limit_seconds / 60:g} min) this cycle"
        )
        log.warning("alert %s", text)
        alerts = self.config.alerts
        if alerts.webhook:
            payload = {
                "key": a.key,
                "line": a.line,
                "limit": a.limit,
                "threshold": a.threshold,
                "used_seconds": round(a.used, 1),
                "limit_seconds": a.limit_seconds,
                "cycle": a.cycle.isoformat(),
                "at": self.clock.now().isoformat(),
            }
            threading.Thread(
                target=_post_json,
                args=(alerts.webhook, payload),
                daemon=True,
                name="alert-webhook",
            ).start()
        pbx = self.config.pbx
        own = [a.line] if a.line.isdigit() else []
        if self.config.extensions:
            for ext in dict.fromkeys([*alerts.message_to, *own]):
                try:
                    self.ua.send_message(f"sip:{ext}@{pbx.internal}", text)
                except Exception as exc:  # an alert must never break a call
                    log.warning("alert MESSAGE to %s failed: %s", ext, exc)

    def _source_key(self, call: IncomingCall) -> str:
        """Who is calling, for the PIN lockout: the extension Kamailio
        authenticated, the caller ID of a call relayed by Kamailio (a trunk's),
        or the IP address of a direct call."""
        # X-Ponte-Line is believed from Kamailio only (it strips it from others).
        if call.line and call.source == self.config.pbx.internal:
            return f"ext:{call.line}"
        if call.source == self.config.pbx.internal:
            return f"cid:{call.from_user or call.from_uri}"
        return f"ip:{call.source.rpartition(':')[0]}"

    def _entry_ivr(self, call: IncomingCall, language: str) -> None:
        leg = Leg(call.leg, self._caller(call), call.request_user, language)
        leg.source_key = self._source_key(call)
        known = self.known_callers.knows(leg.dialed, leg.source_key, self.clock.ts())
        why = self.pin_guard.admit(leg.dialed, leg.source_key, self.pin_clock.now(), known)
        if why is not None:
            # Told why in early media (183), then 403: no PIN is asked.
            log.info(
                "call %d refused: %s is locked out (PIN guessing on %s: %s)",
                call.leg,
                leg.source_key,
                leg.dialed,
                why,
            )
            leg.refusal, leg.hangup_code = "try_later", 403
            leg.hangup_after_prompt = "locked out after wrong PINs"
            self.legs[call.leg] = leg
            self.ua.answer(call.leg, 183)
            return
        ivr = self.config.ivr
        leg.dialogue = PinEntry(
            self._pins.get,
            ivr.interdigit_timeout,
            ivr.total_timeout,
            ivr.max_tries,
            gate=self._gate,
        )
        self.legs[call.leg] = leg
        self.ua.answer(call.leg, 200)
        log.info("call %d answer", call.leg)

    def on_progress(self, leg_id: int, code: int) -> None:
        """An outbound leg rings."""
        self.b2bua.on_progress(leg_id, code)

    def on_media_ready(self, leg_id: int) -> None:
        """Audio is up: start the dialogue (or link a bridged call)."""
        if self.dialout.on_media_ready(leg_id):
            return
        if self.b2bua.owns(leg_id):
            self.b2bua.on_media_ready(leg_id)
            return
        leg = self.legs.get(leg_id)
        if leg is not None and leg.refusal is not None:
            reason = leg.hangup_after_prompt
            self._play(leg, (leg.refusal,), barge_in=False)
            leg.hangup_after_prompt = reason
        elif leg is not None and leg.dialogue is not None:
            self._dialogue(leg, leg.dialogue.start)

    def on_confirmed(self, leg_id: int) -> None:
        """A call is established (a bridged B answered: answer its A)."""
        self.loop.call_later(NO_RTP_AFTER, lambda: self._check_rtp(leg_id))
        if leg_id in self.legs:
            self._answered(leg_id)  # the IVR answered it
        if not self.dialout.on_confirmed(leg_id):
            self.b2bua.on_confirmed(leg_id)

    def _check_rtp(self, leg_id: int) -> None:
        """Say so when an answered call has carried no RTP at all: one-way
        or no audio, usually a NAT or firewall between the phone and us."""
        got = self.ua.rx_packets(leg_id)
        if got == 0:
            log.warning(
                "call %d: no RTP received %.0f s after answer (no audio from the far end: "
                "check the firewall for rtpengine's media ports and the phone's NAT)",
                leg_id,
                NO_RTP_AFTER,
            )

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
        if leg.room is not None and self.dialout.digit(leg_id, digit):
            return
        if leg.room is not None and leg.keys is not None:
            leg.digit_at = now
            self._key_result(leg, leg.keys.digit(digit))
        elif leg.dialogue is not None:
            if digit == "#":
                leg.hash_at = now
            self._dialogue(leg, leg.dialogue.digit, digit)

    def on_disconnected(
        self, leg_id: int, code: int, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        """The call ended, whoever ended it."""
        self._call_ended(leg_id, code)
        if self.b2bua.owns(leg_id) or self.dialout.on_disconnected(leg_id, code):
            if self.b2bua.owns(leg_id):
                self.b2bua.on_disconnected(leg_id, code, reason)
            log.info("call %d hangup code=%d cause=%s", leg_id, code, reason)
            return
        self.dialout.moderator_gone(leg_id)
        if self.console is not None:
            self.console.leg_ended(leg_id)
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
            self._leave(leg)
        log.info("call %d hangup code=%d cause=%s", leg_id, code, reason)

    # -- dialogue ---------------------------------------------------------
    def _gate(self, match: PinMatch) -> str | None:
        """Admission after a right PIN: hours, validity, lock."""
        room = self._rooms[match.room]
        why = refusal(_policy(room), self.clock.now())
        if why is not None:
            log.info("room=%s PIN not valid now: %s", room.name, why)
            return "pin_not_valid_now"
        live = self.bridge.rooms.get(match.room)
        if live is not None and live.locked:
            return "conference_locked"
        return None

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
                    self._start_timer(leg, name, seconds, self._dialogue_timeout)
                case CancelTimer(name):
                    self._cancel_timer(leg, name)
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
                    if leg.prompt_timer is not None:
                        leg.hangup_after_prompt = reason
                    else:
                        self._hangup(leg, reason)

    def _wrong_pin(self, leg: Leg) -> bool:
        """Count a wrong PIN against its source and number; True if that ends
        the call (the number's budget is spent: no caller gets a second try)."""
        guard = self.pin_guard
        verdict = guard.wrong_pin(leg.dialed, leg.source_key, self.pin_clock.now())
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
                self.known_callers.keep / DAY,
            )
        if not verdict.end_call:
            return False
        log.info("call %d: wrong PIN while %s is locked: ending the call", leg.leg, leg.dialed)
        if leg.dialogue is not None:
            leg.dialogue.hangup()  # done: later digits and timers are ignored
        for name in list(leg.timers):
            self._cancel_timer(leg, name)
        self._play(leg, ("try_later",), barge_in=False)  # "too many wrong PINs, try later"
        leg.hangup_after_prompt = "wrong PIN on a locked number"
        return True

    def _right_pin(self, leg: Leg) -> None:
        """Remember a caller ID that keyed a valid PIN on this number (it may
        get in while the number is locked out)."""
        outcome = leg.dialogue.outcome if leg.dialogue is not None else None
        if outcome is None or outcome.match is None or not is_caller_id(leg.source_key):
            return
        when = self.clock.ts()
        self.known_callers.remember(leg.dialed, leg.source_key, when)
        if self.known_store is not None:
            self.records.write(self.known_store.remember, leg.dialed, leg.source_key, when)

    def _dialogue_timeout(self, leg: Leg, name: str) -> None:
        if leg.dialogue is not None and leg.room is None:
            self._dialogue(leg, leg.dialogue.timeout, name)

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
        elif leg.room is not None:
            self.dialout.prompt_done(leg.leg)
        elif leg.dialogue is not None:
            self._dialogue(leg, leg.dialogue.prompt_finished)

    def _start_timer(
        self, leg: Leg, name: str, seconds: float, fire: Callable[[Leg, str], None]
    ) -> None:
        self._cancel_timer(leg, name)

        def run() -> None:
            leg.timers.pop(name, None)
            if leg.leg in self.legs:
                fire(leg, name)

        leg.timers[name] = self.loop.call_later(seconds, run)

    def _cancel_timer(self, leg: Leg, name: str) -> None:
        t = leg.timers.pop(name, None)
        if t:
            t.cancel()

    def _hangup(self, leg: Leg, reason: str) -> None:
        log.info("call %d ending: %s", leg.leg, reason)
        self.ua.hangup(leg.leg, leg.hangup_code)

    def _record_name(self, leg: Leg, seconds: float) -> None:
        beep = signal_path(self.prompts.cache_dir, "record_beep")
        self.ua.play(leg.leg, [beep], slot="signal")
        stamp = self.clock.now().strftime("%Y%m%d")
        path = self._names_dir / stamp / f"leg{leg.leg}-{int(self.clock.ts() * 1000)}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)

        def start(_leg: Leg, _name: str) -> None:
            self.ua.record(leg.leg, path)
            self._start_timer(leg, "name", seconds, done)

        def done(_leg: Leg, _name: str) -> None:
            self.ua.stop_record(leg.leg)
            kept = str(path) if _voiced(path) else None
            if kept is None:
                path.unlink(missing_ok=True)
            log.info("call %d name %s", leg.leg, "recorded" if kept else "silent")
            if leg.dialogue is not None:
                self._dialogue(leg, leg.dialogue.name_recorded, kept)

        self._start_timer(leg, "name", wav_seconds(beep), start)

    # -- rooms ------------------------------------------------------------
    def _rules(self, room: str) -> RoomRules:
        r = self._rooms[room]
        return RoomRules(r.entry_signal, r.end_on_moderator_exit, r.max_members)

    def _join(self, leg: Leg, room: str, role: str) -> None:
        self._stop_prompt(leg)
        live = self.bridge.rooms.get(room)
        if live is not None and (live.locked or live.is_full()):
            why = "conference_locked" if live.locked else "conference_full"
            log.info("call %d refused: room=%s %s", leg.leg, room, why)
            self._run(leg, [Play((why, "goodbye"), barge_in=False), Hangup(why)])
            return
        if leg.dialogue is not None:
            leg.name_path = leg.dialogue.name_path
        self.enter_room(leg, room, role)

    def enter_room(self, leg: Leg, room: str, role: str, joined_by: str = "dial-in") -> None:
        """Put a leg in a room (no admission checks), with its billing record."""
        leg.room, leg.role, leg.joined_by = room, role, joined_by
        keys = self.config.keys
        leg.keys = KeyReader(keys.map, keys.feature_digit_timeout, keys.sequence_timeout)
        now = self.loop.now()
        cmds = self.bridge.join(
            room, leg.leg, role, now, self._rules(room), leg.name_path, joined_by
        )
        live = self.bridge.rooms[room]
        leg.joined_wall = self.clock.ts()
        if self.billing is not None:
            if live.session_id is None:
                live.session_id = self.billing.new_session_id()
                self.records.write(
                    self.billing.open_session, room, leg.joined_wall, live.session_id
                )
            leg.session_id = live.session_id
            self.records.write(self.billing.note_peak, live.session_id, len(live.members))
        self._room_cmds(cmds)
        if leg.hash_at is not None:
            self.join_latencies.append(now - leg.hash_at)
        log.info("call %d join room=%s role=%s members=%d", leg.leg, room, role, len(live.members))

    def _leave(self, leg: Leg) -> None:
        room = leg.room
        assert room is not None
        live = self.bridge.rooms.get(room)
        session_id = leg.session_id
        cmds = self.bridge.leave(leg.leg)
        left = self.clock.ts()
        if self.billing is not None and session_id is not None:
            self.records.write(
                self.billing.leg_ended,
                LegRecord(
                    session_id,
                    leg.leg,
                    leg.caller,
                    leg.role or "",
                    leg.name_path,
                    leg.joined_wall,
                    left,
                    leg.ended_by,
                    leg.joined_by,
                ),
            )
            if room not in self.bridge.rooms:
                self.records.write(self.billing.close_session, session_id, left)
        self._room_cmds(cmds)
        remaining = len(live.members) if live is not None else 0
        log.info("call %d leave room=%s members=%d", leg.leg, room, remaining)

    def _key_result(self, leg: Leg, result: Any) -> None:
        if result.cancel_wait:
            self._cancel_timer(leg, "key")
        if result.wait is not None:
            self._start_timer(leg, "key", result.wait, self._key_timeout)
        if result.action is not None:
            self._action(leg, result.action)
        elif result.unknown is not None:
            log.info("call %d key %s unknown", leg.leg, result.unknown)
            self._room_cmds([Say(leg.leg, ("not_available",))])

    def _key_timeout(self, leg: Leg, _name: str) -> None:
        if leg.keys is not None:
            self._key_result(leg, leg.keys.timeout())

    def _action(self, leg: Leg, action: str) -> None:
        live = self.bridge.room_for(leg.leg)
        if live is None or leg.room is None:
            return
        cfg = self._rooms[leg.room]
        ctx = Context(_policy(cfg), leg.keys or KeyReader({}), cfg.operator)
        cmds = run_action(live, leg.leg, action, ctx)
        refused = any(isinstance(c, Say) and c.items == ("not_available",) for c in cmds)
        log.info(
            "call %d key action=%s%s room=%s",
            leg.leg,
            action,
            " refused" if refused else "",
            leg.room,
        )
        self._room_cmds(cmds)
        if leg.digit_at:
            self.action_latencies.append((action, self.loop.now() - leg.digit_at))

    def _items(self, leg_id: int, items: Iterable[str | Path]) -> list[Path]:
        leg = self.legs.get(leg_id)
        lang = leg.language if leg else "pt-BR"
        paths: list[Path] = []
        for item in items:
            if isinstance(item, Path):
                paths.append(item)
            elif item in SIGNALS:
                paths.append(signal_path(self.prompts.cache_dir, item))
            else:
                paths.append(self.prompts.get(item, lang).path)
        return paths

    def _say(self, leg_id: int, items: Iterable[str | Path], slot: str) -> None:
        """Play to a leg in a slot, and free the player when it is done."""
        leg = self.legs.get(leg_id)
        if leg is None:
            return
        paths = [p for p in self._items(leg_id, items) if p.exists()]
        if not paths:
            return
        self.ua.play(leg_id, paths, slot=slot)
        gen = leg.slot_gen[slot] = leg.slot_gen.get(slot, 0) + 1

        def free() -> None:
            if leg.slot_gen.get(slot) == gen:
                self.ua.stop_play(leg_id, slot=slot)

        self.loop.call_later(sum(wav_seconds(p) for p in paths) + PROMPT_TAIL, free)

    def _room_cmds(self, cmds: Iterable[ControlCommand]) -> None:
        for cmd in cmds:
            match cmd:
                case Connect(src, dst):
                    self.ua.connect(src, dst)
                case Disconnect(src, dst):
                    self.ua.disconnect(src, dst)
                case StartMusic(leg_id):
                    room = self._rooms.get(self.bridge.room_of.get(leg_id, ""))
                    music = room.music if room and room.music else None
                    music = music or signal_path(self.prompts.cache_dir, "hold_music")
                    self.ua.play(leg_id, [music], loop=True, slot="music")
                case StopMusic(leg_id):
                    self.ua.stop_play(leg_id, slot="music")
                case Signal(legs, items):
                    for leg_id in legs:
                        self._say(leg_id, items, "signal")
                case Say(leg_id, items, slot):
                    self._say(leg_id, items, slot)
                case StopSay(leg_id, slot):
                    self.ua.stop_play(leg_id, slot=slot)
                case SetGain(leg_id, level):
                    self.ua.set_listen_level(leg_id, level)
                case StartDialOut(leg_id):
                    self.dialout.start(leg_id)
                case EndDialOut(leg_id, with_guest):
                    self.dialout.end(leg_id, with_guest)
                case StartBlast(leg_id):
                    self.dialout.start_blast(leg_id)
                case EndLeg(leg_id, prompts):
                    leg = self.legs.get(leg_id)
                    if leg is not None:
                        leg.ended_by = "moderator_exit"
                        self._play(leg, prompts, barge_in=False)
                        leg.hangup_after_prompt = f"sent away by the room ({', '.join(prompts)})"

    def blast_message(self, room: str, language: str) -> Path:
        """The WAV a blast callee hears: the room's file, or its text spoken
        (a room without a blast list: the standard invitation)."""
        blast = self._rooms[room].blast
        if blast is None:
            text = INVITATION.get(language, INVITATION["en"])
            return self.prompts.render_text(text, language)
        if blast.message.lower().endswith(".wav"):
            return Path(blast.message)
        return self.prompts.render_text(blast.message, language)

    # -- control socket ---------------------------------------------------
    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd in ("reload", "room"):
            refused = self._peer_refusal(request)
            if refused is not None:
                return refused
        if cmd == "reload":
            return self.reload(
                request.get("as"),
                request.get("by"),
                request.get("unix_user"),
                request.get("source", "reload"),
                request.get("_prepared"),
            )
        if cmd == "room":
            return room_command(self, request)
        if cmd == "drain":
            return self.drain()
        if cmd == "status":
            prepared = request.get("_quality") or {}
            return {
                "calls": self.ua.call_count(),
                "legs": len(self.legs),
                "conf_ports": self.ua.conf_ports(),
                "links": self.bridge.link_count(),
                "rooms": {
                    name: {
                        "locked": room.locked,
                        "lecture": room.lecture,
                        "started": room.started,
                        "members": [
                            {
                                "leg": m.leg,
                                "role": m.role,
                                "muted": m.muted,
                                "caller": self.legs[m.leg].caller,
                                # (heard, said), 0-255: what talk detection reads
                                "levels": self.ua.levels(m.leg),
                                "hand": bool(self.console and m.leg in self.console.hands),
                                # rtpengine's live figures for the member's call
                                "quality": prepared.get(m.leg, {}),
                            }
                            for m in room.members.values()
                            if m.leg in self.legs
                        ],
                    }
                    for name, room in self.bridge.rooms.items()
                },
                "join_latencies": list(self.join_latencies),
                "action_latencies": [list(a) for a in self.action_latencies],
                "accepting": self.accepting,
                "shed": self.shed,
                "screened": self.ua.screened(),
                "web_legs": self.console.leg_stats() if self.console else {},
            }
        return {"error": f"unknown command {cmd!r}"}


# What a callee invited into a room from the web console hears first.
INVITATION = {
    "pt-BR": "Você foi convidado para uma conferência. Conectando agora.",
    "en": "You are invited to a conference call. Connecting you now.",
}


def _post_json(url: str, payload: dict[str, Any]) -> None:
    """POST an alert to the webhook (in its own thread: the loop never waits)."""
    req = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()
    except (OSError, ValueError) as exc:
        log.warning("alert webhook %s failed: %s", url, exc)


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
