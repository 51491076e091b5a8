"""The YAML of several nodes (issue 19): `nodes:`, pbx.internal_listen,
one-room access numbers, and what each node makes of the one file."""

from __future__ import annotations

import argparse

import pytest

from pbx.kamailio import room_numbers
from ponte.nodeconf import NodeSettings, for_entry, node_count
from provisioning.loader import ConfigError, parse_config

PG = "postgresql://ponte@db.example.net/ponte"
BASE = f"""\
database: {PG}
pbx:
  listen: 198.51.100.1:5060
  internal_listen: 10.0.0.1:5060
rooms:
  - {{name: demo, participant_pin: "1111", moderator_pin: "9999"}}
  - {{name: other, participant_pin: "2222", moderator_pin: "8888"}}
access_numbers:
  - conf
  - {{user: demo-line, room: demo}}
dids:
  "+551133330000": {{room_access: demo-line}}
  "+551133330001": {{room_access: conf}}
"""
NODES = """\
nodes:
  - {name: a, listen: "10.0.0.11:5080"}
  - {name: b, listen: "10.0.0.12:5080", rtp_ports: 42000-42999}
"""


def message(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "ponte.yaml")
    return str(info.value)


def test_each_node_takes_its_own_address_from_the_one_file() -> None:
    cfg = parse_config(BASE + NODES, "ponte.yaml")
    b = for_entry(cfg.nodes[1], NodeSettings(control_socket=None))
    mine = b.apply(cfg)
    assert mine.sip.listen == "10.0.0.12:5080" and mine.sip.rtp_ports == "42000-42999"
    assert b.remote_edge and b.edge_elsewhere and not b.primary
    # The one file is unchanged for everyone else.
    assert cfg.sip.listen == "127.0.0.1:5080"
    assert [n.uri for n in cfg.nodes] == ["sip:10.0.0.11:5080", "sip:10.0.0.12:5080"]
    assert cfg.pbx.internal == "10.0.0.1:5060"


def test_only_one_room_numbers_are_steered_to_one_node() -> None:
    cfg = parse_config(BASE + NODES, "ponte.yaml")
    assert sorted(room_numbers(cfg)) == ["+551133330000", "demo-line"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (NODES.replace("10.0.0.11", "8.8.8.8"), "must be one private address"),
        (NODES.replace("10.0.0.11", "0.0.0.0"), "must be one private address"),
        (NODES.replace("name: b", "name: a"), "a node name is listed twice"),
        (NODES.replace("10.0.0.12", "10.0.0.11"), "same listen address"),
        (NODES.replace("42000-42999", "42000-x"), "rtp_ports must be LOW-HIGH"),
    ],
)
def test_bad_nodes_are_refused(change: str, says: str) -> None:
    assert says in message(BASE + change)


def test_nodes_need_postgresql_and_the_edge_s_inner_address() -> None:
    assert "PostgreSQL" in message(BASE.replace(PG, "/var/lib/ponte/ponte.db") + NODES)
    inner = "  internal_listen: 10.0.0.1:5060\n"
    assert "set pbx.internal_listen" in message(BASE.replace(inner, "") + NODES)
    # Nodes on the edge's own machine need no inner address.
    local = NODES.replace("10.0.0.11", "127.0.0.1").replace("10.0.0.12:5080", "127.0.0.1:5082")
    assert len(parse_config(BASE.replace(inner, "") + local, "ponte.yaml").nodes) == 2
    assert "use pbx.listen's port" in message(BASE.replace("10.0.0.1:5060", "10.0.0.1:5070"))
    assert "one private address" in message(BASE.replace("10.0.0.1:5060", "203.0.114.1:5060"))


def test_a_one_room_number_names_a_room_that_exists() -> None:
    assert "serves unknown room 'nope'" in message(BASE.replace("room: demo", "room: nope"))


def test_nodes_auto_is_one_per_core() -> None:
    assert node_count("auto") >= 1 and node_count("3") == 3
    with pytest.raises(argparse.ArgumentTypeError):
        node_count("many")
