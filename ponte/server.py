"""The app server's life: build the parts, start, reload (ponte.reload),
answer the control socket, stop.

What happens to a call lives below: ponte.routing (new calls, SIP events),
ponte.entry (the PIN), ponte.rooms (rooms and keys), ponte.dialout,
ponte.media (prompts and timers), ponte.calllog (history, meter, alerts), all
over the leg table (ponte.legs). See ARCHITECTURE.md. Everything runs on the
loop thread, which alone calls pjsua2.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ivr.prompts import PromptLibrary
from ivr.tones import SIGNALS
from lines.policy import load_calendar
from pbx.kamailio import set_web_token
from pbx.opus import OpusSettings
from pbx.rtpengine import NgClient
from pbx.sipua import SipEvents, SipUA
from pbx.useragent import UserAgent
from ponte import clusterview
from ponte.calllog import CallLog
from ponte.clock import WallClock
from ponte.control import ControlServer
from ponte.dialout import DialOut
from ponte.edge import Edge
from ponte.entry import EntryIvr
from ponte.extcalls import AccReader
from ponte.follow import ConfigFollower
from ponte.helpdesk import HelpDesk
from ponte.legs import LegTable
from ponte.loop import Loop
from ponte.media import Media
from ponte.nodeconf import NodeSettings
from ponte.reload import Reloader
from ponte.roomops import room_command
from ponte.rooms import RoomService
from ponte.routing import Router
from ponte.scheduleops import schedule_command
from ponte.scheduler import Scheduler
from ponte.sdnotify import Notifier
from ponte.services import Services
from ponte.status import status
from ponte.stores import Stores
from provisioning.admins import PermissionDenied, may_act_as
from provisioning.advice import network_notes
from provisioning.schema import Config
from store.engine import is_postgres

if TYPE_CHECKING:
    from ponte.console import Console

log = logging.getLogger("ponte.call")

# How long a status waits for rtpengine's figures of the members (the control
# client gives up after 5 s; members not answered by then show none).
STATUS_QUALITY_S = 2.0


def default_node(config: Config) -> str:
    """ "local" with a SQLite file (one server); on a shared PostgreSQL the
    host and SIP port, which tell this server from others and stay the same
    across its restarts."""
    if not is_postgres(config.database):
        return "local"
    return f"{socket.gethostname()}:{config.sip.port}"


class AppServer:
    """Conference entry IVR, rooms and PBX routing on top of one SIP user agent."""

    def __init__(
        self,
        config: Config,
        clock: WallClock | None = None,
        config_path: Path | None = None,
        run_kamailio: bool = True,
        agent: Callable[..., UserAgent] = SipUA,
        monotonic: Callable[[], float] = time.monotonic,
        node: str | None = None,
        settings: NodeSettings | None = None,
    ) -> None:
        """`agent` makes the SIP user agent (a fake in the in-process tests),
        `monotonic` is the clock of every timer (theirs too), `node` this
        server's name in the records (see `default_node`), `settings` this
        node's command-line overrides (already applied to `config`)."""
        self.settings = settings = settings or NodeSettings()
        self.config_path = config_path
        clock = clock or WallClock.from_env()
        loop = Loop(self._poll, clock=monotonic)
        sip = config.sip
        legs = LegTable()
        stores = Stores(config.database, config.state_dir, node or default_node(config))
        self.edge = Edge(
            config,
            loop,
            run_kamailio,
            state=settings.edge_state,
            owner=not settings.edge_elsewhere,
            remote=settings.remote_edge,
        )
        # Queried on the loop thread, on loopback: a reply takes well under
        # a millisecond, and a dead relay costs at most this timeout once.
        ng = NgClient.for_config(config, timeout=0.2, retries=1) if self.edge.rtpengine else None
        # The adapter's events go to the router (made below, with the adapter
        # it steers), which hands them to the legs' handlers.
        ua = agent(
            cast(SipEvents, None),
            sip.host,
            sip.port,
            sip.rtp_range,
            codecs=sip.codecs,
            user_agent=sip.user_agent,
            clock_rate=sip.clock_rate,
            # Opus at the bridge's rate, not pjmedia's 48 kHz: the mix is no
            # wider than the bridge, and encoding it fullband (after an 8 -> 48
            # kHz resample) per leg doubled the bridge clock's cost of every
            # Opus leg (browsers through the edge: bench/webrtc.py).
            opus_rate=sip.clock_rate,
            opus=OpusSettings(**sip.opus.model_dump()),
            talker_threshold_dbfs=sip.talker_threshold_dbfs,
            talker_hangover_ms=sip.talker_hangover_ms,
            shared_encode=sip.shared_encode,
            jitter_discard=sip.jitter_discard,
        )
        prompts = PromptLibrary(
            config.prompts.cache_dir, config.prompts.override_dir, rate=sip.clock_rate
        )
        media = Media(ua, prompts, loop, legs)
        calllog = CallLog(config, clock, loop, ua, stores, ng, legs, media)
        rooms = RoomService(config, clock, loop, ua, legs, media, stores)
        entry = EntryIvr(config, clock, loop, ua, media, rooms, calllog, stores)
        router = Router(config, clock, loop, ua, legs, media, calllog, entry)
        ua.events = router
        dialout = DialOut(config, clock, loop, ua, legs, media, rooms, calllog, router, stores)
        rooms.outreach = dialout
        scheduler = Scheduler(config, clock, loop, stores, dialout, entry)
        helpdesk = HelpDesk(config, clock, loop, ua, legs, media, rooms, entry, calllog)
        rooms.helpline = entry.desk = helpdesk
        self.svc = Services(
            config,
            clock,
            loop,
            ua,
            stores,
            legs,
            media,
            calllog,
            rooms,
            entry,
            router,
            dialout,
            scheduler,
            helpdesk,
        )
        self.notifier = Notifier()
        self.control = ControlServer(
            config.control.socket, self._control, loop, prepare=self._prepare_control
        )
        self.console: Console | None = None  # the web console, when web.listen is set
        self.reloader = Reloader(self.svc, self.edge, config_path, settings.apply)
        self.reloader.audits = settings.primary
        self.follower: ConfigFollower | None = None  # a node on another machine (follow.py)
        self._stop_reason = ""

    @property
    def config(self) -> Config:
        """The running configuration."""
        return self.svc.config

    @property
    def loop(self) -> Loop:
        """The loop thread's event loop."""
        return self.svc.loop

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
        svc, config = self.svc, self.config
        svc.stores.open()
        calls, legs, sessions = svc.stores.close_crashed()
        if calls or legs or sessions:
            log.warning(
                "the last run ended in a crash: closed %d call records, %d conference legs "
                "and %d sessions at their last checkpoint (ended_by: crash)",
                calls,
                legs,
                sessions,
            )
        svc.entry.load_known_callers()
        # From here on records are written off the loop thread.
        svc.stores.writer.start()
        svc.loop.call_later(5.0, self._flush_records)
        svc.rooms.recordings.start_retention()
        kam = self.edge.kamailio
        acc = AccReader(kam.acc_db_path) if kam is not None and self.settings.primary else None
        # An adopted Kamailio (a crashed ponte's) is writing its acc file now.
        adopting = kam is not None and kam.adoptable() is not None
        svc.calllog.start(acc, prune_acc=self.edge.run_children and not adopting)
        prompts = svc.media.prompts
        rendered = prompts.render_all()
        if rendered:
            log.info("rendered %d prompts into %s", rendered, prompts.cache_dir)
        for name in SIGNALS:
            svc.media.signal(name)
        # Blast invitations given as text are spoken now, not mid-call on the loop.
        languages = {a.language for a in config.access_numbers} or {"pt-BR"}
        for room in config.rooms:
            if room.blast and not room.blast.message.lower().endswith(".wav"):
                for lang in languages:
                    prompts.render_text(room.blast.message, lang)
        svc.ua.start()
        # Not at the first call out: its decision runs on the loop (load_calendar).
        # After SIP is bound: a call arriving meanwhile waits in the socket
        # instead of bouncing off a closed port (a retransmission later).
        load_calendar(config.holidays, dt.date.today())
        svc.entry.handoff.start()
        store = svc.entry.handoff.store
        if self.settings.remote_edge and store is not None:
            # On its own machine, a node follows the edge's one YAML.
            self.follower = ConfigFollower(svc.loop, self.reloader, store)
            self.follower.start()
        for trunk in config.trunks:
            svc.router.add_trunk(trunk, self.edge.runs)
        self.edge.start()
        self.control.start()
        # After SIP is up: a schedule due now (missed while down) calls at once.
        svc.scheduler.start()
        if config.web.listen and self.settings.primary:
            # One console per machine: under `--nodes N` only the first child
            # serves web.listen (the others would find it taken and die); it
            # sees every node through the shared registry, and its browsers'
            # tokens go to the one edge, whichever node their calls reach.
            # Imported here: aiohttp loads only when the console is on.
            from ponte.console import Console

            self.console = self.reloader.console = Console(svc)
            self.console.reloader = self.reloader
            kam = self.edge.kamailio
            if kam is not None and config.pbx.websocket.listen:
                runtime = kam.runtime
                self.console.web_tokens = lambda token, room, peer: set_web_token(
                    runtime, token, room, peer
                )
            self.console.start()
        for level, note in network_notes(config):
            log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", note)
        log.info(
            "listening on sip:%s:%d, %d rooms, access numbers %s",
            config.sip.host,
            svc.ua.bound_port,
            len(config.rooms),
            ", ".join(a.user for a in config.access_numbers) or "(none)",
        )
        # What start-up built (configuration, prompt tables, pjsua2 wrappers,
        # aiohttp modules) lives as long as the process: out of the
        # collector's sight, a full collection no longer walks it. Those walks
        # stalled the loop and web threads for up to ~90 ms.
        gc.freeze()
        self.notifier.ready(f"listening on {config.sip.listen}")
        if self.notifier.watchdog_interval:
            svc.loop.call_later(0, self._watchdog)

    def _flush_records(self) -> None:
        """Retry record writes a full disk held back (the writer thread retries
        by itself; this nudges it)."""
        self.svc.stores.writer.flush()
        if not self.loop.stopping:
            self.loop.call_later(5.0, self._flush_records)

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
        svc = self.svc
        svc.router.accepting = False
        self.notifier.stopping(f"stopping ({self._stop_reason})")
        longest = 0.0
        for leg in svc.legs:
            if svc.ua.has_media(leg.id):
                svc.media.play_then_hangup(
                    leg, ("service_restarting",), "the service is restarting"
                )
                prompt = svc.media.prompts.get("service_restarting", leg.language)
                longest = max(longest, prompt.seconds)
        # Bounded well inside systemd's TimeoutStopSec (10 s).
        self.loop.call_later(min(longest + 0.5, 6.0), self._end_loop)

    def _end_loop(self) -> None:
        self.loop.stopping = True

    def drain(self) -> dict[str, Any]:
        """Stop taking new calls (503); calls in progress carry on."""
        self.svc.router.accepting = False
        calls = self.svc.ua.call_count()
        log.info("draining: new calls are refused, %d in progress", calls)
        return {"ok": True, "calls": calls}

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT end every call with BYE and stop; SIGHUP reloads."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, _f: self.request_stop(signal.Signals(s).name))
        signal.signal(signal.SIGHUP, lambda _s, _f: self.reloader.in_background("SIGHUP"))

    def serve_forever(self) -> None:
        """Run until a stop is requested, then hang up and tear down."""
        try:
            self.loop.run()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Hang up all calls (BYE), release pjsua2, close the control socket."""
        svc = self.svc
        n = svc.ua.call_count() if svc.ua.started else 0
        log.info("stopping (%s): hanging up %d calls", self._stop_reason or "requested", n)
        self.control.stop()
        if self.console is not None:
            self.console.stop()
        if self.follower is not None:
            self.follower.stop()
        for leg in svc.legs:
            leg.ended_by = "server"
            svc.media.cancel_all(leg)
        # Recordings end with the server: their files are completed and
        # their records written before the writer stops below.
        svc.rooms.recordings.stop_all("shutdown")
        svc.ua.shutdown(timeout=2.0)
        svc.legs.clear()
        if svc.stores.opened:
            svc.entry.handoff.stop()
        writer = svc.stores.writer
        if not writer.stop(timeout=5.0):
            log.error(
                "%d call-record writes could not be made (%s away, or its disk full)",
                len(writer.pending),
                writer.where,
            )
        self.edge.stop()

    def _poll(self, ms: int) -> None:
        self.svc.ua.poll(ms)

    # -- control socket ---------------------------------------------------
    def _prepare_control(self, request: dict[str, Any]) -> None:
        """Runs on the control socket's thread before the loop gets the request."""
        if request.get("cmd") == "status":
            # rtpengine is asked here, off the loop: a status of many members
            # (or a relay that stopped answering) never holds SIP up.
            calls = {leg: rec.sip_call_id for leg, rec in self.svc.legs.records().items()}
            request["_quality"] = self.svc.calllog.qualities(calls, STATUS_QUALITY_S)
            # The other nodes, from the shared records (off the loop too).
            request["_cluster"] = clusterview.shared(self.svc)
        if request.get("cmd") == "reload":
            request["_prepared"] = self.reloader.prepare()

    def _peer_refusal(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """A control request's `--as` checked against the Unix user the kernel
        reported (SO_PEERCRED): the refusal to send back, or None to go on."""
        uid, unix_user = request.get("unix_uid"), str(request.get("unix_user") or "?")
        if request.get("by") == "edge" or (request.get("by") == "SIGHUP" and uid != 0):
            # The names reserved for root's signal and for the edge's published
            # provisioning (never sent over this socket) would skip --as
            # (see acting_admin).
            request.pop("by")
        try:
            may_act_as(self.config, request.get("as"), unix_user, uid)
        except PermissionDenied as exc:
            log.warning("control %s refused, nothing changed: %s", request.get("cmd"), exc)
            return {"ok": False, "error": str(exc), "denied": True}
        return None

    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd in ("reload", "room", "schedule"):
            refused = self._peer_refusal(request)
            if refused is not None:
                return refused
        if cmd == "reload":
            return self.reloader.reload(
                request.get("as"),
                request.get("by"),
                request.get("unix_user"),
                request.get("source", "reload"),
                request.get("_prepared"),
            )
        if cmd == "room":
            return room_command(self.svc, request)
        if cmd == "schedule":
            return schedule_command(self.svc, request)
        if cmd == "drain":
            return self.drain()
        if cmd == "status":
            quality = request.get("_quality") or {}
            return status(self.svc, self.console, quality, request.get("_cluster"))
        return {"error": f"unknown command {cmd!r}"}
