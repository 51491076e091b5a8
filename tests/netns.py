"""Network-namespace topologies for real-call tests: phones, providers and
attackers live OFF the machine's own network stack, on documentation ranges.

    switch ns (no addresses, two bridges)
      br-lan  198.51.100.0/25 : appliance .1, LAN phones .10 .11 …,
                                NAT router outer .20, provider .50, attacker .66
      br-home 203.0.113.0/24  : NAT router inner .1, NAT phones .10 .11 …
      br-back 198.51.100.128/25: appliance .129, app-server nodes .140 .141 …
                                (only with nodes > 0: machines of their own)

The router masquerades 203.0.113.0/24 behind 198.51.100.20; the appliance has
no route to 203.0.113.0/24, so it only ever sees the router's address.

Every namespace is named ``ponte-<pid>-<worker>-<seq>-<role>``: the pid keeps
pytest-xdist workers and a second concurrent session apart, and lets a later
run delete namespaces whose creator died. Interfaces are created directly
inside their namespaces (``ip -n SWITCH link add PORT … peer name eth0 netns
HOST``), never in the root namespace, so their short fixed names (``eth0``,
``eth1`` in hosts; ``app``, ``lan0``, ``nat0``, ``home``… on the switch) are
per namespace and never meet another run's (the 15-character limit is moot).

Packet loss: this kernel has no ``sch_netem`` (``tc qdisc add … netem`` says
"Specified qdisc kind is unknown"), so ``Topology.loss`` drops packets with
nftables ``numgen random`` in the netdev ingress and egress hooks of the
host's interface: in the kernel, per packet, both directions, no relay.

Usage::

    from tests.netns import Topology, net_fixture  # noqa: F401  (fixture `net`)

    def test_x(net: Topology) -> None:
        net.hosts({"sip.provider.test": net.provider.ip})
        p = net.lan[0].popen(["baresip", ...])
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PREFIX = "ponte"
LAN_NET = "198.51.100.0/25"
APPLIANCE_IP = "198.51.100.1"
ROUTER_OUTER_IP = "198.51.100.20"
PROVIDER_IP = "198.51.100.50"
ATTACKER_IP = "198.51.100.66"
HOME_NET = "203.0.113.0/24"
ROUTER_INNER_IP = "203.0.113.1"
# The app-server nodes' private network (issue 19): the LAN /25's upper half.
BACK_NET = "198.51.100.128/25"
APPLIANCE_BACK_IP = "198.51.100.129"
NODE_IPS = tuple(f"198.51.100.{140 + i}" for i in range(4))
# Ranges the root namespace must never send out of eth0.
# Every address a topology can hand out, made unreachable from the host
# itself (never whole /24s: on this workplace's machines the package
# registries answer at an address inside 203.0.113.0/24, and a blackholed
# range there cut apt and pip off for every later run). The topology has no
# link to the host's namespace anyway, so nothing of it can leak out of eth0.
BLACKHOLED = tuple(
    f"{ip}/32"
    for ip in (
        APPLIANCE_IP,
        ROUTER_OUTER_IP,
        PROVIDER_IP,
        ATTACKER_IP,
        *(f"198.51.100.{10 + i}" for i in range(10)),
        "203.0.113.1",
        *(f"203.0.113.{10 + i}" for i in range(10)),
        APPLIANCE_BACK_IP,
        *NODE_IPS,
    )
)

ETC_NETNS = Path("/etc/netns")
RUN_NETNS = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_seq = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> str:
    """Run `ip ARGS`; raise with its stderr on failure (namespaces are required)."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def _in_ns(ns: str, argv: Sequence[str], stdin: str | None = None) -> None:
    """Run argv inside `ns`; raise with its stderr on failure."""
    r = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], input=stdin, capture_output=True, text=True, timeout=30
    )
    if r.returncode != 0:
        raise RuntimeError(f"in {ns}: {' '.join(argv)} failed: {r.stderr.strip()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_ns_processes(ns: str) -> None:
    """SIGKILL every process whose network namespace is `ns`."""
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30)
    for pid in r.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _delete_ns(ns: str) -> None:
    """Kill what runs in `ns`, delete it and its /etc/netns dir (errors ignored)."""
    _kill_ns_processes(ns)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)


def remove_stale() -> list[str]:
    """Delete namespaces (and /etc/netns dirs) of earlier runs whose pid is dead."""
    pattern = re.compile(rf"^{PREFIX}-(\d+)-")
    names = {line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()}
    if ETC_NETNS.is_dir():
        names |= {p.name for p in ETC_NETNS.iterdir()}
    removed = []
    for name in sorted(names):
        m = pattern.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _delete_ns(name)
            removed.append(name)
    return removed


def blackhole_root() -> None:
    """Make the topology's addresses unreachable from the root namespace.

    Idempotent; a concurrent worker adding the same route first is fine.
    """
    have = _ip("route", "show", "type", "unreachable")
    for prefix in BLACKHOLED:
        shown = prefix.removesuffix("/32")  # `ip route` prints host routes bare
        if not re.search(rf"(^|\s){re.escape(shown)}(\s|$)", have, re.M):
            r = subprocess.run(
                ["ip", "route", "add", "unreachable", prefix],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if r.returncode != 0 and "File exists" not in r.stderr:
                raise RuntimeError(f"ip route add unreachable {prefix}: {r.stderr.strip()}")


def socket_in(
    ns: str | None,
    family: int = socket.AF_INET,
    type: int = socket.SOCK_STREAM,
    proto: int = 0,
) -> socket.socket:
    """A socket created inside network namespace `ns` (None: this process's own).

    A socket belongs to the namespace it was created in, for life. Python 3.11
    has no os.setns, so a short-lived thread enters the namespace with libc
    setns(2), creates the socket and ends: no other code runs in that namespace.
    """
    if ns is None:
        return socket.socket(family, type, proto)
    out: dict[str, Any] = {}

    def enter_and_create() -> None:
        try:
            fd = os.open(RUN_NETNS / ns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            out["sock"] = socket.socket(family, type, proto)
        except BaseException as e:  # handed to the caller's thread
            out["err"] = e

    t = threading.Thread(target=enter_and_create, name=f"setns-{ns}")
    t.start()
    t.join()
    if "err" in out:
        raise out["err"]
    return out["sock"]


@dataclass
class Host:
    """A machine in the topology: a network namespace with one address.

    `name` is the namespace, `ip` its address, `iface` the interface holding
    it (the LAN-side one for the router). Processes started with popen() are
    stopped by Topology.close().
    """

    name: str
    ip: str
    iface: str
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False, compare=False)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start argv inside the namespace (`ip netns exec` execs in place, so
        the Popen's pid is the program's own)."""
        p = subprocess.Popen(self.argv(argv), **kw)
        self._procs.append(p)
        return p

    def run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
        """Run argv inside the namespace; captures text output, 30 s timeout by default."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 30)
        return subprocess.run(self.argv(argv), **kw)

    def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
    ) -> socket.socket:
        """A socket in this namespace, usable from the test process itself."""
        return socket_in(self.name, family, type, proto)

    def stop_processes(self, timeout: float = 3.0) -> None:
        """Terminate what popen() started; SIGKILL what outlives `timeout`."""
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        deadline = time.monotonic() + timeout
        for p in self._procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs.clear()


class Topology:
    """A fresh, isolated LAN + NAT network in namespaces (see the module doc).

    Attributes: appliance (198.51.100.1), lan (198.51.100.10, .11 …), router
    (198.51.100.20 outside, 203.0.113.1 inside), nat (203.0.113.10, .11 …,
    default route via the router), provider (198.51.100.50), attacker
    (198.51.100.66, or None), nodes (198.51.100.140, .141 …: app-server
    machines, reached only from the appliance's 198.51.100.129), switch (the
    bridges' namespace name). A context manager: close() removes everything.
    """

    def __init__(
        self, lan_phones: int = 2, nat_phones: int = 2, attacker: bool = True, nodes: int = 0
    ) -> None:
        if not 0 <= lan_phones <= 9 or not 0 <= nat_phones <= 9:
            raise ValueError("lan_phones and nat_phones must be 0..9 (.10-.19)")
        if not 0 <= nodes <= len(NODE_IPS):
            raise ValueError(f"nodes must be 0..{len(NODE_IPS)}")
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.tag = f"{PREFIX}-{os.getpid()}-{worker}-{next(_seq)}"
        self.switch = f"{self.tag}-sw"
        self._closed = False
        self._names: list[str] = []
        self.appliance = Host(f"{self.tag}-app", APPLIANCE_IP, "eth0")
        self.lan = [
            Host(f"{self.tag}-lan{i}", f"198.51.100.{10 + i}", "eth0") for i in range(lan_phones)
        ]
        self.router = Host(f"{self.tag}-router", ROUTER_OUTER_IP, "eth0")
        self.nat = [
            Host(f"{self.tag}-nat{i}", f"203.0.113.{10 + i}", "eth0") for i in range(nat_phones)
        ]
        self.provider = Host(f"{self.tag}-prov", PROVIDER_IP, "eth0")
        self.attacker: Host | None = (
            Host(f"{self.tag}-atk", ATTACKER_IP, "eth0") if attacker else None
        )
        # App-server nodes as machines of their own, on the edge's private side.
        self.nodes = [Host(f"{self.tag}-node{i}", NODE_IPS[i], "eth0") for i in range(nodes)]
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    @property
    def all_hosts(self) -> list[Host]:
        """Every host (not the switch)."""
        hosts = [self.appliance, *self.lan, self.router, *self.nat, self.provider, *self.nodes]
        return hosts + ([self.attacker] if self.attacker else [])

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._names.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        # No IPv6: SIP stacks would otherwise offer link-local addresses.
        no_v6 = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
        _in_ns(name, ["sysctl", "-qw", *no_v6])

    def _plug(self, bridge: str, port: str, ns: str, iface: str, cidr: str) -> None:
        """A veth from `bridge` (switch side `port`) to `iface` in `ns` with `cidr`."""
        veth = ["type", "veth", "peer", "name", iface, "netns", ns]
        _ip("-n", self.switch, "link", "add", port, *veth)
        _ip("-n", self.switch, "link", "set", port, "master", bridge, "up")
        _ip("-n", ns, "addr", "add", cidr, "dev", iface)
        _ip("-n", ns, "link", "set", iface, "up")

    def _build(self) -> None:
        remove_stale()
        blackhole_root()
        for name in [self.switch, *(h.name for h in self.all_hosts)]:
            self._add_ns(name)
        for bridge in ("br-lan", "br-home", "br-back"):
            # No STP: ports forward at once instead of listening for 15 s.
            _ip("-n", self.switch, "link", "add", bridge, "type", "bridge", "stp_state", "0")
            _ip("-n", self.switch, "link", "set", bridge, "up")
        lan_side = [("app", self.appliance), ("router", self.router), ("prov", self.provider)]
        lan_side += [(f"lan{i}", h) for i, h in enumerate(self.lan)]
        if self.attacker:
            lan_side.append(("atk", self.attacker))
        for port, h in lan_side:
            self._plug("br-lan", port, h.name, h.iface, f"{h.ip}/25")
        self._plug("br-home", "home", self.router.name, "eth1", f"{ROUTER_INNER_IP}/24")
        if self.nodes:
            self._plug("br-back", "back", self.appliance.name, "eth1", f"{APPLIANCE_BACK_IP}/25")
            for i, h in enumerate(self.nodes):
                self._plug("br-back", f"node{i}", h.name, h.iface, f"{h.ip}/25")
        for i, h in enumerate(self.nat):
            self._plug("br-home", f"nat{i}", h.name, h.iface, f"{h.ip}/24")
            _ip("-n", h.name, "route", "add", "default", "via", ROUTER_INNER_IP)
        _in_ns(self.router.name, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        _in_ns(
            self.router.name,
            ["nft", "-f", "-"],
            stdin=f"""
table ip nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {HOME_NET} oifname "{self.router.iface}" masquerade
  }}
}}
""",
        )

    def hosts(self, names: dict[str, str]) -> None:
        """Name → address entries for /etc/hosts in every namespace.

        `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts, so
        this applies to processes started afterwards, not to running ones.
        """
        text = "127.0.0.1\tlocalhost\n" + "".join(f"{ip}\t{n}\n" for n, ip in names.items())
        for ns in self._names:
            d = ETC_NETNS / ns
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts").write_text(text)

    def loss(self, host: Host, percent: float) -> None:
        """Drop `percent` % of IPv4 packets on host's link, each direction
        independently (0 removes the loss). ARP is spared so the link stays up.

        nftables netdev ingress/egress hooks on host.iface, numgen random per
        packet (the kernel has no netem).
        """
        if not 0 <= percent <= 100:
            raise ValueError("percent must be within 0..100")
        threshold = round(percent * 100)  # out of 10000: 0.01 % steps
        # Declaring the table before deleting it makes the delete never fail.
        rules = "table netdev ponte_loss\ndelete table netdev ponte_loss\n"
        if threshold:
            rule = f"meta protocol ip numgen random mod 10000 < {threshold} drop"
            rules += f"""
table netdev ponte_loss {{
  chain rx {{ type filter hook ingress device "{host.iface}" priority 0; {rule}; }}
  chain tx {{ type filter hook egress device "{host.iface}" priority 0; {rule}; }}
}}
"""
        _in_ns(host.name, ["nft", "-f", "-"], stdin=rules)

    def close(self) -> None:
        """Stop processes, delete every namespace and /etc/netns dir (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for h in self.all_hosts:
            h.stop_processes()
        for ns in reversed(self._names):
            _delete_ns(ns)
        self._names.clear()

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def topology(
    lan_phones: int = 2, nat_phones: int = 2, attacker: bool = True, nodes: int = 0
) -> Topology:
    """Build a fresh topology; use it as a context manager (or call close())."""
    return Topology(lan_phones, nat_phones, attacker, nodes)


@pytest.fixture(name="net")
def net_fixture() -> Iterator[Topology]:
    """Fixture `net`: a default topology (2 LAN phones, 2 NAT phones, attacker),
    always closed. Import `net_fixture` into a test module to use it (its own
    name differs from the fixture's so that test arguments named `net` do not
    shadow the import)."""
    with topology() as t:
        yield t
