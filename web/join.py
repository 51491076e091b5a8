"""The browser participant's routes, public: the conference PIN is the
credential, then a token per participant; same-origin and rate-limited.
The call itself goes over Kamailio's WebSocket (pbx.websocket), not here."""

from __future__ import annotations

import logging
import re

from aiohttp import web

from web.backend import WEB_KEYS
from web.guard import _origin_ok
from web.responses import STATIC, _error, _html, _json_body
from web.state import _state

log = logging.getLogger("ponte.web")

_PIN = re.compile(r"^[0-9]{3,12}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


async def join_page(request: web.Request) -> web.StreamResponse:
    page = STATIC / "join.html"
    if not page.is_file():
        raise web.HTTPNotFound()
    return _html(page.read_text(encoding="utf-8"))


async def join_config(request: web.Request) -> web.StreamResponse:
    config = _state(request).backend.running_config()
    return web.json_response(
        {"ice_servers": list(config.web.ice_servers), "websocket": config.pbx.websocket.url}
    )


async def join_token(request: web.Request) -> web.StreamResponse:
    """The PIN, checked as a phone's is (lockout by source, hours, lock,
    full): a one-time token and where to call with it (README "Browsers")."""
    st = _state(request)
    if not _origin_ok(request, required=True):
        return _error(403, "cross-origin request refused")
    ip = request.remote or "?"
    if not st.join_ip.allow(ip):
        return _error(429, "too many attempts: wait a minute")
    body = await _json_body(request)
    if body is None:
        return _error(400, "the body must be a JSON object")
    pin = body.get("pin")
    if not isinstance(pin, str) or not _PIN.match(pin):
        return _error(400, "the PIN is 3 to 12 digits")
    try:
        answer = await st.backend.web_join(pin, peer=ip)
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
