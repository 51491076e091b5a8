"""The throwaway PostgreSQL cluster the store's tests run on (tests/pgcluster.py)."""

from __future__ import annotations

import psycopg
import pytest

from tests.pgcluster import PgCluster


def test_fresh_databases_are_independent(pg_cluster: PgCluster, pg_url: str) -> None:
    other = pg_cluster.create_database()
    assert other != pg_url
    assert pg_url.startswith(f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/t_")
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE calls (id integer)")
        conn.execute("INSERT INTO calls VALUES (1)")
    with psycopg.connect(other) as conn:
        assert conn.execute("SELECT to_regclass('calls')").fetchone() == (None,)
    with psycopg.connect(pg_cluster.url) as conn:  # the `ponte` database
        assert conn.execute("SELECT current_database()").fetchone() == ("ponte",)


def test_away_and_back_keeps_data_and_port(pg_cluster: PgCluster, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE marks (n integer)")
        conn.execute("INSERT INTO marks VALUES (7)")
    pg_cluster.stop()
    assert not pg_cluster.running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url, connect_timeout=2)
    pg_cluster.start()
    assert pg_cluster.running()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT n FROM marks").fetchone() == (7,)


def test_own_cluster_is_removed_when_closed() -> None:
    with PgCluster() as pg:
        root = pg.root
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not root.exists()
