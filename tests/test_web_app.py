"""The web console over real HTTP on loopback (aiohttp TestServer, port 0),
with a fake backend: login, CSRF, roles, live events, webhooks, usage."""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from provisioning.schema import Config
from web.app import chart_svg, make_app
from web.auth import hash_password
from web.hub import EventHub, Subscription
from web.server import WebServer

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

    async def name_wav(self, room: str, member: int) -> bytes | None:
        return b"RIFF....WAVEfmt " if member == 1 else None

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

    def subscribe(self) -> Subscription:
        return self.hub.subscribe()

    async def web_join(self, pin: str, offer: dict, peer: str) -> dict:
        self.joins.append((pin, offer, peer))
        if pin != "1111":
            return {"ok": False, "error": "wrong PIN"}
        return {
            "ok": True,
            "answer": {"sdp": "v=0", "type": "answer"},
            "member": 9,
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


# -- no login, no anything --------------------------------------------------


@aio
async def test_nothing_works_without_login() -> None:
    async with Console() as con:
        c = await con.client()
        for path in ("/", "/usage"):
            resp = await c.get(path, allow_redirects=False)
            assert resp.status == 302 and resp.headers["Location"] == "/login", path
        for path in (
            "/api/rooms",
            "/api/session",
            "/usage/chart.svg",
            "/api/rooms/demo/members/1/name.wav",
        ):
            resp = await c.get(path)
            assert resp.status == 401, path
            assert "error" in await resp.json()
        for path in ("/api/rooms/demo/lock", "/api/rooms/demo/end", "/logout"):
            resp = await c.post(path, json={}, headers={"X-CSRF-Token": "x"})
            assert resp.status == 401, path
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await c.ws_connect("/api/events?csrf=x")
        assert err.value.status == 401
        # A forged cookie is no session either.
        c.session.cookie_jar.update_cookies({"ponte_session": "A" * 43})
        assert (await c.get("/api/rooms")).status == 401
        assert con.backend.calls == []


@aio
async def test_login_sets_a_strict_httponly_session_cookie_and_logout_ends_it() -> None:
    async with Console() as con:
        c = await con.client()
        resp = await con.try_login(c, "boss", PASSWORD)
        assert resp.status == 303 and resp.headers["Location"] == "/"
        cookies = [h for h in resp.headers.getall("Set-Cookie") if h.startswith("ponte_session=")]
        assert len(cookies) == 1
        flags = [f.strip().lower() for f in cookies[0].split(";")]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
        page = await c.get("/")
        assert page.status == 200
        text = await page.text()
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', text).group(1)
        assert (await c.get("/api/rooms")).status == 200
        # Logout is a form post: CSRF in a hidden field.
        resp = await c.post("/logout", data={"csrf": csrf}, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/login"
        assert (await c.get("/api/rooms")).status == 401


@aio
async def test_wrong_password_unknown_name_and_no_hash_look_the_same() -> None:
    async with Console() as con:
        c = await con.client()
        answers = []
        for name, password in (("boss", "wrong"), ("ghost", PASSWORD), ("nopass", PASSWORD)):
            resp = await con.try_login(c, name, password)
            body = await resp.text()
            answers.append((resp.status, re.search(r'class="error"[^>]*>([^<]*)<', body)[1]))
            assert "ponte_session=" not in " ".join(resp.headers.getall("Set-Cookie", []))
        assert answers[0] == answers[1] == answers[2] == (401, "Wrong name or password.")


@aio
async def test_login_without_its_csrf_token_or_from_another_origin_is_refused() -> None:
    async with Console() as con:
        c = await con.client()
        await con.login_form(c)
        resp = await c.post(
            "/login", data={"name": "boss", "password": PASSWORD}, allow_redirects=False
        )
        assert resp.status == 403
        csrf = await con.login_form(c)
        resp = await c.post(
            "/login",
            data={"name": "boss", "password": PASSWORD, "csrf": csrf},
            headers={"Origin": "http://evil.example"},
            allow_redirects=False,
        )
        assert resp.status == 403
        # Another browser's token is no good either (it must match our cookie).
        other = await con.client()
        theirs = await con.login_form(other)
        await con.login_form(c)
        resp = await c.post(
            "/login",
            data={"name": "boss", "password": PASSWORD, "csrf": theirs},
            allow_redirects=False,
        )
        assert resp.status == 403


@aio
async def test_lockout_after_five_failures_holds_with_the_right_password_then_lifts() -> None:
    async with Console() as con:
        c = await con.client()
        for i in range(5):
            con.clock.t += 60 * (i > 0)  # five failures in four minutes
            resp = await con.try_login(c, "boss", "wrong")
            assert resp.status == 401
        resp = await con.try_login(c, "boss", PASSWORD)
        assert resp.status == 429
        assert "Too many failed logins" in await resp.text()
        assert "ponte_session=" not in " ".join(resp.headers.getall("Set-Cookie", []))
        # Another admin is not locked out.
        assert (await con.try_login(await con.client(), "sub", PASSWORD)).status == 303
        con.clock.t += 599
        assert (await con.try_login(c, "boss", PASSWORD)).status == 429
        con.clock.t += 1
        assert (await con.try_login(c, "boss", PASSWORD)).status == 303
        # An unknown name locks out the same way (nothing tells it apart).
        c = await con.client()
        for _ in range(5):
            await con.try_login(c, "ghost", "x")
        assert (await con.try_login(c, "ghost", "x")).status == 429


@aio
async def test_session_expires() -> None:
    async with Console(session_minutes=30) as con:
        c, _ = await con.login("boss")
        con.clock.t += 30 * 60 - 1
        assert (await c.get("/api/rooms")).status == 200
        con.clock.t += 1
        assert (await c.get("/api/rooms")).status == 401


@aio
async def test_a_password_change_ends_the_sessions() -> None:
    async with Console() as con:
        c, _ = await con.login("boss")
        raw = con.backend.config.model_dump(by_alias=True)
        raw["admins"][0]["password_hash"] = hash_password("another password", n=1024)
        con.backend.config = Config.model_validate(raw)
        assert (await c.get("/api/rooms")).status == 401


# -- CSRF and origin ----------------------------------------------------------


@aio
async def test_posts_without_the_csrf_token_are_refused() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        resp = await c.post("/api/rooms/demo/lock", json={})
        assert resp.status == 403
        resp = await c.post("/api/rooms/demo/lock", json={}, headers={"X-CSRF-Token": "x" + csrf})
        assert resp.status == 403
        resp = await c.post("/logout", data={}, allow_redirects=False)
        assert resp.status == 403
        assert con.backend.calls == []
        resp = await c.post("/api/rooms/demo/lock", json={}, headers={"X-CSRF-Token": csrf})
        assert resp.status == 200
        assert con.backend.calls == [("boss", "demo", "lock", None, None)]


@aio
async def test_cross_origin_posts_are_refused_even_with_the_token() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            resp = await c.post(
                "/api/rooms/demo/lock", json={}, headers={"X-CSRF-Token": csrf, **headers}
            )
            assert resp.status == 403, headers
        assert con.backend.calls == []
        resp = await c.post(
            "/api/rooms/demo/lock", json={}, headers={"X-CSRF-Token": csrf, "Origin": con.origin}
        )
        assert resp.status == 200
        # A form post under Referrer-Policy no-referrer: Origin null, but same-origin metadata.
        same = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
        resp = await c.post(
            "/api/rooms/demo/unlock", json={}, headers={"X-CSRF-Token": csrf, **same}
        )
        assert resp.status == 200


@aio
async def test_websocket_needs_the_csrf_token_and_our_origin() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        for url, headers in (
            ("/api/events", {}),
            ("/api/events?csrf=nope", {}),
            (f"/api/events?csrf={csrf}", {"Origin": "http://evil.example"}),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await c.ws_connect(url, headers=headers)
            assert err.value.status == 403, url
        ws = await c.ws_connect(f"/api/events?csrf={csrf}", headers={"Origin": con.origin})
        assert (await ws.receive_json())["type"] == "snapshot"
        await ws.close()


# -- roles ---------------------------------------------------------------------


@aio
async def test_read_only_sees_everything_and_changes_nothing() -> None:
    async with Console() as con:
        c, csrf = await con.login("ro")
        rooms = (await (await c.get("/api/rooms")).json())["rooms"]
        assert set(rooms) == {"demo", "other"}
        assert not any(r["can_act"] for r in rooms.values())
        for action, body in (
            ("lock", {}),
            ("mute", {"member": 2}),
            ("kick", {"member": 2}),
            ("end", {}),
            ("dial", {"number": "5511999990000"}),
        ):
            resp = await c.post(
                f"/api/rooms/demo/{action}", json=body, headers={"X-CSRF-Token": csrf}
            )
            assert resp.status == 403, action
            assert "read-only" in (await resp.json())["error"]
        assert con.backend.calls == []
        assert (await c.get("/usage")).status == 200
        assert (await c.get("/api/rooms/demo/members/1/name.wav")).status == 200


@aio
async def test_sub_administrator_sees_and_acts_only_in_their_departments() -> None:
    async with Console() as con:
        c, csrf = await con.login("sub")
        rooms = (await (await c.get("/api/rooms")).json())["rooms"]
        assert set(rooms) == {"demo"} and rooms["demo"]["can_act"]
        resp = await c.post("/api/rooms/other/lock", json={}, headers={"X-CSRF-Token": csrf})
        assert resp.status == 403
        resp = await c.post(
            "/api/rooms/other/kick", json={"member": 5}, headers={"X-CSRF-Token": csrf}
        )
        assert resp.status == 403
        assert (await c.get("/api/rooms/other/members/5/name.wav")).status == 403
        assert con.backend.calls == []
        resp = await c.post(
            "/api/rooms/demo/mute", json={"member": 2}, headers={"X-CSRF-Token": csrf}
        )
        assert resp.status == 200
        assert con.backend.calls == [("sub", "demo", "mute", 2, None)]
        # A room outside the configuration (no department) is not theirs either.
        con.backend.rooms["ghost"] = con.backend.rooms["demo"]
        rooms = (await (await c.get("/api/rooms")).json())["rooms"]
        assert set(rooms) == {"demo"}
        resp = await c.post("/api/rooms/ghost/lock", json={}, headers={"X-CSRF-Token": csrf})
        assert resp.status == 403
        # Usage: their lines only, and their chart.
        page = await (await c.get("/usage")).text()
        assert "1001" in page and "2001" not in page
        assert (await c.get("/usage/chart.svg")).status == 200
        assert con.backend.calls[-1] == ("minutes_per_day", 30, frozenset({"vendas"}))


@aio
async def test_administrator_actions_are_validated_and_passed_on() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        h = {"X-CSRF-Token": csrf}

        async def post(path: str, body: Any = None) -> tuple[int, dict]:
            resp = await c.post(path, json=body if body is not None else {}, headers=h)
            return resp.status, await resp.json()

        assert (await post("/api/rooms/demo/mute"))[0] == 400  # needs a member
        assert (await post("/api/rooms/demo/kick", {"member": "x"}))[0] == 400
        assert (await post("/api/rooms/demo/dial", {"number": "12; rm -rf"}))[0] == 400
        assert (await post("/api/rooms/demo/explode"))[0] == 404
        assert (await post("/api/rooms/nowhere/lock"))[0] == 404
        resp = await c.post("/api/rooms/demo/lock", data="[1, 2", headers=h)
        assert resp.status == 400
        assert con.backend.calls == []
        assert (await post("/api/rooms/demo/kick", {"member": 2}))[0] == 200
        assert (await post("/api/rooms/other/dial", {"number": "+5511999990000"}))[0] == 200
        assert (await post("/api/rooms/other/unmute", {"member": "5"}))[0] == 200
        assert con.backend.calls == [
            ("boss", "demo", "kick", 2, None),
            ("boss", "other", "dial", None, "+5511999990000"),
            ("boss", "other", "unmute", 5, None),
        ]
        con.backend.deny_next = True
        status, body = await post("/api/rooms/demo/end")
        assert status == 403 and body == {"error": "nope", "denied": True}


@aio
async def test_name_wav() -> None:
    async with Console() as con:
        c, _ = await con.login("boss")
        resp = await c.get("/api/rooms/demo/members/1/name.wav")
        assert resp.status == 200 and resp.content_type == "audio/wav"
        assert (await c.get("/api/rooms/demo/members/2/name.wav")).status == 404


# -- pages and headers -------------------------------------------------------


@aio
async def test_security_headers_everywhere() -> None:
    async with Console() as con:
        c = await con.client()
        anon = [await c.get("/login"), await c.get("/api/rooms"), await c.get("/static/console.js")]
        c2, _ = await con.login("boss")
        pages = [await c2.get("/"), await c2.get("/api/rooms"), await c2.get("/usage/chart.svg")]
        for resp in anon + pages:
            h = resp.headers
            assert "default-src 'none'" in h["Content-Security-Policy"], resp.url
            assert "script-src 'self'" in h["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
            assert h["X-Frame-Options"] == "DENY"
            assert h["Referrer-Policy"] == "no-referrer"
            assert h["X-Content-Type-Options"] == "nosniff"
        for resp in pages:
            assert resp.headers["Cache-Control"] == "no-store"
        # No inline scripts in our pages (the CSP would block them anyway).
        for name in ("/", "/usage"):
            text = await (await c2.get(name)).text()
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), name
            assert " style=" not in text, name
        # Static files only by name and kind.
        assert (await c.get("/static/login.html")).status == 404
        assert (await c.get("/static/..%2fapp.py")).status == 404


@aio
async def test_rooms_page_and_usage_page() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        page = await (await c.get("/")).text()
        assert "/static/console.js" in page and csrf in page
        usage = await (await c.get("/usage")).text()
        assert '<span class="w57">' in usage
        assert 'class="bar over"' in usage and '<span class="w100">' in usage
        assert "2001&lt;script&gt;" in usage and "2001<script>" not in usage
        assert '<img class="chart" src="/usage/chart.svg"' in usage
        resp = await c.get("/usage/chart.svg")
        assert resp.content_type == "image/svg+xml"
        svg = await resp.text()
        assert svg.startswith("<svg") and svg.count("<rect") == 31  # background + 30 days
        assert "2027-01-14: 42.5 min" in svg


def test_chart_svg_escapes_and_scales() -> None:
    svg = chart_svg([("2026-01-01", 0.0), ("<x>", 12.0)], title="a & b")
    assert "a &amp; b" in svg and "<x>" not in svg
    assert chart_svg([], "empty").startswith("<svg")


# -- live events -------------------------------------------------------------


@aio
async def test_websocket_sends_the_snapshot_then_events_published_from_another_thread() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        ws = await c.ws_connect(f"/api/events?csrf={csrf}")
        snap = await ws.receive_json()
        assert snap["type"] == "snapshot" and set(snap["rooms"]) == {"demo", "other"}
        assert snap["rooms"]["demo"]["members"][0]["caller"] == "<b>alice</b>"
        assert snap["now"] == con.clock.t
        event = {"type": "talking_started", "room": "demo", "member": 2, "caller": "1002"}
        t = threading.Thread(target=con.hub.publish, args=(event,))
        t.start()
        t.join()
        got = await ws.receive_json()
        assert {k: got[k] for k in event} == event and isinstance(got["ts"], float)
        # The client may ask for a fresh snapshot.
        await ws.send_json({"type": "snapshot"})
        assert (await ws.receive_json())["type"] == "snapshot"
        await ws.close()
        for _ in range(50):
            if con.hub.subscribers == 0:
                break
            await asyncio.sleep(0.02)
        assert con.hub.subscribers == 0


@aio
async def test_sub_administrator_gets_only_their_rooms_events() -> None:
    async with Console() as con:
        c, csrf = await con.login("sub")
        ws = await c.ws_connect(f"/api/events?csrf={csrf}")
        assert set((await ws.receive_json())["rooms"]) == {"demo"}

        def publish() -> None:
            con.hub.publish({"type": "locked", "room": "other"})
            con.hub.publish({"type": "member_left", "room": "other", "member": 5, "caller": "x"})
            con.hub.publish({"type": "unlocked", "room": "demo"})

        threading.Thread(target=publish).start()
        got = await ws.receive_json()
        assert got["type"] == "unlocked" and got["room"] == "demo"
        await ws.close()


@aio
async def test_websocket_closes_when_the_session_ends() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        ws = await c.ws_connect(f"/api/events?csrf={csrf}")
        await ws.receive_json()
        con.clock.t += 481 * 60
        con.hub.publish({"type": "locked", "room": "demo"})
        msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 4401


@aio
async def test_slow_subscriber_drops_its_oldest_events_without_blocking() -> None:
    hub = EventHub(queue_size=3)
    hub.attach(asyncio.get_running_loop())
    sub = hub.subscribe()
    # publish() is synchronous (no await): it cannot wait for a slow reader.
    for i in range(10):
        hub.publish({"type": "muted", "room": "demo", "member": i})
    await asyncio.sleep(0.05)
    assert sub.dropped == 7
    assert [(await sub.get())["member"] for _ in range(3)] == [7, 8, 9]
    sub.close()
    await hub.aclose()


@aio
async def test_webhooks_receive_the_events() -> None:
    received: list[dict] = []
    got = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        if len(received) == 2:
            got.set()
        return web.Response(text="ok")

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = TestServer(receiver, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        url = f"http://127.0.0.1:{server.port}/hook"
        dead = f"http://127.0.0.1:{_free_port()}/nobody"
        hub = EventHub([dead, url])
        hub.attach(asyncio.get_running_loop())
        t = threading.Thread(
            target=lambda: [
                hub.publish({"type": "member_joined", "room": "demo", "member": 3, "caller": "7"}),
                hub.publish({"type": "room_ended", "room": "demo"}),
            ]
        )
        t.start()
        t.join()
        await asyncio.wait_for(got.wait(), 5)
        assert [e["type"] for e in received] == ["member_joined", "room_ended"]
        assert received[0]["caller"] == "7" and received[0]["room"] == "demo"
        for _ in range(100):  # the dead URL fails, logged, without holding up the live one
            if hub.webhook_failures >= 2:
                break
            await asyncio.sleep(0.05)
        assert hub.webhook_failures >= 2
        await hub.aclose()
    finally:
        await server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the browser participant's routes ------------------------------------------


@aio
async def test_join_routes_are_public_same_origin_and_rate_limited() -> None:
    async with Console() as con:
        c = await con.client()
        cfg = await (await c.get("/join/config")).json()
        assert cfg == {"ice_servers": ["stun:stun.lan:3478"]}
        offer = {"pin": "1111", "sdp": "v=0\r\n", "type": "offer"}
        assert (await c.post("/join/offer", json=offer)).status == 403  # no Origin
        bad = {"Origin": "http://evil.example"}
        assert (await c.post("/join/offer", json=offer, headers=bad)).status == 403
        assert con.backend.joins == []
        ok = {"Origin": con.origin}
        resp = await c.post("/join/offer", json=offer, headers=ok)
        assert resp.status == 200
        body = await resp.json()
        assert body["token"] == "tok_abcdefgh" and body["answer"]["type"] == "answer"
        assert con.backend.joins[0][2] == "127.0.0.1"
        assert (await c.post("/join/offer", json={**offer, "pin": "12"}, headers=ok)).status == 400
        wrong = {**offer, "pin": "3333"}
        assert (await c.post("/join/offer", json=wrong, headers=ok)).status == 403
        for _ in range(2):
            await c.post("/join/offer", json=offer, headers=ok)
        assert (await c.post("/join/offer", json=offer, headers=ok)).status == 429  # 6th/min
        con.clock.t += 60
        assert (await c.post("/join/offer", json=offer, headers=ok)).status == 200
        resp = await c.post("/join/tok_abcdefgh/key", json={"key": "hand"}, headers=ok)
        assert resp.status == 200
        assert (await c.post("/join/tok_abcdefgh/key", json={"key": "x"}, headers=ok)).status == 400
        assert (await c.post("/join/tok_abcdefgh/key", json={"key": "mute"})).status == 403
        assert (await c.post("/join/tok_abcdefgh/leave", headers=ok)).status == 200
        assert ("key", "tok_abcdefgh", "hand") in con.backend.joins
        assert ("leave", "tok_abcdefgh") in con.backend.joins
        resp = await c.get("/join")
        assert resp.status in (200, 404)  # join.html belongs to the WebRTC side


# -- the server in its own thread --------------------------------------------


def test_web_server_thread_starts_serves_and_stops() -> None:
    hub = EventHub()
    backend = FakeBackend(hub)
    srv = WebServer(backend, hub, "127.0.0.1:0")
    srv.start()
    try:
        assert srv.port > 0 and srv.loop.is_running()
        with urllib.request.urlopen(f"{srv.url}/login", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["X-Frame-Options"] == "DENY"
        # Taken port: start raises.
        other = WebServer(backend, EventHub(), f"127.0.0.1:{srv.port}")
        with pytest.raises(OSError):
            other.start()
        # run_coro from this thread, and publish lands on the web loop.
        sub = srv.run_coro(_subscribe(hub)).result(5)
        hub.publish({"type": "locked", "room": "demo"})
        event = srv.run_coro(asyncio.wait_for(sub.get(), 5)).result(6)
        assert event["type"] == "locked"
    finally:
        srv.stop()
    assert srv.loop.is_closed()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{srv.url}/login", timeout=2)


async def _subscribe(hub: EventHub) -> Subscription:
    return hub.subscribe()


def test_web_server_stops_with_an_open_websocket() -> None:
    hub = EventHub()
    srv = WebServer(FakeBackend(hub), hub, "127.0.0.1:0")
    srv.start()

    async def connect() -> aiohttp.ClientWebSocketResponse:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # an IP host
        jar_url = srv.url
        async with session.get(f"{jar_url}/login") as resp:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await resp.text())[1]
        async with session.post(
            f"{jar_url}/login",
            data={"name": "boss", "password": PASSWORD, "csrf": csrf},
        ) as resp:
            assert resp.status == 200  # followed the redirect to the rooms page
            token = re.search(r'name="csrf-token" content="([^"]+)"', await resp.text())[1]
        ws = await session.ws_connect(f"{jar_url}/api/events?csrf={token}")
        await ws.receive_json()
        return ws, session

    async def wait_closed(ws: Any, session: aiohttp.ClientSession) -> Any:
        msg = await ws.receive()
        await session.close()
        return msg.type

    loop = asyncio.new_event_loop()
    try:
        ws, session = loop.run_until_complete(connect())
        srv.stop()  # returns (bounded by its own timeout) with a socket still open
        assert srv.loop.is_closed()
        kind = loop.run_until_complete(asyncio.wait_for(wait_closed(ws, session), 5))
        assert kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    finally:
        loop.close()
