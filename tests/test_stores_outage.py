"""The app server's stores while PostgreSQL is away (issue 18), without calls:
what a room's opening needs is in hand, and an absent server is not waited
on again and again. The real calls are in tests/test_pg_calls.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bridge.billing import ID_BLOCK
from ponte.stores import Stores
from store.engine import PROBE_SECONDS, UNAVAILABLE, Database, DatabaseAway
from tests.pgcluster import PgCluster


def flushed_once_back(stores: Stores, timeout: float = 5.0) -> None:
    """The writes that waited land once PostgreSQL is back: at the writer's
    first try after the probe (every PROBE_SECONDS) has found the server."""
    deadline = time.monotonic() + timeout
    while not stores.writer.flush():
        assert time.monotonic() < deadline, "the waiting writes did not land"
        time.sleep(PROBE_SECONDS / 4)


def test_rooms_open_on_session_ids_in_hand_while_the_database_is_away(
    pg_cluster: PgCluster, pg_url: str, tmp_path: Path
) -> None:
    """A node holds a block of session ids from its start; from half a block
    left it claims the next through the writer, which keeps the claim while
    the database is away. Only when every id is used does a room go unbilled
    (None); the claim lands when the database is back."""
    stores = Stores(pg_url, tmp_path, node="a")
    stores.open()
    try:
        pg_cluster.stop()
        ids = [stores.new_session_id() for _ in range(ID_BLOCK)]
        assert ids == list(range(1, ID_BLOCK + 1))
        assert len(stores.writer.pending) == 1  # the next block's claim, once
        assert stores.new_session_id() is None
    finally:
        pg_cluster.start()
    flushed_once_back(stores)
    assert stores.new_session_id() == ID_BLOCK + 1
    # A second node's block comes after this one's two.
    other = Stores(pg_url, tmp_path, node="b")
    other.open()
    assert other.new_session_id() == 2 * ID_BLOCK + 1


def test_a_server_that_stopped_answering_is_left_alone_until_a_probe_reaches_it(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    """After one failure nothing waits on PostgreSQL again (each wait would
    be the app server's loop thread's): every use fails at once, saying why,
    until the probe, on a thread of its own, finds the server back."""
    db = Database(pg_url)
    one = sa.select(sa.literal(1))
    assert db.scalar(one) == 1
    try:
        pg_cluster.stop()
        with pytest.raises(UNAVAILABLE):
            db.scalar(one)
        assert db.away
        # DatabaseAway is raised before any connection is tried: that is
        # the behaviour (no wait on the loop thread), whatever the clock says.
        with pytest.raises(DatabaseAway, match="not answering since: .*connection"), db.begin():
            pass
    finally:
        pg_cluster.start()
    deadline = time.monotonic() + 5
    while db.away and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not db.away and db.scalar(one) == 1
    db.close()
