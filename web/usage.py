"""The usage page: a table of the lines with limits, and a chart of minutes per
day drawn as SVG (no plotting library)."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import zoneinfo
from typing import Any

from aiohttp import web

from provisioning.admins import PermissionDenied, permit
from provisioning.schema import Admin, Config
from web.responses import _error, _html, _page
from web.roles import _dept_filter, sees_line
from web.state import ADMIN, SESSION, _state

CHART_DAYS = 30


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


def _no_reports(config: Config, admin: Admin) -> web.Response | None:
    """403 unless the admin's access profile grants `reports` (the check of
    `ponte report --as`)."""
    try:
        permit(config, admin.name, "reports")
    except PermissionDenied as exc:
        return _error(403, str(exc), denied=True)
    return None


async def usage_page(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    admin: Admin = request[ADMIN]
    refused = _no_reports(st.backend.running_config(), admin)
    if refused is not None:
        return refused
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
    refused = _no_reports(config, admin)
    if refused is not None:
        return refused
    data = await st.backend.minutes_per_day(CHART_DAYS, _dept_filter(admin))
    tz: dt.tzinfo
    try:
        tz = zoneinfo.ZoneInfo(config.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = dt.UTC
    today = dt.datetime.fromtimestamp(st.now(), tz).date()
    svg = chart_svg(_days(list(data), today), f"Minutes per day, last {CHART_DAYS} days")
    return web.Response(text=svg, content_type="image/svg+xml", charset="utf-8")
