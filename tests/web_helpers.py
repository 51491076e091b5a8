"""The web console under test, with a fake backend: a Config with two
departments' rooms and admins of each role, a FakeBackend recording what the
web layer asks, a clock the test moves, and a client of make_app on a real
aiohttp TestServer (loopback, port 0). Used by tests/test_web_*.py and
tests/test_attacks_admin.py."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from provisioning.schema import Config
from web.app import make_app
from web.auth import hash_password
from web.hub import EventHub, Subscription

PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD, n=1024)  # cheap for the tests; the format carries n


def _config(**web_cfg: Any) -> Config:
    return Config.model_validate(
        {
            "profiles": {"p": {}},
            "departments": {"vendas": {"profile": "p"}, "suporte": {"profile": "p"}},
            "lines": {
                "1001": {"area_code": "11", "department": "vendas"},
                "2001": {"area_code": "11", "department": "suporte"},
            },
            "rooms": [
                {
                    "name": "demo",
                    "participant_pin": "1111",
                    "moderator_pin": "9999",
                    "department": "vendas",
                },
                {
                    "name": "other",
                    "participant_pin": "2222",
                    "moderator_pin": "8888",
                    "department": "suporte",
                },
            ],
            "admins": [
                {"name": "boss", "role": "administrator", "password_hash": HASH},
                {
                    "name": "sub",
                    "role": "sub_administrator",
                    "departments": ["vendas"],
                    "password_hash": HASH,
                },
                {"name": "ro", "role": "read_only", "password_hash": HASH},
                {"name": "nopass", "role": "administrator"},
            ],
            "web": {"listen": "127.0.0.1:8088", "ice_servers": ["stun:stun.lan:3478"], **web_cfg},
        }
    )


def _member(mid: int, caller: str, role: str = "participant") -> dict[str, Any]:
    return {
        "id": mid,
        "caller": caller,
        "role": role,
        "name": mid == 1,
        "muted": False,
        "talking": False,
        "hand": False,
        "via": "sip",
    }


class FakeBackend:
    """The Backend protocol, recording what the web layer asked for."""

    def __init__(self, hub: EventHub, config: Config | None = None) -> None:
        self.hub = hub
        self.config = config or _config()
        self.calls: list[tuple] = []
        self.joins: list[tuple] = []
        self.deny_next = False
        # What the schedules page lists: a pending one per room, one done.
        self.schedules: list[dict[str, Any]] = [
            {
                "id": 1,
                "room": "demo",
                "at": "2027-01-15T13:00:00+00:00",
                "status": "pending",
                "moderator_first": True,
                "calls": [{"number": "0211<script>", "role": "moderator", "outcome": "waiting"}],
            },
            {
                "id": 2,
                "room": "other",
                "at": "2027-01-15T14:00:00+00:00",
                "status": "pending",
                "moderator_first": False,
                "calls": [{"number": "0212", "role": "participant", "outcome": "waiting"}],
            },
            {
                "id": 3,
                "room": "demo",
                "at": "2027-01-14T14:00:00+00:00",
                "status": "done",
                "moderator_first": False,
                "calls": [
                    {
                        "number": "0213",
                        "role": "participant",
                        "outcome": "no_answer",
                        "ended_at": "2027-01-14T14:00:31+00:00",
                    }
                ],
            },
        ]
        self.rooms: dict[str, Any] = {
            "demo": {
                "locked": False,
                "lecture": False,
                "started": 1_800_000_000.0,
                "members": [_member(1, "<b>alice</b>", "moderator"), _member(2, "1002")],
            },
            "other": {
                "locked": True,
                "lecture": False,
                "started": 1_800_000_100.0,
                "members": [_member(5, "5511999990000")],
            },
        }

        load = {"calls": 2, "legs": 3, "rooms": 1, "cpu": 12.5}
        self.nodes: dict[str, Any] = {
            "shared": True,
            "stale_after": 5.0,
            "alive": 1,
            "nodes": {
                "pbx-a": {
                    **load,
                    "address": "10.0.0.1:5080",
                    "started": 1_800_000_000.0,
                    "heartbeat": 1_800_000_199.5,
                    "age": 0.5,
                    "alive": True,
                    "homes": {"demo": {"lease_left": 8.0}},
                },
                "pbx-b<i>": {
                    **load,
                    "address": "10.0.0.2:5080",
                    "started": 1_800_000_000.0,
                    "heartbeat": 1_800_000_100.0,
                    "age": 100.0,
                    "alive": False,
                    "homes": {"other<script>": {"lease_left": -90.0}},
                },
            },
        }

    def running_config(self) -> Config:
        return self.config

    async def snapshot(self) -> dict:
        return {"rooms": self.rooms}

    async def room_action(
        self, admin: str, room: str, action: str, member: int | None, number: str | None
    ) -> dict:
        self.calls.append((admin, room, action, member, number))
        if self.deny_next:
            return {"ok": False, "error": "nope", "denied": True}
        return {"ok": True, "by": admin}

    async def reload(self, admin: str) -> dict:
        self.calls.append((admin, "reload"))
        if self.deny_next:
            return {"ok": False, "error": "nope", "denied": True}
        return {"ok": True, "changes": 0, "by": admin}

    async def name_wav(self, room: str, member: int) -> bytes | None:
        return b"RIFF....WAVEfmt " if member == 1 else None

    async def recordings(self) -> list[dict]:
        return []

    async def recording(self, rec_id: int) -> dict | None:
        return None

    async def recording_file(self, rec_id: int, name: str) -> Path | None:
        return None

    async def schedule(self, admin: str, request: dict) -> dict:
        self.calls.append(("schedule", admin, dict(request)))
        if request.get("action") == "list":
            return {"ok": True, "schedules": self.schedules}
        if self.deny_next:
            return {"ok": False, "error": "nope", "denied": True}
        if "x" in str(request.get("numbers", "")):
            return {"ok": False, "error": "number '<x>' is not a phone number"}
        return {"ok": True, "by": admin, "id": 7}

    async def usage(self) -> list[dict]:
        base = {"profile": "p", "cycle": "2026-11-01", "limit": "local", "alerts": ""}
        return [
            {
                **base,
                "key": "1001",
                "line": "1001",
                "department": "vendas",
                "used_min": 57.0,
                "limit_min": 100.0,
                "pct": 57.0,
            },
            {
                **base,
                "key": "2001",
                "line": "2001<script>",
                "department": "suporte",
                "used_min": 130.0,
                "limit_min": 100.0,
                "pct": 130.0,
            },
        ]

    async def minutes_per_day(
        self, days: int, departments: frozenset[str] | None = None
    ) -> list[tuple[str, float]]:
        self.calls.append(("minutes_per_day", days, departments))
        return [("2027-01-14", 42.5), ("2027-01-15", 10.0)]

    async def cluster(self) -> dict:
        self.calls.append(("cluster",))
        return self.nodes

    def subscribe(self) -> Subscription:
        return self.hub.subscribe()

    async def web_join(self, pin: str, peer: str) -> dict:
        self.joins.append((pin, peer))
        if pin != "1111":
            return {"ok": False, "error": "wrong PIN"}
        return {
            "ok": True,
            "ws": "ws://127.0.0.1:8089",
            "uri": "sip:web-" + "ab" * 16 + "@127.0.0.1",
            "token": "tok_abcdefgh",
        }

    async def web_key(self, token: str, key: str) -> dict:
        self.joins.append(("key", token, key))
        return {"ok": True}

    async def web_leave(self, token: str) -> None:
        self.joins.append(("leave", token))


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_200.0

    def __call__(self) -> float:
        return self.t


def aio(fn: Callable) -> Callable:
    """Run an async test on a fresh loop (no pytest plugin needed)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 30))

    return run


class Console:
    """A client of a TestServer running make_app(FakeBackend)."""

    def __init__(self, **web_cfg: Any) -> None:
        self.hub = EventHub(_config(**web_cfg).web.webhooks)
        self.backend = FakeBackend(self.hub, _config(**web_cfg))
        self.clock = Clock()
        self.app = make_app(self.backend, self.hub, now=self.clock)
        self.server = TestServer(self.app, host="127.0.0.1", port=0)
        self.clients: list[TestClient] = []

    async def __aenter__(self) -> Console:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self.clients:
            await c.close()
        await self.server.close()

    async def client(self) -> TestClient:
        c = TestClient(self.server)
        await c.start_server()
        self.clients.append(c)
        return c

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def login_form(self, c: TestClient) -> str:
        resp = await c.get("/login")
        assert resp.status == 200
        m = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
        assert m
        return m.group(1)

    async def try_login(self, c: TestClient, name: str, password: str) -> aiohttp.ClientResponse:
        csrf = await self.login_form(c)
        return await c.post(
            "/login",
            data={"name": name, "password": password, "csrf": csrf},
            allow_redirects=False,
        )

    async def login(self, name: str) -> tuple[TestClient, str]:
        """A logged-in client and its CSRF token."""
        c = await self.client()
        resp = await self.try_login(c, name, PASSWORD)
        assert resp.status == 303, await resp.text()
        info = await (await c.get("/api/session")).json()
        assert info["admin"] == name
        return c, info["csrf"]
