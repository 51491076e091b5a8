"""The namespace topology itself: reachability, NAT, isolation, names, loss, cleanup."""

from __future__ import annotations

import errno
import os
import re
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.netns import (  # noqa: F401  (net_fixture: the fixture `net`)
    ETC_NETNS,
    PREFIX,
    Host,
    Topology,
    net_fixture,
    remove_stale,
    topology,
)


def _netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _ping(src: Host, dst_ip: str, timeout: float = 2.0) -> bool:
    """One ICMP echo from `src` to `dst_ip` (a raw socket: no ping binary here)."""
    ident = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"ponte-netns"
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    with src.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, (dst_ip, 0))
        except OSError:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, (addr, _) = s.recvfrom(1500)
            except TimeoutError:
                return False
            icmp = data[(data[0] & 0x0F) * 4 :]  # past the IP header
            if addr == dst_ip and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                return True
    return False


class _Echo:
    """A UDP echo server in `host`'s namespace, run by a thread of this process;
    `sources` lists the address each datagram came from."""

    def __init__(self, host: Host, port: int = 7000) -> None:
        self.sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host.ip, port))
        self.sock.settimeout(0.2)
        self.addr = (host.ip, port)
        self.sources: list[tuple[str, int]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, src = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            self.sources.append(src)
            self.sock.sendto(data, src)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


def test_lan_hosts_ping_the_appliance(net: Topology) -> None:
    others = [*net.lan, net.router, net.provider, net.attacker]
    for h in others:
        assert h is not None
        assert _ping(h, net.appliance.ip), f"{h.name} ({h.ip}) cannot ping the appliance"
    assert _ping(net.appliance, net.lan[0].ip)


def test_nat_phone_is_seen_as_the_router(net: Topology) -> None:
    echo = _Echo(net.appliance)
    try:
        for phone in net.nat:
            with phone.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(2)
                s.bind((phone.ip, 5060))
                s.sendto(phone.ip.encode(), echo.addr)
                data, src = s.recvfrom(2048)  # the reply finds its way back through NAT
                assert data == phone.ip.encode() and src == echo.addr
        assert [ip for ip, _ in echo.sources] == ["198.51.100.20"] * len(net.nat)
    finally:
        echo.close()


def test_appliance_cannot_reach_the_nat_side(net: Topology) -> None:
    # No route at all: the appliance only knows the router's outer address.
    for src in (net.appliance, net.lan[0]):
        with src.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError) as e:
            s.sendto(b"x", (net.nat[0].ip, 5060))
        assert e.value.errno == errno.ENETUNREACH
    assert not _ping(net.appliance, net.nat[0].ip, timeout=0.5)
    assert not _ping(net.appliance, "203.0.113.1", timeout=0.5)


def test_root_namespace_blackholes_the_topologys_addresses_only(net: Topology) -> None:
    """Every address of the topology is unreachable from the host itself, and
    nothing more: no whole documentation range is taken from the host (the
    package registries may live in one)."""
    out = subprocess.run(
        ["ip", "route", "show", "type", "unreachable"], capture_output=True, text=True
    ).stdout
    for host in (net.appliance, net.router, net.provider, *net.lan, *net.nat):
        assert re.search(rf"^unreachable {re.escape(host.ip)}\s*$", out, re.M), (host.ip, out)
    assert "/24" not in out and "/25" not in out, out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError):
        s.sendto(b"x", (net.appliance.ip, 5060))


def test_names_resolve_inside_the_namespaces(net: Topology) -> None:
    net.hosts({"sip.provider.test": net.provider.ip, "pbx.test": net.appliance.ip})
    r = net.appliance.run(["getent", "hosts", "sip.provider.test"])
    assert r.returncode == 0 and r.stdout.split()[0] == "198.51.100.50", r
    r = net.nat[0].run(["getent", "hosts", "pbx.test"])
    assert r.stdout.split()[0] == "198.51.100.1", r
    assert net.lan[0].run(["getent", "hosts", "localhost"]).stdout.split()[0] == "127.0.0.1"
    assert (ETC_NETNS / net.appliance.name / "hosts").exists()


def test_loss_drops_both_directions(net: Topology) -> None:
    echo = _Echo(net.appliance)
    phone = net.lan[0]

    def answered(count: int = 400) -> float:
        """Share of `count` numbered datagrams echoed back (drained as they come,
        so no socket buffer overflows into the count)."""
        got: set[bytes] = set()
        with phone.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:

            def drain(wait: float) -> None:
                s.settimeout(wait)
                try:
                    while True:
                        got.add(s.recv(64))
                except (TimeoutError, BlockingIOError):
                    pass

            for i in range(count):
                s.sendto(b"%d" % i, echo.addr)
                drain(0.001)
            drain(0.5)
        return len(got) / count

    try:
        assert answered() == 1.0
        net.loss(phone, 30)
        # 30 % each way: 0.7 x 0.7 = 49 % of echoes come back (sd ~2.5 %).
        rate = answered()
        assert 0.36 < rate < 0.62, rate
        net.loss(phone, 0)
        assert answered() == 1.0
    finally:
        echo.close()


def test_close_removes_everything() -> None:
    t = topology(lan_phones=1, nat_phones=1, attacker=False)
    names = [t.switch, *(h.name for h in t.all_hosts)]
    assert set(names) <= _netns_list()
    assert all(str(os.getpid()) in n for n in names)
    t.hosts({"x.test": "198.51.100.1"})
    tracked = t.lan[0].popen(["sleep", "600"])
    # Started behind the Topology's back: close() must still kill it.
    stray = subprocess.Popen(["ip", "netns", "exec", t.nat[0].name, "sleep", "600"])
    time.sleep(0.2)
    t.close()
    assert tracked.poll() is not None
    assert stray.wait(5) is not None
    assert not set(names) & _netns_list()
    assert not any((ETC_NETNS / n).exists() for n in names)
    t.close()  # idempotent


def test_stale_namespaces_of_dead_runs_are_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{PREFIX}-{dead.pid}-gw9-0-app"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    Path(ETC_NETNS / stale).mkdir(parents=True, exist_ok=True)
    try:
        # Another worker's topology may sweep it first: either way it must go.
        remove_stale()
        assert stale not in _netns_list()
        assert not (ETC_NETNS / stale).exists()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)
