"""The web console's server: its own asyncio loop in a daemon thread.

The app server starts it when `web.listen` is set. No call's media passes
here: browsers join through the edge (Kamailio's WebSocket, rtpengine).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from web.app import make_app
from web.backend import Backend
from web.hub import EventHub

log = logging.getLogger("ponte.web")
T = TypeVar("T")


def split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"web.listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


class WebServer:
    """Serves make_app(backend, hub) on `listen` from a loop in its own thread."""

    def __init__(self, backend: Backend, hub: EventHub, listen: str, **app_options: Any) -> None:
        self.backend, self.hub, self.listen = backend, hub, listen
        self.host, self.port = split_listen(listen)
        self._app_options = app_options
        self.loop: asyncio.AbstractEventLoop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Listen, or raise (OSError when the port is taken). Returns once listening."""
        if self._thread is not None:
            raise RuntimeError("the web server is already started")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="ponte-web", daemon=True
        )
        self._thread.start()
        try:
            ready.result(timeout)
        except BaseException:
            self._thread.join(timeout)
            self._thread = None
            raise
        log.info("web console on %s", self.url)

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._listen())
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self._cleanup())
            self.loop.close()
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            self.loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                if tasks:
                    self.loop.run_until_complete(asyncio.wait(tasks, timeout=0.3))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _listen(self) -> None:
        self.hub.attach(self.loop)
        app = make_app(self.backend, self.hub, **self._app_options)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # an ephemeral port (tests): report the real one
            server = getattr(site, "_server", None)
            if server is not None and server.sockets:
                self.port = server.sockets[0].getsockname()[1]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def run_coro(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coro` on the web loop from another thread; a Future of its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout: float = 2.0) -> None:
        """Close the site, the WebSockets and the webhooks, then the loop (≤ `timeout` s)."""
        thread, self._thread = self._thread, None
        if thread is None or self.loop.is_closed():
            return
        cleanup = self.run_coro(asyncio.wait_for(self._cleanup(), timeout * 0.7))
        try:
            cleanup.result(timeout * 0.8)
        except Exception as exc:  # logged, and we stop anyway
            log.warning("web server cleanup: %s", exc or type(exc).__name__)
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        thread.join(max(0.1, timeout * 0.2))
        if thread.is_alive():
            log.warning("web server thread did not stop in %.1f s", timeout)
