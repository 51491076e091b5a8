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
from types import SimpleNamespace
from typing import Any

import bencodepy  # type: ignore[import-untyped]

from pbx.rtpengine import NgClient
from ponte.calllog import STATUS_QUERIES, CallLog


class SlowRelay:
    """Answers ng `query` like rtpengine; Call-IDs starting 'slow' after `delay`."""

    def __init__(self, delay: float) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.delay = delay
        self.seen = 0
        # Queries asked and not answered yet, and the most at once: one
        # query after the other never has more than one out.
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
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
                with self._lock:
                    self.in_flight += 1
                    self.most_in_flight = max(self.most_in_flight, self.in_flight)
                threading.Timer(self.delay, self._send, (cookie + b" " + reply, peer)).start()
            else:
                self.sock.sendto(cookie + b" " + reply, peer)

    def _send(self, data: bytes, peer: tuple[str, int]) -> None:
        with self._lock:
            self.in_flight -= 1
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
    log._ask = lambda cid: CallLog._ask(log, cid)
    log.quality = lambda cid, remote_called=False: CallLog.quality(log, cid, remote_called)
    return log


def test_status_asks_all_members_at_once() -> None:
    relay = SlowRelay(delay=0.5)
    try:
        log = _calllog(relay.port, timeout=2.0)
        calls = {leg: f"slow-{leg}" for leg in range(64)}
        got = CallLog.qualities(log, calls, deadline=20.0)
        assert set(got) == set(calls), got
        assert relay.seen == 64
        # Asked together, STATUS_QUERIES at a time (one after the other: 1).
        assert relay.most_in_flight == STATUS_QUERIES, relay.most_in_flight
    finally:
        relay.close()


def test_members_not_answered_in_time_have_no_figures() -> None:
    relay = SlowRelay(delay=5.0)
    try:
        log = _calllog(relay.port, timeout=3.0)
        calls = {1: "fast-1", 2: "slow-2", 3: "fast-3"}
        got = CallLog.qualities(log, calls, deadline=1.0)
        # Member 2's query was out (its client would give up only after 3 s,
        # with empty figures under its key): the status went on without it.
        assert set(got) == {1, 3}, got
        assert relay.seen == 3
    finally:
        relay.close()
