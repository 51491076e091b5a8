"""History rows for calls between extensions, from Kamailio's accounting.

The app server sees only the calls that pass through it; a call from 1001 to
1002 is relayed by Kamailio alone. Kamailio's `acc` module writes one row
per answered or failed INVITE and one per BYE into its own database
(kamailio.cfg: `db_extra` adds the time and the users). This module pairs
them by Call-ID into the same `calls` rows the app server writes.

Rows are deleted from Kamailio's table only once they have become a history
row (or, for a BYE that matches no extension call, once they are stale), so
a restart of ponte picks up a call that was still up.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponte.records import iso

log = logging.getLogger("ponte.extcalls")

# An unmatched BYE (a call to the app server, which keeps its own history)
# is dropped once it is this old: its INVITE row would have been seen.
STALE_BYE = 60.0
# An answered call whose BYE row never comes (Kamailio lost the write: a
# lock held past the busy timeout pbx/sqlite_busy.c gives it, or it was
# down when the BYE passed) would
# hold the watermark back for good, and every round would read the table
# from there again. The relay tells: once rtpengine no longer holds the
# call (it forgets it at the BYE, or after its media time-out), the call
# ended then. It is asked again about a call this often, and the row waits
# this long after for a late BYE row.
RELAY_CHECK = 30.0
GONE_GRACE = 10.0


@dataclass(frozen=True)
class AccRow:
    """One row of Kamailio's acc table."""

    id: int
    method: str
    callid: str
    sip_code: int
    sip_reason: str
    ts: float
    src_user: str
    dst_user: str


def disposition(code: int) -> str:
    """How a call ended, by its final SIP code (shared with the app server)."""
    if 200 <= code < 300:
        return "answered"
    return DISPOSITIONS.get(code, "failed")


# How an unanswered call ended, by the final SIP code its caller got.
DISPOSITIONS = {
    403: "refused",
    404: "not_found",
    480: "no_answer",
    408: "no_answer",
    486: "busy",
    600: "busy",
    487: "cancelled",
    503: "rejected",
}


def call_row(invite: AccRow, bye: AccRow | None, ended_at: float | None = None) -> dict[str, Any]:
    """The history row of one extension call: answered with its BYE (or,
    its BYE row lost, ended when the relay forgot it: `ended_at`), or failed."""
    answered = invite.sip_code // 100 == 2
    ended = bye.ts if bye is not None else ended_at if ended_at is not None else invite.ts
    return {
        "leg": None,
        "origin": invite.src_user,
        "destination": invite.dst_user,
        "call_type": "extension",
        "started_at": iso(invite.ts),
        "answered_at": iso(invite.ts) if answered else None,
        "ended_at": iso(ended),
        "duration": round(max(0.0, ended - invite.ts), 3) if answered else 0.0,
        "disposition": disposition(invite.sip_code),
        "sip_code": invite.sip_code,
        "trunk": None,
        "line": invite.src_user,
        "profile_rule": None,
        "cut_at_limit": 0,
        "sip_call_id": invite.callid,
    }


class AccReader:
    """Reads and pairs Kamailio's acc rows (its own SQLite file, acc.db).

    Kamailio's db_sqlite sets no busy timeout of its own (pbx/sqlite_busy.c
    gives it 2 s): a long write of ours at the moment it inserts could still
    lose its row. So the reader never writes there while
    Kamailio runs; it keeps a watermark (the last row fully consumed) in the
    records database instead, and `prune` empties consumed rows before
    Kamailio starts.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # Answered calls with no BYE row yet: when the relay was last asked,
        # and since when it has not held the call.
        self._asked: dict[str, float] = {}
        self._gone: dict[str, float] = {}

    def _rows(self, db: sqlite3.Connection, after: int) -> list[AccRow]:
        cur = db.execute(
            "SELECT id, method, callid, sip_code, sip_reason, ts, src_user, dst_user "
            "FROM acc WHERE id > ? ORDER BY id",
            (after,),
        )
        rows = []
        for rid, method, callid, code, reason, ts, src, dst in cur:
            try:
                at = float(ts)
                number = int(code)
            except (TypeError, ValueError):
                at, number = 0.0, 0
            rows.append(AccRow(rid, method, callid, number, reason, at, src, dst))
        return rows

    def collect(
        self, after: int, now: float, relay_holds: Callable[[str], bool | None] | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """History rows of the extension calls that ended among the acc rows
        past `after`, and the new watermark (every row up to it consumed;
        an answered call still up holds it back).

        `relay_holds(call_id)` says whether rtpengine still holds a call
        (None: it cannot tell): an answered call it no longer holds, whose
        BYE row has not come `GONE_GRACE` seconds later, ended when it was
        first found gone."""
        if not self.path.exists():
            return [], after
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1.0)
            try:
                rows = self._rows(db, after)
            finally:
                db.close()
        except sqlite3.Error as exc:  # no acc table yet, or a checkpoint under way
            log.debug("acc not readable: %s", exc)
            return [], after
        invites = {r.callid: r for r in rows if r.method == "INVITE"}
        byes = {r.callid: r for r in rows if r.method == "BYE"}
        out: list[dict[str, Any]] = []
        held: list[int] = []  # rows that must be read again next time
        for callid, inv in invites.items():
            if inv.sip_code // 100 != 2:
                out.append(call_row(inv, None))
            elif callid in byes:
                out.append(call_row(inv, byes[callid]))
            elif (gone := self._gone_since(callid, now, relay_holds)) is not None:
                out.append(call_row(inv, None, ended_at=gone))
            else:
                held.append(inv.id)
        # What is known of calls no longer read (consumed, or their BYE came).
        waiting = {c for c, r in invites.items() if r.sip_code // 100 == 2 and c not in byes}
        self._asked = {c: t for c, t in self._asked.items() if c in waiting}
        self._gone = {c: t for c, t in self._gone.items() if c in waiting}
        for callid, bye in byes.items():
            if callid not in invites and now - bye.ts <= STALE_BYE:
                held.append(bye.id)  # its INVITE row may still be on its way
        last = rows[-1].id if rows else after
        mark = min(held) - 1 if held else last
        return out, max(mark, after)

    def _gone_since(
        self, callid: str, now: float, relay_holds: Callable[[str], bool | None] | None
    ) -> float | None:
        """When the relay was first found not to hold this answered call, if
        that was `GONE_GRACE` ago; None while it is up or cannot be told."""
        gone = self._gone.get(callid)
        if gone is None:
            asked = self._asked.get(callid)
            if relay_holds is None or (asked is not None and now - asked < RELAY_CHECK):
                return None
            self._asked[callid] = now
            if relay_holds(callid) is not False:
                return None
            log.warning("extension call %s: the relay dropped it, acc has no BYE", callid)
            self._gone[callid] = gone = now
        return gone if now - gone >= GONE_GRACE else None

    def prune(self, upto: int) -> None:
        """Delete consumed rows (call only while Kamailio is stopped)."""
        if not self.path.exists():
            return
        try:
            db = sqlite3.connect(self.path, timeout=5.0)
            try:
                with db:
                    db.execute("DELETE FROM acc WHERE id <= ?", (upto,))
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.warning("cannot prune %s: %s", self.path, exc)
