"""Conference billing records in SQLite (minutes x participants).

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

SESSIONS = "conference_sessions"
LEGS = "conference_legs"
# Legs in a room now, per app-server node, with the last checkpoint: what a
# crash would otherwise lose (their row is written when they leave).
LIVE = "conference_live"
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


class BillingStore:
    """The SQLite file holding conference sessions and their legs."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._next_id: int | None = None
        self._schema()

    def _schema(self) -> None:
        if SESSIONS not in self.db.table_names():
            self.db.table(SESSIONS).create(
                {
                    "id": int,
                    "room": str,
                    "started_at": str,
                    "ended_at": str,
                    "started_ts": float,
                    "ended_ts": float,
                    "legs": int,
                    "participant_seconds": float,
                    "billed_minutes": int,
                    "peak_members": int,
                },
                pk="id",
            )
            self.db.table(SESSIONS).create_index(["room", "started_ts"])
        if LEGS not in self.db.table_names():
            self.db.table(LEGS).create(
                {
                    "id": int,
                    "session_id": int,
                    "leg": int,
                    "caller": str,
                    "role": str,
                    "name_file": str,
                    "joined_at": str,
                    "left_at": str,
                    "seconds": float,
                    "billed_minutes": int,
                    "ended_by": str,
                    "joined_by": str,
                },
                pk="id",
                foreign_keys=[("session_id", SESSIONS, "id")],
            )
            self.db.table(LEGS).create_index(["session_id"])
        if "ended_by" not in self.db.table(SESSIONS).columns_dict:
            self.db.table(SESSIONS).add_column("ended_by", str)
        if LIVE not in self.db.table_names():
            self.db.table(LIVE).create(
                {
                    "node": str,
                    "session_id": int,
                    "leg": int,
                    "caller": str,
                    "role": str,
                    "name_file": str,
                    "joined": float,
                    "joined_by": str,
                    "checkpoint": float,
                },
                pk=("node", "leg"),
            )

    def new_session_id(self) -> int:
        """An id for the next session, known before its row is written (so the
        write can wait out a full disk without holding the call up)."""
        if self._next_id is None:
            row = self.db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {SESSIONS}").fetchone()
            self._next_id = int(row[0]) + 1
        sid, self._next_id = self._next_id, self._next_id + 1
        return sid

    def open_session(self, room: str, started: float, session_id: int | None = None) -> int:
        """A room came alive: start its session row."""
        with self.db.conn:
            table = self.db.table(SESSIONS).insert(
                {
                    **({"id": session_id} if session_id is not None else {}),
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
            )
        assert table.last_pk is not None  # set by every insert
        return int(table.last_pk)

    def note_peak(self, session_id: int, members: int) -> None:
        """Raise the session's peak member count if `members` beats it."""
        with self.db.conn:
            self.db.execute(
                f"UPDATE {SESSIONS} SET peak_members = MAX(peak_members, ?) WHERE id = ?",
                [members, session_id],
            )

    def leg_joined(self, node: str, rec: LegRecord) -> None:
        """A leg entered a room on `node` (`rec.left` is unused yet)."""
        with self.db.conn:
            self.db.table(LIVE).insert(
                {
                    "node": node,
                    "session_id": rec.session_id,
                    "leg": rec.leg,
                    "caller": rec.caller,
                    "role": rec.role,
                    "name_file": rec.name_file,
                    "joined": rec.joined,
                    "joined_by": rec.joined_by,
                    "checkpoint": rec.joined,
                },
                replace=True,
            )

    def checkpoint(self, node: str, at: float) -> None:
        """Every leg in a room on `node` was there at `at` (one statement)."""
        with self.db.conn:
            self.db.execute(f"UPDATE {LIVE} SET checkpoint = ? WHERE node = ?", [at, node])

    def close_crashed(self, node: str) -> tuple[int, int]:
        """Bill the legs `node` had in rooms when it died, up to their last
        checkpoint (`ended_by: crash`), and close the sessions nobody is in
        any more at their last leg's end. Returns (legs, sessions)."""
        live = list(self.db.query(f"SELECT * FROM {LIVE} WHERE node = ?", [node]))
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
                ),
                node,
            )
        # Open sessions with no leg in a room on any node: left by a crash.
        orphans = self.db.execute(
            f"SELECT s.id, COALESCE(MAX(l.left_at), s.started_at) FROM {SESSIONS} s "
            f"LEFT JOIN {LEGS} l ON l.session_id = s.id WHERE s.ended_at IS NULL "
            f"AND NOT EXISTS (SELECT 1 FROM {LIVE} v WHERE v.session_id = s.id) GROUP BY s.id"
        ).fetchall()
        with self.db.conn:
            for sid, last in orphans:
                ended = dt.datetime.fromisoformat(last).timestamp()
                self.db.table(SESSIONS).update(
                    sid, {"ended_at": last, "ended_ts": ended, "ended_by": CRASH}
                )
        return len(live), len(orphans)

    def leg_ended(self, rec: LegRecord, node: str | None = None) -> None:
        """Write a finished leg and add it to its session, in one commit
        (forgetting its live row on `node`)."""
        seconds = max(0.0, rec.left - rec.joined)
        billed = math.ceil(seconds / 60) if seconds > 0 else 0
        with self.db.conn:
            self.db.table(LEGS).insert(
                {
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
                }
            )
            self.db.execute(
                f"UPDATE {SESSIONS} SET legs = legs + 1, "
                "participant_seconds = participant_seconds + ?, "
                "billed_minutes = billed_minutes + ? WHERE id = ?",
                [seconds, billed, rec.session_id],
            )
            if node is not None:
                self.db.execute(f"DELETE FROM {LIVE} WHERE node = ? AND leg = ?", [node, rec.leg])

    def close_session(self, session_id: int, ended: float) -> None:
        """The room emptied."""
        with self.db.conn:
            self.db.table(SESSIONS).update(
                session_id, {"ended_at": iso(ended), "ended_ts": ended, "ended_by": "empty"}
            )

    # -- reports ----------------------------------------------------------
    def sessions(
        self, room: str | None = None, start: float | None = None, end: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Sessions, oldest first, filtered by room and start time."""
        where: list[str] = ["1=1"]
        args: list[str | float] = []
        if room:
            where.append("room = ?")
            args.append(room)
        if start is not None:
            where.append("started_ts >= ?")
            args.append(start)
        if end is not None:
            where.append("started_ts < ?")
            args.append(end)
        sql = (
            "SELECT id, room, started_at, ended_at, ended_by, legs, peak_members, "
            "ROUND(participant_seconds / 60.0, 2) AS participant_minutes, billed_minutes "
            f"FROM {SESSIONS} WHERE {' AND '.join(where)} ORDER BY started_ts"
        )
        yield from self.db.query(sql, args)

    def legs(self, session_id: int) -> Iterator[dict[str, Any]]:
        """The legs of one session, in join order."""
        yield from self.db.query(
            "SELECT leg, caller, role, name_file, joined_at, left_at, seconds, billed_minutes, "
            f"ended_by, joined_by FROM {LEGS} WHERE session_id = ? ORDER BY joined_at",
            [session_id],
        )
