"""The worker's PostgreSQL (tests/pgcluster.py, on this host's loopback) as
an app server in a network namespace sees it: at the same URL.

A namespace has a loopback of its own, so `postgresql://…@127.0.0.1:PORT/…`
reaches nothing there. `DbLink` listens on 127.0.0.1:PORT inside the
namespace (a socket made there, tests/netns.py `Host.socket`) and relays
each connection to the cluster from the test process. The URL stays the
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

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from tests.netns import Host

CONNECT_TIMEOUT = 3.0


class DbLink:
    """Relays TCP connections to 127.0.0.1:`port` in `host`'s namespace to
    127.0.0.1:`port` of this host."""

    def __init__(self, host: Host, port: int) -> None:
        self.host = host
        self.port = port
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._listener = host.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        threading.Thread(target=self._accept, name=f"dblink-{port}", daemon=True).start()

    def _keep(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                sock.close()
                return False
            self._socks.add(sock)
            return True

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            for s in socks:
                self._socks.discard(s)
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _accept(self) -> None:
        while True:
            try:
                inner, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self._keep(inner):
                return
            try:
                outer = socket.create_connection(("127.0.0.1", self.port), CONNECT_TIMEOUT)
            except OSError:
                self._drop(inner)  # the cluster is down: so is the link
                continue
            outer.settimeout(None)
            if not self._keep(outer):
                self._drop(inner)
                return
            for a, b in ((inner, outer), (outer, inner)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        self._drop(src, dst)

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
        """Stop listening and cut every relayed connection."""
        with self._lock:
            self._closed = True
            socks = list(self._socks)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._drop(*socks)


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
