"""What every request passes: the session check, CSRF and Origin (middleware),
the security headers on every response, and no `Server:` header anywhere."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from provisioning.schema import Admin
from web.auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Session,
    credential_stamp,
    same_token,
)
from web.responses import _error
from web.state import ADMIN, SESSION, _state

_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,255}$")
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


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
    if request.path == "/join":
        # The join page calls over Kamailio's WebSocket (pbx.websocket), its
        # own port: the page may connect there and nowhere else.
        with_ws = _state(request).backend.running_config().pbx.websocket.url
        ws += f" {with_ws}" if with_ws else ""
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
