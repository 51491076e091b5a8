"""Dial-out at an agreed date and time (conference manual: "Nossas operadoras
entram em contato com os participantes na data e hora marcada", "ligar
primeiro para o moderador ou para os participantes").

An admin schedules a room, a time and the numbers (`ponte schedule add`, the
console's form); the row lives in the records database (`schedules`), so it
survives a restart and a reload. A timer on the loop looks for due rows every
`POLL_SECONDS`: a node claims one with a conditional UPDATE (only one node of
a shared PostgreSQL runs it), then calls the moderator first if asked
(waiting, bounded, until the moderator joined or the call failed) and then the
participants, through `DialOut.call_list`: the room line's profile, the
trunks' pacing, the invitation, then into the room with their role. Each
number's outcome is written back to the row as it happens.

A schedule the appliance missed while down runs if it is at most
`schedules.late_minutes` late, else it is marked `missed`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lines.policy import Decision
from ponte.clock import WallClock
from ponte.dialout import Blast, BlastCall, DialOut
from ponte.entry import EntryIvr
from ponte.loop import Loop, TimerHandle
from ponte.stores import Stores
from provisioning.schema import Config
from store.engine import UNAVAILABLE, Database
from store.migrate import as_database
from store.schema import schedules as TABLE

log = logging.getLogger("ponte.schedule")

POLL_SECONDS = 1.0
# As people write numbers: spaces, dashes, dots and brackets are dropped.
_SEPARATORS = re.compile(r"[\s().-]")
_NUMBER = re.compile(r"^\+?[0-9]{2,20}$")
# What a number's outcome may be; "refused" is the line profile's (or no trunk).
OUTCOMES = (
    "waiting",
    "calling",
    "answered",
    "joined",
    "busy",
    "no_answer",
    "refused",
    "failed",
    "left",
    "not_called",
    "cancelled",
)
FINAL = {"joined", "busy", "no_answer", "refused", "failed", "left", "not_called", "cancelled"}
# What `schedule cancel` stops: a pending one never starts; a running one
# dials no further number (its node sees the row cancelled).
CANCELLABLE = ("pending", "running")


class ScheduleError(ValueError):
    """Bad input for a schedule: nothing was stored or changed."""


@dataclass(frozen=True)
class NewSchedule:
    """A validated `schedule add`."""

    room: str
    at: float  # epoch seconds
    numbers: tuple[str, ...]
    moderator: str | None
    moderator_first: bool


def clean_number(text: object, what: str = "number") -> str:
    """A phone number as dialed (digits, optionally after +), or ScheduleError."""
    if not isinstance(text, str):
        raise ScheduleError(f"{what} must be text, not {type(text).__name__}")
    number = _SEPARATORS.sub("", text)
    if not _NUMBER.match(number):
        raise ScheduleError(f"{what} {text!r} is not a phone number (digits, optionally after +)")
    return number


def parse_time(text: object) -> float:
    """An ISO 8601 time with a UTC offset, as epoch seconds."""
    if not isinstance(text, str) or not text.strip():
        raise ScheduleError("--at needs an ISO time, e.g. 2026-12-06T10:00:00-03:00")
    try:
        at = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleError(
            f"--at {text!r} is not an ISO time (e.g. 2026-12-06T10:00:00-03:00)"
        ) from None
    if at.tzinfo is None:
        # A time without its offset would be read in the server's zone, not the admin's.
        raise ScheduleError(f"--at {text!r} needs a UTC offset, e.g. 2026-12-06T10:00:00-03:00")
    return at.timestamp()


def validate(config: Config, request: dict[str, Any], now: float) -> NewSchedule:
    """Check a `schedule add` request ({room, at, numbers, moderator?,
    moderator_first?}) against the running configuration: ScheduleError
    says what is wrong."""
    room = request.get("room")
    if not isinstance(room, str) or not any(r.name == room for r in config.rooms):
        raise ScheduleError(f"no room {room!r} in the configuration")
    at = parse_time(request.get("at"))
    if at <= now:
        when = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
        raise ScheduleError(f"--at {when} is in the past")
    raw = request.get("numbers")
    if isinstance(raw, str):
        raw = [n for n in raw.split(",") if n.strip()]
    if not isinstance(raw, list):
        raise ScheduleError("--numbers needs a comma-separated list of phone numbers")
    numbers = [clean_number(n) for n in raw]
    moderator_raw = request.get("moderator")
    moderator = None if moderator_raw in (None, "") else clean_number(moderator_raw, "--moderator")
    first = request.get("moderator_first", False)
    if not isinstance(first, bool):
        raise ScheduleError("moderator_first must be true or false")
    if first and moderator is None:
        raise ScheduleError("--moderator-first needs --moderator NUMBER")
    if not numbers and moderator is None:
        raise ScheduleError("--numbers needs at least one phone number")
    limit = config.schedules.max_numbers
    total = len(numbers) + (1 if moderator else 0)
    if total > limit:
        raise ScheduleError(
            f"{total} numbers is too many for one schedule (schedules.max_numbers: {limit})"
        )
    everyone = [*numbers, *([moderator] if moderator else [])]
    repeated = sorted({n for n in everyone if everyone.count(n) > 1})
    if repeated:
        raise ScheduleError(f"the same number twice: {', '.join(repeated)}")
    return NewSchedule(room, at, tuple(numbers), moderator, first)


def iso(at: float | None) -> str:
    """Epoch seconds as ISO 8601 UTC ('' for None)."""
    return "" if at is None else dt.datetime.fromtimestamp(at, dt.UTC).isoformat()


class ScheduleStore:
    """The `schedules` table."""

    def __init__(self, db: Database | str | Path) -> None:
        self.db = as_database(db)

    def add(self, new: NewSchedule, by: str, now: float) -> int:
        """Store a validated schedule as pending: its id."""
        calls = [
            {"number": n, "role": role, "outcome": "waiting"}
            for n, role in (
                *([(new.moderator, "moderator")] if new.moderator else []),
                *((n, "participant") for n in new.numbers),
            )
        ]
        row = {
            "room": new.room,
            "at": new.at,
            "numbers": json.dumps(list(new.numbers)),
            "moderator": new.moderator,
            "moderator_first": int(new.moderator_first),
            "status": "pending",
            "created_at": now,
            "created_by": by,
            "calls": json.dumps(calls),
        }
        with self.db.begin() as conn:
            found = conn.execute(sa.insert(TABLE).values(row).returning(TABLE.c.id)).scalar()
        assert found is not None
        return int(found)

    def rows(self, ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """Every schedule (or those of `ids`), soonest first, calls decoded."""
        query = sa.select(TABLE).order_by(TABLE.c.at, TABLE.c.id)
        if ids is not None:
            query = query.where(TABLE.c.id.in_(list(ids)))
        out = []
        for row in self.db.rows(query):
            row = dict(row)
            row["numbers"] = json.loads(row["numbers"] or "[]")
            row["calls"] = json.loads(row["calls"] or "[]")
            row["moderator_first"] = bool(row["moderator_first"])
            out.append(row)
        return out

    def get(self, schedule_id: int) -> dict[str, Any] | None:
        """One schedule, or None."""
        found = self.rows([schedule_id])
        return found[0] if found else None

    def cancel(self, schedule_id: int, now: float) -> bool:
        """Cancel a pending schedule, or stop a running one (the node calling
        it dials no further number); one that ended is not: whether it was."""
        c = TABLE.c
        with self.db.begin() as conn:
            done = conn.execute(
                sa.update(TABLE)
                .where(c.id == schedule_id, c.status.in_(CANCELLABLE))
                .values(status="cancelled", finished_at=now)
                .returning(c.id)
            ).first()
        return done is not None

    def cancelled(self, ids: Iterable[int]) -> list[int]:
        """Which of `ids` (this node's runs) an admin cancelled, here or on another node."""
        c = TABLE.c
        found = self.db.rows(sa.select(c.id).where(c.id.in_(list(ids)), c.status == "cancelled"))
        return [int(r["id"]) for r in found]

    def due(self, now: float) -> list[dict[str, Any]]:
        """The pending schedules whose time has come."""
        c = TABLE.c
        ids = self.db.rows(sa.select(c.id).where(c.status == "pending", c.at <= now))
        return self.rows([r["id"] for r in ids]) if ids else []

    def claim(self, schedule_id: int, node: str, now: float) -> bool:
        """Take a pending schedule for `node`: one conditional UPDATE, so of
        several nodes sharing the database exactly one gets it."""
        return self._move(schedule_id, "pending", "running", node=node, started_at=now)

    def miss(self, schedule_id: int, now: float, detail: str) -> bool:
        """A pending schedule too late to run: marked missed."""
        return self._move(schedule_id, "pending", "missed", finished_at=now, detail=detail)

    def interrupted(self, node: str, now: float) -> list[int]:
        """The schedules `node` was running when it stopped or crashed: no
        longer running (their calls went with the process)."""
        c = TABLE.c
        with self.db.begin() as conn:
            found = conn.execute(
                sa.update(TABLE)
                .where(c.status == "running", c.node == node)
                .values(status="interrupted", finished_at=now, detail="the server stopped")
                .returning(c.id)
            ).all()
        return [int(r[0]) for r in found]

    def save_calls(self, schedule_id: int, calls: list[dict[str, Any]]) -> None:
        """Each number's outcome so far."""
        with self.db.begin() as conn:
            conn.execute(
                sa.update(TABLE).where(TABLE.c.id == schedule_id).values(calls=json.dumps(calls))
            )

    def finish(self, schedule_id: int, calls: list[dict[str, Any]], now: float) -> None:
        """A run ended: its outcomes and `done` (a cancelled one stays
        `cancelled`, with the time it was cancelled)."""
        c = TABLE.c
        running = c.status == "running"
        with self.db.begin() as conn:
            conn.execute(
                sa.update(TABLE)
                .where(c.id == schedule_id, c.status.in_(("running", "cancelled")))
                .values(
                    status=sa.case((running, "done"), else_=c.status),
                    finished_at=sa.case((running, now), else_=c.finished_at),
                    calls=json.dumps(calls),
                )
            )

    def _move(self, schedule_id: int, old: str, new: str, **values: Any) -> bool:
        c = TABLE.c
        with self.db.begin() as conn:
            done = conn.execute(
                sa.update(TABLE)
                .where(c.id == schedule_id, c.status == old)
                .values(status=new, **values)
                .returning(c.id)
            ).first()
        return done is not None


@dataclass
class Run:
    """One schedule being called on this node."""

    id: int
    room: str
    calls: list[dict[str, Any]]  # the row's `calls`, updated as outcomes come
    moderator_first: bool
    participants: list[dict[str, Any]] = field(default_factory=list)  # still to call
    waiting: TimerHandle | None = None  # the bound on the moderator wait
    started: bool = False  # the participants' calls were started
    runs: int = 0  # call lists still going
    lists: list[Blast] = field(default_factory=list)  # its call lists, to stop on cancel
    cancelled: bool = False  # an admin cancelled it while it ran


class Scheduler:
    """The runner: a timer on the loop thread finds due schedules and calls them."""

    def __init__(
        self,
        config: Config,
        clock: WallClock,
        loop: Loop,
        stores: Stores,
        dialout: DialOut,
        entry: EntryIvr,
    ) -> None:
        self.config = config
        self.clock = clock
        self.loop = loop
        self.stores = stores
        self.dialout = dialout
        self.entry = entry
        self.runs: dict[int, Run] = {}
        self._store: ScheduleStore | None = None
        self._failing = False

    @property
    def store(self) -> ScheduleStore:
        """The `schedules` table of the open records database."""
        if self._store is None:
            assert self.stores.db is not None, "the records database is not open"
            self._store = ScheduleStore(self.stores.db)
        return self._store

    def reloaded(self, config: Config) -> None:
        """The next schedule uses the new rooms, limits and lines."""
        self.config = config

    def start(self) -> None:
        """After the records opened: forget what a crash left running, then poll."""
        gone = self.store.interrupted(self.stores.node, self.clock.ts())
        if gone:
            log.warning("schedules %s were running when the server stopped: interrupted", gone)
        self.loop.call_later(0, self._tick)

    def _tick(self) -> None:
        if self.loop.stopping:
            return
        try:
            if not self.stores.writer.away:
                if self.runs:
                    # Cancelled on another node (one database): stopped here.
                    for schedule_id in self.store.cancelled(list(self.runs)):
                        self.stop(schedule_id)
                self._poll()
            if self._failing:
                log.info("schedules: the records database answers again")
            self._failing = False
        except UNAVAILABLE as exc:
            if not self._failing:
                log.warning("schedules: the records database did not answer (%s)", exc)
            self._failing = True
        self.loop.call_later(POLL_SECONDS, self._tick)

    def _poll(self) -> None:
        if not self.dialout.router.accepting:
            return  # draining or stopping: due schedules wait for a node that takes calls
        now = self.clock.ts()
        late_limit = self.config.schedules.late_minutes * 60
        for row in self.store.due(now):
            late = now - row["at"]
            if late > late_limit:
                why = f"{late / 60:.0f} min late (schedules.late_minutes: {late_limit // 60})"
                if self.store.miss(row["id"], now, why):
                    log.warning("schedule %d room=%s missed: %s", row["id"], row["room"], why)
                continue
            # With several nodes the room's home calls (a room is mixed on
            # one node): another node's room is left for that node to claim.
            if self.entry.handoff.home_of(row["room"]) is not None:
                continue
            if not self.store.claim(row["id"], self.stores.node, now):
                continue  # another node took it first
            self._run(row)

    # -- a run ------------------------------------------------------------
    def _run(self, row: dict[str, Any]) -> None:
        run = Run(int(row["id"]), row["room"], row["calls"], row["moderator_first"])
        self.runs[run.id] = run
        log.info(
            "schedule %d room=%s starts: %d numbers%s",
            run.id,
            run.room,
            len(run.calls),
            ", the moderator first" if run.moderator_first else "",
        )
        if run.room not in self.dialout.rooms.configs:
            for c in run.calls:
                self._note(run, c, "failed", "the room is no longer configured")
            self._finish(run)
            return
        moderator = [c for c in run.calls if c["role"] == "moderator"]
        run.participants = [c for c in run.calls if c["role"] != "moderator"]
        if run.moderator_first and moderator:
            self._call(run, moderator)
            wait = self.config.schedules.moderator_wait_seconds
            run.waiting = self.loop.call_later(wait, lambda: self._moderator_done(run, "timeout"))
            if run.runs == 0:  # refused before any call: go on at once
                self._moderator_done(run, "not called")
        else:
            run.participants = list(run.calls)
            self._participants(run)
        if run.runs == 0 and run.id in self.runs:
            self._finish(run)

    def stop(self, schedule_id: int) -> bool:
        """A running schedule cancelled (`schedule cancel`, on this node or
        another): no further number is dialled, the ringing calls are hung up;
        whoever answered already hears the invitation and joins. Whether it ran
        here."""
        run = self.runs.get(schedule_id)
        if run is None or run.cancelled:
            return False
        run.cancelled = True
        if run.waiting is not None:
            run.waiting.cancel()
        for entry in run.calls:
            if entry["outcome"] == "waiting":
                self._note(run, entry, "not_called", "the schedule was cancelled")
        for call_list in run.lists:
            self.dialout.stop_list(call_list)
        log.info("schedule %d room=%s cancelled while calling", run.id, run.room)
        if run.runs == 0 and run.id in self.runs:
            self._finish(run)
        return True

    def _moderator_done(self, run: Run, why: str) -> None:
        """The moderator joined, or its call ended, or the wait ran out: the participants."""
        if run.started or run.cancelled or run.id not in self.runs:
            return
        if run.waiting is not None:
            run.waiting.cancel()
        log.info("schedule %d: moderator %s; calling the participants", run.id, why)
        self._participants(run)
        if run.runs == 0:
            self._finish(run)

    def _participants(self, run: Run) -> None:
        run.started = True
        self._call(run, run.participants)

    def _call(self, run: Run, entries: Sequence[dict[str, Any]]) -> None:
        """Check each number against the room line's profile; call the allowed ones."""
        allowed: list[tuple[str, Decision | None, str]] = []
        by_dial: dict[str, dict[str, Any]] = {}
        for entry in entries:
            checked = self.dialout.check(run.room, entry["number"])
            if isinstance(checked, str):
                self._note(run, entry, "refused", checked)
                continue
            dial, decision = checked
            by_dial[dial] = entry
            allowed.append((dial, decision, entry["role"]))
        if not allowed:
            return
        run.runs += 1

        def report(call: BlastCall, outcome: str, detail: str) -> None:
            entry = by_dial.get(call.number)
            if run.cancelled and outcome in ("no_answer", "failed"):
                # Hung up while ringing by the cancel, not the callee's answer.
                outcome, detail = "cancelled", "hung up: the schedule was cancelled"
            if entry is not None:
                self._note(run, entry, outcome, detail)
                if entry["role"] == "moderator" and run.moderator_first and outcome in FINAL:
                    self._moderator_done(run, outcome)

        def done() -> None:
            run.runs -= 1
            if run.runs == 0 and (run.started or run.cancelled) and run.id in self.runs:
                self._finish(run)

        # The invitation in the appliance's language: its first access number's.
        numbers = self.config.access_numbers
        language = numbers[0].language if numbers else "pt-BR"
        ring = float(self.config.schedules.ring_seconds)
        run.lists.append(self.dialout.call_list(run.room, allowed, report, done, ring, language))

    def _note(self, run: Run, entry: dict[str, Any], outcome: str, detail: str) -> None:
        """One number's outcome, with its time, written back to the row."""
        now = self.clock.ts()
        entry["outcome"] = outcome
        if detail:
            entry["detail"] = detail
        if outcome == "calling":
            entry["called_at"] = iso(now)
        elif outcome == "answered":
            entry["answered_at"] = iso(now)
        elif outcome in FINAL:
            entry["ended_at" if outcome != "joined" else "joined_at"] = iso(now)
        log.info(
            "schedule %d number=%s role=%s %s%s",
            run.id,
            entry["number"],
            entry["role"],
            outcome,
            f" ({detail})" if detail else "",
        )
        snapshot = [dict(c) for c in run.calls]
        self.stores.writer.write(self.store.save_calls, run.id, snapshot)

    def _finish(self, run: Run) -> None:
        self.runs.pop(run.id, None)
        if run.waiting is not None:
            run.waiting.cancel()
        for entry in run.calls:
            if entry["outcome"] == "waiting":
                entry["outcome"] = "not_called"
        snapshot = [dict(c) for c in run.calls]
        self.stores.writer.write(self.store.finish, run.id, snapshot, self.clock.ts())
        answered = sum(1 for c in run.calls if c.get("answered_at"))
        log.info(
            "schedule %d room=%s %s: %d of %d answered",
            run.id,
            run.room,
            "cancelled" if run.cancelled else "done",
            answered,
            len(run.calls),
        )


# `ponte report schedules`: one row per number of each schedule.
REPORT_COLUMNS = (
    "schedule",
    "room",
    "at",
    "status",
    "number",
    "role",
    "outcome",
    "called_at",
    "answered_at",
    "joined_at",
    "ended_at",
    "detail",
)


def report_rows(rows: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """Each number's outcome (answered, busy, no answer, refused by the
    profile...) with its times, schedule by schedule."""
    for row in rows:
        for call in row["calls"]:
            yield {
                "schedule": row["id"],
                "room": row["room"],
                "at": iso(row["at"]),
                "status": row["status"],
                "number": call.get("number"),
                "role": call.get("role"),
                "outcome": call.get("outcome"),
                "called_at": call.get("called_at", ""),
                "answered_at": call.get("answered_at", ""),
                "joined_at": call.get("joined_at", ""),
                "ended_at": call.get("ended_at", ""),
                "detail": call.get("detail", "") or row["detail"],
            }
