"""A status asks rtpengine about all members at once and within a deadline.

One query after the other, a status of 600 members through a loaded relay
took longer than the control client waits, and the status was lost
(bench/capacity.py at 600 legs). Here a real UDP peer that answers some
Call-IDs late stands in for a slow rtpengine; the figures come from
`CallLog.quality`'s own parsing path, not from a stub.
"""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

import bencodepy  # type: ignore[import-untyped]

from pbx.rtpengine import NgClient
from ponte.calllog import CallLog


class SlowRelay:
    """Answers ng `query` like rtpengine; Call-IDs starting 'slow' after `delay`."""

    def __init__(self, delay: float) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.delay = delay
        self.seen = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        codec = bencodepy.Bencode(encoding="utf-8")
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            cookie, _, body = data.partition(b" ")
            msg = codec.decode(body)
            self.seen += 1
            reply = codec.encode({"result": "ok", "totals": {}, "tags": {}})
            if str(msg.get("call-id", "")).startswith("slow"):
                threading.Timer(self.delay, self._send, (cookie + b" " + reply, peer)).start()
            else:
                self.sock.sendto(cookie + b" " + reply, peer)

    def _send(self, data: bytes, peer: tuple[str, int]) -> None:
        if not self._stop:  # a late answer after the test: nobody listens
            self.sock.sendto(data, peer)

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        self.sock.close()


def _calllog(port: int, timeout: float) -> Any:
    """A CallLog's query side alone: its ng client and back-off clock."""
    log: Any = SimpleNamespace(ng=NgClient("127.0.0.1", port, timeout=timeout, retries=1))
    log._ng_down_until = 0.0
    log.quality = lambda cid, remote_called=False: CallLog.quality(log, cid, remote_called)
    return log


def test_status_asks_all_members_at_once() -> None:
    relay = SlowRelay(delay=0.3)
    try:
        log = _calllog(relay.port, timeout=1.0)
        calls = {leg: f"slow-{leg}" for leg in range(64)}
        t0 = time.monotonic()
        got = CallLog.qualities(log, calls, deadline=3.0)
        took = time.monotonic() - t0
        # 64 queries of 0.3 s one after the other would be 19 s.
        assert set(got) == set(calls), got
        assert took < 3.0, took
        assert relay.seen == 64
    finally:
        relay.close()


def test_members_not_answered_in_time_have_no_figures() -> None:
    relay = SlowRelay(delay=5.0)
    try:
        log = _calllog(relay.port, timeout=3.0)
        calls = {1: "fast-1", 2: "slow-2", 3: "fast-3"}
        t0 = time.monotonic()
        got = CallLog.qualities(log, calls, deadline=1.0)
        assert time.monotonic() - t0 < 1.5
        assert set(got) == {1, 3}, got
    finally:
        relay.close()
