"""Port allocation that never collides between pytest-xdist workers.

Each worker owns a disjoint block of UDP ports (by its gwN index) and hands
out sub-ranges in order, skipping any port something else already holds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading

BASE = 21000
BLOCK = 3000  # ports per worker: up to 14 workers below 63000
# The block's last ports are for what a session holds for its whole life
# (`allocate(held=True)`: the PostgreSQL cluster's port). Handed out from the
# middle of the block, such a port once split it, and the flood test's 2,004
# RTP ports in a row no longer fitted anywhere.
HELD = 50

_lock = threading.Lock()
_next: int | None = None
# Ports handed out to the running test: it takes its ports, then starts what
# binds them, so a port handed out but not bound yet still looks free. Once
# the search wraps to the block's start, a range across such a port would be
# given twice (the flood test's SIP port landed inside its own RTP range).
# Cleared as each test starts (tests/conftest.py): a worker runs one at a time.
_given: set[int] = set()


def new_test() -> None:
    """Forget the ports handed out to the previous test of this worker."""
    with _lock:
        _given.clear()


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


def allocate(count: int = 1, held: bool = False) -> int:
    """Reserve `count` consecutive free UDP ports in this worker's block;
    `held`: one port at the block's end, for what a session keeps open."""
    global _next
    with _lock:
        lo = BASE + _worker_index() * BLOCK
        if held:
            free = (p for p in range(lo + BLOCK - 1, lo + BLOCK - HELD - 1, -1) if _udp_free(p))
            port = next(free, None)
            if port is None:
                raise RuntimeError(f"no free port left among the last {HELD} of the block")
            return port
        end = lo + BLOCK - HELD
        if _next is None:
            _next = lo
        # From where the last range ended to the block's end, then from its
        # start: past each port that is taken (or given to this test).
        for start in (_next, lo):
            while start + count <= end:
                busy = next(
                    (p for p in range(start, start + count) if p in _given or not _udp_free(p)),
                    None,
                )
                if busy is None:
                    _next = start + count
                    _given.update(range(start, start + count))
                    return start
                start = busy + 1
        holders = subprocess.run(
            ["ss", "-uanpH", f"sport >= :{lo} and sport < :{lo + BLOCK}"],
            capture_output=True,
            text=True,
        ).stdout
        raise RuntimeError(
            f"no {count} free UDP ports in a row left in this worker's block "
            f"{lo}-{lo + BLOCK - HELD - 1}; held:\n{holders[-3000:]}"
        )


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
