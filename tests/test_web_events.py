"""The web console's live events (the WebSocket, the hub, webhooks) and the
server in its own thread, over real HTTP on loopback with a fake backend
(tests/web_helpers.py)."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import urllib.request
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.web_helpers import PASSWORD, Console, FakeBackend, aio
from web.hub import EventHub, Subscription
from web.server import WebServer

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
