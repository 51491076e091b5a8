"""Room events, fanned out to the console's WebSockets and to webhooks.

`EventHub.publish` may be called from any thread (the app server calls it
from its own loop thread); delivery happens on the web server's asyncio loop.
Nothing ever blocks the publisher: each subscriber has a bounded queue that
drops its oldest event when full, and each webhook URL a bounded queue that
is posted in order by one task.

Events in `LIVE_ONLY` (a member's call quality, refreshed every few seconds)
go to the WebSocket subscribers only: they keep the rooms page current, but
a webhook wants the story of a room (who came, who spoke, who was muted), not
a stream of measurements; the figures stay in the snapshot (/api/rooms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("ponte.web.hub")

EVENT_TYPES = frozenset(
    {
        "member_joined",
        "member_left",
        "muted",
        "unmuted",
        "talking_started",
        "talking_stopped",
        "locked",
        "unlocked",
        "lecture_on",
        "lecture_off",
        "hand_raised",
        "hand_lowered",
        # The member's phone put the call on hold / took it off (re-INVITE).
        "on_hold",
        "off_hold",
        # A member asked for an operator (*90 or an admin), and the request
        # ended (served, or sent back; an unanswered one stays up to 10 min).
        "help_requested",
        "help_ended",
        "room_started",
        "room_ended",
        # {"member", "caller", "quality": {"loss_in", "loss_out", "jitter_in",
        # "jitter_out", "rtt_ms", "mos"} | None}: rtpengine's figures for the
        # member's call changed (ponte/console.py; at most every 5 s a member).
        "quality",
    }
)
# Event types that are not posted to webhooks (see the module's docstring).
LIVE_ONLY = frozenset({"quality"})
WEBHOOK_TIMEOUT = 5.0


class Subscription:
    """One consumer of the events (a WebSocket). Await `get()` or iterate.

    `visible(room) -> bool` filters the events this subscriber receives; it is
    called on the web loop at delivery time, so it may read the running
    configuration (a sub-administrator only sees their departments' rooms).
    """

    def __init__(
        self,
        hub: EventHub,
        maxsize: int,
        visible: Callable[[str], bool] | None = None,
    ) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        self.visible = visible
        self.dropped = 0  # events lost because this subscriber was too slow
        self.closed = False

    def set_filter(self, visible: Callable[[str], bool] | None) -> None:
        """Only deliver events of rooms for which `visible(room)` is true."""
        self.visible = visible

    def _offer(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        if self.visible is not None:
            try:
                if not self.visible(str(event.get("room", ""))):
                    return
            except Exception:  # a broken filter must not break the fan-out
                log.exception("event filter failed")
                return
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> dict[str, Any]:
        """The next event (waits)."""
        return await self._queue.get()

    def get_nowait(self) -> dict[str, Any] | None:
        """The next event if one is queued."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def pending(self) -> int:
        """Events queued and not yet read."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop receiving events."""
        self.closed = True
        self._hub._remove(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self.closed:
            raise StopAsyncIteration
        return await self.get()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Publishes room events to subscribers on one asyncio loop and to webhooks."""

    def __init__(
        self,
        webhooks: Iterable[str] = (),
        *,
        queue_size: int = 256,
        webhook_queue_size: int = 1000,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.queue_size = queue_size
        self.webhook_queue_size = webhook_queue_size
        self._webhooks: tuple[str, ...] = tuple(webhooks)
        self._loop = loop
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._posters: dict[str, tuple[asyncio.Queue[dict[str, Any]], asyncio.Task[None]]] = {}
        self._session: aiohttp.ClientSession | None = None  # made on the loop
        self.published = 0
        self.webhook_failures = 0

    # -- wiring -------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on `loop` (the web server's). Events published before are lost."""
        self._loop = loop

    def set_webhooks(self, urls: Iterable[str]) -> None:
        """Replace the webhook URLs (after a reload); thread-safe."""
        self._webhooks = tuple(urls)

    @property
    def webhooks(self) -> tuple[str, ...]:
        return self._webhooks

    def subscribe(
        self, visible: Callable[[str], bool] | None = None, *, maxsize: int | None = None
    ) -> Subscription:
        """A new subscriber; call on the hub's loop (its queue belongs to it)."""
        sub = Subscription(self, maxsize or self.queue_size, visible)
        with self._lock:
            self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    # -- publishing ---------------------------------------------------------

    def publish(self, event: dict[str, Any]) -> None:
        """Send one event to every subscriber and webhook. Any thread; never blocks."""
        if event.get("type") not in EVENT_TYPES:
            log.warning("unknown event type %r (published anyway)", event.get("type"))
        event = dict(event)
        event.setdefault("ts", time.time())
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # RuntimeError: the loop closed between the check and the call.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: dict[str, Any]) -> None:
        self.published += 1
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub._offer(event)
        if event.get("type") in LIVE_ONLY:
            return
        for url in self._webhooks:
            self._post_later(url, event)

    # -- webhooks -----------------------------------------------------------

    def _post_later(self, url: str, event: dict[str, Any]) -> None:
        poster = self._posters.get(url)
        if poster is None or poster[1].done():
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.webhook_queue_size)
            task = asyncio.get_running_loop().create_task(self._poster(url, queue))
            poster = self._posters[url] = (queue, task)
        queue = poster[0]
        if queue.full():
            queue.get_nowait()
            log.warning("webhook %s is too slow: dropped its oldest event", url)
        queue.put_nowait(event)

    async def _poster(self, url: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        import aiohttp

        while True:
            event = await queue.get()
            if url not in self._webhooks:
                continue  # removed by a reload
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT),
                    headers={"User-Agent": "ponte-webhook"},
                )
            try:
                async with self._session.post(url, json=event) as resp:
                    if resp.status >= 300:
                        self.webhook_failures += 1
                        log.warning("webhook %s answered %s", url, resp.status)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.webhook_failures += 1
                log.warning("webhook %s failed: %s", url, exc or type(exc).__name__)

    async def aclose(self) -> None:
        """Stop the webhook posters and close their HTTP session (on the loop)."""
        posters, self._posters = list(self._posters.values()), {}
        for _, task in posters:
            task.cancel()
        for _, task in posters:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with self._lock:
            subs, self._subs = self._subs, []
        for sub in subs:
            sub.closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
