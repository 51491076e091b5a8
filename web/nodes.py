"""The Nodes page: every app-server node on the shared records, alive or
not, its calls, legs, rooms and CPU, and the rooms it is home to (the
backend's `cluster()`, the `cluster` section of `ponte status`).

Administrators and read-only admins see it; a sub-administrator, who sees
only their departments' rooms, does not (a node holds every department's).
The page reloads itself every `REFRESH_SECONDS` (no script needed)."""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from provisioning.schema import Admin
from web.responses import _error, _html, _page
from web.state import ADMIN, SESSION, _state

REFRESH_SECONDS = 5


def sees_nodes(admin: Admin) -> bool:
    """Whether `admin` may see the nodes (every department's rooms)."""
    return admin.role != "sub_administrator"


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}{unit}"
    return f"{value}{unit}"


def nodes_table(cluster: dict[str, Any]) -> str:
    """The cluster view as an HTML table, one row per node (escaped)."""
    e = html.escape
    out = [
        '<table class="usage nodes"><thead><tr><th>node</th><th>state</th><th>address</th>'
        "<th>heartbeat</th><th>calls</th><th>legs</th><th>rooms</th><th>CPU</th>"
        "<th>home to</th></tr></thead><tbody>"
    ]
    nodes: dict[str, Any] = cluster.get("nodes") or {}
    for name, node in sorted(nodes.items()):
        alive = bool(node.get("alive"))
        up = '<span class="badge up">alive</span>'
        state = up if alive else '<span class="badge locked">not alive</span>'
        homes = ", ".join(e(room) for room in sorted(node.get("homes") or {})) or "—"
        age = node.get("age")
        cells = [
            f'<td class="caller">{e(name)}</td>',
            f"<td>{state}</td>",
            f'<td class="caller">{e(str(node.get("address") or ""))}</td>',
            f"<td>{e(_num(age, ' s ago'))}</td>",
            *(f"<td>{e(_num(node.get(k)))}</td>" for k in ("calls", "legs", "rooms")),
            f"<td>{e(_num(node.get('cpu'), ' %'))}</td>",
            f'<td class="homes">{homes}</td>',
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    if not nodes:
        out.append('<tr><td colspan="9" class="empty">No nodes.</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _summary(cluster: dict[str, Any]) -> str:
    nodes = cluster.get("nodes") or {}
    text = f"{cluster.get('alive', 0)} of {len(nodes)} nodes alive"
    if not cluster.get("shared"):
        text += " (one node: the records are a SQLite file)"
    else:
        stale = _num(cluster.get("stale_after"))
        text += f" (a node is not alive after {stale} s without a heartbeat)"
    error = cluster.get("error")
    if error:
        text += f". {error}"
    return f'<p class="status-line">{html.escape(text)}</p>'


async def nodes_page(request: web.Request) -> web.StreamResponse:
    admin: Admin = request[ADMIN]
    if not sees_nodes(admin):
        return _html(f"<p>{html.escape(admin.name)} may not see the nodes.</p>", status=403)
    cluster = await _state(request).backend.cluster()
    page = _page(
        "nodes.html",
        admin=admin.name,
        role=admin.role,
        csrf=request[SESSION].csrf,
        refresh=str(REFRESH_SECONDS),
    )
    return _html(page.replace("<!--TABLE-->", _summary(cluster) + nodes_table(cluster)))


async def nodes_api(request: web.Request) -> web.StreamResponse:
    admin: Admin = request[ADMIN]
    if not sees_nodes(admin):
        return _error(403, f"{admin.name} may not see the nodes")
    return web.json_response(await _state(request).backend.cluster())
