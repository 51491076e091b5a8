"""Port allocation that never collides between pytest-xdist workers.

Each worker owns a disjoint block of UDP ports (by its gwN index) and hands
out sub-ranges in order, skipping any port something else already holds.
"""

from __future__ import annotations

import os
import socket
import threading

BASE = 21000
BLOCK = 3000  # ports per worker: up to 14 workers below 63000

_lock = threading.Lock()
_next: int | None = None


def _worker_index() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0
    # A second test session on the same machine (e.g. a bench beside the
    # suite) takes other blocks with PONTE_TEST_SLOT_OFFSET.
    return index + int(os.environ.get("PONTE_TEST_SLOT_OFFSET", "0"))


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def allocate(count: int = 1) -> int:
    """Reserve `count` consecutive free UDP ports in this worker's block."""
    global _next
    with _lock:
        lo = BASE + _worker_index() * BLOCK
        if _next is None:
            _next = lo
        for _ in range(BLOCK):
            start = _next
            if start + count > lo + BLOCK:
                start = lo
            busy = next((p for p in range(start, start + count) if not _udp_free(p)), None)
            if busy is None:
                _next = start + count
                return start
            _next = busy + 1  # look again just past the port someone holds
        raise RuntimeError("no free UDP ports left in this worker's block")


def rtp_range(size: int = 40) -> str:
    """A LOW-HIGH RTP range of `size` ports, starting even (RTP even, RTCP odd),
    with a spare pair after it: pjsua may round into the next pair at the top."""
    start = allocate(size + 4)
    start += start % 2
    return f"{start}-{start + size - 1}"


_ip_counter = 0


def loopback_ip() -> str:
    """A fresh 127.x address for one SIP peer (Kamailio bans per source IP).

    Each xdist worker draws from its own 127.(20+N).0.0/16.
    """
    global _ip_counter
    with _lock:
        _ip_counter += 1
        n = _ip_counter
    return f"127.{20 + _worker_index()}.{n // 250}.{n % 250 + 2}"
