"""The console's Nodes page over real HTTP on loopback, with a fake backend
(tests/web_helpers.py): every node, alive or not, its load and the rooms it
holds; administrators and read-only admins see it, a sub-administrator and
a visitor who is not logged in do not."""

from __future__ import annotations

import re

from tests.web_helpers import Console, aio


@aio
async def test_the_nodes_page_shows_each_node_its_load_and_its_rooms() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        resp = await c.get("/nodes")
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        page = await resp.text()
        assert csrf in page and 'href="/nodes" aria-current="page"' in page
        assert '<meta http-equiv="refresh" content="5">' in page
        assert not re.search(r"<script(?![^>]*\bsrc=)", page) and " style=" not in page
        rows = re.findall(r"<tr>(.*?)</tr>", page.split("<tbody>")[1])
        assert len(rows) == 2
        alive, dead = rows
        assert "pbx-a" in alive and "alive" in alive and "10.0.0.1:5080" in alive
        assert "<td>2</td><td>3</td><td>1</td><td>12.5 %</td>" in alive
        assert ">demo<" in alive and "0.5 s ago" in alive
        assert "not alive" in dead and "100 s ago" in dead
        # Names from the database are escaped.
        assert "pbx-b&lt;i&gt;" in dead and "other&lt;script&gt;" in dead
        assert "<script>" not in page and "<i>" not in page
        assert "1 of 2 nodes alive" in page
        api = await c.get("/api/nodes")
        assert (await api.json()) == con.backend.nodes
        # The other pages link to it.
        assert 'href="/nodes"' in await (await c.get("/")).text()
        assert 'href="/nodes"' in await (await c.get("/usage")).text()


@aio
async def test_only_administrators_and_read_only_admins_see_the_nodes() -> None:
    async with Console() as con:
        ro, _ = await con.login("ro")
        assert (await ro.get("/nodes")).status == 200
        assert (await ro.get("/api/nodes")).status == 200
        sub, _ = await con.login("sub")
        page = await sub.get("/nodes")
        assert page.status == 403 and "pbx-a" not in await page.text()
        assert (await sub.get("/api/nodes")).status == 403
        # The link is hidden for them (their body carries the role).
        assert 'class="role-sub_administrator"' in await (await sub.get("/")).text()
        anon = await con.client()
        assert (await anon.get("/api/nodes")).status == 401
        resp = await anon.get("/nodes", allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "/login"
        # Reading changes nothing: no POST route to it.
        assert (await ro.post("/api/nodes")).status in (403, 405)
        # Only the read-only admin's two reads asked the backend.
        assert con.backend.calls.count(("cluster",)) == 2


@aio
async def test_a_single_sqlite_node_and_a_database_away_are_said() -> None:
    async with Console() as con:
        con.backend.nodes = {
            "shared": False,
            "stale_after": 5.0,
            "alive": 1,
            "nodes": {"local": {"address": "127.0.0.1:5080", "alive": True, "homes": {}}},
        }
        c, _ = await con.login("boss")
        page = await (await c.get("/nodes")).text()
        assert "1 of 1 nodes alive (one node: the records are a SQLite file)" in page
        con.backend.nodes = {
            "shared": True,
            "alive": 0,
            "nodes": {},
            "error": "records database away: x",
        }
        page = await (await c.get("/nodes")).text()
        assert "No nodes." in page and "records database away: x" in page
