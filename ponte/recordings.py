"""Room recordings: the recorders of a room being recorded, their files under
`state_dir`/recordings/<room>/<start time>/, their record in the `recordings`
table, and the retention that deletes old ones.

The pure side (bridge.controls.record, bridge.room's Recording) decides when
a recording starts and stops and which member each recorder hears; this module
opens and closes the recorders on the user agent (pbx/recorder.py writes the
files off the media clock) and keeps the record. Loop thread, except the
files' completion, which arrives on the recorder's writer thread and only
touches the session under its lock and the record writer.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bridge.room import Recording, Room, RoomCommand
from pbx.recorder import Result
from pbx.useragent import UserAgent
from ponte.clock import WallClock
from ponte.legs import LegTable
from ponte.loop import Loop, TimerHandle
from ponte.stores import Stores
from provisioning.schema import Config
from provisioning.schema import Room as RoomConfig
from store.engine import Database
from store.migrate import as_database
from store.schema import recordings as TABLE

log = logging.getLogger("ponte.call")

DAY = 86400.0
MIX = "mix.wav"
STAMP = "%Y%m%dT%H%M%SZ"  # a folder per start, in UTC: sortable, no ':' in a path
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")

COLUMNS = (
    "id",
    "room",
    "department",
    "started_at",
    "ended_at",
    "seconds",
    "started_by",
    "stopped_by",
    "files",
    "bytes",
    "dropped_frames",
    "folder",
)


def iso(ts: float) -> str:
    """Epoch seconds as the records' ISO text (UTC)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


class RecordingStore:
    """The `recordings` table: one row per recording, its files as JSON."""

    def __init__(self, db: Database | str | Path) -> None:
        self.db = as_database(db)

    def begin(self, row: dict[str, Any]) -> None:
        """A recording started (its folder is its key)."""
        with self.db.begin() as conn:
            conn.execute(sa.insert(TABLE), row)

    def finish(self, folder: str, values: dict[str, Any]) -> None:
        """A recording's files are complete: its end, files and sizes."""
        with self.db.begin() as conn:
            conn.execute(sa.update(TABLE).where(TABLE.c.folder == folder).values(**values))

    def rows(
        self, room: str | None = None, lo: str | None = None, hi: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Recordings, oldest first, for `ponte report recordings` and the console."""
        c = TABLE.c
        stmt = sa.select(TABLE).order_by(c.started_ts, c.id)
        if room:
            stmt = stmt.where(c.room == room)
        if lo:
            stmt = stmt.where(c.started_at >= lo)
        if hi:
            stmt = stmt.where(c.started_at < hi)
        for row in self.db.rows(stmt):
            yield {**row, "files": json.loads(row["files"] or "[]")}

    def get(self, rec_id: int) -> dict[str, Any] | None:
        """One recording by id."""
        rows = self.db.rows(sa.select(TABLE).where(TABLE.c.id == rec_id))
        for row in rows:
            return {**row, "files": json.loads(row["files"] or "[]")}
        return None

    def forget_before(self, ts: float) -> list[str]:
        """Drop the rows of recordings started before `ts`: their folders."""
        c = TABLE.c
        with self.db.begin() as conn:
            old = [r[0] for r in conn.execute(sa.select(c.folder).where(c.started_ts < ts))]
            conn.execute(sa.delete(TABLE).where(c.started_ts < ts))
        return old


def report_rows(rows: Iterator[dict[str, Any]], fmt: str) -> Iterator[dict[str, Any]]:
    """Rows as the report prints them: in a table or CSV the files are one
    cell, "name:bytes ..."; the JSON keeps the list of objects."""
    for row in rows:
        if fmt != "json":
            row = {**row, "files": " ".join(f"{f['name']}:{f['bytes']}" for f in row["files"])}
        yield row


@dataclass
class Session:
    """One recording in progress (or finishing)."""

    room: str
    folder: str  # <room>/<stamp>, relative to the recordings root
    path: Path
    started: float
    by: str
    mix: int
    tracks: dict[int, int] = field(default_factory=dict)  # member leg -> recorder
    names: dict[int, str] = field(default_factory=dict)  # recorder -> file name
    callers: dict[int, tuple[str, int]] = field(default_factory=dict)  # recorder -> (caller, leg)
    files: list[dict[str, Any]] = field(default_factory=list)
    open_files: int = 0
    stopped: float | None = None
    stopped_by: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Recordings:
    """The rooms being recorded on this node (loop thread)."""

    def __init__(
        self,
        config: Config,
        clock: WallClock,
        loop: Loop,
        ua: UserAgent,
        legs: LegTable,
        stores: Stores,
    ) -> None:
        self.config = config
        self.clock = clock
        self.loop = loop
        self.ua = ua
        self.legs = legs
        self.stores = stores
        self.active: dict[str, Session] = {}
        self._store: RecordingStore | None = None
        self._daily: TimerHandle | None = None

    @property
    def root(self) -> Path:
        """Where every recording's folder lives."""
        return Path(self.config.state_dir) / "recordings"

    @property
    def store(self) -> RecordingStore | None:
        """The table, once the records database is open."""
        if self._store is None and self.stores.opened and self.stores.db is not None:
            self._store = RecordingStore(self.stores.db)
        return self._store

    # -- start and stop ---------------------------------------------------------
    def start(self, room: Room, cfg: RoomConfig | None, by: str) -> list[RoomCommand]:
        """Open the mix (and a track per member when asked): the room's links follow."""
        if room.name in self.active:
            return []
        now = self.clock.ts()
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime(STAMP)
        folder, n = f"{room.name}/{stamp}", 1
        while (self.root / folder).exists():
            n += 1
            folder = f"{room.name}/{stamp}-{n}"
        path = self.root / folder
        try:
            path.mkdir(parents=True, mode=0o750)
            mix = self.ua.add_recorder(path / MIX)
        except (OSError, RuntimeError) as exc:
            log.error("room=%s recording could not start: %s", room.name, exc)
            return []
        per_member = self.config.recordings.tracks
        if cfg is not None and cfg.record_tracks is not None:
            per_member = cfg.record_tracks
        session = Session(room.name, folder, path, now, self.who(by), mix)
        session.names[mix] = MIX
        session.open_files = 1
        self.active[room.name] = session
        log.info("room=%s recording started by %s into %s", room.name, session.by, path)
        store = self.store
        if store is not None:
            row = {
                "room": room.name,
                "department": cfg.department if cfg else None,
                "node": self.stores.node,
                "folder": folder,
                "started_at": iso(now),
                "started_ts": now,
                "started_by": session.by,
                "files": "[]",
            }
            self.stores.writer.write(store.begin, row)
        cmds = room.set_recording(Recording(mix, per_member))
        if per_member:
            for leg in list(room.members):
                cmds += self.open_track(room, leg)
        self.purge()
        return cmds

    def open_track(self, room: Room, leg: int) -> list[RoomCommand]:
        """A member's own track (at the start, or when it joins)."""
        session = self.active.get(room.name)
        if session is None or leg in session.tracks:
            return []
        found = self.legs.get(leg)
        caller = found.caller if found is not None else str(leg)
        name = f"{_SAFE.sub('_', caller).lstrip('.')[:40] or 'caller'}-leg{leg}.wav"
        try:
            rec = self.ua.add_recorder(session.path / name)
        except (OSError, RuntimeError) as exc:
            log.error("room=%s track of call %d could not start: %s", room.name, leg, exc)
            return []
        with session.lock:
            session.tracks[leg] = rec
            session.names[rec] = name
            session.callers[rec] = (caller, leg)
            session.open_files += 1
        return room.set_track(leg, rec)

    def close_track(self, room: str, rec: int) -> None:
        """A member with a track left: its file ends now."""
        session = self.active.get(room)
        if session is not None:
            session.tracks = {m: r for m, r in session.tracks.items() if r != rec}
            self._close(session, rec)

    def stop(self, room: Room | None, name: str, by: str) -> list[RoomCommand]:
        """Close every recorder of the room; the record is completed once
        the writer has finished the files."""
        session = self.active.pop(name, None)
        if session is None:
            return []
        # Removing a port from the bridge drops its links with it; the
        # Disconnects the room returns then find nothing left to undo.
        cmds = room.set_recording(None) if room is not None else []
        session.stopped, session.stopped_by = self.clock.ts(), self.who(by)
        self._close_all(session)
        log.info("room=%s recording stopped by %s", name, session.stopped_by)
        return cmds

    def stop_all(self, by: str) -> None:
        """At shutdown: close every recording now (the files get completed)."""
        for name in list(self.active):
            session = self.active.pop(name)
            session.stopped, session.stopped_by = self.clock.ts(), by
            self._close_all(session)

    def _close_all(self, session: Session) -> None:
        for rec in [*session.tracks.values(), session.mix]:
            self._close(session, rec)
        session.tracks.clear()

    def _close(self, session: Session, rec: int) -> None:
        self.ua.end_recorder(rec, lambda result: self._file_done(session, rec, result))

    def _file_done(self, session: Session, rec: int, result: Result) -> None:
        """A file is complete (the recorder's writer thread)."""
        with session.lock:
            entry: dict[str, Any] = {
                "name": session.names.get(rec, result.path.name),
                "bytes": result.bytes,
                "seconds": round(result.frames * 0.02, 2),
                "dropped_frames": result.dropped,
            }
            if rec in session.callers:
                entry["caller"], entry["leg"] = session.callers[rec]
            session.files.append(entry)
            session.open_files -= 1
            log.info(
                "recording %s: %d frames (%.2f s over %.2f s of wall time), %d lost",
                result.path,
                result.frames,
                result.frames * 0.02,
                result.seconds,
                result.dropped,
            )
            if result.dropped or result.error:
                log.warning(
                    "recording %s: %d frames lost%s",
                    result.path,
                    result.dropped,
                    f", {result.error}" if result.error else "",
                )
            if session.open_files > 0 or session.stopped is None:
                return
            files = sorted(session.files, key=lambda f: (f["name"] != MIX, f["name"]))
        store = self.store
        if store is None:
            return
        values = {
            "ended_at": iso(session.stopped),
            "ended_ts": session.stopped,
            "seconds": round(session.stopped - session.started, 2),
            "stopped_by": session.stopped_by,
            "files": json.dumps(files),
            "bytes": sum(f["bytes"] for f in files),
            "dropped_frames": sum(f["dropped_frames"] for f in files),
        }
        self.stores.writer.write(store.finish, session.folder, values)

    def who(self, by: str) -> str:
        """'leg 7' (a member's key) -> 'caller 1001 (moderator)'; an admin's name as is."""
        if by.startswith("leg "):
            leg = self.legs.get(int(by[4:]))
            if leg is not None:
                role = leg.seat.role if leg.seat else "member"
                return f"{leg.caller} ({role})"
        return by

    # -- retention ---------------------------------------------------------------
    def start_retention(self) -> None:
        """Delete what is past the retention now and once a day."""
        self.purge()
        self._daily = self.loop.call_later(DAY, self.start_retention)

    def purge(self) -> None:
        """Delete recordings older than `recordings.retention_days`, off the
        loop thread (on the record writer's)."""
        cutoff = self.clock.ts() - self.config.recordings.retention_days * DAY
        self.stores.writer.write(self._purge, cutoff, self.root)

    def _purge(self, cutoff: float, root: Path) -> None:
        store = self.store
        folders = set(store.forget_before(cutoff)) if store is not None else set()
        if root.is_dir():  # folders without a row too (a lost database, a copy)
            for room in root.iterdir():
                for day in room.iterdir() if room.is_dir() else ():
                    started = _stamp(day.name)
                    if started is not None and started < cutoff:
                        folders.add(f"{room.name}/{day.name}")
        for folder in folders:
            path = (root / folder).resolve()
            if path.parent.parent == root.resolve() and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                log.info("recording %s deleted (older than the retention)", folder)


def _stamp(name: str) -> float | None:
    try:
        return dt.datetime.strptime(name[:16], STAMP).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def file_path(root: Path, folder: str, name: str, files: list[dict[str, Any]]) -> Path | None:
    """A recording's file to download: only a name its record lists, and only
    inside the recordings root (a crafted name or folder gets None)."""
    if name not in {f.get("name") for f in files} or "/" in name or name.startswith("."):
        return None
    base = root.resolve()
    path = (root / folder / name).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path
