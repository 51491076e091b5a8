"""Phones off the appliance's host: real calls through Kamailio and rtpengine.

The appliance (app server on its own loopback, Kamailio and rtpengine on the
LAN address 198.51.100.1) runs in a network namespace; phones sit on the
LAN (198.51.100.0/25) or behind a NAT router (203.0.113.0/24, masqueraded
to 198.51.100.20), a trunk provider at 198.51.100.50 is reached by a DNS
name. Audio is checked by tone, both ways; no phone shares the appliance's
loopback.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from tests import audio
from tests.harness import Server, report
from tests.netns import APPLIANCE_IP, PROVIDER_IP, Host, Topology, net  # noqa: F401
from tests.pbx_helpers import EXTENSIONS, PASSWORDS, start_provider, wait_registered
from tests.test_spine_calls import hash_time, window

PBX = f"{APPLIANCE_IP}:5060"
PROVIDER_NAME = "sip.provider.test"
EXTRA_EXTENSIONS = [
    {"number": "1003", "name": "Carla", "password": "carla-Secret-p9z"},
    {"number": "1004", "name": "Davi", "password": "davi-Secret-r5t"},
]
ALL_PASSWORDS = {**PASSWORDS, **{e["number"]: e["password"] for e in EXTRA_EXTENSIONS}}


def edge_config(provider: bool = False, **extra: Any) -> dict[str, Any]:
    """An appliance facing the LAN: Kamailio on 198.51.100.1, app on loopback."""
    cfg: dict[str, Any] = {
        "sip": {"listen": "127.0.0.1:5080", "rtp_ports": "40000-40199"},
        "pbx": {
            "listen": PBX,
            "media_ports": "30000-30399",
            "rtpengine_control": "127.0.0.1:2223",
        },
        "extensions": EXTENSIONS + EXTRA_EXTENSIONS,
    }
    if provider:
        cfg["trunks"] = [
            {
                "name": "provider1",
                "registrar": f"sip:{PROVIDER_NAME}",
                "username": "trunkuser",
                "password": "trunkpass",
                "cps": 2,
                "dids": ["+551130001000"],
                "outbound_prefixes": ["0", "00"],
            }
        ]
        cfg["dids"] = {"+551130001000": {"room_access": "conf"}}
    cfg.update(extra)
    return cfg


def appliance(server_factory, net: Topology, **cfg: Any) -> Server:
    """The appliance, started inside its namespace."""
    net.hosts({PROVIDER_NAME: PROVIDER_IP})
    return server_factory(netns=net.appliance.name, **edge_config(**cfg))


def reg(number: str) -> list[str]:
    """Softphone arguments: register `number` to the appliance's Kamailio."""
    return ["--register", f"{number}:{ALL_PASSWORDS[number]}@{PBX}"]


def softphone(phone, host: Host, number: str, script: str, target: str = "", **kw: Any):
    """Our softphone on `host`, registered as `number`, calling `target`."""
    uri = f"sip:{target}@{PBX}" if target else ""
    return phone(uri, script, bind=host.ip, netns=host.name, extra=[*reg(number), *kw.pop("extra", [])], **kw)


def heard(phone_proc, rep: dict, start: float, end: float, hz: int) -> float:
    """The share of `hz` in what the phone heard between two of its own times."""
    samples, rate = audio.load(phone_proc.record)
    return audio.band_fraction(audio.segment(samples, rate, *window(rep, start, end)), rate, hz)


def test_lan_and_nat_phones_meet_in_a_room(server_factory, phone, net):
    """A LAN phone (moderator) and a NAT'd phone (participant, RFC 2833 PIN
    through the router) hear each other through rtpengine; the appliance's
    SDP never names its loopback."""
    srv = appliance(server_factory, net)
    lan, nat = net.lan[0], net.nat[0]
    mod = softphone(phone, lan, "1001", "wait_media 5; dtmf 9999#; tone 700; wait 7; hangup", "conf")
    part = softphone(
        phone, nat, "1002", "wait_media 5; wait 1; dtmf 1111#; tone 440; wait 5; hangup", "conf"
    )
    rm, rp = mod.result(), part.result()
    assert "error" not in rm and "error" not in rp, (rm, rp)
    both = hash_time(rp) + 1.0
    assert heard(mod, rm, both, rp["hangup_sent_at"] - 0.3, 440) > 0.2
    assert heard(part, rp, both, rp["hangup_sent_at"] - 0.3, 700) > 0.2
    # Both legs' history rows carry rtpengine's quality figures.
    rows = _wait_rows(srv, 2, call_type="conference")
    for row in rows:
        assert row["disposition"] == "answered" and row["loss_in"] == 0, row
        assert row["mos"] is not None and row["mos"] >= 4.0, row


def _wait_rows(srv: Server, n: int, timeout: float = 10.0, **match: Any) -> list[dict]:
    """History rows matching `match`, once there are `n` of them."""
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = [r for r in report(srv, "calls") if all(r.get(k) == v for k, v in match.items())]
        if len(rows) >= n:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"expected {n} call rows matching {match}, got {rows}")


@pytest.mark.parametrize("caller_side", ["lan", "nat"])
def test_extension_calls_between_lan_and_nat(server_factory, phone, net, caller_side):
    """LAN -> NAT and NAT -> LAN: the callee is reached where it registered
    from (nathelper), both hear each other, and the call has a history row
    (Kamailio's acc) with its duration and quality."""
    srv = appliance(server_factory, net)
    lan, nat = net.lan[0], net.nat[0]
    caller_host, callee_host = (lan, nat) if caller_side == "lan" else (nat, lan)
    callee = softphone(
        phone, callee_host, "1002", "wait_media 8; tone 700; wait 4; hangup", extra=["--answer"]
    )
    wait_registered(srv, "1002")
    caller = softphone(phone, caller_host, "1001", "wait_media 8; tone 440; wait 3; hangup", "1002")
    ra, rb = caller.result(), callee.result()
    assert "error" not in ra and "error" not in rb, (ra, rb)
    start = max(ra["media_at"], rb["media_at"]) + 0.5
    end = min(ra["hangup_sent_at"], rb["ended_at"]) - 0.3
    assert heard(caller, ra, start, end, 700) > 0.2
    assert heard(callee, rb, start, end, 440) > 0.2
    (row,) = _wait_rows(srv, 1, call_type="extension")
    assert (row["origin"], row["destination"], row["disposition"]) == ("1001", "1002", "answered")
    talked = ra["hangup_sent_at"] - ra["media_at"]
    assert abs(row["duration"] - talked) < 1.0, (row, talked)
    assert row["loss_in"] == 0 and row["loss_out"] == 0, row
