"""The web console's HTTP side: login, rooms page and live events, room
actions, usage page and chart, the nodes page, the schedules page, and the routes of the
browser participant.

Roles come from the running configuration at every request (as for the CLI):
an administrator sees and may do everything, a sub-administrator only their
departments' rooms and lines, a read-only admin sees everything and changes
nothing. Each action is checked here and again by the backend, which also
writes the audit.

This module wires the app; the handlers live by job: web/guard.py (session,
CSRF, Origin, security headers), web/login.py, web/rooms.py (with the live
events), web/usage.py, web/nodes.py, web/schedules.py, web/join.py (the
browser participant), web/roles.py; web/state.py and web/responses.py hold
what they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiohttp import web

from web.admin import reload_action
from web.auth import Clock, LoginThrottle, RateLimit, SessionStore
from web.backend import Backend
from web.guard import _guard, _headers, _use_request_class
from web.hub import EventHub
from web.join import join_config, join_key, join_leave, join_page, join_token
from web.login import login, login_form, logout
from web.nodes import nodes_api, nodes_page
from web.recordings import recording_file, recordings_api
from web.responses import STATIC
from web.rooms import events, name_wav, room_action, rooms_api, rooms_page, session_info
from web.schedules import schedule_add, schedule_cancel, schedules_page
from web.state import STATE, Sleep, State
from web.usage import usage_chart, usage_page

_PUBLIC_STATIC = {".css", ".js", ".svg", ".png", ".ico"}


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC / name
    if (
        "/" in name
        or name.startswith(".")
        or path.suffix not in _PUBLIC_STATIC
        or not path.is_file()
    ):
        raise web.HTTPNotFound()
    return web.FileResponse(path)


async def favicon(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)


def make_app(
    backend: Backend, hub: EventHub, *, now: Clock = time.time, sleep: Sleep = asyncio.sleep
) -> web.Application:
    """The console's aiohttp application (see the module doc for the routes).

    `now` and `sleep` are the login throttle's clock and wait (tests inject both)."""
    app = web.Application(middlewares=[_guard], client_max_size=256 * 1024)
    app[STATE] = State(
        backend=backend,
        hub=hub,
        now=now,
        sessions=SessionStore(now=now),
        lockout=LoginThrottle(5, 600.0, now=now),
        login_ip=RateLimit(30, 600.0, now=now),
        join_ip=RateLimit(5, 60.0, now=now),
        sleep=sleep,
    )
    _use_request_class(app)
    app.on_response_prepare.append(_headers)

    async def attach(app: web.Application) -> None:
        if hub.loop is None or hub.loop.is_closed():
            hub.attach(asyncio.get_running_loop())

    async def shutdown(app: web.Application) -> None:
        for ws in list(app[STATE].sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutdown")

    async def cleanup(app: web.Application) -> None:
        await hub.aclose()

    app.on_startup.append(attach)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    r = app.router
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/", rooms_page)
    r.add_get("/api/session", session_info)
    r.add_get("/api/rooms", rooms_api)
    r.add_get("/api/events", events)
    r.add_post("/api/rooms/{room}/{action}", room_action)
    r.add_post("/api/reload", reload_action)
    r.add_get("/api/rooms/{room}/members/{member}/name.wav", name_wav)
    r.add_get("/api/recordings", recordings_api)
    r.add_get("/api/recordings/{id}/{name}", recording_file)
    r.add_get("/usage", usage_page)
    r.add_get("/usage/chart.svg", usage_chart)
    r.add_get("/schedules", schedules_page)
    r.add_post("/schedules", schedule_add)
    r.add_post("/schedules/{id}/cancel", schedule_cancel)
    r.add_get("/nodes", nodes_page)
    r.add_get("/api/nodes", nodes_api)
    r.add_get("/join", join_page)
    r.add_get("/join/config", join_config)
    r.add_post("/join/token", join_token)
    r.add_post("/join/{token}/key", join_key)
    r.add_post("/join/{token}/leave", join_leave)
    r.add_get("/static/{name}", static_file)
    r.add_get("/favicon.ico", favicon)
    return app
