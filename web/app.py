"""The web console's HTTP side: login, rooms page and live events, room
actions, usage page and chart, and the routes of the browser participant.

Roles come from the running configuration at every request (as for the CLI):
an administrator sees and may do everything, a sub-administrator only their
departments' rooms and lines, a read-only admin sees everything and changes
nothing. Each action is checked here and again by the backend, which also
writes the audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import html
import inspect
import json
import logging
import math
import re
import time
import weakref
import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, hdrs, web

from provisioning.admins import PermissionDenied, authorize
from provisioning.schema import Admin, Config
from web.auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Clock,
    LoginThrottle,
    RateLimit,
    Session,
    SessionStore,
    credential_stamp,
    new_token,
    same_token,
    verify_password,
)
from web.backend import MEMBER_ACTIONS, ROOM_ACTIONS, WEB_KEYS, Backend
from web.hub import EventHub, Subscription

log = logging.getLogger("ponte.web")

STATIC = Path(__file__).parent / "static"
CHART_DAYS = 30
_NUMBER = re.compile(r"^\+?[0-9]{2,20}$")
_PIN = re.compile(r"^[0-9]{3,12}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,255}$")
_PUBLIC_STATIC = {".css", ".js", ".svg", ".png", ".ico"}
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class State:
    """Everything the handlers share (one per app)."""

    backend: Backend
    hub: EventHub
    now: Clock
    sessions: SessionStore
    lockout: LoginThrottle
    login_ip: RateLimit
    join_ip: RateLimit
    # How the per-name login delay is waited (the tests record it instead).
    sleep: Sleep = asyncio.sleep
    # (name, source) pairs whose password is being checked: one try at a time
    # per pair, so parallel tries cannot race past the pair's lockout.
    verifying: set[tuple[str, str]] = field(default_factory=set)
    sockets: weakref.WeakSet[web.WebSocketResponse] = field(default_factory=weakref.WeakSet)


STATE: web.AppKey[State] = web.AppKey("ponte_state", State)
SESSION: web.RequestKey[Session] = web.RequestKey("ponte_session", Session)
ADMIN: web.RequestKey[Admin] = web.RequestKey("ponte_admin", Admin)


# -- roles -------------------------------------------------------------------


def room_department(config: Config, room: str) -> str | None:
    """The department of a provisioned room (None: global or not provisioned)."""
    found = next((r for r in config.rooms if r.name == room), None)
    return found.department if found else None


def sees_room(config: Config, admin: Admin, room: str) -> bool:
    """Whether `admin` may see `room` (its members, its events)."""
    if admin.role != "sub_administrator":
        return True
    dep = room_department(config, room)
    return dep is not None and dep in admin.departments


def may_act(config: Config, admin: Admin, room: str) -> bool:
    """Whether `admin` may act on `room` (the rule of provisioning.admins)."""
    try:
        authorize(config, admin.name, {room_department(config, room)})
    except PermissionDenied:
        return False
    return True


def sees_line(admin: Admin, department: str | None) -> bool:
    """Whether `admin` may see a usage row of a line in `department`."""
    return admin.role != "sub_administrator" or (
        department is not None and department in admin.departments
    )


def _dept_filter(admin: Admin) -> frozenset[str] | None:
    return frozenset(admin.departments) if admin.role == "sub_administrator" else None


# -- helpers -----------------------------------------------------------------


def _state(request: web.Request) -> State:
    return request.app[STATE]


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _origin_ok(request: web.Request, *, required: bool = False) -> bool:
    """A present Origin must be ours; cross-site fetch metadata is refused.

    Under `Referrer-Policy: no-referrer` browsers send `Origin: null` with a
    form post (login, logout); that is taken as ours only when the browser's
    own fetch metadata says the post came from our origin.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site not in (None, "same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return not required
    if origin == "null":
        return site == "same-origin"
    return origin == f"{request.scheme}://{request.host}"


def _is_api(request: web.Request) -> bool:
    path = request.path
    return (
        path.startswith("/api/")
        or request.method != "GET"
        or path.endswith((".svg", ".wav", ".json"))
    )


def _set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    name: str,
    value: str,
    *,
    path: str = "/",
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        name,
        value,
        path=path,
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def _page(name: str, **values: str) -> str:
    """A static HTML page with {{key}} placeholders replaced by escaped values."""
    text = (STATIC / name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return text


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    """The JSON object body ({} when empty), or None when it is not one."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


# -- middleware and headers --------------------------------------------------


def _public(path: str) -> bool:
    if path in ("/login", "/join", "/join/config", "/favicon.ico"):
        return True
    if path.startswith("/join/"):
        return True
    return path.startswith("/static/")


def _current(request: web.Request) -> tuple[Session, Admin] | None:
    """The request's session and its admin, re-read from the running config."""
    st = _state(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = st.sessions.get(token)
    if session is None:
        return None
    admin = st.backend.running_config().admin(session.admin)
    if (
        admin is None
        or not admin.password_hash
        or credential_stamp(admin.password_hash) != session.stamp
    ):
        st.sessions.delete(token)  # removed admin, or password changed since
        return None
    return session, admin


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """No session, no page: HTML redirects to /login, the API answers 401.
    Every change carries the session's CSRF token and no foreign Origin."""
    if _public(request.path):
        return await handler(request)
    found = _current(request)
    if found is None:
        if _is_api(request):
            return _error(401, "log in first")
        raise web.HTTPFound("/login")
    session, admin = found
    request[SESSION], request[ADMIN] = session, admin
    if request.method in _UNSAFE:
        if not _origin_ok(request):
            return _error(403, "cross-origin request refused")
        token = request.headers.get(CSRF_HEADER)
        if token is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            token = (await request.post()).get(CSRF_FIELD)  # type: ignore[assignment]
        if not same_token(str(token) if token else None, session.csrf):
            return _error(403, "missing or wrong CSRF token")
    return await handler(request)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    """Security headers on every response (pages, API, static, errors)."""
    host = request.host if _HOST.match(request.host or "") else ""
    ws = f" ws://{host} wss://{host}" if host else ""
    h = response.headers
    h["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"media-src 'self'; connect-src 'self'{ws}; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    h["X-Frame-Options"] = "DENY"
    h["Referrer-Policy"] = "no-referrer"
    h["X-Content-Type-Options"] = "nosniff"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Cross-Origin-Resource-Policy"] = "same-origin"
    # aiohttp names itself and its version here: a free hint for a scanner
    # looking for a known bug. _Request drops it where this hook never runs.
    h.popall(hdrs.SERVER, None)
    if request.path.startswith("/static/"):
        h.setdefault("Cache-Control", "no-cache")
    else:
        h["Cache-Control"] = "no-store"


# -- login -------------------------------------------------------------------


def _login_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    token = new_token()
    response = _html(_page("login.html", csrf=token, error=error), status)
    _set_cookie(response, request, LOGIN_CSRF_COOKIE, token, path="/login", max_age=3600)
    return response


def _too_many(request: web.Request, error: str, retry_after: float) -> web.Response:
    """429 with the login form and when to come back (whole seconds, at least 1)."""
    response = _login_page(request, error, 429)
    response.headers[hdrs.RETRY_AFTER] = str(max(1, math.ceil(retry_after)))
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    if _current(request) is not None:
        raise web.HTTPFound("/")
    return _login_page(request)


async def login(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    if not _origin_ok(request):
        return _error(403, "cross-origin request refused")
    form = await request.post()
    if not same_token(str(form.get(CSRF_FIELD) or ""), request.cookies.get(LOGIN_CSRF_COOKIE)):
        return _login_page(request, "The form expired: please try again.", 403)
    name = str(form.get("name") or "")[:64]
    password = str(form.get("password") or "")[:1024]
    ip = request.remote or "?"
    refused = "Wrong name or password."
    # Only this source is refused for this name: the lockout never reaches the
    # real admin trying from elsewhere (see LoginThrottle).
    wait = st.lockout.retry_after(name, ip)
    if wait > 0 or (name, ip) in st.verifying:
        why = "locked out" if wait > 0 else "its previous try is still being checked"
        log.warning("web login as %r from %s refused: %s", name, ip, why)
        return _too_many(request, "Too many failed logins: try again later.", wait)
    if not st.login_ip.allow(ip):
        log.warning("web login from %s refused: too many attempts", ip)
        return _too_many(
            request, "Too many attempts from here: try again later.", st.login_ip.retry_after(ip)
        )
    config = st.backend.running_config()
    admin = config.admin(name)
    stored = admin.password_hash if admin is not None else None
    delay = st.lockout.delay(name)
    st.verifying.add((name, ip))
    try:
        if delay > 0:
            # Guesses at this name from many addresses: each try waits, whatever
            # its source, so the guessing stays slow while nobody is locked out.
            log.warning(
                "web login as %r from %s: waiting %.1f s (%d failed logins for the name)",
                name,
                ip,
                delay,
                st.lockout.failures(name),
            )
            await st.sleep(delay)
        ok = await asyncio.get_running_loop().run_in_executor(
            None, verify_password, password, stored
        )
    finally:
        st.verifying.discard((name, ip))
    if not ok or admin is None or st.lockout.locked(name, ip):
        locked = st.lockout.failure(name, ip)
        now_locked = " (now locked from there)" if locked else ""
        log.warning("web login as %r from %s failed%s", name, ip, now_locked)
        return _login_page(request, refused, 401)
    st.lockout.success(name, ip)
    session = st.sessions.create(
        admin.name, config.web.session_minutes, credential_stamp(admin.password_hash)
    )
    log.info("web login as %s from %s", admin.name, ip)
    response = _redirect("/")
    _set_cookie(response, request, SESSION_COOKIE, session.token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    st.sessions.delete(request.cookies.get(SESSION_COOKIE))
    log.info("web logout of %s", request[ADMIN].name)
    response = _redirect("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# -- rooms -------------------------------------------------------------------


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


# -- usage -------------------------------------------------------------------


def _fmt_num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def usage_table(rows: list[dict[str, Any]]) -> str:
    """The usage rows as an HTML table with a bar per line and limit."""
    out = [
        '<table class="usage"><thead><tr><th>line</th><th>department</th><th>profile</th>'
        "<th>limit</th><th>used (min)</th><th>limit (min)</th><th>use</th><th>alerts</th>"
        "</tr></thead><tbody>"
    ]
    for row in rows:
        pct = row.get("pct")
        if isinstance(pct, int | float):
            width = max(0, min(100, round(pct)))
            over = " over" if pct > 100 else (" near" if pct >= 80 else "")
            bar = (
                f'<div class="bar{over}" title="{html.escape(_fmt_num(pct))}%">'
                f'<span class="w{width}"></span></div>'
                f'<span class="pct">{html.escape(_fmt_num(pct))}%</span>'
            )
        else:
            bar = f'<span class="pct">{html.escape(_fmt_num(row.get("limit_min")))}</span>'
        cells = [
            row.get("line") or row.get("key"),
            row.get("department") or "",
            row.get("profile"),
            row.get("limit"),
            _fmt_num(row.get("used_min")),
            _fmt_num(row.get("limit_min")),
        ]
        out.append(
            "<tr>"
            + "".join(f"<td>{html.escape(_fmt_num(c))}</td>" for c in cells)
            + f'<td class="barcell">{bar}</td><td>{html.escape(_fmt_num(row.get("alerts")))}</td>'
            + "</tr>"
        )
    if not rows:
        out.append('<tr><td colspan="8" class="empty">No lines with limits.</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


async def usage_page(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    admin: Admin = request[ADMIN]
    rows = [r for r in await st.backend.usage() if sees_line(admin, r.get("department"))]
    page = _page("usage.html", admin=admin.name, role=admin.role, csrf=request[SESSION].csrf)
    return _html(page.replace("<!--TABLE-->", usage_table(rows)))


def _days(
    data: list[tuple[str, float]], today: dt.date, days: int = CHART_DAYS
) -> list[tuple[str, float]]:
    """`days` consecutive days ending today (or at the last day given), gaps as 0."""
    given: dict[str, float] = {}
    for day, minutes in data:
        with contextlib.suppress(TypeError, ValueError):
            given[str(day)[:10]] = given.get(str(day)[:10], 0.0) + float(minutes)
    last = today
    for day in given:
        with contextlib.suppress(ValueError):
            last = max(last, dt.date.fromisoformat(day))
    span = [last - dt.timedelta(days=i) for i in range(days - 1, -1, -1)]
    return [(d.isoformat(), given.get(d.isoformat(), 0.0)) for d in span]


def chart_svg(data: list[tuple[str, float]], title: str = "Minutes per day") -> str:
    """A bar chart of minutes per day, as SVG text (no plotting library)."""
    width, height = 760, 260
    left, right, top, bottom = 48, 12, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((m for _, m in data), default=0.0)
    step = _nice_step(peak)
    ymax = step * max(1, -(-peak // step)) if peak > 0 else step
    n = max(1, len(data))
    slot = plot_w / n
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{e(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold" fill="#222">{e(title)}</text>',
    ]
    ticks = int(round(ymax / step))
    for i in range(ticks + 1):
        value = step * i
        y = top + plot_h - plot_h * value / ymax
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
            'stroke="#e3e3e3" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
            f"{value:g}</text>"
        )
    for i, (day, minutes) in enumerate(data):
        h = plot_h * minutes / ymax if ymax else 0
        x = left + i * slot + slot * 0.15
        y = top + plot_h - h
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" '
            f'fill="#3b7dd8"><title>{e(day)}: {minutes:.1f} min</title></rect>'
        )
        if i % 5 == 0 or i == len(data) - 1:
            out.append(
                f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle" fill="#555">{e(day[5:])}</text>'
            )
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" '
        'stroke="#888" stroke-width="1"/>'
    )
    out.append("</svg>")
    return "".join(out)


def _nice_step(peak: float) -> float:
    if peak <= 0:
        return 10.0
    raw = peak / 5
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1.0
    for mult in (1, 2, 2.5, 5, 10):
        if mag * mult >= raw:
            return mag * mult
    return mag * 10


async def usage_chart(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    admin: Admin = request[ADMIN]
    config = st.backend.running_config()
    data = await st.backend.minutes_per_day(CHART_DAYS, _dept_filter(admin))
    tz: dt.tzinfo
    try:
        tz = zoneinfo.ZoneInfo(config.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = dt.UTC
    today = dt.datetime.fromtimestamp(st.now(), tz).date()
    svg = chart_svg(_days(list(data), today), f"Minutes per day, last {CHART_DAYS} days")
    return web.Response(text=svg, content_type="image/svg+xml", charset="utf-8")


# -- browser participant (public: the PIN is the credential) ------------------


async def join_page(request: web.Request) -> web.StreamResponse:
    page = STATIC / "join.html"
    if not page.is_file():
        raise web.HTTPNotFound()
    return _html(page.read_text(encoding="utf-8"))


async def join_config(request: web.Request) -> web.StreamResponse:
    config = _state(request).backend.running_config()
    return web.json_response({"ice_servers": list(config.web.ice_servers)})


async def join_offer(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    if not _origin_ok(request, required=True):
        return _error(403, "cross-origin request refused")
    ip = request.remote or "?"
    if not st.join_ip.allow(ip):
        return _error(429, "too many attempts: wait a minute")
    body = await _json_body(request)
    if body is None:
        return _error(400, "the body must be a JSON object")
    pin, sdp, kind = body.get("pin"), body.get("sdp"), body.get("type")
    if not isinstance(pin, str) or not _PIN.match(pin):
        return _error(400, "the PIN is 3 to 12 digits")
    if not isinstance(sdp, str) or not sdp or len(sdp) > 65536 or kind != "offer":
        return _error(400, "a WebRTC offer {sdp, type: offer} is needed")
    try:
        answer = await st.backend.web_join(pin, {"sdp": sdp, "type": kind}, peer=ip)
    except Exception:
        log.exception("web join from %s failed", ip)
        return _error(500, "could not join: see the server log")
    if not answer.get("ok"):
        return _error(403, str(answer.get("error") or "refused"))
    return web.json_response(answer)


def _join_token(request: web.Request) -> str | web.Response:
    """A browser participant's token from a same-origin request, or the refusal."""
    if not _origin_ok(request, required=True):
        return _error(403, "cross-origin request refused")
    token = request.match_info["token"]
    return token if _TOKEN.match(token) else _error(404, "no such participant")


async def join_key(request: web.Request) -> web.StreamResponse:
    token = _join_token(request)
    if isinstance(token, web.Response):
        return token
    body = await _json_body(request)
    key = body.get("key") if body else None
    if key not in WEB_KEYS:
        return _error(400, f"key must be one of {', '.join(WEB_KEYS)}")
    answer = await _state(request).backend.web_key(token, key)
    if not answer.get("ok", True):
        return _error(404 if answer.get("unknown") else 409, str(answer.get("error") or "refused"))
    return web.json_response(answer)


async def join_leave(request: web.Request) -> web.StreamResponse:
    token = _join_token(request)
    if isinstance(token, web.Response):
        return token
    await _state(request).backend.web_leave(token)
    return web.json_response({"ok": True})


# -- static and wiring ---------------------------------------------------------


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


class _Request(web.Request):
    """aiohttp's request, minus the `Server:` header on every answer to it.

    The app's on_response_prepare hook (_headers) only runs for requests that
    reached the router; aiohttp's own 400 for a malformed request never does,
    and would still name aiohttp and its version."""

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        response.headers.popall(hdrs.SERVER, None)
        await super()._prepare_hook(response)


def _use_request_class(app: web.Application) -> None:
    # Application._make_request takes the request class as `_cls` (aiohttp
    # 3.x); where it does not, _headers still covers every routed response.
    factory = app._make_request
    if "_cls" in inspect.signature(factory).parameters:
        app._make_request = functools.partial(factory, _cls=_Request)  # type: ignore[method-assign]


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
    r.add_get("/api/rooms/{room}/members/{member}/name.wav", name_wav)
    r.add_get("/usage", usage_page)
    r.add_get("/usage/chart.svg", usage_chart)
    r.add_get("/join", join_page)
    r.add_get("/join/config", join_config)
    r.add_post("/join/offer", join_offer)
    r.add_post("/join/{token}/key", join_key)
    r.add_post("/join/{token}/leave", join_leave)
    r.add_get("/static/{name}", static_file)
    r.add_get("/favicon.ico", favicon)
    return app
