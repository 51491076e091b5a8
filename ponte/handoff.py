"""Rooms shared by several nodes: a caller who keys a PIN on a node that is
not the room's home is handed to the home over an internal SIP leg.

The mechanism, and its cost: this node (A) places an INVITE to the home (B)
at `sip:handoff@<B's SIP address>`, with the room, role and caller in
`X-Ponte-*` headers and an HMAC of them (the key all nodes share through the
records database), valid for `TOKEN_SECONDS`. B checks it (403 otherwise),
answers, and admits the leg into the room by the same `RoomService.admit` as
a local PIN (lock and size apply at B; the hours were checked at A from the
same YAML, and are checked again at B). A links the caller's leg and the
internal leg both ways on its conference bridge, forwards the caller's DTMF
to B (RFC 2833) so star keys work there, and ends either leg when the other
ends. The cost: one more media hop (A's bridge and B's jitter buffer: a few
tens of ms one way, as long as A links B's audio only after B's first RTP:
`HandOff._hear`) and one more leg's mixing on A.

On SQLite (one node), or when the database is away at PIN time, the room is
homed here: a room split across two nodes is better than a caller refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from urllib.parse import quote, unquote

from bridge.levels import refusal as hours_refusal
from pbx.sipevents import HANDOFF_HEADERS, SipError
from pbx.useragent import UserAgent
from ponte.clock import CpuMeter, WallClock
from ponte.database import LatestWriter
from ponte.homes import HEARTBEAT_EVERY, LEASE, RENEW_EVERY, Home, HomeStore
from ponte.legs import Idle, Leg, LegTable
from ponte.loop import Loop
from ponte.media import Media
from ponte.rooms import RoomService, policy
from ponte.stores import Stores
from provisioning.schema import Config
from store.engine import UNAVAILABLE

log = logging.getLogger("ponte.handoff")

# How long a hand-off INVITE's token is good for (the two nodes' clocks must
# agree to within it).
TOKEN_SECONDS = 30.0
ROOM, ROLE, CALLER, NAME, EXPIRES, TOKEN = HANDOFF_HEADERS
# An internal leg that carried no RTP for this long lost its other node (a
# kill -9 sends no BYE): both legs end. pjsua sends RTP without pause (noVad).
RTP_SILENCE = 2.0
# A home answers a hand-off at once (no ringing); one silent this long is
# gone, and the caller joins the room here instead.
ANSWER_SECONDS = 2.0
# The caller hears the home once the internal leg's first RTP is in (checked
# every FIRST_RTP_POLL s), or after FIRST_RTP_WAIT s without (HandOff._hear).
FIRST_RTP_WAIT = 1.0
FIRST_RTP_POLL = 0.01


def sign(key: bytes, room: str, role: str, caller: str, name: str, expires: str) -> str:
    """The HMAC of a hand-off's fields."""
    text = "\n".join((room, role, caller, name, expires))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def role_field(role: str, counter: str | None) -> str:
    """The signed role header: the role, and for a moderator who keyed an
    individual counter-PIN its name after `=` (percent-encoded: a header
    stays ASCII whatever the name). A node without counter-PIN names reads
    an unknown role and refuses it: the caller then joins where it called."""
    return f"{role}={quote(counter, safe='')}" if counter else role


def parse_role(field: str) -> tuple[str, str | None]:
    """(role, counter-PIN name or None) from a role header."""
    role, _, counter = field.partition("=")
    return role, (unquote(counter) or None)


def _clean(text: str) -> str:
    """A value fit for a SIP header (no control characters)."""
    return "".join(ch for ch in text if ch.isprintable())[:128]


class HandoffService:
    """This node's part in shared rooms (loop thread)."""

    def __init__(
        self,
        config: Config,
        clock: WallClock,
        loop: Loop,
        ua: UserAgent,
        legs: LegTable,
        media: Media,
        rooms: RoomService,
        stores: Stores,
    ) -> None:
        self.config = config
        self.clock = clock
        self.loop = loop
        self.ua = ua
        self.legs = legs
        self.media = media
        self.rooms = rooms
        self.stores = stores
        self.store: HomeStore | None = None  # None: one node (SQLite), rooms are homed here
        # Heartbeats and leases, written apart from the records' queue.
        self.beats: LatestWriter | None = None
        self.key = b""
        self._used: dict[str, float] = {}  # hand-off tokens taken, until they expire
        self.address = ""
        self.started = 0.0
        self.cpu = CpuMeter()  # this process's load, read at each heartbeat
        # Caller's PIN `#` -> B's room audio linked to the caller, seconds
        # (once B's first RTP is in, see HandOff._hear).
        self.gaps: list[float] = []

    @property
    def node(self) -> str:
        """This node's name."""
        return self.stores.node

    def start(self) -> None:
        """Join the registry (PostgreSQL only): heartbeat, leases, the key."""
        self.address = f"{self.config.sip.host}:{self.ua.bound_port}"
        self.started = self.clock.ts()
        if not self.stores.shared:
            return
        store = HomeStore(self.stores.db) if self.stores.db is not None else None
        if store is None:
            return
        self.key = store.key()
        self.store = store
        self.beats = LatestWriter("heartbeat")
        self._beat()
        self.loop.call_later(RENEW_EVERY, self._renew)

    def stop(self) -> None:
        """Free this node's rooms at once (a clean stop; a crash waits out STALE)."""
        if self.store is None:
            return
        if self.beats is not None:
            self.beats.stop()  # its last renewal first: the release comes after
        with contextlib.suppress(*UNAVAILABLE):
            self.store.release(self.node)

    def _beat(self) -> None:
        assert self.store is not None and self.beats is not None
        self.beats.put(
            "heartbeat",
            self.store.heartbeat,
            self.node,
            self.address,
            self.started,
            self.clock.ts(),
            self.ua.call_count(),
            len(self.rooms.live.rooms),
            len(self.legs),
            self.cpu.read(),
        )
        if not self.loop.stopping:
            self.loop.call_later(HEARTBEAT_EVERY, self._beat)

    def _renew(self) -> None:
        assert self.store is not None and self.beats is not None
        live = sorted(self.rooms.live.rooms)
        self.beats.put("renew", self.store.renew, self.node, live, self.clock.ts() + LEASE)
        if not self.loop.stopping:
            self.loop.call_later(RENEW_EVERY, self._renew)

    # -- a right PIN ------------------------------------------------------
    def home_of(self, room: str) -> Home | None:
        """Where `room` is mixed: None for here (claimed now, or one node)."""
        if self.store is None or room in self.rooms.live.rooms:
            return None
        if self.stores.writer.away:
            # A split room is better than a refused caller: join here.
            log.warning("room=%s homed here: the records database is away", room)
            return None
        try:
            home = self.store.claim(room, self.node, self.address, self.clock.ts())
        except UNAVAILABLE as exc:
            log.warning("room=%s homed here: the records database did not answer (%s)", room, exc)
            return None
        return None if home.node == self.node else home

    def join(
        self,
        leg: Leg,
        room: str,
        role: str,
        name_path: str | None,
        hash_at: float,
        joined_by: str = "dial-in",
    ) -> bool:
        """A right PIN: into the room here, or handed to its home. True if
        the caller entered here."""
        home = self.home_of(room)
        if home is None:
            return self.rooms.admit(leg, room, role, name_path, joined_by)
        HandOff(self, leg, room, role, name_path, home, hash_at).start()
        return False

    def headers(self, room: str, role: str, caller: str, name: bool) -> dict[str, str]:
        """A hand-off INVITE's headers, signed."""
        fields = (room, role, _clean(caller), "1" if name else "0")
        # The expiry to the millisecond, then six random digits: still a
        # number, and no two hand-offs share a token (the home takes each once).
        expires = f"{self.clock.ts() + TOKEN_SECONDS:.3f}{secrets.randbelow(10**6):06d}"
        token = sign(self.key, *fields, expires)
        return dict(zip(HANDOFF_HEADERS, (*fields, expires, token), strict=True))

    # -- a hand-off arriving ------------------------------------------------
    def refusal(self, headers: Mapping[str, str]) -> str | None:
        """Why a hand-off INVITE is refused (None: it is good)."""
        if not self.key:
            return "this node takes no hand-offs (no shared database)"
        if any(name not in headers for name in HANDOFF_HEADERS):
            return "missing headers"
        fields = [headers[name] for name in HANDOFF_HEADERS]
        want = sign(self.key, *fields[:5])
        if not hmac.compare_digest(want, fields[5]):
            return "bad token"
        try:
            expires = float(fields[4])
        except ValueError:
            return "bad expiry"
        now = self.clock.ts()
        if expires < now or expires > now + 2 * TOKEN_SECONDS:
            return "expired token"
        room, role = fields[0], parse_role(fields[1])[0]
        if room not in self.rooms.configs or role not in ("participant", "moderator"):
            return f"no room {room!r} or role {role!r}"
        # Each token once: one captured on the nodes' network cannot bring a
        # second caller in (it expires within TOKEN_SECONDS, and so does its entry).
        self._used = {t: e for t, e in self._used.items() if e >= now}
        if fields[5] in self._used:
            return "replayed token"
        self._used[fields[5]] = expires
        return None

    def watch_rtp(self, leg_id: int, lost: Callable[[], None], seen: int = -1) -> None:
        """Call `lost` once the leg's RTP stops for RTP_SILENCE (checked each second)."""
        got = self.ua.rx_packets(leg_id)
        if leg_id not in self.legs or got is None:
            return
        if got == seen:
            lost()
            return
        self.loop.call_later(RTP_SILENCE, lambda: self.watch_rtp(leg_id, lost, got))

    def incoming(self, leg: Leg, headers: Mapping[str, str], source: str) -> None:
        """A hand-off INVITE from another node: checked, answered, admitted
        once its audio is up."""
        why = self.refusal(headers)
        if why is not None:
            log.warning("call %d hand-off from %s refused (403): %s", leg.id, source, why)
            self.ua.answer(leg.id, 403, "Forbidden")
            return
        leg.record = None  # the caller's history row is kept by the node it called
        leg.caller = headers[CALLER]
        role, counter = parse_role(headers[ROLE])
        room = self.rooms.configs[headers[ROOM]]
        # Only a name the room knows, for a moderator: the header is signed,
        # but the billing takes nothing from the wire it cannot check.
        named = {c.name for c in room.counter_pins}
        leg.counter_pin_name = counter if role == "moderator" and counter in named else None
        leg.handler = Admitted(self, headers[ROOM], role)
        self.ua.answer(leg.id, 200)
        log.info(
            "call %d hand-off from %s: room=%s role=%s caller=%s",
            leg.id,
            source,
            headers[ROOM],
            headers[ROLE],
            leg.caller,
        )


class Admitted(Idle):
    """At the home: a handed-off leg, admitted once its audio is up."""

    def __init__(self, service: HandoffService, room: str, role: str) -> None:
        self.service = service
        self.room = room
        self.role = role

    def on_media_ready(self, leg: Leg) -> None:
        """Audio up: the room's own admission (hours, lock, size)."""
        svc = self.service
        why = hours_refusal(policy(svc.rooms.configs[self.room]), svc.clock.now())
        if why is not None:
            log.info("call %d hand-off refused: room=%s %s", leg.id, self.room, why)
            svc.media.play_then_hangup(leg, ("pin_not_valid_now", "goodbye"), why)
            return
        if svc.rooms.admit(leg, self.room, self.role, None):
            svc.watch_rtp(leg.id, lambda: self._lost(leg))

    def _lost(self, leg: Leg) -> None:
        log.warning("call %d: the node that handed it off sends no audio: ending it", leg.id)
        leg.ended_by = "handoff_lost"
        self.service.ua.hangup(leg.id)


class HandOff(Idle):
    """At the node the caller called: the caller's leg and the internal leg
    to the room's home, linked both ways (handler of both legs)."""

    def __init__(
        self,
        service: HandoffService,
        caller: Leg,
        room: str,
        role: str,
        name_path: str | None,
        home: Home,
        hash_at: float,
    ) -> None:
        self.service = service
        self.caller = caller
        self.room = room
        self.role = role
        self.name_path = name_path
        self.home = home
        self.hash_at = hash_at
        self.peer: int | None = None
        self.linked = False
        self.heard = False  # the home's audio is linked to the caller (_hear)
        self.caller_held = False  # the caller's phone holds the call
        self.gave_up = False

    def start(self) -> None:
        """Call the home; the caller waits (silence) until it answers."""
        svc, leg = self.service, self.caller
        svc.media.stop_prompt(leg)
        role = role_field(self.role, leg.counter_pin_name)
        headers = svc.headers(self.room, role, leg.caller, self.name_path is not None)
        uri = f"sip:handoff@{self.home.address}"
        try:
            peer = svc.ua.make_call(uri, headers=headers)
        except SipError as exc:
            self._here(f"cannot call {uri}: {exc}")
            return
        self.peer = peer
        leg.handler = self
        svc.legs.add(peer, leg.caller, "handoff", leg.language, handler=self)
        svc.loop.call_later(ANSWER_SECONDS, self._unanswered)
        log.info(
            "call %d room=%s is homed on %s: handing off on leg %d",
            leg.id,
            self.room,
            self.home.node,
            peer,
        )

    def _here(self, why: str) -> None:
        """The home cannot be reached: the caller joins here (a split room is
        better than a refused caller). Once: a refusal and the answer's
        time-out may both come."""
        if self.gave_up:
            return
        self.gave_up = True
        svc, leg = self.service, self.caller
        log.warning(
            "call %d room=%s joins here, not on %s: %s", leg.id, self.room, self.home.node, why
        )
        if leg.id in svc.legs:
            svc.rooms.admit(leg, self.room, self.role, self.name_path)

    def _unanswered(self) -> None:
        """The home did not answer in ANSWER_SECONDS (it died moments ago,
        before its heartbeat went stale): the caller joins here."""
        if self.linked or self.gave_up or self.peer is None:
            return
        self._here(f"it did not answer in {ANSWER_SECONDS:g} s")
        self.service.ua.hangup(self.peer)

    def on_media_ready(self, leg: Leg) -> None:
        """The home answered: it hears the caller now, and the caller hears
        the room once the home's audio arrives (`_hear`)."""
        svc = self.service
        if leg.id != self.peer or self.linked or self.caller.id not in svc.legs:
            return
        svc.ua.connect(self.caller.id, leg.id)
        self.linked = True
        svc.watch_rtp(leg.id, self._lost)
        self._hear(svc.loop.now() + FIRST_RTP_WAIT)

    def _hear(self, deadline: float) -> None:
        """Link the home's audio to the caller once its first RTP is in.

        The internal leg is our outbound call. pjmedia as Debian ships it
        read an outbound call's first RTP only up to 500 ms after its 200 OK
        (its media worker's poll timeout), then all of it at once, and a leg
        already heard kept that burst in its adaptive jitter buffer: the
        room reached the caller ~300 ms late, shed at ~50 ms a second. Our
        build polls every 10 ms (scripts/build-pjsua2), so the first RTP now
        comes within a frame or two; linking only once it is in still keeps
        any start-up burst out (the stream's first read on the bridge resets
        its buffer), for the cost of those few frames of gap. A home that
        sends nothing is linked after FIRST_RTP_WAIT all the same.
        """
        svc, peer = self.service, self.peer
        if peer is None or peer not in svc.legs or self.caller.id not in svc.legs:
            return
        if not svc.ua.rx_packets(peer) and svc.loop.now() < deadline:
            svc.loop.call_later(FIRST_RTP_POLL, lambda: self._hear(deadline))
            return
        svc.ua.connect(peer, self.caller.id)
        self.heard = True
        gap = svc.loop.now() - self.hash_at
        svc.gaps.append(gap)
        log.info(
            "call %d handed off to %s on leg %d (%.0f ms after the PIN)",
            self.caller.id,
            self.home.node,
            peer,
            gap * 1000,
        )

    def on_media_changed(self, leg: Leg, held: bool) -> None:
        """A re-INVITE on either leg (the caller's phone holding or resuming):
        the two are linked again on their new ports. The home cannot see the
        caller's hold, so it is kept here: while the caller holds, the home
        hears nothing from it (a phone's own hold music stays out of the room)."""
        svc, peer = self.service, self.peer
        if peer is None or not self.linked or self.gave_up:
            return
        if leg.id == self.caller.id:
            if held != self.caller_held:
                log.info("call %d %s (handed off)", leg.id, "on hold" if held else "resumed")
            self.caller_held = held
        if self.caller_held:
            svc.ua.disconnect(self.caller.id, peer)
        else:
            svc.ua.connect(self.caller.id, peer)
        if self.heard:
            svc.ua.connect(peer, self.caller.id)

    def _lost(self) -> None:
        """The home stopped sending audio (it died): end both legs."""
        svc = self.service
        log.warning(
            "call %d: room=%s's home %s sends no audio: ending the call",
            self.caller.id,
            self.room,
            self.home.node,
        )
        self.caller.ended_by = "handoff_lost"
        if self.peer is not None:
            svc.ua.hangup(self.peer)
        svc.ua.hangup(self.caller.id)

    def on_digit(self, leg: Leg, digit: str) -> None:
        """The caller's keys go to the home, where the room reads them."""
        if leg.id == self.caller.id and self.peer is not None and self.linked:
            try:
                self.service.ua.send_dtmf(self.peer, digit)
            except SipError as exc:
                log.warning("call %d: digit not forwarded to %s: %s", leg.id, self.home.node, exc)

    def on_disconnected(self, leg: Leg, code: int, reason: str) -> None:
        """Either end hung up: end the other."""
        svc = self.service
        if leg.id == self.caller.id:
            if self.peer is not None and not self.gave_up:
                svc.ua.hangup(self.peer)
            return
        if self.gave_up:
            return  # the caller is in the room here already
        if not self.linked and code // 100 != 2:
            self._here(f"the hand-off got {code} {reason}")
            return
        self.caller.ended_by = "handoff"
        svc.ua.hangup(self.caller.id)
