"""The app server's stores while PostgreSQL is away (issue 18), without calls:
what a room's opening needs is in hand. The real calls are in
tests/test_pg_calls.py."""

from __future__ import annotations

from pathlib import Path

from bridge.billing import ID_BLOCK
from ponte.stores import Stores
from tests.pgcluster import PgCluster


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
    assert stores.writer.flush()
    assert stores.new_session_id() == ID_BLOCK + 1
    # A second node's block comes after this one's two.
    other = Stores(pg_url, tmp_path, node="b")
    other.open()
    assert other.new_session_id() == 2 * ID_BLOCK + 1
