"""The rooms: the console page, the snapshot as each admin may see it, room
actions, recorded names, and the live events on a WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any

from aiohttp import WSMsgType, web

from provisioning.schema import Admin
from web.auth import CSRF_FIELD, CSRF_HEADER, Session, same_token
from web.backend import MEMBER_ACTIONS, ROOM_ACTIONS
from web.guard import _current, _origin_ok
from web.hub import Subscription
from web.responses import _error, _html, _json_body, _page
from web.roles import may_act, room_department, sees_room
from web.state import ADMIN, SESSION, State, _state

log = logging.getLogger("ponte.web")

_NUMBER = re.compile(r"^\+?[0-9]{2,20}$")


async def _view(st: State, admin: Admin) -> dict[str, Any]:
    """The snapshot as `admin` may see it, with what they may do per room."""
    snap = await st.backend.snapshot()
    config = st.backend.running_config()
    rooms: dict[str, Any] = {}
    for name, room in sorted((snap.get("rooms") or {}).items()):
        if not sees_room(config, admin, name):
            continue
        rooms[name] = {
            **room,
            "department": room_department(config, name),
            "can_act": may_act(config, admin, name),
        }
    return {"type": "snapshot", "rooms": rooms, "now": st.now()}


async def rooms_page(request: web.Request) -> web.StreamResponse:
    admin: Admin = request[ADMIN]
    return _html(
        _page("console.html", admin=admin.name, role=admin.role, csrf=request[SESSION].csrf)
    )


async def session_info(request: web.Request) -> web.StreamResponse:
    session: Session = request[SESSION]
    admin: Admin = request[ADMIN]
    return web.json_response(
        {
            "admin": admin.name,
            "role": admin.role,
            "departments": list(admin.departments),
            "csrf": session.csrf,
            "expires": session.expires,
        }
    )


async def rooms_api(request: web.Request) -> web.StreamResponse:
    return web.json_response(await _view(_state(request), request[ADMIN]))


async def room_action(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    admin: Admin = request[ADMIN]
    room, action = request.match_info["room"], request.match_info["action"]
    if action not in ROOM_ACTIONS:
        return _error(404, f"unknown action {action!r}")
    config = st.backend.running_config()
    if admin.role == "read_only":
        return _error(403, f"{admin.name} is read-only")
    if not may_act(config, admin, room):
        return _error(403, f"{admin.name} may not act on room {room}")
    body = await _json_body(request)
    if body is None:
        return _error(400, "the body must be a JSON object")
    member = body.get("member")
    number = body.get("number")
    if action in MEMBER_ACTIONS:
        if isinstance(member, str) and member.isdigit():
            member = int(member)
        if not isinstance(member, int) or isinstance(member, bool):
            return _error(400, f"{action} needs a member id")
    else:
        member = None
    if action == "dial":
        # As people write numbers: spaces, dashes, dots and brackets are dropped.
        if isinstance(number, str):
            number = re.sub(r"[\s().-]", "", number)
        if not isinstance(number, str) or not _NUMBER.match(number):
            return _error(400, "dial needs a number: digits, optionally after +")
        number = number.strip()
    else:
        number = None
    if not any(r.name == room for r in config.rooms):  # a removed room may still be live
        snap = await st.backend.snapshot()
        if room not in (snap.get("rooms") or {}):
            return _error(404, f"no room {room!r}")
    try:
        answer = await st.backend.room_action(admin.name, room, action, member, number)
    except Exception:
        log.exception("room %s %s by %s failed", room, action, admin.name)
        return _error(500, "the action failed: see the server log")
    if answer.get("ok"):
        log.info("web: room %s %s by %s", room, action, admin.name)
        return web.json_response(answer)
    status = 403 if answer.get("denied") else 400
    return _error(status, str(answer.get("error") or "refused"), denied=bool(answer.get("denied")))


async def name_wav(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    room = request.match_info["room"]
    try:
        member = int(request.match_info["member"])
    except ValueError:
        return _error(404, "no such member")
    if not sees_room(st.backend.running_config(), request[ADMIN], room):
        return _error(403, "not your room")
    data = await st.backend.name_wav(room, member)
    if not data:
        return _error(404, "no recorded name")
    return web.Response(body=data, content_type="audio/wav")


async def events(request: web.Request) -> web.StreamResponse:
    """The room events as JSON on a WebSocket: first the snapshot, then each
    event as published (including `quality`, which webhooks do not get: see
    web/hub.py). The client may send {"type": "snapshot"} for a fresh one."""
    st = _state(request)
    session: Session = request[SESSION]
    if not _origin_ok(request):
        return _error(403, "cross-origin WebSocket refused")
    token = request.query.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not same_token(token, session.csrf):
        return _error(403, "missing or wrong CSRF token")
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4096)
    if not ws.can_prepare(request).ok:
        return _error(400, "this is a WebSocket endpoint")
    await ws.prepare(request)
    st.sockets.add(ws)
    name = session.admin

    def visible(room: str) -> bool:
        config = st.backend.running_config()
        admin = config.admin(name)
        return admin is not None and sees_room(config, admin, room)

    sub: Subscription = st.backend.subscribe()
    sub.set_filter(visible)

    def still_valid() -> Admin | None:
        found = _current(request)
        return found[1] if found else None

    async def send_snapshot() -> bool:
        admin = still_valid()
        if admin is None:
            await ws.close(code=4401, message=b"session ended")
            return False
        await ws.send_json(await _view(st, admin))
        return True

    async def writer() -> None:
        dropped = sub.dropped
        if not await send_snapshot():
            return
        while not ws.closed:
            try:
                event = await asyncio.wait_for(sub.get(), timeout=30)
            except TimeoutError:
                event = None
            if still_valid() is None:
                await ws.close(code=4401, message=b"session ended")
                return
            if sub.dropped != dropped:  # too slow: events were lost, start over
                dropped = sub.dropped
                while sub.get_nowait() is not None:
                    pass
                if not await send_snapshot():
                    return
                continue
            if event is not None:
                await ws.send_json(event)

    async def reader() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(msg.data).get("type") == "snapshot" and not await send_snapshot():
                    return

    tasks = [asyncio.ensure_future(writer()), asyncio.ensure_future(reader())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        sub.close()
        st.sockets.discard(ws)
        if not ws.closed:
            await ws.close()
    return ws
