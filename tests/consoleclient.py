"""An admin's HTTP client for the web console (login, CSRF, actions, events),
as a browser would use it: cookies, the login form's token, same-origin
headers and the events WebSocket.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp

CSRF_INPUT = re.compile(r'name="csrf" value="([^"]+)"')


class ConsoleClient:
    """One logged-in admin (use within a running asyncio loop)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # cookies for an IP literal host
            headers={"Origin": self.base},
        )
        self.csrf = ""

    async def login(self, name: str, password: str) -> int:
        """The login form, as posted by a browser: the final status."""
        async with self.http.get(f"{self.base}/login") as resp:
            token = CSRF_INPUT.search(await resp.text())
        form = {"name": name, "password": password, "csrf": token.group(1) if token else ""}
        async with self.http.post(f"{self.base}/login", data=form, allow_redirects=False) as r:
            status = r.status
        if status == 303:
            async with self.http.get(f"{self.base}/api/session") as resp:
                self.csrf = (await resp.json())["csrf"]
        return status

    async def act(
        self, room: str, action: str, member: int | None = None, number: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST /api/rooms/ROOM/ACTION with the CSRF header."""
        body: dict[str, Any] = {}
        if member is not None:
            body["member"] = member
        if number is not None:
            body["number"] = number
        async with self.http.post(
            f"{self.base}/api/rooms/{room}/{action}",
            json=body,
            headers={"X-CSRF-Token": self.csrf},
        ) as resp:
            return resp.status, await resp.json()

    async def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """POST JSON to an API path with the CSRF header: status and JSON answer."""
        async with self.http.post(
            f"{self.base}{path}", json=body or {}, headers={"X-CSRF-Token": self.csrf}
        ) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str) -> tuple[int, str]:
        """GET a page or API path: status and text."""
        async with self.http.get(f"{self.base}{path}", allow_redirects=False) as resp:
            return resp.status, await resp.text()

    async def events(self) -> aiohttp.ClientWebSocketResponse:
        """The events WebSocket (its first message is the snapshot)."""
        return await self.http.ws_connect(f"{self.base}/api/events?csrf={self.csrf}")

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.http.close()


async def next_event(
    ws: aiohttp.ClientWebSocketResponse,
    kinds: set[str],
    timeout: float = 10,
    log: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The next event of one of `kinds`; every event read is appended to `log`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await ws.receive_json(timeout=max(0.01, deadline - loop.time()))
        if log is not None:
            log.append(msg)
        if msg.get("type") in kinds:
            return msg
