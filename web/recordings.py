"""Room recordings on the console: the list an admin may see, and the
download of one file, for admins whose role covers the recording's room."""

from __future__ import annotations

import re

from aiohttp import web

from provisioning.admins import PermissionDenied, authorize, permit
from provisioning.schema import Admin
from web.responses import _error
from web.roles import sees_line
from web.state import ADMIN, _state

# A file name as ponte/recordings.py writes them (mix.wav, <caller>-leg<N>.wav):
# anything else (a path, a dot file, an encoded separator) is refused before
# the backend is even asked.
_FILE = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,80}\.wav$")


async def recordings_api(request: web.Request) -> web.StreamResponse:
    """The recordings of the rooms this admin sees, newest first."""
    admin: Admin = request[ADMIN]
    try:
        permit(_state(request).backend.running_config(), admin.name, "recordings")
    except PermissionDenied as exc:
        return _error(403, str(exc))
    rows = await _state(request).backend.recordings()
    # A recording keeps the department its room had when it started, so a
    # room moved or removed since still belongs to the same sub-administrators.
    mine = [r for r in rows if sees_line(admin, r.get("department"))]
    return web.json_response({"recordings": mine[::-1]})


async def recording_file(request: web.Request) -> web.StreamResponse:
    """One file of one recording, as an attachment."""
    st = _state(request)
    admin: Admin = request[ADMIN]
    name = request.match_info["name"]
    try:
        rec_id = int(request.match_info["id"])
    except ValueError:
        return _error(404, "no such recording")
    if not _FILE.match(name) or ".." in name:
        return _error(404, "no such file")
    row = await st.backend.recording(rec_id)
    if row is None:
        return _error(404, "no such recording")
    try:
        permit(st.backend.running_config(), admin.name, "recordings")
        authorize(st.backend.running_config(), admin.name, {row.get("department")})
    except PermissionDenied as exc:
        return _error(403, str(exc))
    path = await st.backend.recording_file(rec_id, name)
    if path is None:
        return _error(404, "no such file")
    download = f"{row['room']}-{row['started_at'][:19].replace(':', '')}-{name}"
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "audio/wav",
            "Content-Disposition": f'attachment; filename="{download}"',
        },
    )
