"""Where a new call goes, and how SIP events reach the leg that owns them.

`Router` is what the pjsua2 adapter calls (`pbx.sipua.SipEvents`). A new call
gets its leg and call record at once; then it is shed (overload, draining),
sent to the entry IVR (access number, a DID to a room), bridged to an
extension (a DID) or, for an extension Kamailio authenticated, decided by its
line profile and bridged to a trunk. Every later event is handed to the leg's
handler.
"""

from __future__ import annotations

import ipaddress
import logging

from lines.classify import EMERGENCY
from lines.policy import Decision, decide
from pbx.b2bua import B2BUA, Pair
from pbx.ratelimit import SlidingWindowLimiter
from pbx.sipua import IncomingCall
from pbx.useragent import UserAgent
from ponte.calllog import CallLog
from ponte.clock import WallClock
from ponte.entry import EntryIvr
from ponte.legs import Idle, Leg, LegTable
from ponte.loop import Loop
from ponte.media import Media, Refusal
from ponte.records import CallRecord
from provisioning.schema import Config, Trunk

log = logging.getLogger("ponte.call")

# An answered call that has received no RTP this long after answer is logged.
NO_RTP_AFTER = 10.0


class Bridged(Idle):
    """Either leg of a back-to-back call (DID to an extension, extension to a trunk)."""

    def __init__(self, b2bua: B2BUA) -> None:
        self.b2bua = b2bua

    def on_progress(self, leg: Leg, code: int) -> None:  # noqa: D102 - see LegHandler
        self.b2bua.on_progress(leg.id, code)

    def on_confirmed(self, leg: Leg) -> None:  # noqa: D102
        self.b2bua.on_confirmed(leg.id)

    def on_media_ready(self, leg: Leg) -> None:  # noqa: D102
        self.b2bua.on_media_ready(leg.id)

    def on_media_changed(self, leg: Leg, held: bool) -> None:  # noqa: D102
        self.b2bua.on_media_changed(leg.id)

    def on_disconnected(self, leg: Leg, code: int, reason: str) -> None:  # noqa: D102
        self.b2bua.on_disconnected(leg.id, code, reason)


class Router:
    """Routes new calls and dispatches SIP events (loop thread)."""

    def __init__(
        self,
        config: Config,
        clock: WallClock,
        loop: Loop,
        ua: UserAgent,
        legs: LegTable,
        media: Media,
        calllog: CallLog,
        entry: EntryIvr,
    ) -> None:
        self.config = config
        self.clock = clock
        self.loop = loop
        self.ua = ua
        self.legs = legs
        self.media = media
        self.calllog = calllog
        self.entry = entry
        self.b2bua = B2BUA(ua, on_answer=self._bridged_answer)
        self.bridged = Bridged(self.b2bua)
        self.accepting = True  # False while draining or stopping: new calls get 503
        self.limiters = {t.name: SlidingWindowLimiter(t.cps) for t in config.trunks}
        self.admission = SlidingWindowLimiter(config.sip.max_new_calls_per_second)
        self.shed = 0  # calls refused for overload (counted, not logged one by one)
        self._shed_logged = 0.0

    # -- trunks ----------------------------------------------------------------
    def add_trunk(self, trunk: Trunk, via_kamailio: bool) -> None:
        """The trunk's account in pjsua2 (registering if asked)."""
        port = f":{trunk.port}" if trunk.port else ""
        self.ua.add_account(
            f"trunk:{trunk.name}",
            f"sip:{trunk.username}@{trunk.host}{port}",
            registrar=trunk.registrar if trunk.registration else "",
            username=trunk.username,
            password=trunk.password,
            # Everything to and from the provider passes Kamailio (issue 9):
            # pjsip never talks to the network directly.
            proxy=f"sip:{self.config.pbx.internal};lr" if via_kamailio else "",
        )

    def reloaded(self, old: Config, new: Config, via_kamailio: bool) -> None:
        """Trunks added, removed or changed; pacing windows kept where unchanged."""
        self.config = new
        for trunk in old.trunks:
            if trunk not in new.trunks:
                self.ua.remove_account(f"trunk:{trunk.name}")
        for trunk in new.trunks:
            if trunk not in old.trunks:
                self.add_trunk(trunk, via_kamailio)
        limiters = {}
        for t in new.trunks:
            kept = self.limiters.get(t.name)
            fresh = SlidingWindowLimiter(t.cps)
            limiters[t.name] = kept if kept is not None and kept.limit == fresh.limit else fresh
        self.limiters = limiters

    def limiter_for(self, number: str) -> SlidingWindowLimiter | None:
        """The pacing window of the trunk that serves `number` (None: no trunk)."""
        route = self.config.trunk_for_number(number)
        return self.limiters[route[0].name] if route else None

    # -- SipEvents: a new call -------------------------------------------------
    def on_incoming(self, call: IncomingCall) -> None:
        """Route a new call: access number, DID, or an extension's outbound number."""
        cfg = self.config
        caller = self.caller(call)
        record = CallRecord(
            call.leg, caller, call.request_user, self.clock.ts(), sip_call_id=call.sip_call_id
        )
        leg = self.legs.add(call.leg, caller, call.request_user, record=record)
        if not self.accepting:
            log.info("call %d refused: draining or stopping (503)", call.leg)
            self.ua.answer(call.leg, 503, "Service Unavailable", {"Retry-After": "5"})
            return
        if self._overloaded(call):
            leg.record = None  # a flood must not become a flood of writes
            self.ua.answer(call.leg, 503, "Service Unavailable", {"Retry-After": "2"})
            return
        if not self._from_the_cluster(call.source):
            leg.record = None
            log.warning(
                "call %d refused: %s is neither the edge nor a node (403)", call.leg, call.source
            )
            self.ua.answer(call.leg, 403, "Forbidden")
            return
        log.info(
            "call %d incoming from=%s to=%s src=%s",
            call.leg,
            caller,
            call.request_user,
            call.source,
        )
        if call.web is not None and call.source == cfg.pbx.internal:
            # A browser Kamailio let in by the console's one-time token.
            self.entry.web(leg, call.web)
            return
        if call.handoff:
            # Another node hands a caller to a room homed here (token checked there).
            self.entry.handoff.incoming(leg, call.handoff, call.source)
            return
        access = cfg.access_number(call.request_user)
        if access is not None:
            record.call_type = "conference"
            leg.language = access.language
            self.entry.answer(leg, self.source_key(call))
            return
        did = cfg.did_target(call.request_user)
        if did is not None:
            log.info("call %d DID %s", call.leg, call.request_user)
            record.call_type = "did" if did.extension else "conference"
            if did.extension:
                self._bridge(leg, f"sip:{did.extension}@{cfg.pbx.internal}")
                return
            target = cfg.access_number(did.room_access) if did.room_access else None
            leg.language = target.language if target else did.language
            self.entry.answer(leg, self.source_key(call))
            return
        # Only an extension Kamailio authenticated may call out: it says which
        # in X-Ponte-Line (and strips that header from everyone else).
        from_line = call.line is not None and call.source == cfg.pbx.internal
        route = cfg.trunk_for_number(call.request_user) if from_line else None
        if route is None and from_line and call.request_user in EMERGENCY and cfg.trunks:
            route = (cfg.trunks[0], call.request_user)  # emergency: any trunk will do
        if route is not None:
            self._outbound(call, leg, *route)
            return
        log.info("call %d refused: %r is not a number here (404)", call.leg, call.request_user)
        self.ua.answer(call.leg, 404)

    def _from_the_cluster(self, source: str) -> bool:
        """Whether a new call may come from `source`. A node on loopback is
        reached only from its own machine; one on a private network (a
        `nodes:` entry) takes calls from the edge and the other nodes only,
        whatever else that network lets through."""
        cfg = self.config
        if ipaddress.ip_address(cfg.sip.host).is_loopback:
            return True
        host = source.rpartition(":")[0].strip("[]")
        return host == cfg.pbx.internal_host or any(
            host == n.listen.rpartition(":")[0] for n in cfg.nodes
        )

    def caller(self, call: IncomingCall) -> str:
        """Who calls, for the history, the log and the rooms: the extension
        Kamailio authenticated (X-Ponte-Line, believed only from Kamailio),
        else the From URI's user (never its display name), else the URI."""
        if call.line is not None and call.source == self.config.pbx.internal:
            return call.line
        return call.from_user or call.from_uri

    def source_key(self, call: IncomingCall) -> str:
        """Who is calling, for the PIN lockout: the extension Kamailio
        authenticated, the caller ID of a call relayed by Kamailio (a trunk's),
        or the IP address of a direct call."""
        # X-Ponte-Line is believed from Kamailio only (it strips it from others).
        if call.line and call.source == self.config.pbx.internal:
            return f"ext:{call.line}"
        if call.source == self.config.pbx.internal:
            return f"cid:{call.from_user or call.from_uri}"
        return f"ip:{call.source.rpartition(':')[0]}"

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
        # A hand-off is a caller another node answered already, whose room
        # lives here: the rate of new calls does not apply to it (a burst of
        # PINs must not split rooms), the ports do.
        if self.ua.call_count() <= cap and (call.handoff or self.admission.try_acquire(now)):
            return False
        self.shed += 1
        if now - self._shed_logged >= 1.0:  # one line a second, however hard the flood
            self._shed_logged = now
            log.warning("overload: shedding new calls with 503 (%d so far)", self.shed)
        return True

    def _outbound(self, call: IncomingCall, leg: Leg, trunk: Trunk, number: str) -> None:
        """An extension's call to the outside: line profile, CPS limit, then the trunk."""
        decision: Decision | None = None
        dial = number
        line = call.line or call.from_user  # Kamailio's authenticated extension
        cdr = leg.record
        assert cdr is not None
        cdr.trunk, cdr.line, cdr.call_type = trunk.name, line, "outbound"
        ext = next((e for e in self.config.extensions if e.number == line), None)
        if ext is not None:
            leg.language = ext.language  # its refusals and warnings are spoken in it
        if self.config.lines:
            decision = decide(self.config, line, number, self.clock.now(), self.calllog.stores.used)
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
                # Say why as early media (183), then 403 Forbidden.
                reason = f"refused: {decision.reason}"
                leg.handler = Refusal(self.media, decision.prompt, reason, 403)
                self.ua.answer(call.leg, 183)
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
        log.info("call %d outbound ext=%s number=%s trunk=%s", call.leg, line, number, trunk.name)
        self._bridge(
            leg, f"sip:{dial}@{trunk.host}{port}", account=f"trunk:{trunk.name}", trunk=trunk.name
        )
        self.calllog.meter_from_answer(call.leg, decision)

    def _bridge(
        self, leg: Leg, uri: str, account: str | None = None, trunk: str | None = None
    ) -> None:
        leg.handler = self.bridged
        pair = self.b2bua.place(leg.id, uri, account=account, trunk=trunk)
        if pair.b is not None:
            self.legs.add(pair.b, leg.caller, uri, handler=self.bridged)

    def _bridged_answer(self, pair: Pair) -> None:
        leg = self.legs.get(pair.a)
        if leg is not None:
            self.calllog.answered(leg)
        self.calllog.start_meter(pair.a)

    # -- SipEvents: the rest go to the leg's handler -----------------------------
    def on_progress(self, leg_id: int, code: int) -> None:
        """An outbound leg rings."""
        leg = self.legs.get(leg_id)
        if leg is not None:
            leg.handler.on_progress(leg, code)

    def on_media_ready(self, leg_id: int) -> None:
        """Audio is up."""
        leg = self.legs.get(leg_id)
        if leg is not None:
            leg.handler.on_media_ready(leg)

    def on_media_changed(self, leg_id: int, held: bool) -> None:
        """A re-INVITE renegotiated a leg's audio (hold, resume, a new codec)."""
        log.info("call %d media renegotiated%s", leg_id, " (on hold)" if held else "")
        leg = self.legs.get(leg_id)
        if leg is not None:
            leg.handler.on_media_changed(leg, held)

    def on_confirmed(self, leg_id: int) -> None:
        """A call is established."""
        self.loop.call_later(NO_RTP_AFTER, lambda: self._check_rtp(leg_id))
        leg = self.legs.get(leg_id)
        if leg is not None:
            leg.handler.on_confirmed(leg)

    def _check_rtp(self, leg_id: int) -> None:
        """Say so when an answered call has carried no RTP at all: one-way
        or no audio, usually a NAT or firewall between the phone and us."""
        if self.ua.rx_packets(leg_id) == 0:
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
        if not leg.dedupe.accept(digit, method, self.loop.now()):
            log.debug("call %d digit %r via %s dropped as duplicate", leg_id, digit, method)
            return
        log.debug("call %d digit %r via %s", leg_id, digit, method)
        leg.handler.on_digit(leg, digit)

    def on_disconnected(
        self, leg_id: int, code: int, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        """The call ended, whoever ended it: its record, then its owner."""
        leg = self.legs.get(leg_id)
        if leg is None:
            return
        self.calllog.ended(leg, code)
        self.calllog.stop_meter(leg_id)
        self.media.cancel_all(leg)
        self.legs.drop(leg_id)
        leg.handler.on_disconnected(leg, code, reason)
        log.info("call %d hangup code=%d cause=%s", leg_id, code, reason)

    def on_registration(self, account: str, code: int, reason: str, active: bool) -> None:
        """A trunk's registration answered (or failed; pjsua retries with back-off)."""
        level = logging.INFO if active or code // 100 == 2 else logging.WARNING
        log.log(level, "%s registration %d %s (active=%s)", account, code, reason, active)
