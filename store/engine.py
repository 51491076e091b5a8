"""Which database, and how to talk to it: a file path means SQLite (nothing
to install), a `postgresql://` URL means a shared PostgreSQL.

The few statements whose SQL differs between the two (an upsert, the larger
of two values) are built here, once, so the stores above never switch on the
dialect themselves.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite as lite
from sqlalchemy.engine import URL, Connection, Engine, make_url

POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://")
# Seconds to wait for PostgreSQL to accept a connection, or to acknowledge
# what was sent on one: a vanished server must not hold the app server's loop
# for long (writes wait in the RecordWriter). Noticing a server that drops
# packets costs two of them (the pooled connection's ping, then a new
# connection), which must stay under the 5 s in which Kamailio wants the app
# server's first answer to an INVITE. libpq's least connect_timeout is 2.
CONNECT_TIMEOUT = 2
# Seconds SQLite waits for another writer (a report, the CLI) to finish.
SQLITE_BUSY_TIMEOUT = 10
# Once PostgreSQL failed to answer, nothing asks it again until a probe on a
# thread of its own has reached it, tried this often: a server that drops
# packets costs every try CONNECT_TIMEOUT, and the app server's loop thread,
# which carries the signalling of every call, must not pay it again and again.
PROBE_SECONDS = 1.0

# What "the database is away (or its disk is full): keep the write and retry"
# looks like, from either driver, through SQLAlchemy or not.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sqlite3.OperationalError,
    OSError,
)


class DatabaseAway(OSError):
    """PostgreSQL failed to answer and no probe has reached it since: not tried."""


def is_postgres(spec: str | Path) -> bool:
    """Whether the `database` setting names a PostgreSQL server."""
    return str(spec).startswith(POSTGRES_SCHEMES)


def url_of(spec: str | Path) -> URL:
    """The SQLAlchemy URL for a `database` setting (a path or a URL)."""
    if is_postgres(spec):
        url = make_url(str(spec).replace("postgres://", "postgresql://", 1))
        return url.set(drivername="postgresql+psycopg")
    return URL.create("sqlite", database=str(Path(spec).resolve()))


def describe(spec: str | Path) -> str:
    """The setting as it may be printed: a URL without its password."""
    if is_postgres(spec):
        return url_of(spec).render_as_string(hide_password=True)
    return str(spec)


def exists(spec: str | Path) -> bool:
    """Whether there may be records to read: a SQLite file that exists, or
    any server (whether it answers is found out on use, with a clear error)."""
    return is_postgres(spec) or Path(spec).exists()


class Database:
    """One engine on the records database, and the dialect-specific pieces."""

    def __init__(self, spec: str | Path) -> None:
        self.spec = spec
        self.url = url_of(spec)
        self.shared = is_postgres(spec)
        # Set while PostgreSQL is away (see PROBE_SECONDS).
        self._away = threading.Event()
        self._why = ""  # the error that said it went away
        self._probe_lock = threading.Lock()
        self._probing = False
        self.engine: Engine
        if self.shared:
            self.engine = sa.create_engine(
                self.url,
                pool_pre_ping=True,
                pool_size=4,
                max_overflow=4,
                connect_args={
                    "connect_timeout": CONNECT_TIMEOUT,
                    "application_name": "ponte",
                    # A server cut off mid-query (its packets dropped) fails
                    # the query after this long, instead of the kernel's
                    # many minutes of retransmissions; idle connections are
                    # checked by keep-alives.
                    "tcp_user_timeout": CONNECT_TIMEOUT * 1000,
                    "keepalives": 1,
                    "keepalives_idle": 10,
                    "keepalives_interval": 2,
                    "keepalives_count": 3,
                },
            )
        else:
            Path(spec).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(self.url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def name(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self.engine.dialect.name

    def describe(self) -> str:
        """Where the records are, fit for a log line (no password)."""
        return describe(self.spec)

    @property
    def away(self) -> bool:
        """Whether PostgreSQL failed to answer and no probe has reached it since."""
        return self._away.is_set()

    @contextmanager
    def _answering(self) -> Iterator[None]:
        """Fail at once (DatabaseAway) while PostgreSQL is away; notice it
        going away, and start the probe that notices it coming back."""
        if not self.shared:
            yield
            return
        if self._away.is_set():
            raise DatabaseAway(f"not answering since: {self._why}")
        try:
            yield
        except UNAVAILABLE as exc:
            self._went_away(exc)
            raise

    def _went_away(self, exc: BaseException) -> None:
        text = str(exc).strip()
        self._why = text.splitlines()[0] if text else type(exc).__name__
        self._away.set()
        with self._probe_lock:
            if self._probing:
                return
            self._probing = True
        threading.Thread(target=self._probe, name="records-db-probe", daemon=True).start()

    def _probe(self) -> None:
        try:
            while True:
                time.sleep(PROBE_SECONDS)
                try:
                    with self.engine.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
                except UNAVAILABLE:
                    continue
                self._away.clear()
                return
        finally:
            with self._probe_lock:
                self._probing = False

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction, committed when the block ends."""
        with self._answering(), self.engine.begin() as conn:
            yield conn

    def rows(self, statement: sa.Executable) -> Iterator[dict[str, Any]]:
        """Stream a query's rows as dicts (a long report never holds them all)."""
        with self._answering(), self.engine.connect() as conn:
            result = conn.execution_options(yield_per=500).execute(statement)
            for row in result.mappings():
                yield dict(row)

    def scalar(self, statement: sa.Executable) -> Any:
        """The first column of the first row (None when there is none)."""
        with self._answering(), self.engine.connect() as conn:
            return conn.execute(statement).scalar()

    def upsert(
        self,
        table: sa.Table,
        keys: Sequence[str],
        update: Mapping[str, Any] | None = None,
        where: sa.ColumnElement[bool] | None = None,
    ) -> sa.Insert:
        """An INSERT of the row given as parameters at execution; on a clash
        on `keys`, apply `update` (column -> expression, where
        `excluded(table, name)` is the clashing row's value), or do nothing
        when `update` is None; with `where`, only a clashing row it holds for
        is updated (the others are left, and RETURNING gives nothing). Build
        it once and execute it with each row's values as parameters:
        SQLAlchemy then compiles it once, where `.values(...)` per row
        would cost more than the commit."""
        if self.shared:
            stmt: pg.Insert | lite.Insert = pg.insert(table)
        else:
            stmt = lite.insert(table)
        if update is None:
            done: sa.Insert = stmt.on_conflict_do_nothing(index_elements=list(keys))
        else:
            done = stmt.on_conflict_do_update(
                index_elements=list(keys), set_=dict(update), where=where
            )
        return done

    def greatest(self, a: Any, b: Any) -> sa.ColumnElement[Any]:
        """The larger of two values (SQLite's scalar MAX, PostgreSQL's GREATEST)."""
        return sa.func.greatest(a, b) if self.shared else sa.func.max(a, b)

    def close(self) -> None:
        """Drop every pooled connection."""
        self.engine.dispose()


def excluded(table: sa.Table, column: str) -> sa.ColumnElement[Any]:
    """In `Database.upsert`'s `update`: the value the clashing INSERT carried."""
    return sa.literal_column(f"excluded.{table.c[column].name}")


def rounded(value: Any, digits: int) -> sa.ColumnElement[float]:
    """ROUND(value, digits) as a float on both backends (PostgreSQL rounds
    only NUMERIC to a number of digits)."""
    return sa.func.round(sa.cast(value, sa.Numeric), digits).cast(sa.Double)


def _sqlite_pragmas(conn: Any, _record: Any) -> None:
    # WAL: reports and the CLI read while the server writes. NORMAL: a commit
    # survives a crash of the process (not of the machine's power).
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
