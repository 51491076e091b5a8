"""The app server's side of the web console and of browser participants.

Two threads meet here. The loop thread owns pjsua2 and every room; the web
thread runs aiohttp on asyncio. `Console` implements
`web.backend.Backend` for the web thread: each call that reads or changes a
room is handed to the loop thread (`_on_loop`) and awaited. The loop thread
samples the rooms and the members' speech levels every `SAMPLE_SECONDS`,
and `RoomWatch` turns the difference into events for the hub (WebSocket
subscribers and webhooks).

Each SIP member's network quality (rtpengine's loss, jitter, round trip and
MOS for the member's call) is measured much less often, `QUALITY_SECONDS`
apart, on a worker thread; it rides along in the snapshot and, when it
changed, as a `quality` event for the WebSockets (web/hub.py `LIVE_ONLY`).

A browser participant keys the PIN on the join page; the checks a phone's
PIN meets (the guessing lockout by source, the room's hours, lock and size)
run here, then a one-time token goes to Kamailio (htable `webtok`) and the
page calls `sip:web-<token>@...` over Kamailio's WebSocket. Kamailio takes
the token and relays the INVITE, rtpengine turns DTLS-SRTP into plain RTP,
and the app server admits the leg (ponte/entry.py `EntryIvr.web`): from then
on it is a SIP member like any other (music until the moderator, billing,
call history). No media passes through Python.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from bridge.controls import Say, mute, set_hand
from ponte import clusterview
from ponte.legs import Leg
from ponte.recordings import file_path
from ponte.roomops import admit, room_command
from ponte.rooms import Member
from ponte.roomwatch import MemberView, RoomView, RoomWatch
from ponte.scheduleops import schedule_command
from ponte.services import Services
from provisioning.admins import PermissionDenied
from provisioning.diff import Change
from web.hub import EventHub, Subscription
from web.server import WebServer

if TYPE_CHECKING:
    from provisioning.schema import Config

log = logging.getLogger("ponte.web")

T = TypeVar("T")
SAMPLE_SECONDS = 0.1  # rooms and talk levels, 10 times a second
LOOP_TIMEOUT = 10.0  # an answer from the loop thread, at most
# rtpengine's figures come from RTCP reports, sent every ~5 s by each side:
# asking more often than that only costs an ng round trip per member.
QUALITY_SECONDS = 5.0
NUMBER = re.compile(r"^\+?[0-9]{2,20}$")
# A browser's key -> what it does (on the loop thread).
WEB_KEY_ACTIONS: dict[str, Callable[[Services, Leg], None]] = {}


def _web_key(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        WEB_KEY_ACTIONS[name] = fn
        return fn

    return register


def _set_mute(svc: Services, leg: Leg, on: bool) -> None:
    room = svc.rooms.room_of(leg.id)
    if room is not None and leg.id in room.members:
        svc.rooms.apply(mute(room, leg.id, on))


@_web_key("mute")
def _key_mute(svc: Services, leg: Leg) -> None:
    _set_mute(svc, leg, True)


@_web_key("unmute")
def _key_unmute(svc: Services, leg: Leg) -> None:
    _set_mute(svc, leg, False)


@_web_key("hand")
def _key_hand(svc: Services, leg: Leg) -> None:
    # The room's hand, as *94 raises it: the queue, the moderators' count and
    # the console all see one state. Press again to lower it.
    room = svc.rooms.room_of(leg.id)
    if room is not None and leg.id in room.members:
        svc.rooms.apply(set_hand(room, leg.id, leg.id not in room.hands))


@_web_key("help")
def _key_help(svc: Services, leg: Leg) -> None:
    keys = leg.handler.keys if isinstance(leg.handler, Member) else None
    svc.rooms.act(leg, "help", keys)


@dataclass
class _Quality:
    """One SIP member's call quality as last measured (loop thread)."""

    due: float  # loop time of the next measurement
    # {"loss_in", "loss_out", "jitter_in", "jitter_out", "rtt_ms", "mos"}
    # (each may be None), or None: rtpengine has no figures for the call.
    figures: dict[str, Any] | None = None


def _measure(
    svc: Services, calls: list[tuple[int, str]], stop: threading.Event
) -> list[tuple[int, Any]]:
    """rtpengine's figures for each (leg, SIP Call-ID): runs on the quality
    worker thread. `CallLog.quality` only sends an ng request (a socket of
    its own per request) and summarises the reply, so it is safe off the loop
    thread; a call it knows no figures for gives None. `stop` cuts a batch
    short: with rtpengine gone each query waits out its retries."""
    out: list[tuple[int, Any]] = []
    for leg_id, call_id in calls:
        if stop.is_set():
            break
        figures = svc.calllog.quality(call_id)
        # Known once RTCP reported anything; before that, or for a call
        # rtpengine never relayed, there is nothing to show.
        out.append((leg_id, figures if any(v is not None for v in figures.values()) else None))
    return out


class Reloads(Protocol):
    """What the console needs of ponte.reload.Reloader (which sits above it)."""

    def prepare(self) -> Any:
        """Read and diff the file, off the loop."""
        ...

    def reload(
        self, as_name: str | None, by: str | None, unix_user: str | None, source: str, prepared: Any
    ) -> dict[str, Any]:
        """Check who asks and apply the prepared file, on the loop."""
        ...


class Console:
    """The web console's backend, living in the app server."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        # The server's, for the console's reload (set once both exist).
        self.reloader: Reloads | None = None
        web = svc.config.web
        self.hub = EventHub(web.webhooks)
        self.server = WebServer(self, self.hub, web.listen or "127.0.0.1:0")
        self.watch = RoomWatch()
        self._snapshot: dict[str, Any] = {"rooms": {}}
        self._timer: Any = None
        # SIP members' call quality (loop thread), and the one thread that asks
        # rtpengine: a slow or absent rtpengine (0.6 s per unanswered query)
        # must not hold up SIP and the sampling. One batch at a time.
        self._quality: dict[int, _Quality] = {}
        self._quality_pool: ThreadPoolExecutor | None = None
        self._quality_busy = False
        self._quality_stop = threading.Event()
        # Hands a browser's one-time token to Kamailio (token, room, address;
        # set by the server when the edge serves browsers: pbx.websocket).
        self.web_tokens: Callable[[str, str, str], None] | None = None

    # -- lifecycle (loop thread) --------------------------------------------
    def start(self) -> None:
        """Listen, and start sampling the rooms."""
        self.server.start()
        self._timer = self.svc.loop.call_later(SAMPLE_SECONDS, self._tick)

    def stop(self) -> None:
        """Stop sampling; close the web server."""
        if self._timer is not None:
            self._timer.cancel()
        self._quality_stop.set()
        if self._quality_pool is not None:
            # A query under way ends within the ng client's retries (0.6 s).
            self._quality_pool.shutdown(wait=False, cancel_futures=True)
        self.server.stop()

    def reloaded(self, config: Config) -> None:
        """A reload changed the configuration: new webhooks apply at once."""
        self.hub.set_webhooks(config.web.webhooks)

    # -- sampling (loop thread) ---------------------------------------------
    def _tick(self) -> None:
        self._timer = self.svc.loop.call_later(SAMPLE_SECONDS, self._tick)
        views, levels = self._views()
        now = self.svc.loop.now()
        events = self.watch.update(views, levels, now, self.svc.clock.ts())
        self._refresh_quality(views, now)
        # Quality is not part of MemberView: figures that change every few
        # seconds must not look like a member changing (RoomWatch diffs the
        # views); it is added to the snapshot the watch builds afresh.
        snapshot = self.watch.snapshot()
        for room in snapshot["rooms"].values():
            for member in room["members"]:
                q = self._quality.get(member["id"])
                member["quality"] = q.figures if q is not None else None
        self._snapshot = snapshot
        for event in events:
            self.hub.publish(event)

    def _views(self) -> tuple[dict[str, RoomView], dict[int, int]]:
        svc = self.svc
        views: dict[str, RoomView] = {}
        levels: dict[int, int] = {}
        for name, room in svc.rooms.live.rooms.items():
            members = []
            started: float | None = None
            for leg_id, m in room.members.items():
                leg = svc.legs.get(leg_id) if isinstance(leg_id, int) else None
                if leg is None or leg.seat is None:
                    continue
                if started is None or leg.seat.joined_wall < started:
                    started = leg.seat.joined_wall
                members.append(
                    MemberView(
                        leg.id,
                        leg.caller,
                        m.role,
                        bool(m.name_path),
                        m.muted,
                        leg.id in room.hands,
                        "web" if leg.seat.joined_by == "web" else "sip",
                        m.held,
                        svc.helpdesk.wants_help(leg.id),
                    )
                )
                heard_said = svc.ua.levels(leg.id)
                if heard_said is not None:
                    levels[leg.id] = heard_said[1]
            cfg = svc.rooms.configs.get(name)
            views[name] = RoomView(
                cfg.department if cfg else None,
                room.locked,
                room.lecture,
                started,
                tuple(members),
                room.recording is not None,
            )
        return views, levels

    # -- call quality (loop thread, the queries on a worker) ----------------
    def _refresh_quality(self, views: dict[str, RoomView], now: float) -> None:
        """Forget members who left; send the members whose figures are
        `QUALITY_SECONDS` old to the worker (browsers too: they are SIP legs
        rtpengine relays). A call rtpengine does not relay (straight to the
        app server) has no figures: it answers "unknown call", cheaply,
        every QUALITY_SECONDS."""
        sip = {m.id for view in views.values() for m in view.members}
        for gone in self._quality.keys() - sip:
            del self._quality[gone]
        if self._quality_busy or self.svc.calllog.ng is None:
            return
        due: list[tuple[int, str]] = []
        for leg_id in sip:
            q = self._quality.setdefault(leg_id, _Quality(now))
            if now < q.due:
                continue
            # Scheduled from the ask, not the answer: at most once per period.
            q.due = now + QUALITY_SECONDS
            leg = self.svc.legs.get(leg_id)
            call_id = leg.record.sip_call_id if leg is not None and leg.record else None
            if call_id:  # a dialled-out guest has none
                due.append((leg_id, call_id))
        if not due:
            return
        if self._quality_pool is None:
            self._quality_pool = ThreadPoolExecutor(1, thread_name_prefix="ponte-quality")
        self._quality_busy = True
        try:
            future = self._quality_pool.submit(_measure, self.svc, due, self._quality_stop)
        except RuntimeError:  # shut down: the console is stopping
            self._quality_busy = False
            return
        future.add_done_callback(
            lambda f: self.svc.loop.call_soon_threadsafe(lambda: self._measured(f))
        )

    def _measured(self, future: Future[list[tuple[int, Any]]]) -> None:
        """A batch came back (loop thread): keep the figures; announce those
        that changed, for members still in their room."""
        self._quality_busy = False
        if future.cancelled():
            return
        try:
            results = future.result()
        except Exception:  # a bug, not rtpengine (its errors give None)
            log.exception("call quality: measuring failed")
            return
        changed: dict[int, Any] = {}
        for leg_id, figures in results:
            q = self._quality.get(leg_id)
            if q is None or q.figures == figures:
                continue  # left while measured, or nothing new to show
            q.figures = figures
            changed[leg_id] = figures
        if not changed:
            return
        wall = self.svc.clock.ts()
        for name, view in self.watch.rooms.items():
            for m in view.members:
                if m.id in changed:
                    self.hub.publish(
                        {
                            "type": "quality",
                            "room": name,
                            "member": m.id,
                            "caller": m.caller,
                            "quality": changed[m.id],
                            "ts": wall,
                        }
                    )

    # -- hand-over between the threads --------------------------------------
    async def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the loop thread and await its result (or exception)."""
        aloop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = aloop.create_future()

        def settle(result: Any, exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        def run() -> None:
            try:
                result = fn()
            except Exception as exc:  # handed back to the awaiting side
                aloop.call_soon_threadsafe(settle, None, exc)
            else:
                aloop.call_soon_threadsafe(settle, result, None)

        self.svc.loop.call_soon_threadsafe(run)
        return await asyncio.wait_for(fut, LOOP_TIMEOUT)

    # -- web.backend.Backend (web thread) -----------------------------------
    def running_config(self) -> Config:
        """The configuration the server runs (replaced whole on reload)."""
        return self.svc.config

    async def snapshot(self) -> dict[str, Any]:
        """The rooms as of the last sample (at most SAMPLE_SECONDS old)."""
        return self._snapshot

    def subscribe(self) -> Subscription:
        """A new event subscription (on the web loop)."""
        return self.hub.subscribe()

    async def room_action(
        self, admin: str, room: str, action: str, member: int | None, number: str | None
    ) -> dict[str, Any]:
        """An admin's action, re-checked against the role and audited."""
        if action == "dial":
            return await self._on_loop(lambda: self._dial(admin, room, number or ""))
        request = {"action": action, "room": room, "member": member, "as": admin}
        return await self._on_loop(lambda: room_command(self.svc, request, source="web"))

    async def reload(self, admin: str) -> dict[str, Any]:
        """The console's reload: read the file off both loops, then apply it on
        the loop thread through the Reloader, which checks the admin."""
        reloader = self.reloader
        if reloader is None:
            return {"ok": False, "error": "this server cannot reload"}
        prepared = await asyncio.to_thread(reloader.prepare)
        return await self._on_loop(lambda: reloader.reload(admin, None, None, "web", prepared))

    async def schedule(self, admin: str, request: dict[str, Any]) -> dict[str, Any]:
        """A scheduled dial-out action, on the CLI's path (role re-checked, audited)."""
        asked = {**request, "as": admin}
        return await self._on_loop(lambda: schedule_command(self.svc, asked, source="web"))

    async def name_wav(self, room: str, member: int) -> bytes | None:
        """The member's recorded name, read off the loop thread."""

        def path() -> str | None:
            live = self.svc.rooms.live.rooms.get(room)
            m = live.members.get(member) if live else None
            return m.name_path if m else None

        found = await self._on_loop(path)
        if not found:
            return None
        try:
            return await asyncio.to_thread(Path(found).read_bytes)
        except OSError:
            return None

    async def recordings(self) -> list[dict[str, Any]]:
        """The recordings' records, read on a worker thread."""
        store = self.svc.rooms.recordings.store
        if store is None:
            return []
        return await asyncio.to_thread(lambda: list(store.rows()))

    async def recording(self, rec_id: int) -> dict[str, Any] | None:
        """One recording's record."""
        store = self.svc.rooms.recordings.store
        return None if store is None else await asyncio.to_thread(store.get, rec_id)

    async def recording_file(self, rec_id: int, name: str) -> Path | None:
        """A file its record lists, inside the recordings folder."""
        row = await self.recording(rec_id)
        if row is None:
            return None
        root = self.svc.rooms.recordings.root
        return await asyncio.to_thread(file_path, root, row["folder"], name, row["files"])

    async def usage(self) -> list[dict[str, Any]]:
        """The usage-vs-limit rows of `ponte report usage`, with line and department."""
        from ponte.reports import usage_rows

        cfg, stores = self.svc.config, self.svc.stores
        if not stores.opened:
            return []
        return await asyncio.to_thread(lambda: list(usage_rows(cfg, store=stores.usage)))

    async def minutes_per_day(
        self, days: int, departments: frozenset[str] | None = None
    ) -> list[tuple[str, float]]:
        """Call minutes per local day from the call history, oldest first."""
        cfg, stores = self.svc.config, self.svc.stores
        if not stores.opened:
            return _minutes_per_day(cfg, days, departments, [])
        since = _first_day(cfg, days)[1]
        return await asyncio.to_thread(
            lambda: _minutes_per_day(cfg, days, departments, stores.calls.call_rows(since))
        )

    async def cluster(self) -> dict[str, Any]:
        """Every node: the shared registry read on a worker thread, or (one
        node, SQLite) this node's live figures from the loop thread."""
        found = await asyncio.to_thread(clusterview.shared, self.svc)
        if found is not None:
            return found
        return await self._on_loop(lambda: clusterview.local(self.svc))

    # -- browser participants ------------------------------------------------
    async def web_join(self, pin: str, peer: str) -> dict[str, Any]:
        """Admit a browser by PIN: a one-time token in Kamailio, and where
        the page calls with it (README "Browsers")."""
        ws = self.svc.config.pbx.websocket
        sink = self.web_tokens
        if ws.url is None or sink is None:
            return {"ok": False, "error": "browsers cannot join here (pbx.websocket is not set)"}
        admitted = await self._on_loop(lambda: self._admit(pin, peer))
        if "error" in admitted:
            return {"ok": False, "error": admitted["error"]}
        token, room = admitted["token"], admitted["room"]
        try:
            # kamcmd is a process: off both loops.
            await asyncio.to_thread(sink, token, room, peer)
        except Exception as exc:
            log.error("web join from %s: Kamailio did not take the token: %s", peer, exc)
            return {"ok": False, "error": "the server could not admit you: try again"}
        domain = self.svc.config.pbx.advertised
        return {"ok": True, "ws": ws.url, "uri": f"sip:web-{token}@{domain}", "token": token}

    async def web_key(self, token: str, key: str) -> dict[str, Any]:
        """A browser's on-screen button (mute, unmute, hand, help)."""
        return await self._on_loop(lambda: self._key(token, key))

    async def web_leave(self, token: str) -> None:
        """The browser's Leave button (the page also ends its SIP call)."""
        await self._on_loop(lambda: self._hangup(token))

    # -- loop thread: browser legs -------------------------------------------
    def _admit(self, pin: str, peer: str) -> dict[str, Any]:
        """The checks a phone's PIN meets; a token when they pass."""
        svc = self.svc
        source = f"ip:{peer}"
        guard = svc.entry.pin_guard
        if not svc.router.accepting:
            return {"error": "the service is restarting; try again in a minute"}
        if guard.is_locked(source):
            log.info("web join from %s refused: locked out (PIN guessing)", peer)
            return {"error": "too many wrong PINs: try again later"}
        match = svc.rooms.pins.get(pin) if pin.isdigit() else None
        if match is None or match.role != "participant":
            for locked in guard.record_wrong(source):
                log.warning("PIN guessing: %s locked out", locked)
            log.info("web join from %s: wrong PIN", peer)
            return {"error": "wrong PIN"}
        why = svc.rooms.gate(match)
        live = svc.rooms.live.rooms.get(match.room)
        if why is None and live is not None and live.is_full():
            why = "conference_full"
        if why is not None:
            log.info("web join from %s refused: room=%s %s", peer, match.room, why)
            return {"error": why.replace("_", " ")}
        log.info("web join from %s for room=%s: token handed to the edge", peer, match.room)
        return {"token": secrets.token_hex(16), "room": match.room}

    def _leg(self, token: str) -> Leg | None:
        leg_id = self.svc.entry.web_legs.get(token)
        return self.svc.legs.get(leg_id) if leg_id is not None else None

    def _key(self, token: str, key: str) -> dict[str, Any]:
        leg = self._leg(token)
        action = WEB_KEY_ACTIONS.get(key)
        if leg is None:
            return {"ok": False, "error": "not in a room", "unknown": True}
        if action is None:
            return {"ok": False, "error": f"unknown key {key!r}"}
        action(self.svc, leg)
        log.info("call %d web key %s", leg.id, key)
        return {"ok": True}

    def _hangup(self, token: str) -> None:
        leg = self._leg(token)
        if leg is not None and self.svc.ua.has_leg(leg.id):
            log.info("call %d web leg ends: browser left", leg.id)
            self.svc.ua.hangup(leg.id)

    # -- loop thread: dial a number into a room ------------------------------
    def _dial(self, admin: str, room: str, number: str) -> dict[str, Any]:
        svc = self.svc
        number = number.strip().replace(" ", "").replace("-", "")
        if not NUMBER.match(number):
            return {"ok": False, "error": f"not a phone number: {number!r}"}
        live = svc.rooms.live.rooms.get(room)
        if live is None:
            return {"ok": False, "error": f"room {room!r} has nobody in it"}
        try:
            by = admit(svc, admin, None, None, room)
        except PermissionDenied as exc:
            return {"ok": False, "error": str(exc), "denied": True}
        refused = svc.dialout.invite(room, number)
        if refused is not None:
            return {"ok": False, "error": refused}
        svc.rooms.apply([Say(leg, ("join_tone",), slot="signal") for leg in live.members])
        if svc.stores.opened:
            change = Change("room", room, "dial", {"number": (None, number)})
            svc.stores.writer.write(svc.stores.calls.audit, [change], by, "web", None)
        return {"ok": True, "by": by}


def _first_day(cfg: Config, days: int) -> tuple[dt.date, str]:
    """The first local day of the window, and its start as UTC ISO 8601."""
    tz = ZoneInfo(cfg.timezone)
    first = dt.datetime.now(tz).date() - dt.timedelta(days=days - 1)
    return first, dt.datetime.combine(first, dt.time(), tz).astimezone(dt.UTC).isoformat()


def _minutes_per_day(
    cfg: Config,
    days: int,
    departments: frozenset[str] | None,
    calls: Iterable[dict[str, Any]],
) -> list[tuple[str, float]]:
    """Sum the call history's durations per local day (`calls`: the rows
    since the first day; read on a worker thread)."""
    tz = ZoneInfo(cfg.timezone)
    first = _first_day(cfg, days)[0]
    totals = {(first + dt.timedelta(days=i)).isoformat(): 0.0 for i in range(days)}
    lines = None
    if departments is not None:
        lines = {name for name, line in cfg.lines.items() if line.department in departments} | {
            f"room:{r.name}" for r in cfg.rooms if r.department in departments
        }
    for row in calls:
        line, origin = row["line"], row["origin"]
        if lines is not None and line not in lines and origin not in lines:
            continue
        day = dt.datetime.fromisoformat(row["started_at"]).astimezone(tz).date().isoformat()
        if day in totals:
            totals[day] += (row["duration"] or 0.0) / 60
    return [(day, round(minutes, 2)) for day, minutes in totals.items()]
