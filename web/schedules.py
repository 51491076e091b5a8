"""The Schedules page: dial-outs at an agreed date and time (`ponte
schedule`). A table of the schedules the admin may see, each number's
outcome, a Cancel button on pending and running ones, and a form to add one.
Plain HTML forms (no script): each post carries the session's CSRF token (web/guard.py)
and goes to the backend's `schedule`, the same path as the CLI's, which checks
the role and the room's department again, validates and audits.

A time without a UTC offset (the browser's datetime-local field) is read in
the appliance's `timezone`."""

from __future__ import annotations

import datetime as dt
import html
import zoneinfo
from typing import Any

from aiohttp import web

from provisioning.schema import Admin, Config
from web.responses import _html, _page, _redirect
from web.roles import may_act, sees_room
from web.state import ADMIN, SESSION, _state

_FIELDS = ("room", "at", "numbers", "moderator")
_MAX_FIELD = 4000  # characters: longer is not a schedule


def _outcomes(calls: list[dict[str, Any]]) -> str:
    """Each number with its role and outcome, one per line (escaped)."""
    e = html.escape
    lines = []
    for call in calls:
        when = call.get("answered_at") or call.get("ended_at") or call.get("called_at") or ""
        role = " (moderator)" if call.get("role") == "moderator" else ""
        outcome = str(call.get("outcome") or "").replace("_", " ")
        lines.append(
            f'<span class="caller">{e(str(call.get("number")))}</span>{e(role)}: '
            f"<b>{e(outcome)}</b>" + (f" <small>{e(str(when)[11:19])}</small>" if when else "")
        )
    return "<br>".join(lines) or "—"


def schedules_table(rows: list[dict[str, Any]], config: Config, admin: Admin, csrf: str) -> str:
    """The schedules as an HTML table with a Cancel form on pending and running ones."""
    e = html.escape
    out = [
        '<table class="usage schedules"><thead><tr><th>id</th><th>room</th><th>at (UTC)</th>'
        "<th>status</th><th>numbers and outcomes</th><th></th></tr></thead><tbody>"
    ]
    for row in rows:
        cancel = ""
        if row["status"] in ("pending", "running") and may_act(config, admin, row["room"]):
            cancel = (
                f'<form method="post" action="/schedules/{int(row["id"])}/cancel">'
                f'<input type="hidden" name="csrf" value="{e(csrf)}">'
                '<button type="submit" class="danger">Cancel</button></form>'
            )
        first = " (moderator first)" if row.get("moderator_first") else ""
        out.append(
            "<tr>"
            f"<td>{int(row['id'])}</td>"
            f"<td>{e(str(row['room']))}</td>"
            f"<td>{e(str(row['at'])[:19].replace('T', ' '))}</td>"
            f"<td>{e(str(row['status']))}{e(first)}</td>"
            f"<td>{_outcomes(row.get('calls') or [])}</td>"
            f'<td class="act">{cancel}</td>'
            "</tr>"
        )
    if not rows:
        out.append('<tr><td colspan="6" class="empty">No schedules.</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def add_form(config: Config, admin: Admin, csrf: str, values: dict[str, str]) -> str:
    """The form that adds a schedule (none for an admin who may act on no room)."""
    e = html.escape
    rooms = [r.name for r in config.rooms if may_act(config, admin, r.name)]
    if not rooms:
        return ""
    options = "".join(
        f'<option value="{e(name)}"{" selected" if values.get("room") == name else ""}>'
        f"{e(name)}</option>"
        for name in rooms
    )
    checked = " checked" if values.get("moderator_first") else ""

    def field(name: str, label: str, kind: str = "text", hint: str = "") -> str:
        placeholder = f' placeholder="{e(hint)}"' if hint else ""
        return (
            f'<label>{e(label)} <input type="{kind}" name="{name}" '
            f'value="{e(values.get(name, ""))}"{placeholder}></label>'
        )

    return (
        '<h2>Schedule a dial-out</h2><form method="post" action="/schedules" class="schedule">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<label>Room <select name="room">{options}</select></label>'
        + field("at", f"At ({config.timezone})", "datetime-local")
        + field("numbers", "Participants' numbers", hint="comma-separated")
        + field("moderator", "Moderator's number", hint="optional")
        + f'<label><input type="checkbox" name="moderator_first" value="1"{checked}> '
        "Call the moderator first</label>"
        '<button type="submit">Add</button></form>'
    )


def _page_with(
    config: Config,
    admin: Admin,
    csrf: str,
    rows: list[dict[str, Any]],
    error: str = "",
    values: dict[str, str] | None = None,
) -> str:
    page = _page("schedules.html", admin=admin.name, role=admin.role, csrf=csrf)
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    visible = [r for r in rows if sees_room(config, admin, r["room"])]
    body = (
        message
        + schedules_table(visible, config, admin, csrf)
        + add_form(config, admin, csrf, values or {})
    )
    return page.replace("<!--SCHEDULES-->", body)


async def _render(
    request: web.Request, error: str = "", values: dict[str, str] | None = None, status: int = 200
) -> web.Response:
    st = _state(request)
    admin: Admin = request[ADMIN]
    answer = await st.backend.schedule(admin.name, {"action": "list"})
    rows = (answer.get("schedules") or []) if answer.get("ok") else []
    if not answer.get("ok") and not error:
        error = str(answer.get("error") or "the schedules could not be read")
    config = st.backend.running_config()
    text = _page_with(config, admin, request[SESSION].csrf, rows, error, values)
    return _html(text, status)


async def schedules_page(request: web.Request) -> web.StreamResponse:
    """GET /schedules."""
    return await _render(request)


def _with_zone(text: str, config: Config) -> str:
    """A datetime-local value (no offset) in the appliance's time zone; any
    other text as it came (the backend says what is wrong with it)."""
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    if at.tzinfo is not None:
        return text
    try:
        zone: dt.tzinfo = zoneinfo.ZoneInfo(config.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC
    return at.replace(tzinfo=zone).isoformat()


async def schedule_add(request: web.Request) -> web.StreamResponse:
    """POST /schedules: the form's fields, as `ponte schedule add`."""
    st = _state(request)
    admin: Admin = request[ADMIN]
    form = await request.post()
    values = {k: str(form.get(k, ""))[:_MAX_FIELD] for k in _FIELDS}
    values["moderator_first"] = "1" if form.get("moderator_first") else ""
    if admin.role == "read_only":
        return await _render(request, f"{admin.name} is read-only", values, 403)
    config = st.backend.running_config()
    req: dict[str, Any] = {
        "action": "add",
        "room": values["room"],
        "at": _with_zone(values["at"].strip(), config),
        "numbers": values["numbers"],
        "moderator_first": bool(values["moderator_first"]),
    }
    if values["moderator"].strip():
        req["moderator"] = values["moderator"].strip()
    answer = await st.backend.schedule(admin.name, req)
    if not answer.get("ok"):
        status = 403 if answer.get("denied") else 400
        return await _render(request, str(answer.get("error") or "refused"), values, status)
    return _redirect("/schedules")


async def schedule_cancel(request: web.Request) -> web.StreamResponse:
    """POST /schedules/{id}/cancel."""
    st = _state(request)
    admin: Admin = request[ADMIN]
    if admin.role == "read_only":
        return await _render(request, f"{admin.name} is read-only", status=403)
    answer = await st.backend.schedule(
        admin.name, {"action": "cancel", "id": request.match_info["id"]}
    )
    if not answer.get("ok"):
        status = 403 if answer.get("denied") else 400
        return await _render(request, str(answer.get("error") or "refused"), status=status)
    return _redirect("/schedules")
