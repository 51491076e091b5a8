"""Records as data, one format for both backends: export tables to JSON
lines, load them back (replacing those tables, in the caller's transaction),
and copy every table from one database into another, empty one.

An export is a header line, then one line per row, table by table in the
order foreign keys need (a session before its legs):

    {"format": "ponte-records/1", "revision": "0002", "backend": "sqlite",
     "columns": {"usage": ["key", "cycle", "call_type", "seconds"], ...},
     "rows": {"usage": 2, ...}}
    ["usage", ["line:1001", "2026-11-01", "mobile", 90.0]]

The revision is the Alembic revision the rows were read at: records from a
newer ponte are refused, older ones load (columns added since take their
defaults). Because the rows are plain values, an export from SQLite loads
into PostgreSQL and the other way round.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from store.engine import Database, excluded, is_postgres
from store.migrate import head, known, open_database
from store.schema import BLOCK_NUMBERED, id_blocks, metadata

FORMAT = "ponte-records/1"
BATCH = 1000  # rows per INSERT (executemany) and per fetch

Row = tuple[str, list[Any]]


class TransferError(Exception):
    """The records cannot be read, exported or loaded; nothing was changed."""


@dataclass
class Header:
    """What an export holds: its schema revision, and per table its columns
    (in the order of each row's values) and how many rows follow."""

    revision: str | None
    columns: dict[str, list[str]]
    rows: dict[str, int]
    backend: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "revision": self.revision,
            "backend": self.backend,
            "columns": self.columns,
            "rows": self.rows,
        }


def ordered(names: Iterable[str]) -> list[sa.Table]:
    """These tables, parents before children (how rows must be inserted)."""
    wanted = set(names)
    unknown = wanted - set(metadata.tables)
    if unknown:
        raise TransferError(f"no such table in ponte's schema: {', '.join(sorted(unknown))}")
    return [t for t in metadata.sorted_tables if t.name in wanted]


def check_revision(revision: str | None) -> None:
    """Refuse records written at a schema this code does not know (a newer ponte)."""
    if not known(revision):
        raise TransferError(
            f"the records are at schema revision {revision!r}, newer than this ponte's "
            f"{head()!r}: restore them with the release that wrote them, or a later one"
        )


# -- reading -----------------------------------------------------------------


def snapshot_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (SQLite's online backup API)."""
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    except sqlite3.Error as exc:
        raise TransferError(f"{source} cannot be read as a SQLite database ({exc})") from None


@contextmanager
def reading(spec: str | Path) -> Iterator[Connection]:
    """One consistent, read-only view of the records at `spec`, at this code's
    schema. A SQLite file is first copied with the online backup API and the
    copy migrated, so the file itself is never written (a release's old file
    is read as it is); PostgreSQL is read in one REPEATABLE READ transaction,
    after migrating it as a starting node would."""
    if is_postgres(spec):
        db = open_database(spec)
        try:
            with (
                db.engine.connect().execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                ) as conn,
                conn.begin(),
            ):
                yield conn
        finally:
            db.close()
        return
    if not Path(spec).exists():
        raise TransferError(f"no records database at {spec}")
    with tempfile.TemporaryDirectory(prefix="ponte-records-") as tmp:
        copy = Path(tmp) / "snapshot.sqlite"
        snapshot_sqlite(Path(spec), copy)
        try:
            db = open_database(copy)
        except sa_exc.DatabaseError as exc:
            raise TransferError(f"{spec} cannot be read as ponte's records ({exc})") from None
        try:
            with db.engine.connect() as conn:
                yield conn
        finally:
            db.close()


def header_of(conn: Connection, tables: Sequence[sa.Table]) -> Header:
    """The header of an export of `tables` as the connection sees them."""
    return Header(
        revision=MigrationContext.configure(conn).get_current_revision(),
        columns={t.name: [c.name for c in t.columns] for t in tables},
        rows={
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in tables
        },
        backend=conn.dialect.name,
    )


def rows_of(conn: Connection, tables: Sequence[sa.Table]) -> Iterator[Row]:
    """Every row of `tables`, table by table, in primary-key order."""
    for t in tables:
        result = conn.execution_options(yield_per=BATCH).execute(
            sa.select(t).order_by(*t.primary_key.columns)
        )
        for row in result:
            yield t.name, list(row)


def export(conn: Connection, names: Iterable[str], out: IO[bytes]) -> Header:
    """Write `names`' rows as JSON lines to `out`; return the header written."""
    tables = ordered(names)
    header = header_of(conn, tables)
    out.write(_line(header.as_json()))
    try:
        for row in rows_of(conn, tables):
            out.write(_line(row))
    except (TypeError, ValueError) as exc:
        raise TransferError(f"a row cannot be exported as JSON ({exc})") from None
    return header


def _line(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def parse(data: bytes, names: Iterable[str]) -> tuple[Header, Iterator[Row]]:
    """Read an export of exactly the tables `names`, checking its header now
    and each row (and the row counts, at the end) as they are read."""
    lines = iter(data.splitlines())
    try:
        raw = json.loads(next(lines))
        header = Header(
            raw["revision"], dict(raw["columns"]), dict(raw["rows"]), raw.get("backend", "")
        )
        if raw.get("format") != FORMAT:
            raise TransferError(f"format {raw.get('format')!r} is not {FORMAT}")
    except (StopIteration, ValueError, KeyError, TypeError, AttributeError):
        raise TransferError("not an export of ponte's records (no valid header)") from None
    check_revision(header.revision)
    wanted = {t.name for t in ordered(names)}
    if set(header.columns) != wanted:
        raise TransferError(
            f"the export holds tables {', '.join(sorted(header.columns))}, "
            f"not {', '.join(sorted(wanted))}"
        )
    check_columns(header.columns)
    return header, _rows(lines, header)


def check_columns(columns: dict[str, list[str]]) -> None:
    """Refuse columns this schema has not got (a damaged export: a newer
    revision was refused already)."""
    for name, cols in columns.items():
        extra = set(cols) - set(metadata.tables[name].columns.keys())
        if extra:
            raise TransferError(f"table {name} has no column {', '.join(sorted(extra))}")


def _rows(lines: Iterator[bytes], header: Header) -> Iterator[Row]:
    seen = dict.fromkeys(header.columns, 0)
    for number, line in enumerate(lines, start=2):
        try:
            name, values = json.loads(line)
            ok = name in seen and isinstance(values, list)
        except (ValueError, TypeError):
            ok = False
        if not ok or len(values) != len(header.columns[name]):
            raise TransferError(f"line {number} of the export is not a row of its tables")
        seen[name] += 1
        yield name, values
    if seen != header.rows:
        raise TransferError(f"the export is incomplete: {seen} rows, its header says {header.rows}")


def read_sqlite(path: Path, names: Iterable[str]) -> tuple[Header, list[Row]]:
    """`names`' rows from a SQLite file, as an export of them (archives made
    before exports existed hold such a snapshot)."""
    tables = ordered(names)
    rows: list[Row] = []
    columns: dict[str, list[str]] = {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            revision = None
            if "alembic_version" in have:
                revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
            for t in tables:
                if t.name not in have:
                    raise TransferError(f"the snapshot has no {t.name} table")
                cur = conn.execute(f'SELECT * FROM "{t.name}"')  # noqa: S608 - a known table
                columns[t.name] = [d[0] for d in cur.description]
                rows.extend((t.name, list(r)) for r in cur)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise TransferError(f"the snapshot cannot be read ({exc})") from None
    check_revision(revision)
    check_columns(columns)
    counts = {name: sum(1 for n, _ in rows if n == name) for name in columns}
    return Header(revision, columns, counts, "sqlite"), rows


# -- loading -----------------------------------------------------------------


def replace(
    db: Database, conn: Connection, header: Header, rows: Iterable[Row]
) -> dict[str, tuple[int, int]]:
    """Replace the header's tables with `rows`, in the caller's transaction
    (an error leaves them as they were); then let new ids follow the loaded
    ones. Returns rows (before, after) per table."""
    tables = ordered(header.columns)
    before = _counts(conn, tables)
    try:
        for t in reversed(tables):
            conn.execute(sa.delete(t))
        batch: list[dict[str, Any]] = []
        table: str | None = None
        for name, values in rows:
            if name != table or len(batch) >= BATCH:
                _insert(conn, table, batch)
                table, batch = name, []
            batch.append(dict(zip(header.columns[name], values, strict=True)))
        _insert(conn, table, batch)
    except (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError) as exc:
        raise TransferError(f"the rows do not fit the schema: {exc.orig}") from None
    follow_ids(db, conn, tables)
    after = _counts(conn, tables)
    return {t.name: (before[t.name], after[t.name]) for t in tables}


def _insert(conn: Connection, table: str | None, batch: list[dict[str, Any]]) -> None:
    if table is not None and batch:
        conn.execute(sa.insert(metadata.tables[table]), batch)


def _counts(conn: Connection, tables: Sequence[sa.Table]) -> dict[str, int]:
    return {
        t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in tables
    }


def follow_ids(db: Database, conn: Connection, tables: Sequence[sa.Table]) -> None:
    """After rows came in with their ids: PostgreSQL's sequences go past the
    highest id of each table, and id_blocks past the highest of the tables
    numbered from it (never lowered: a running node may hold a block)."""
    for t in tables:
        col = t.autoincrement_column
        if col is None or not db.shared:
            continue  # SQLite's rowid tables take MAX(id) + 1 by themselves
        name = conn.dialect.identifier_preparer.format_table(t)
        conn.execute(
            sa.select(
                sa.func.setval(
                    sa.func.pg_get_serial_sequence(name, col.name),
                    sa.func.coalesce(sa.func.max(col), 0) + 1,
                    False,
                )
            ).select_from(t)
        )
    loaded = {t.name for t in tables}
    for t in BLOCK_NUMBERED:
        if not loaded & {t.name, id_blocks.name}:
            continue
        above = conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.id), 0) + 1)).scalar_one()
        conn.execute(
            db.upsert(
                id_blocks,
                ("name",),
                {"next_id": db.greatest(id_blocks.c.next_id, excluded(id_blocks, "next_id"))},
            ),
            {"name": t.name, "next_id": above},
        )


# -- copying -----------------------------------------------------------------


def copy(source: str | Path, target: str | Path) -> dict[str, int]:
    """Copy every ponte table from `source` into `target` (migrated to this
    code's schema first), in one transaction; refuse a target that already
    holds records. Returns the rows copied per table."""
    dst = open_database(target)
    try:
        tables = list(metadata.sorted_tables)
        with reading(source) as src, dst.begin() as conn:
            # id_blocks: a fresh database has its first row; it is replaced.
            held = {n: c for n, c in _counts(conn, tables).items() if c and n != id_blocks.name}
            if held:
                listed = ", ".join(f"{n} ({c} rows)" for n, c in held.items())
                raise TransferError(
                    f"{dst.describe()} already holds records: {listed}; "
                    "copy only into an empty database"
                )
            header = header_of(src, tables)
            counts = replace(dst, conn, header, rows_of(src, tables))
        return {name: after for name, (_before, after) in counts.items()}
    finally:
        dst.close()
