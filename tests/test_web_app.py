"""The web console over real HTTP on loopback (aiohttp TestServer, port 0),
with a fake backend (tests/web_helpers.py): login, CSRF and origin, roles."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from provisioning.schema import Config
from tests.web_helpers import PASSWORD, Console, aio
from web.auth import hash_password

# -- no login, no anything --------------------------------------------------


@aio
async def test_nothing_works_without_login() -> None:
    async with Console() as con:
        c = await con.client()
        for path in ("/", "/usage"):
            resp = await c.get(path, allow_redirects=False)
            assert resp.status == 302 and resp.headers["Location"] == "/login", path
        for path in (
            "/api/rooms",
            "/api/session",
            "/usage/chart.svg",
            "/api/rooms/demo/members/1/name.wav",
        ):
            resp = await c.get(path)
            assert resp.status == 401, path
            assert "error" in await resp.json()
        for path in ("/api/rooms/demo/lock", "/api/rooms/demo/end", "/logout"):
            resp = await c.post(path, json={}, headers={"X-CSRF-Token": "x"})
            assert resp.status == 401, path
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await c.ws_connect("/api/events?csrf=x")
        assert err.value.status == 401
        # A forged cookie is no session either.
        c.session.cookie_jar.update_cookies({"ponte_session": "A" * 43})
        assert (await c.get("/api/rooms")).status == 401
        assert con.backend.calls == []


@aio
async def test_login_sets_a_strict_httponly_session_cookie_and_logout_ends_it() -> None:
    async with Console() as con:
        c = await con.client()
        resp = await con.try_login(c, "boss", PASSWORD)
        assert resp.status == 303 and resp.headers["Location"] == "/"
        cookies = [h for h in resp.headers.getall("Set-Cookie") if h.startswith("ponte_session=")]
        assert len(cookies) == 1
        flags = [f.strip().lower() for f in cookies[0].split(";")]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
        page = await c.get("/")
        assert page.status == 200
        text = await page.text()
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', text).group(1)
        assert (await c.get("/api/rooms")).status == 200
        # Logout is a form post: CSRF in a hidden field.
        resp = await c.post("/logout", data={"csrf": csrf}, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/login"
        assert (await c.get("/api/rooms")).status == 401


@aio
async def test_wrong_password_unknown_name_and_no_hash_look_the_same() -> None:
    async with Console() as con:
        c = await con.client()
        answers = []
        for name, password in (("boss", "wrong"), ("ghost", PASSWORD), ("nopass", PASSWORD)):
            resp = await con.try_login(c, name, password)
            body = await resp.text()
            answers.append((resp.status, re.search(r'class="error"[^>]*>([^<]*)<', body)[1]))
            assert "ponte_session=" not in " ".join(resp.headers.getall("Set-Cookie", []))
        assert answers[0] == answers[1] == answers[2] == (401, "Wrong name or password.")


@aio
async def test_login_without_its_csrf_token_or_from_another_origin_is_refused() -> None:
    async with Console() as con:
        c = await con.client()
        await con.login_form(c)
        resp = await c.post(
            "/login", data={"name": "boss", "password": PASSWORD}, allow_redirects=False
        )
        assert resp.status == 403
        csrf = await con.login_form(c)
        resp = await c.post(
            "/login",
            data={"name": "boss", "password": PASSWORD, "csrf": csrf},
            headers={"Origin": "http://evil.example"},
            allow_redirects=False,
        )
        assert resp.status == 403
        # Another browser's token is no good either (it must match our cookie).
        other = await con.client()
        theirs = await con.login_form(other)
        await con.login_form(c)
        resp = await c.post(
            "/login",
            data={"name": "boss", "password": PASSWORD, "csrf": theirs},
            allow_redirects=False,
        )
        assert resp.status == 403


@aio
async def test_lockout_after_five_failures_holds_with_the_right_password_then_lifts() -> None:
    async with Console() as con:
        c = await con.client()
        for i in range(5):
            con.clock.t += 60 * (i > 0)  # five failures in four minutes
            resp = await con.try_login(c, "boss", "wrong")
            assert resp.status == 401
        resp = await con.try_login(c, "boss", PASSWORD)
        assert resp.status == 429
        assert "Too many failed logins" in await resp.text()
        assert "ponte_session=" not in " ".join(resp.headers.getall("Set-Cookie", []))
        # Another admin is not locked out.
        assert (await con.try_login(await con.client(), "sub", PASSWORD)).status == 303
        con.clock.t += 599
        assert (await con.try_login(c, "boss", PASSWORD)).status == 429
        con.clock.t += 1
        assert (await con.try_login(c, "boss", PASSWORD)).status == 303
        # An unknown name locks out the same way (nothing tells it apart).
        c = await con.client()
        for _ in range(5):
            await con.try_login(c, "ghost", "x")
        assert (await con.try_login(c, "ghost", "x")).status == 429


@aio
async def test_session_expires() -> None:
    async with Console(session_minutes=30) as con:
        c, _ = await con.login("boss")
        con.clock.t += 30 * 60 - 1
        assert (await c.get("/api/rooms")).status == 200
        con.clock.t += 1
        assert (await c.get("/api/rooms")).status == 401


@aio
async def test_a_password_change_ends_the_sessions() -> None:
    async with Console() as con:
        c, _ = await con.login("boss")
        raw = con.backend.config.model_dump(by_alias=True)
        raw["admins"][0]["password_hash"] = hash_password("another password", n=1024)
        con.backend.config = Config.model_validate(raw)
        assert (await c.get("/api/rooms")).status == 401


# -- CSRF and origin ----------------------------------------------------------


@aio
async def test_posts_without_the_csrf_token_are_refused() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        resp = await c.post("/api/rooms/demo/lock", json={})
        assert resp.status == 403
        resp = await c.post("/api/rooms/demo/lock", json={}, headers={"X-CSRF-Token": "x" + csrf})
        assert resp.status == 403
        resp = await c.post("/logout", data={}, allow_redirects=False)
        assert resp.status == 403
        assert con.backend.calls == []
        resp = await c.post("/api/rooms/demo/lock", json={}, headers={"X-CSRF-Token": csrf})
        assert resp.status == 200
        assert con.backend.calls == [("boss", "demo", "lock", None, None)]


@aio
async def test_cross_origin_posts_are_refused_even_with_the_token() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            resp = await c.post(
                "/api/rooms/demo/lock", json={}, headers={"X-CSRF-Token": csrf, **headers}
            )
            assert resp.status == 403, headers
        assert con.backend.calls == []
        resp = await c.post(
            "/api/rooms/demo/lock", json={}, headers={"X-CSRF-Token": csrf, "Origin": con.origin}
        )
        assert resp.status == 200
        # A form post under Referrer-Policy no-referrer: Origin null, but same-origin metadata.
        same = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
        resp = await c.post(
            "/api/rooms/demo/unlock", json={}, headers={"X-CSRF-Token": csrf, **same}
        )
        assert resp.status == 200


@aio
async def test_websocket_needs_the_csrf_token_and_our_origin() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        for url, headers in (
            ("/api/events", {}),
            ("/api/events?csrf=nope", {}),
            (f"/api/events?csrf={csrf}", {"Origin": "http://evil.example"}),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await c.ws_connect(url, headers=headers)
            assert err.value.status == 403, url
        ws = await c.ws_connect(f"/api/events?csrf={csrf}", headers={"Origin": con.origin})
        assert (await ws.receive_json())["type"] == "snapshot"
        await ws.close()


# -- roles ---------------------------------------------------------------------


@aio
async def test_read_only_sees_everything_and_changes_nothing() -> None:
    async with Console() as con:
        c, csrf = await con.login("ro")
        rooms = (await (await c.get("/api/rooms")).json())["rooms"]
        assert set(rooms) == {"demo", "other"}
        assert not any(r["can_act"] for r in rooms.values())
        for action, body in (
            ("lock", {}),
            ("mute", {"member": 2}),
            ("kick", {"member": 2}),
            ("end", {}),
            ("dial", {"number": "5511999990000"}),
            ("next-hand", {}),
            ("lower-hand", {"member": 2}),
        ):
            resp = await c.post(
                f"/api/rooms/demo/{action}", json=body, headers={"X-CSRF-Token": csrf}
            )
            assert resp.status == 403, action
            assert "read-only" in (await resp.json())["error"]
        assert con.backend.calls == []
        assert (await c.get("/usage")).status == 200
        assert (await c.get("/api/rooms/demo/members/1/name.wav")).status == 200


@aio
async def test_sub_administrator_sees_and_acts_only_in_their_departments() -> None:
    async with Console() as con:
        c, csrf = await con.login("sub")
        rooms = (await (await c.get("/api/rooms")).json())["rooms"]
        assert set(rooms) == {"demo"} and rooms["demo"]["can_act"]
        resp = await c.post("/api/rooms/other/lock", json={}, headers={"X-CSRF-Token": csrf})
        assert resp.status == 403
        resp = await c.post(
            "/api/rooms/other/kick", json={"member": 5}, headers={"X-CSRF-Token": csrf}
        )
        assert resp.status == 403
        assert (await c.get("/api/rooms/other/members/5/name.wav")).status == 403
        assert con.backend.calls == []
        resp = await c.post(
            "/api/rooms/demo/mute", json={"member": 2}, headers={"X-CSRF-Token": csrf}
        )
        assert resp.status == 200
        assert con.backend.calls == [("sub", "demo", "mute", 2, None)]
        # A room outside the configuration (no department) is not theirs either.
        con.backend.rooms["ghost"] = con.backend.rooms["demo"]
        rooms = (await (await c.get("/api/rooms")).json())["rooms"]
        assert set(rooms) == {"demo"}
        resp = await c.post("/api/rooms/ghost/lock", json={}, headers={"X-CSRF-Token": csrf})
        assert resp.status == 403
        # Usage: their lines only, and their chart.
        page = await (await c.get("/usage")).text()
        assert "1001" in page and "2001" not in page
        assert (await c.get("/usage/chart.svg")).status == 200
        assert con.backend.calls[-1] == ("minutes_per_day", 30, frozenset({"vendas"}))


@aio
async def test_administrator_actions_are_validated_and_passed_on() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        h = {"X-CSRF-Token": csrf}

        async def post(path: str, body: Any = None) -> tuple[int, dict]:
            resp = await c.post(path, json=body if body is not None else {}, headers=h)
            return resp.status, await resp.json()

        assert (await post("/api/rooms/demo/mute"))[0] == 400  # needs a member
        assert (await post("/api/rooms/demo/kick", {"member": "x"}))[0] == 400
        assert (await post("/api/rooms/demo/dial", {"number": "12; rm -rf"}))[0] == 400
        assert (await post("/api/rooms/demo/explode"))[0] == 404
        assert (await post("/api/rooms/nowhere/lock"))[0] == 404
        resp = await c.post("/api/rooms/demo/lock", data="[1, 2", headers=h)
        assert resp.status == 400
        assert con.backend.calls == []
        assert (await post("/api/rooms/demo/kick", {"member": 2}))[0] == 200
        assert (await post("/api/rooms/other/dial", {"number": "+5511999990000"}))[0] == 200
        assert (await post("/api/rooms/other/unmute", {"member": "5"}))[0] == 200
        assert con.backend.calls == [
            ("boss", "demo", "kick", 2, None),
            ("boss", "other", "dial", None, "+5511999990000"),
            ("boss", "other", "unmute", 5, None),
        ]
        con.backend.deny_next = True
        status, body = await post("/api/rooms/demo/end")
        assert status == 403 and body == {"error": "nope", "denied": True}


@aio
async def test_name_wav() -> None:
    async with Console() as con:
        c, _ = await con.login("boss")
        resp = await c.get("/api/rooms/demo/members/1/name.wav")
        assert resp.status == 200 and resp.content_type == "audio/wav"
        assert (await c.get("/api/rooms/demo/members/2/name.wav")).status == 404


@aio
async def test_hand_actions_reach_the_backend_and_lower_hand_needs_a_member() -> None:
    """Bad input: lower-hand without a member, or with a non-number, is a 400
    and the backend is never asked."""
    async with Console() as con:
        c, csrf = await con.login("boss")
        for body in ({}, {"member": "ana"}, {"member": True}):
            resp = await c.post(
                "/api/rooms/demo/lower-hand", json=body, headers={"X-CSRF-Token": csrf}
            )
            assert resp.status == 400 and "member" in (await resp.json())["error"], body
        assert con.backend.calls == []
        for action, body in (("next-hand", {"member": 2}), ("lower-hand", {"member": "2"})):
            resp = await c.post(
                f"/api/rooms/demo/{action}", json=body, headers={"X-CSRF-Token": csrf}
            )
            assert resp.status == 200, action
        assert [call[2:4] for call in con.backend.calls] == [("next-hand", None), ("lower-hand", 2)]
