"""The records store on both backends (issue 18): the migrations build the
schema the code describes, an old SQLite file is adopted with its rows,
counters add up across processes, two nodes never share a session id, and a
PostgreSQL that goes away holds no call up: writes wait and land on return."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from bridge.billing import BillingStore
from lines.usage import UsageStore
from ponte.homes import HomeStore
from ponte.records import RecordStore
from ponte.stores import Stores
from store import migrate
from store.engine import Database, describe
from store.schema import metadata, nodes
from tests.test_stores_outage import flushed_once_back

DATA = Path(__file__).parent / "data"
CYCLE = dt.date(2026, 12, 1)


def test_the_migrations_build_the_schema_the_code_describes(records_spec: str) -> None:
    db = migrate.open_database(records_spec)
    assert migrate.current(db) == migrate.head()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    migrate.upgrade(db)  # again: nothing to do
    assert migrate.current(db) == migrate.head()


def test_an_old_sqlite_file_is_adopted_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ponte.db"
    conn = sqlite3.connect(path)
    conn.executescript((DATA / "records-c375c7c.sql").read_text())
    conn.close()
    db = migrate.open_database(path)
    assert migrate.current(db) == migrate.head()
    with db.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), metadata)
    # Every table, column and index is there. (SQLite's own type names, REAL
    # for DOUBLE or INTEGER for BIGINT, differ in name only: same affinity.)
    assert [d for d in diff if not (isinstance(d, list) and d[0][0].startswith("modify_"))] == []
    (call,) = RecordStore(db).call_rows()
    assert call["duration"] == 60 and call["trunk"] == "provider1" and call["ended_by"] is None
    assert RecordStore(db).mark("acc") == 42
    assert [r["seconds"] for r in UsageStore(db).rows()] == [63.0]
    billing = BillingStore(db)
    sessions = list(billing.sessions())
    assert [s["billed_minutes"] for s in sessions] == [3, 0]
    # New sessions go on from the old file's highest id.
    assert billing.new_session_id() == 3


def test_a_registry_at_0003_gains_the_node_load_and_keeps_its_rows(records_spec: str) -> None:
    """Nodes registered before migration 0004 keep their rows; their legs
    and CPU read 0 until their next heartbeat writes them."""
    db = Database(records_spec)
    cfg = migrate._config()
    with db.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.execute(
            sa.insert(nodes).values(name="a", address="a:1", started=1.0, heartbeat=2.0, calls=3),
        )
    migrate.upgrade(db)
    assert migrate.current(db) == migrate.head()
    (row,) = HomeStore(db).registry()
    assert (row["calls"], row["legs"], row["cpu"]) == (3, 0, 0.0)
    HomeStore(db).heartbeat("a", "a:1", 1.0, 3.0, 1, 1, legs=2, cpu=7.5)
    (row,) = HomeStore(db).registry()
    assert (row["heartbeat"], row["legs"], row["cpu"]) == (3.0, 2, 7.5)


def _add_many(spec: str, n: int) -> None:
    usage = UsageStore(spec)
    for _ in range(n):
        usage.add("dept:sales", CYCLE, "local", 1.0)


def test_counters_lose_no_increment_across_processes(records_spec: str) -> None:
    UsageStore(records_spec)  # migrated once, before the race
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(records_spec, 150)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert UsageStore(records_spec).used("dept:sales", CYCLE, ["local"]) == 300.0


def test_two_nodes_never_pick_the_same_session_id(records_spec: str) -> None:
    a, b = BillingStore(records_spec), BillingStore(records_spec)
    ids = [store.new_session_id() for _ in range(120) for store in (a, b)]
    assert len(set(ids)) == len(ids)
    for sid in ids[:4]:
        (a if sid % 2 else b).open_session("demo", 1_800_000_000.0, sid)
    assert len(list(a.sessions())) == 4


def test_an_alert_is_sent_once_whichever_node_crosses_first(records_spec: str) -> None:
    a, b = UsageStore(records_spec), UsageStore(records_spec)
    at = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    args = ("dept:sales", CYCLE, "local", 80, "1001", 96.0, 120.0, at)
    assert a.record_alert(*args) is True
    assert b.record_alert(*args) is False


def test_the_url_is_printed_without_its_password() -> None:
    assert describe("postgresql://ponte:s3cret@db.example.net/ponte") == (
        "postgresql+psycopg://ponte:***@db.example.net/ponte"
    )
    assert Database("postgresql://ponte:s3cret@db.example.net/ponte").shared


def test_postgresql_away_and_back_loses_no_record(pg_cluster, pg_url: str, tmp_path: Path) -> None:
    stores = Stores(pg_url, tmp_path, node="a")
    stores.open()
    stores.usage.add("dept:sales", CYCLE, "local", 30.0)
    assert stores.used("dept:sales", CYCLE, ["local"]) == 30.0
    pg_cluster.stop()
    try:
        # Away: the writes wait in order, the quota still counts them.
        stores.writer.write(stores.usage.add, "dept:sales", CYCLE, "local", 12.0)
        stores.writer.write(stores.calls.set_mark, "acc", 7)
        assert len(stores.writer.pending) == 2
        assert stores.used("dept:sales", CYCLE, ["local"]) == 42.0
    finally:
        pg_cluster.start()
    flushed_once_back(stores)
    assert stores.usage.used("dept:sales", CYCLE, ["local"]) == 42.0
    assert stores.calls.mark("acc") == 7


@pytest.mark.parametrize(
    "bad",
    ["mysql://db/ponte", "postgresql://", "postgresql://db.example.net/", ""],
)
def test_a_bad_database_setting_is_refused_clearly(bad: str) -> None:
    from pydantic import ValidationError

    from provisioning.schema import Config

    with pytest.raises(ValidationError, match="database"):
        Config(database=bad)


def test_an_unreachable_postgresql_at_start_is_said_clearly(tmp_path: Path) -> None:
    from ponte.stores import DatabaseUnreachable
    from tests.pgcluster import reserve_port

    port, held = reserve_port()  # nobody listens there (TCP), nobody takes it meanwhile
    url = f"postgresql://ponte:s3cret@127.0.0.1:{port}/ponte"
    with pytest.raises(DatabaseUnreachable) as err:
        Stores(url, tmp_path).open()
    text = str(err.value)
    assert "cannot reach the records database at postgresql+psycopg://ponte:***@127.0.0.1" in text
    assert "s3cret" not in text and "refused" in text
    held.close()
