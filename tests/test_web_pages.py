"""The web console's pages over real HTTP on loopback, with a fake backend
(tests/web_helpers.py): security headers, the rooms and usage pages, the
usage chart, and the browser participant's public routes."""

from __future__ import annotations

import re

from tests.web_helpers import Console, aio
from web.usage import chart_svg

# -- pages and headers -------------------------------------------------------


@aio
async def test_security_headers_everywhere() -> None:
    async with Console() as con:
        c = await con.client()
        anon = [await c.get("/login"), await c.get("/api/rooms"), await c.get("/static/console.js")]
        c2, _ = await con.login("boss")
        pages = [await c2.get("/"), await c2.get("/api/rooms"), await c2.get("/usage/chart.svg")]
        for resp in anon + pages:
            h = resp.headers
            assert "default-src 'none'" in h["Content-Security-Policy"], resp.url
            assert "script-src 'self'" in h["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
            assert h["X-Frame-Options"] == "DENY"
            assert h["Referrer-Policy"] == "no-referrer"
            assert h["X-Content-Type-Options"] == "nosniff"
        for resp in pages:
            assert resp.headers["Cache-Control"] == "no-store"
        # No inline scripts in our pages (the CSP would block them anyway).
        for name in ("/", "/usage"):
            text = await (await c2.get(name)).text()
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), name
            assert " style=" not in text, name
        # Static files only by name and kind.
        assert (await c.get("/static/login.html")).status == 404
        assert (await c.get("/static/..%2fapp.py")).status == 404


@aio
async def test_rooms_page_and_usage_page() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        page = await (await c.get("/")).text()
        assert "/static/console.js" in page and csrf in page
        usage = await (await c.get("/usage")).text()
        assert '<span class="w57">' in usage
        assert 'class="bar over"' in usage and '<span class="w100">' in usage
        assert "2001&lt;script&gt;" in usage and "2001<script>" not in usage
        assert '<img class="chart" src="/usage/chart.svg"' in usage
        resp = await c.get("/usage/chart.svg")
        assert resp.content_type == "image/svg+xml"
        svg = await resp.text()
        assert svg.startswith("<svg") and svg.count("<rect") == 31  # background + 30 days
        assert "2027-01-14: 42.5 min" in svg


def test_chart_svg_escapes_and_scales() -> None:
    svg = chart_svg([("2026-01-01", 0.0), ("<x>", 12.0)], title="a & b")
    assert "a &amp; b" in svg and "<x>" not in svg
    assert chart_svg([], "empty").startswith("<svg")


# -- the browser participant's routes ------------------------------------------


@aio
async def test_join_routes_are_public_same_origin_and_rate_limited() -> None:
    async with Console() as con:
        c = await con.client()
        cfg = await (await c.get("/join/config")).json()  # no pbx.websocket here
        assert cfg == {"ice_servers": ["stun:stun.lan:3478"], "websocket": None}
        offer = {"pin": "1111"}
        assert (await c.post("/join/token", json=offer)).status == 403  # no Origin
        bad = {"Origin": "http://evil.example"}
        assert (await c.post("/join/token", json=offer, headers=bad)).status == 403
        assert con.backend.joins == []
        ok = {"Origin": con.origin}
        resp = await c.post("/join/token", json=offer, headers=ok)
        assert resp.status == 200
        body = await resp.json()
        assert body["token"] == "tok_abcdefgh" and body["uri"].startswith("sip:web-")
        assert con.backend.joins[0] == ("1111", "127.0.0.1")
        assert (await c.post("/join/token", json={**offer, "pin": "12"}, headers=ok)).status == 400
        wrong = {**offer, "pin": "3333"}
        assert (await c.post("/join/token", json=wrong, headers=ok)).status == 403
        for _ in range(2):
            await c.post("/join/token", json=offer, headers=ok)
        assert (await c.post("/join/token", json=offer, headers=ok)).status == 429  # 6th/min
        con.clock.t += 60
        assert (await c.post("/join/token", json=offer, headers=ok)).status == 200
        resp = await c.post("/join/tok_abcdefgh/key", json={"key": "hand"}, headers=ok)
        assert resp.status == 200
        assert (await c.post("/join/tok_abcdefgh/key", json={"key": "x"}, headers=ok)).status == 400
        assert (await c.post("/join/tok_abcdefgh/key", json={"key": "mute"})).status == 403
        assert (await c.post("/join/tok_abcdefgh/leave", headers=ok)).status == 200
        assert ("key", "tok_abcdefgh", "hand") in con.backend.joins
        assert ("leave", "tok_abcdefgh") in con.backend.joins
        resp = await c.get("/join")
        assert resp.status in (200, 404)  # join.html belongs to the WebRTC side
