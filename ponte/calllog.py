"""Call history, metering and alerts: what a call leaves behind.

- the history row of every leg that keeps one (`Leg.record`), written when the
  call ends, with rtpengine's figures for its network quality;
- the history rows of extension-to-extension calls, read from Kamailio's acc;
- the usage meter of metered outbound calls (quotas, cut at the limit,
  warnings) and the threshold alerts (SIP MESSAGE, and webhook from a worker
  that retries: ponte.alertwebhook), worded in the caller's language.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

from ivr.prompts import text as prompt_text
from lines.meter import Action as MeterAction
from lines.meter import Crossed, Cut, Flush, Meter, Warn
from lines.policy import Decision, cycle_start, limit_types, resolve
from pbx.rtpengine import NgClient, RtpEngineError, UnknownCallError, quality, summary
from pbx.useragent import UserAgent
from ponte.alertwebhook import AlertWebhook
from ponte.clock import WallClock
from ponte.extcalls import DISPOSITIONS, AccReader
from ponte.legs import Leg, LegTable
from ponte.loop import Loop
from ponte.media import Media
from ponte.stores import Stores
from provisioning.schema import Config
from store.engine import UNAVAILABLE

log = logging.getLogger("ponte.call")

# After rtpengine fails to answer a quality query, none is sent for this long.
NG_BACKOFF = 10.0
# A status asks rtpengine about every member at once, this many queries in
# flight: one after the other, 600 members through a loaded relay took longer
# than the control client waits (5 s) and the status was lost.
STATUS_QUERIES = 16
# How often the live calls' and room legs' time is saved: what a crash can
# lose from a record (issue 23 asks for at most 10 s).
CHECKPOINT_SECONDS = 5.0


class CallLog:
    """History rows, the usage meter and alerts (loop thread)."""

    def __init__(
        self,
        config: Config,
        clock: WallClock,
        loop: Loop,
        ua: UserAgent,
        stores: Stores,
        ng: NgClient | None,
        legs: LegTable,
        media: Media,
    ) -> None:
        self.config = config
        self.legs = legs
        self.media = media
        self.clock = clock
        self.loop = loop
        self.ua = ua
        self.stores = stores
        self.ng = ng
        self._ng_down_until = 0.0  # a relay that stopped answering is left alone a while
        self.meter: Meter | None = None
        self._to_meter: dict[int, Decision] = {}
        self._alerted: set[tuple[object, ...]] = set()
        self._acc: AccReader | None = None
        self._acc_mark: int | None = None  # how far Kamailio's acc was read
        # Webhooks go out from a worker, retried with backoff: never from here.
        self.webhook = AlertWebhook(self._webhook_outcome)

    def start(self, acc: AccReader | None, prune_acc: bool) -> None:
        """Begin metering, and reading Kamailio's acc when it runs."""
        self.meter = Meter(self.stores.used, list(self.config.alerts.thresholds))
        self.loop.call_later(1.0, self._meter_tick)
        self.loop.call_later(CHECKPOINT_SECONDS, self._checkpoint)
        self._acc = acc
        if acc is not None:
            if prune_acc:  # Kamailio is not running yet: safe to write
                acc.prune(self.stores.calls.mark("acc"))
            self.loop.call_later(2.0, self._collect_extension_calls)

    # -- history rows -----------------------------------------------------
    def answered(self, leg: Leg) -> None:
        """The call was answered (the first time counts)."""
        if leg.record is not None and leg.record.answered is None:
            leg.record.answered = self.clock.ts()
            if self.stores.opened:
                # From now on a crash cannot lose the call's row.
                stores = self.stores
                stores.writer.write(stores.calls.call_answered, stores.node, replace(leg.record))

    def _checkpoint(self) -> None:
        if self.loop.stopping:
            return
        if self.stores.opened:
            self.stores.writer.write(self.stores.checkpoint, self.clock.ts())
        self.loop.call_later(CHECKPOINT_SECONDS, self._checkpoint)

    def ended(self, leg: Leg, code: int) -> None:
        """Write the call's history row: who, where, how long, and how it ended."""
        cdr = leg.record
        if cdr is None or not self.stores.opened:
            return
        leg.record = None
        cdr.sip_code = code
        cdr.ended_by = leg.ended_by
        for key, value in self.quality(cdr.sip_call_id).items():
            setattr(cdr, key, value)
        if cdr.cut_at_limit:
            cdr.disposition = "cut_at_limit"
        elif cdr.answered is not None:
            cdr.disposition = "answered"
        else:
            cdr.disposition = DISPOSITIONS.get(code, "failed")
        stores = self.stores
        stores.writer.write(stores.calls.call_ended, cdr.row(self.clock.ts()), stores.node)

    def quality(self, sip_call_id: str | None, remote_called: bool = False) -> dict[str, Any]:
        """A call's network quality (history columns) as rtpengine measured
        it; nothing when it does not know the call (or does not run).

        Safe off the loop thread: each query uses a socket of its own."""
        reply = self._ask(sip_call_id) if sip_call_id else None
        return summary(quality(reply), remote_called) if isinstance(reply, dict) else {}

    def relay_holds(self, sip_call_id: str) -> bool | None:
        """Whether rtpengine still holds a call (None: no relay, or it does
        not answer)."""
        reply = self._ask(sip_call_id)
        return None if reply is None else reply is not False

    def _ask(self, sip_call_id: str) -> dict[str, Any] | bool | None:
        """rtpengine's answer to a query about a call: False when it does not
        hold the call, None with no relay or none answering."""
        if self.ng is None or time.monotonic() < self._ng_down_until:
            return None
        try:
            return self.ng.query(sip_call_id)
        except UnknownCallError:
            return False
        except RtpEngineError as exc:
            # Not answering: skip it for a while rather than make every
            # call's end (on the loop thread) wait for a time-out.
            self._ng_down_until = time.monotonic() + NG_BACKOFF
            log.warning("rtpengine did not answer (%s); asked again in %.0f s", exc, NG_BACKOFF)
            return None

    def qualities(
        self, call_ids: Mapping[int, str | None], deadline: float
    ) -> dict[int, dict[str, Any]]:
        """`quality` of many calls, asked in parallel; a call whose answer is
        not in within `deadline` seconds has no figures (a status must come
        back while the client still waits, however many members there are)."""
        if self.ng is None or not call_ids:
            return {}
        pool = ThreadPoolExecutor(STATUS_QUERIES, thread_name_prefix="ponte-status-quality")
        try:
            asked = {leg: pool.submit(self.quality, cid) for leg, cid in call_ids.items()}
            wait(asked.values(), timeout=deadline)
        finally:
            # Queries still out finish on their own (each has its time-out).
            pool.shutdown(wait=False, cancel_futures=True)
        return {leg: f.result() for leg, f in asked.items() if f.done() and not f.cancelled()}

    def _collect_extension_calls(self) -> None:
        """History rows for calls between extensions (Kamailio's acc), with
        their network quality while rtpengine still holds the call.

        Not while record writes fail (a full disk, the database away), nor
        when the database cannot be read: the loop carries every call and
        must not die of it, and Kamailio keeps its acc rows until they are
        read. The watermark is kept in memory, so rows whose writes are still
        queued are never read twice."""
        if self.loop.stopping or self._acc is None:
            return
        store, writer = self.stores.calls, self.stores.writer
        try:
            if writer.away:
                return  # the rows wait in Kamailio's acc until the records can take them
            # The watermark is read once, then kept here: its writes may still
            # be queued when the next round comes.
            if self._acc_mark is None:
                self._acc_mark = store.mark("acc")
            before = self._acc_mark
            rows, mark = self._acc.collect(before, self.clock.ts(), self.relay_holds)
            for row in rows:
                # After a restart the same acc rows may be read again.
                if store.has_call(row["sip_call_id"], "extension"):
                    continue
                row.update(self.quality(row["sip_call_id"]))
                writer.write(store.call_ended, row)
            if mark != before:
                self._acc_mark = mark
                writer.write(store.set_mark, "acc", mark)
        except UNAVAILABLE as exc:
            log.debug("extension calls not collected this round: %s", exc)
        finally:
            self.loop.call_later(2.0, self._collect_extension_calls)

    # -- metering ---------------------------------------------------------
    def meter_from_answer(self, leg_id: int, decision: Decision | None) -> None:
        """Meter this call once it is answered (`start_meter`)."""
        if decision is not None:
            self._to_meter[leg_id] = decision

    def start_meter(self, leg_id: int) -> None:
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

    def stop_meter(self, leg_id: int) -> None:
        """The metered call ended: count its last seconds."""
        self._to_meter.pop(leg_id, None)
        if self.meter is not None:
            self._meter_actions(self.meter.stop(leg_id, self.loop.now()))

    def _meter_tick(self) -> None:
        if self.loop.stopping or self.meter is None:
            return
        meter = self.meter
        try:
            self._meter_actions(meter.tick(self.loop.now()))
        finally:
            self.loop.call_later(meter.next_tick(), self._meter_tick)

    def _meter_actions(self, actions: Iterable[MeterAction]) -> None:
        for a in actions:
            match a:
                case Flush(key, cycle, call_type, seconds):
                    self.stores.writer.write(self.stores.usage.add, key, cycle, call_type, seconds)
                case Cut(call_id, used, limit):
                    log.info("call %d cut at the limit (%.1f of %.0f s used)", call_id, used, limit)
                    leg = self.legs.get(call_id)
                    if leg is not None and leg.record is not None:
                        leg.record.cut_at_limit = True
                    self.ua.hangup(call_id)
                case Warn(call_id):
                    log.info("call %d warned: 30 s of quota left", call_id)
                    self.media.say(call_id, ("limit_warning",), "signal")
                case Crossed():
                    self._alert(a)

    # -- alerts -----------------------------------------------------------
    def _alert(self, a: Crossed) -> None:
        mark = (a.key, a.cycle, a.limit, a.threshold)
        if mark in self._alerted:
            return
        self._alerted.add(mark)
        usage, writer = self.stores.usage, self.stores.writer
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
        if writer.pending:
            new = True  # the disk is full: alert now, the row waits with the others
            writer.write(usage.record_alert, *args)
        else:
            try:
                new = usage.record_alert(*args)
            except UNAVAILABLE:
                new = True
                writer.write(usage.record_alert, *args)
        if not new:
            return
        alerts = self.config.alerts
        crossing = self.legs.get(a.call) if a.call is not None else None
        language = alerts.language or (crossing.language if crossing else "pt-BR")
        text = prompt_text(
            "alert_threshold",
            language,
            key=a.key,
            threshold=a.threshold,
            limit=a.limit,
            used_min=a.used / 60,
            limit_min=a.limit_seconds / 60,
        )
        log.warning("alert %s", text)
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
                "language": language,
                "text": text,
            }
            self.webhook.send(
                alerts.webhook,
                payload,
                alerts.webhook_retries,
                alerts.webhook_backoff,
                alerts.webhook_timeout,
            )
        pbx = self.config.pbx
        own = [a.line] if a.line.isdigit() else []
        if self.config.extensions:
            for ext in dict.fromkeys([*alerts.message_to, *own]):
                try:
                    self.ua.send_message(f"sip:{ext}@{pbx.internal}", text)
                except Exception as exc:  # an alert must never break a call
                    log.warning("alert MESSAGE to %s failed: %s", ext, exc)

    def _webhook_outcome(self, payload: dict[str, Any], outcome: str) -> None:
        """The webhook worker's word on one alert, written to its row (from
        the worker's thread: handed to the loop, whose writer survives an
        absent database)."""
        usage, writer = self.stores.usage, self.stores.writer
        args = (payload["key"], payload["cycle"], payload["limit"], payload["threshold"], outcome)
        self.loop.call_soon_threadsafe(lambda: writer.write(usage.webhook_outcome, *args))
