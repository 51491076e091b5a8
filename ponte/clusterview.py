"""The cluster view: every app-server node, alive or not, its load and the
rooms it is home to, for `ponte status` (its `cluster` section) and the
console's Nodes page.

On a shared PostgreSQL it is read from the registry every node writes
(ponte/homes.py: `nodes`, a heartbeat a second, and `room_homes`), so any
node shows all of them, those on other machines too. A node whose heartbeat
is older than `homes.STALE` is shown as not alive (its rooms go to the next
caller who keys their PIN). On SQLite (one node) the view holds this node
alone, from its live figures.

The shape, one entry per node by name:
{"shared": bool, "stale_after": s, "alive": n, "nodes": {name: {"address",
"started", "heartbeat", "age", "alive", "calls", "legs", "rooms", "cpu",
"homes": {room: {"lease_left": s | None}}}}}, with "error" added when the
database did not answer.
"""

from __future__ import annotations

from typing import Any

from ponte.homes import LOAD, STALE, HomeStore
from ponte.services import Services
from store.engine import UNAVAILABLE


def from_store(store: HomeStore, now: float) -> dict[str, Any]:
    """The view as the registry has it at `now` (epoch seconds). Any thread:
    it only reads the database (a PostgreSQL away raises UNAVAILABLE)."""
    nodes: dict[str, dict[str, Any]] = {}
    for row in store.registry():
        age = round(now - row["heartbeat"], 1)
        nodes[row["name"]] = {
            "address": row["address"],
            "started": row["started"],
            "heartbeat": row["heartbeat"],
            "age": age,
            "alive": age <= STALE,
            **{key: row[key] for key in LOAD},
            "homes": {},
        }
    for lease in store.leases():
        # A home whose node never beat here (its row removed by hand): shown
        # all the same, as a node that is not alive.
        node = nodes.setdefault(lease["node"], _unknown(lease["address"]))
        left = round(lease["lease_until"] - now, 1)
        node["homes"][lease["room"]] = {"lease_left": left}
    return _wrap(nodes, shared=True)


def local(svc: Services) -> dict[str, Any]:
    """This node alone (SQLite: no registry), from its live figures (the
    CPU since the last reading). Loop thread."""
    handoff = svc.entry.handoff
    node = {
        "address": handoff.address,
        "started": handoff.started,
        "heartbeat": svc.clock.ts(),
        "age": 0.0,
        "alive": True,
        "calls": svc.ua.call_count(),
        "rooms": len(svc.rooms.live.rooms),
        "legs": len(svc.legs),
        "cpu": handoff.cpu.read(),
        "homes": {room: {"lease_left": None} for room in sorted(svc.rooms.live.rooms)},
    }
    return _wrap({svc.stores.node: node}, shared=False)


def shared(svc: Services) -> dict[str, Any] | None:
    """The registry's view when the records are shared (PostgreSQL), or None
    (SQLite: ask `local` on the loop thread). Any thread; a database that
    does not answer gives the view with no nodes and the reason in "error"."""
    store = svc.entry.handoff.store
    if not svc.stores.shared or store is None:
        return None
    try:
        return from_store(store, svc.clock.ts())
    except UNAVAILABLE as exc:
        text = str(exc).strip()
        why = text.splitlines()[0] if text else type(exc).__name__
        return {**_wrap({}, shared=True), "error": f"records database away: {why}"}


def _unknown(address: str) -> dict[str, Any]:
    return {
        "address": address,
        "started": None,
        "heartbeat": None,
        "age": None,
        "alive": False,
        **dict.fromkeys(LOAD, 0),
        "homes": {},
    }


def _wrap(nodes: dict[str, dict[str, Any]], *, shared: bool) -> dict[str, Any]:
    return {
        "shared": shared,
        "stale_after": STALE,
        "alive": sum(1 for n in nodes.values() if n["alive"]),
        "nodes": nodes,
    }
