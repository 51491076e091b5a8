"""Which node mixes which room, when several app-server nodes share one
PostgreSQL: the `nodes` registry (a heartbeat a second each), `room_homes`
(each live room's node, on a lease its node renews) and the hand-off key
in `cluster`.

The first member's PIN places a room: `claim` takes the room's row only if it
is free, its lease ran out, it is already ours, or its node's heartbeat is
older than `STALE` (the node died). Otherwise it returns the home that holds
it, and the caller is handed there (ponte/handoff.py).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from store.engine import Database, excluded
from store.migrate import as_database
from store.schema import cluster, nodes, room_homes

# Seconds without a heartbeat after which a node counts as dead: its rooms
# go to the next caller who keys their PIN.
STALE = 5.0
# A room's lease, and how often its home renews it while the room lives.
LEASE = 10.0
RENEW_EVERY = 2.5
HEARTBEAT_EVERY = 1.0
KEY_NAME = "handoff_key"
# The edge's provisioning, for the nodes on other machines (ponte/follow.py).
CONFIG_NAME = "config"
CONFIG_SHA = "config_sha256"
# The load figures each heartbeat carries (the `nodes` columns past its time).
LOAD = ("calls", "rooms", "legs", "cpu")


@dataclass(frozen=True)
class Home:
    """A room's node and the SIP address other nodes reach it at."""

    node: str
    address: str


class HomeStore:
    """The `nodes`, `room_homes` and `cluster` tables."""

    def __init__(self, db: Database | str | Path) -> None:
        self.db = db = as_database(db)
        h = room_homes.c
        alive = sa.select(nodes.c.name).where(
            nodes.c.name == h.node, nodes.c.heartbeat >= sa.bindparam("stale")
        )
        self._claim = db.upsert(
            room_homes,
            ["room"],
            {
                "node": excluded(room_homes, "node"),
                "address": excluded(room_homes, "address"),
                "lease_until": excluded(room_homes, "lease_until"),
            },
            where=sa.or_(
                h.lease_until < sa.bindparam("now"),
                h.node == excluded(room_homes, "node"),
                ~sa.exists(alive),
            ),
        ).returning(h.node, h.address)
        self._beat = db.upsert(
            nodes,
            ["name"],
            {c: excluded(nodes, c) for c in ("address", "started", "heartbeat", *LOAD)},
        )
        self._key = db.upsert(cluster, ["name"])
        self._set = db.upsert(cluster, ["name"], {"value": excluded(cluster, "value")})

    def heartbeat(
        self,
        node: str,
        address: str,
        started: float,
        at: float,
        calls: int,
        rooms: int,
        legs: int = 0,
        cpu: float = 0.0,
    ) -> None:
        """This node is alive at `at`, reached at `address`, carrying so much
        (`cpu`: percent of one core its process used since its last beat)."""
        row = {
            "name": node,
            "address": address,
            "started": started,
            "heartbeat": at,
            "calls": calls,
            "rooms": rooms,
            "legs": legs,
            "cpu": cpu,
        }
        with self.db.begin() as conn:
            conn.execute(self._beat, row)

    def claim(self, room: str, node: str, address: str, now: float) -> Home:
        """Make `node` the room's home unless a live node holds it: the home."""
        row = {
            "room": room,
            "node": node,
            "address": address,
            "lease_until": now + LEASE,
            "now": now,
            "stale": now - STALE,
        }
        with self.db.begin() as conn:
            got = conn.execute(self._claim, row).first()
            if got is None:  # held by a live node: read whose
                got = conn.execute(
                    sa.select(room_homes.c.node, room_homes.c.address).where(
                        room_homes.c.room == room
                    )
                ).first()
        assert got is not None
        return Home(got.node, got.address)

    def renew(self, node: str, rooms: list[str], until: float) -> None:
        """Extend this node's leases on the rooms it mixes; drop the others
        it held (rooms that emptied). `rooms` was read on the loop thread
        before this runs on the writer's: a room claimed since has a lease
        beyond `until` and is left alone."""
        h = room_homes.c
        with self.db.begin() as conn:
            if rooms:
                conn.execute(
                    sa.update(room_homes)
                    .where(h.node == node, h.room.in_(rooms))
                    .values(lease_until=until)
                )
            conn.execute(
                sa.delete(room_homes).where(
                    h.node == node, h.room.not_in(rooms), h.lease_until < until
                )
            )

    def release(self, node: str) -> None:
        """This node stops: its rooms are free at once."""
        with self.db.begin() as conn:
            conn.execute(sa.delete(room_homes).where(room_homes.c.node == node))

    def homes(self) -> dict[str, Home]:
        """Every room's home, as stored (leases not checked)."""
        h = room_homes.c
        return {
            r["room"]: Home(r["node"], r["address"])
            for r in self.db.rows(sa.select(h.room, h.node, h.address))
        }

    def registry(self) -> list[dict[str, Any]]:
        """Every node that ever beat here, by name: its row as stored (name,
        address, started, heartbeat and the LOAD figures)."""
        return list(self.db.rows(sa.select(nodes).order_by(nodes.c.name)))

    def leases(self) -> list[dict[str, Any]]:
        """Every room's home row (room, node, address, lease_until), by room."""
        return list(self.db.rows(sa.select(room_homes).order_by(room_homes.c.room)))

    def publish_config(self, text: str) -> str:
        """The edge's provisioning (YAML, includes merged) for the nodes on
        other machines to follow; returns its SHA-256."""
        sha = hashlib.sha256(text.encode()).hexdigest()
        with self.db.begin() as conn:
            conn.execute(self._set, [{"name": CONFIG_NAME, "value": text}])
            conn.execute(self._set, [{"name": CONFIG_SHA, "value": sha}])
        return sha

    def published_sha(self) -> str | None:
        """The SHA-256 of the provisioning the edge published last (cheap to poll)."""
        return self._value(CONFIG_SHA)

    def published_config(self) -> str | None:
        """The provisioning the edge published last, as YAML text."""
        return self._value(CONFIG_NAME)

    def _value(self, name: str) -> str | None:
        with self.db.begin() as conn:
            value = conn.execute(
                sa.select(cluster.c.value).where(cluster.c.name == name)
            ).scalar_one_or_none()
        return None if value is None else str(value)

    def key(self) -> bytes:
        """The hand-off key all nodes share, made by whichever asks first."""
        with self.db.begin() as conn:
            conn.execute(self._key, {"name": KEY_NAME, "value": secrets.token_hex(32)})
            value = conn.execute(
                sa.select(cluster.c.value).where(cluster.c.name == KEY_NAME)
            ).scalar_one()
        return bytes.fromhex(value)
