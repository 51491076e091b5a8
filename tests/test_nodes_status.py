"""`ponte status` and the console show all nodes, their rooms and their load
(issue 19): the cluster view read from the registry every node writes
(ponte/clusterview.py), on the store alone on both backends, then in-process:
two nodes on one PostgreSQL each list both, and a single SQLite node shows
itself only."""

from __future__ import annotations

from pathlib import Path

from ponte.clock import CpuMeter
from ponte.clusterview import from_store
from ponte.homes import STALE, HomeStore
from ponte.nodes import Child, Supervisor
from tests.test_crash import wait_for
from tests.test_inprocess import Rig, rig  # noqa: F401  (fixture)
from tests.test_nodes_rooms import two_nodes  # noqa: F401  (fixture)

T0 = 1_800_000_000.0


def test_the_view_lists_every_node_alive_or_not_with_its_load_and_its_rooms(
    records_spec: str,
) -> None:
    store = HomeStore(records_spec)
    assert from_store(store, T0)["nodes"] == {}
    store.heartbeat("a", "10.0.0.1:5080", T0, T0, 2, 1, legs=3, cpu=12.5)
    store.heartbeat("b", "10.0.0.2:5080", T0, T0, 0, 0)
    store.claim("demo", "a", "10.0.0.1:5080", T0)
    store.claim("sales", "b", "10.0.0.2:5080", T0)
    # b beats on; a stopped beating (kill -9): after STALE it is not alive,
    # and the room it held shows under it until someone re-homes it.
    later = T0 + STALE + 1
    store.heartbeat("b", "10.0.0.2:5080", T0, later, 1, 1, legs=1, cpu=3.0)
    view = from_store(store, later)
    assert view["shared"] is True and view["alive"] == 1 and view["stale_after"] == STALE
    a, b = view["nodes"]["a"], view["nodes"]["b"]
    assert (a["alive"], a["age"], a["address"]) == (False, STALE + 1, "10.0.0.1:5080")
    assert {k: a[k] for k in ("calls", "rooms", "legs", "cpu")} == {
        "calls": 2,
        "rooms": 1,
        "legs": 3,
        "cpu": 12.5,
    }
    assert set(a["homes"]) == {"demo"} and a["homes"]["demo"]["lease_left"] < 10
    assert (b["alive"], b["age"], b["legs"], b["cpu"]) == (True, 0.0, 1, 3.0)
    assert set(b["homes"]) == {"sales"}
    # A node that stops cleanly frees its rooms: it shows none.
    store.release("a")
    assert from_store(store, later)["nodes"]["a"]["homes"] == {}


def test_the_cpu_meter_gives_percent_of_one_core_between_readings() -> None:
    t, cpu = [0.0], [0.0]
    meter = CpuMeter(clock=lambda: t[0], cpu=lambda: cpu[0])
    t[0], cpu[0] = 2.0, 0.5
    assert meter.read() == 25.0
    t[0], cpu[0] = 2.1, 0.6  # too soon after: the last figure again
    assert meter.read() == 25.0
    t[0], cpu[0] = 3.0, 1.5
    assert meter.read() == 100.0


def status(r: Rig) -> dict:
    """The control socket's answer to `status`, as the CLI gets it."""
    request = {"cmd": "status"}
    r.srv._prepare_control(request)  # (the socket thread's half)
    return r.srv._control(request)


def test_two_nodes_on_one_postgresql_each_list_both_in_status(request) -> None:
    """a holds room demo with its moderator; b's status (and a's) lists a
    and b alive, a's call, legs and room, and demo under a."""
    nodes = request.getfixturevalue("two_nodes")  # (tests/test_nodes_rooms.py's)
    a, b = nodes["a"], nodes["b"]
    a.join("9999", caller="1001")

    def seen() -> dict | None:
        for r in (a, b):
            r.run(1.1)  # a heartbeat each
        cluster = status(b)["cluster"]
        node = cluster["nodes"].get("a", {})
        return cluster if node.get("legs") == 1 and "demo" in node.get("homes", {}) else None

    cluster = wait_for(seen, 10)
    assert cluster["shared"] is True and set(cluster["nodes"]) == {"a", "b"}
    assert cluster["alive"] == 2
    na, nb = cluster["nodes"]["a"], cluster["nodes"]["b"]
    assert (na["calls"], na["rooms"], na["address"]) == (1, 1, "127.0.0.1:5080")
    assert (nb["calls"], nb["legs"], nb["rooms"], nb["homes"]) == (0, 0, 0, {})
    assert nb["address"] == "127.0.0.1:5082"
    assert na["cpu"] >= 0 and na["age"] < STALE
    assert set(status(a)["cluster"]["nodes"]) == {"a", "b"}


def test_a_single_sqlite_node_shows_itself_only(request) -> None:
    r = request.getfixturevalue("rig")()  # (tests/test_inprocess.py's)
    r.join("9999", caller="1001")
    cluster = status(r)["cluster"]
    assert cluster["shared"] is False and cluster["alive"] == 1
    (name,) = cluster["nodes"]
    node = cluster["nodes"][name]
    assert name == "local" and node["alive"] is True and node["address"] == "127.0.0.1:5080"
    assert (node["calls"], node["legs"], node["rooms"]) == (1, 1, 1)
    assert node["homes"] == {"demo": {"lease_left": None}}


def test_the_nodes_parent_shows_the_cluster_once() -> None:
    """`ponte serve --nodes 2`'s status: each child answers with the same
    registry's view; the parent keeps one (a child that did not answer, or
    whose database was away, does not hide it) and not one per node."""
    sup = Supervisor.__new__(Supervisor)  # its status alone: no edge, no children run
    sup.children = [
        Child(name, f"sip:127.0.0.1:{port}", [], Path(f"/nonexistent/{name}.sock"))
        for name, port in (("node-1", 5080), ("node-2", 5081))
    ]
    sup.remote = {}
    view = {"shared": True, "alive": 2, "nodes": {"node-1": {}, "node-2": {}, "pbx-b": {}}}
    away = {"shared": True, "alive": 0, "nodes": {}, "error": "records database away: x"}
    answers = {
        "node-1": {"calls": 1, "rooms": {}, "cluster": away},
        "node-2": {"calls": 2, "rooms": {}, "cluster": view},
    }
    out = sup._status(answers)
    assert out["calls"] == 3 and out["cluster"] == view
    assert all("cluster" not in node for node in out["nodes"].values())
    assert answers["node-1"]["cluster"] == away  # the answers are left as they came
    assert "error" in sup._status({})["cluster"]
