"""Conference billing records (minutes x participants), in the records
database (SQLite, or PostgreSQL shared by several nodes).

A session runs from a room's first join to its last leave. Each leg's row is
written when the leg ends, and the session row is updated in the same
transaction, so a crash of the process loses nothing that had finished
(WAL journal, one commit per event). A leg in a room has a live row, its
time checkpointed every few seconds; after a crash, start-up bills it up to
its last checkpoint and closes the session (`ended_by: crash`).

Billed minutes: each leg's duration rounded up to the whole minute, summed
over the legs of the session; exact participant-seconds are kept beside them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from store.engine import Database, excluded, rounded
from store.migrate import as_database
from store.schema import conference_legs, conference_live, conference_sessions, id_blocks

SESSIONS, LEGS = conference_sessions, conference_legs
# Legs in a room now, per app-server node, with the last checkpoint: what a
# crash would otherwise lose (their row is written when they leave).
LIVE = conference_live
# Session ids are taken from the database in blocks this size, so each node
# numbers its new sessions without a round trip and no two nodes clash.
ID_BLOCK = 50
CRASH = "crash"


def iso(ts: float) -> str:
    """Epoch seconds -> ISO 8601 UTC with milliseconds."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class LegRecord:
    """One leg's stay in a room."""

    session_id: int
    leg: int
    caller: str
    role: str
    name_file: str | None
    joined: float  # epoch seconds
    left: float
    ended_by: str  # "caller" | "moderator_exit" | "room" | "server"
    joined_by: str = "dial-in"
    counter_pin_name: str | None = None  # whose individual counter-PIN let a moderator in


# Written per session and per leg: built once, run with parameters.
INSERT_SESSION = sa.insert(SESSIONS)
INSERT_LEG = sa.insert(LEGS)
CHECKPOINT_LEGS = (
    sa.update(LIVE).where(LIVE.c.node == sa.bindparam("n")).values(checkpoint=sa.bindparam("at"))
)
DROP_LIVE_LEG = sa.delete(LIVE).where(
    LIVE.c.node == sa.bindparam("n"), LIVE.c.leg == sa.bindparam("l")
)
ADD_LEG = (
    sa.update(SESSIONS)
    .where(SESSIONS.c.id == sa.bindparam("sid"))
    .values(
        legs=SESSIONS.c.legs + 1,
        participant_seconds=SESSIONS.c.participant_seconds + sa.bindparam("s", type_=sa.Double),
        billed_minutes=SESSIONS.c.billed_minutes + sa.bindparam("b", type_=sa.Integer),
    )
)


class BillingStore:
    """Conference sessions and their legs."""

    def __init__(self, db: Database | str | Path) -> None:
        self.db = as_database(db)
        c = SESSIONS.c
        self._peak = (
            sa.update(SESSIONS)
            .where(c.id == sa.bindparam("sid"))
            .values(peak_members=self.db.greatest(c.peak_members, sa.bindparam("members")))
        )
        self._live_leg = self.db.upsert(
            LIVE,
            ("node", "leg"),
            {
                name: excluded(LIVE, name)
                for name in ("session_id", "caller", "role", "name_file", "joined")
                + ("joined_by", "counter_pin_name", "checkpoint")
            },
        )
        # Session ids this node holds, claimed from the database in blocks.
        self._ids: deque[int] = deque()

    def new_session_id(self) -> int:
        """An id for the next session, known before its row is written (so the
        write can wait out a full disk or an absent database without holding
        the call up). Ids come in blocks claimed atomically from the database
        (`claim_ids`); with none in hand, this claims a block now."""
        if not self._ids:
            self.claim_ids()
        return self._ids.popleft()

    def ids_in_hand(self) -> int:
        """How many session ids this store holds unused."""
        return len(self._ids)

    def claim_ids(self) -> None:
        """Claim the next block of session ids, kept after those in hand."""
        self._ids.extend(self._claim_block())

    def _claim_block(self) -> range:
        name = SESSIONS.name
        with self.db.begin() as conn:
            conn.execute(self.db.upsert(id_blocks, ("name",)), {"name": name, "next_id": 1})
            first = conn.execute(
                sa.update(id_blocks)
                .where(id_blocks.c.name == name)
                .values(next_id=id_blocks.c.next_id + ID_BLOCK)
                .returning(id_blocks.c.next_id - ID_BLOCK)
            ).scalar_one()
        return range(int(first), int(first) + ID_BLOCK)

    def open_session(self, room: str, started: float, session_id: int | None = None) -> int:
        """A room came alive: start its session row."""
        values: dict[str, Any] = {
            "room": room,
            "started_at": iso(started),
            "started_ts": started,
            "ended_at": None,
            "ended_ts": None,
            "legs": 0,
            "participant_seconds": 0.0,
            "billed_minutes": 0,
            "peak_members": 0,
        }
        if session_id is None:
            session_id = self.new_session_id()
        with self.db.begin() as conn:
            conn.execute(INSERT_SESSION, {"id": session_id, **values})
        return session_id

    def note_peak(self, session_id: int, members: int) -> None:
        """Raise the session's peak member count if `members` beats it."""
        with self.db.begin() as conn:
            conn.execute(self._peak, {"sid": session_id, "members": members})

    def leg_joined(self, node: str, rec: LegRecord) -> None:
        """A leg entered a room on `node` (`rec.left` is unused yet)."""
        values = {
            "node": node,
            "session_id": rec.session_id,
            "leg": rec.leg,
            "caller": rec.caller,
            "role": rec.role,
            "name_file": rec.name_file,
            "joined": rec.joined,
            "joined_by": rec.joined_by,
            "counter_pin_name": rec.counter_pin_name,
            "checkpoint": rec.joined,
        }
        with self.db.begin() as conn:
            conn.execute(self._live_leg, values)

    def checkpoint(self, node: str, at: float) -> None:
        """Every leg in a room on `node` was there at `at` (one statement)."""
        with self.db.begin() as conn:
            conn.execute(CHECKPOINT_LEGS, {"n": node, "at": at})

    def close_crashed(self, node: str) -> tuple[int, int]:
        """Bill the legs `node` had in rooms when it died, up to their last
        checkpoint (`ended_by: crash`), and close the sessions nobody is in
        any more at their last leg's end. Returns (legs, sessions)."""
        live = list(self.db.rows(sa.select(LIVE).where(LIVE.c.node == node)))
        for row in live:
            self.leg_ended(
                LegRecord(
                    row["session_id"],
                    row["leg"],
                    row["caller"],
                    row["role"],
                    row["name_file"],
                    row["joined"],
                    row["checkpoint"],
                    CRASH,
                    row["joined_by"],
                    row["counter_pin_name"],
                ),
                node,
            )
        # Open sessions with no leg in a room on any node: left by a crash.
        s, g = SESSIONS.c, LEGS.c
        last_left = sa.select(sa.func.max(g.left_at)).where(g.session_id == s.id).scalar_subquery()
        still_in = sa.exists().where(LIVE.c.session_id == s.id)
        orphans = list(
            self.db.rows(
                sa.select(s.id, sa.func.coalesce(last_left, s.started_at).label("last")).where(
                    s.ended_at.is_(None), ~still_in
                )
            )
        )
        with self.db.begin() as conn:
            for o in orphans:
                ended = dt.datetime.fromisoformat(o["last"]).timestamp()
                conn.execute(
                    sa.update(SESSIONS)
                    .where(s.id == o["id"])
                    .values(ended_at=o["last"], ended_ts=ended, ended_by=CRASH)
                )
        return len(live), len(orphans)

    def leg_ended(self, rec: LegRecord, node: str | None = None) -> None:
        """Write a finished leg and add it to its session, in one commit
        (forgetting its live row on `node`)."""
        seconds = max(0.0, rec.left - rec.joined)
        billed = math.ceil(seconds / 60) if seconds > 0 else 0
        row = {
            "session_id": rec.session_id,
            "leg": rec.leg,
            "caller": rec.caller,
            "role": rec.role,
            "name_file": rec.name_file,
            "joined_at": iso(rec.joined),
            "left_at": iso(rec.left),
            "seconds": round(seconds, 3),
            "billed_minutes": billed,
            "ended_by": rec.ended_by,
            "joined_by": rec.joined_by,
            "counter_pin_name": rec.counter_pin_name,
        }
        with self.db.begin() as conn:
            conn.execute(INSERT_LEG, row)
            conn.execute(ADD_LEG, {"sid": rec.session_id, "s": seconds, "b": billed})
            if node is not None:
                conn.execute(DROP_LIVE_LEG, {"n": node, "l": rec.leg})

    def close_session(self, session_id: int, ended: float) -> None:
        """The room emptied."""
        with self.db.begin() as conn:
            conn.execute(
                sa.update(SESSIONS)
                .where(SESSIONS.c.id == session_id)
                .values(ended_at=iso(ended), ended_ts=ended, ended_by="empty")
            )

    # -- reports ----------------------------------------------------------
    def sessions(
        self, room: str | None = None, start: float | None = None, end: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Sessions, oldest first, filtered by room and start time, each with
        `counter_pins`: the names of the individual counter-PINs its
        moderators keyed (comma-separated, None if none)."""
        c = SESSIONS.c
        where = []
        if room:
            where.append(c.room == room)
        if start is not None:
            where.append(c.started_ts >= start)
        if end is not None:
            where.append(c.started_ts < end)
        # One query up front rather than one per session; only the sessions
        # that used a named counter-PIN are held in memory.
        g = LEGS.c
        named: dict[int, set[str]] = {}
        for row in self.db.rows(
            sa.select(g.session_id, g.counter_pin_name)
            .distinct()
            .join_from(LEGS, SESSIONS, g.session_id == c.id)
            .where(g.counter_pin_name.is_not(None), *where)
        ):
            named.setdefault(row["session_id"], set()).add(row["counter_pin_name"])
        stmt = sa.select(
            c.id,
            c.room,
            c.started_at,
            c.ended_at,
            c.ended_by,
            c.legs,
            c.peak_members,
            rounded(c.participant_seconds / 60.0, 2).label("participant_minutes"),
            c.billed_minutes,
        ).order_by(c.started_ts)
        for row in self.db.rows(stmt.where(*where)):
            names = named.get(row["id"])
            row["counter_pins"] = ", ".join(sorted(names)) if names else None
            yield row

    def legs(self, session_id: int) -> Iterator[dict[str, Any]]:
        """The legs of one session, in join order."""
        g = LEGS.c
        yield from self.db.rows(
            sa.select(
                g.leg,
                g.caller,
                g.role,
                g.name_file,
                g.joined_at,
                g.left_at,
                g.seconds,
                g.billed_minutes,
                g.ended_by,
                g.joined_by,
                g.counter_pin_name,
            )
            .where(g.session_id == session_id)
            .order_by(g.joined_at)
        )
