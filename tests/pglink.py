"""The worker's PostgreSQL (tests/pgcluster.py, on this host's loopback) as
an app server in a network namespace sees it: at the same URL.

A namespace has a loopback of its own, so `postgresql://…@127.0.0.1:PORT/…`
reaches nothing there. `DbLink` listens on 127.0.0.1:PORT inside the
namespace (a socket made there, tests/netns.py `Host.socket`) and relays
each connection to the cluster from a relay process (tests/tcprelay.py). The URL stays the
same on both sides: the server in the namespace and `ponte report` on this
host read one database. Nothing is added to the host's network.

When the cluster is stopped, a connection made through the link is
accepted and closed at once: the server sees "server closed the
connection unexpectedly", as when a PostgreSQL goes away under it. `cut`
drops the link's packets in the namespace instead (nftables on its
loopback), as when the network to the database fails: nothing answers,
nothing is refused, connections and queries wait out their time-outs.

    from tests.pglink import db_link_fixture  # noqa: F401  (fixture `db_link`)

    def test_x(db_link, records_spec, net):
        database = db_link(net.appliance, records_spec)  # a path: as it is
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.netns import Host

RELAY = Path(__file__).with_name("tcprelay.py")


class DbLink:
    """Relays TCP connections to 127.0.0.1:`port` in `host`'s namespace to
    127.0.0.1:`port` of this host.

    The listening socket is made in the namespace here; the relaying runs in
    a child process of its own (tests/tcprelay.py, given the socket), not
    in a thread of the pytest worker: there, a worker busy with a recording's
    FFT or a server's start-up once held a relayed connection past libpq's
    connect_timeout, and the node in the namespace saw a database away."""

    def __init__(self, host: Host, port: int) -> None:
        self.host = host
        self.port = port
        listener = host.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._relay = subprocess.Popen(
            [sys.executable, str(RELAY), str(listener.fileno()), str(port)],
            pass_fds=[listener.fileno()],
            stdin=subprocess.DEVNULL,
        )
        listener.close()  # the child holds it now

    def cut(self, on: bool = True) -> None:
        """Drop (or again pass) every packet to and from the link's port in
        its namespace."""
        rules = "table inet pglink\ndelete table inet pglink\n"  # (declared: never fails)
        if on:
            port = self.port
            rules += (
                "table inet pglink {\n  chain out {\n"
                "    type filter hook output priority 0; policy accept;\n"
                f"    tcp dport {port} drop\n    tcp sport {port} drop\n  }}\n}}\n"
            )
        done = self.host.run(["nft", "-f", "-"], input=rules)
        assert done.returncode == 0, done.stderr

    def close(self) -> None:
        """Stop listening and cut every relayed connection (the relay ends)."""
        if self._relay.poll() is None:
            self._relay.kill()
        self._relay.wait(timeout=10)


class DbLinks:
    """The links a test made, by namespace and port."""

    def __init__(self) -> None:
        self.links: dict[tuple[str, int], DbLink] = {}

    def __call__(self, host: Host, spec: str) -> str:
        """The `database` setting for a server in `host`'s namespace: a
        PostgreSQL URL on this host's loopback gets a link there and is
        returned as it is; a path too."""
        if "://" in spec:
            url = make_url(spec)
            assert url.host == "127.0.0.1" and url.port, spec
            if (host.name, url.port) not in self.links:  # servers in one namespace share it
                self.links[host.name, url.port] = DbLink(host, url.port)
        return spec

    def cut(self, host: Host, on: bool = True) -> None:
        """Cut (or mend) every link into `host`'s namespace (`DbLink.cut`)."""
        for (name, _port), link in self.links.items():
            if name == host.name:
                link.cut(on)

    def close(self) -> None:
        for link in self.links.values():
            link.close()


@pytest.fixture(name="db_link")
def db_link_fixture() -> Iterator[DbLinks]:
    """`db_link(host, spec)`: the `database` setting for a server in `host`'s
    namespace (see `DbLinks`); the links close after the test. Import
    `db_link_fixture` into a test module to use it."""
    links = DbLinks()
    yield links
    links.close()
