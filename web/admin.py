"""Admin functions of the console beyond the rooms: reload the provisioning
file. The app server checks the admin (role and access profile) in the same
place as for `ponte reload`; this side only asks."""

from __future__ import annotations

import logging

from aiohttp import web

from provisioning.schema import Admin
from web.responses import _error
from web.state import ADMIN, _state

log = logging.getLogger("ponte.web")


async def reload_action(request: web.Request) -> web.StreamResponse:
    """POST /api/reload: re-read the provisioning file as the logged-in admin."""
    st = _state(request)
    admin: Admin = request[ADMIN]
    try:
        answer = await st.backend.reload(admin.name)
    except Exception:
        log.exception("reload by %s failed", admin.name)
        return _error(500, "the reload failed: see the server log")
    if answer.get("ok"):
        log.info("web: reload by %s: %s objects changed", admin.name, answer.get("changes"))
        return web.json_response(answer)
    status = 403 if answer.get("denied") else 400
    return _error(status, str(answer.get("error") or "refused"), denied=bool(answer.get("denied")))
