"""Alert webhooks, delivered by one worker thread and retried with backoff.

The loop thread only queues a delivery (`send`): a webhook that is slow,
refuses or is down never holds a call up. A failed POST is tried again after
`backoff`, then twice that, four times that... `retries` times; the outcome
("delivered after N tries", or "failed after N tries: why") goes to `record`,
which the app server writes to the alert's row for `ponte report alerts`.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("ponte.call")

Post = Callable[[str, dict[str, Any], float], None]
Record = Callable[[dict[str, Any], str], None]


def post_json(url: str, payload: dict[str, Any], timeout: float) -> None:
    """POST `payload` as JSON; raise OSError (HTTP errors included) or ValueError."""
    req = urllib.request.Request(
        url,
        data=json.dumps(payload, ensure_ascii=False).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    url: str = field(compare=False)
    payload: dict[str, Any] = field(compare=False)
    retries: int = field(compare=False)
    backoff: float = field(compare=False)
    timeout: float = field(compare=False)
    tries: int = field(default=0, compare=False)


class AlertWebhook:
    """The worker that delivers alert webhooks (see the module doc)."""

    def __init__(
        self,
        record: Record,
        post: Post = post_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.record = record
        self.post = post
        self.clock = clock
        self._due: list[_Delivery] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def send(
        self,
        url: str,
        payload: dict[str, Any],
        retries: int = 3,
        backoff: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        """Queue one delivery (any thread; returns at once)."""
        job = _Delivery(self.clock(), next(self._seq), url, payload, retries, backoff, timeout)
        with self._cond:
            heapq.heappush(self._due, job)
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def stop(self, timeout: float = 1.0) -> None:
        """End the worker; deliveries still waiting for a retry are dropped."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def idle(self) -> bool:
        """Whether nothing waits to be delivered or retried."""
        with self._cond:
            return not self._due

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._due or self._due[0].due > self.clock()):
                    wait = self._due[0].due - self.clock() if self._due else None
                    self._cond.wait(wait)
                if self._stopping:
                    return
                job = heapq.heappop(self._due)
            self._attempt(job)

    def _attempt(self, job: _Delivery) -> None:
        job.tries += 1
        try:
            self.post(job.url, job.payload, job.timeout)
        except (OSError, ValueError) as exc:
            why = _why(exc)
            if job.tries <= job.retries:
                delay = job.backoff * 2 ** (job.tries - 1)
                log.warning(
                    "alert webhook %s failed (try %d): %s; again in %g s",
                    job.url,
                    job.tries,
                    why,
                    delay,
                )
                job.due = self.clock() + delay
                with self._cond:
                    heapq.heappush(self._due, job)
                return
            outcome = f"failed after {_tries(job.tries)}: {why}"
            log.error("alert webhook %s %s", job.url, outcome)
        else:
            outcome = f"delivered after {_tries(job.tries)}"
            log.info("alert webhook %s %s", job.url, outcome)
        try:
            self.record(job.payload, outcome)
        except Exception:  # the worker must outlive a record that cannot be written
            log.exception("alert webhook outcome not recorded")


def _tries(n: int) -> str:
    return "1 try" if n == 1 else f"{n} tries"


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
