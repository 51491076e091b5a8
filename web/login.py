"""Logging in and out of the console: the login form, the password check behind
the per-name and per-source throttles, and the session cookie."""

from __future__ import annotations

import asyncio
import logging
import math

from aiohttp import hdrs, web

from web.auth import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    credential_stamp,
    new_token,
    same_token,
    verify_password,
)
from web.guard import _current, _origin_ok
from web.responses import _error, _html, _page, _redirect, _set_cookie
from web.state import ADMIN, _state

log = logging.getLogger("ponte.web")


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
