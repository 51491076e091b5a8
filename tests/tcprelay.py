"""A TCP relay run as a process of its own (tests/pglink.py's `DbLink`):

    python tests/tcprelay.py FD PORT

accepts on the listening socket FD (made by the parent, e.g. in a network
namespace) and relays each connection to 127.0.0.1:PORT of the namespace
this process runs in. With nothing listening there, a connection is accepted
and closed at once. It runs until killed; its connections die with it.
Standard library only: it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading

CONNECT_TIMEOUT = 3.0


def _relay(listener: socket.socket, port: int) -> None:
    """The child's work: accept in the namespace, connect on this host's
    loopback, pump both ways; the cluster down: accept and close at once."""

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        src.close()

    while True:
        inner, _ = listener.accept()
        try:
            outer = socket.create_connection(("127.0.0.1", port), CONNECT_TIMEOUT)
        except OSError:
            inner.close()  # the cluster is down: so is the link
            continue
        outer.settimeout(None)
        for a, b in ((inner, outer), (outer, inner)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    _relay(socket.socket(fileno=int(sys.argv[1])), int(sys.argv[2]))
