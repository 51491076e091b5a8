"""The web console against real calls: the events WebSocket and webhooks follow
a conference driven by SIP softphones, and room actions from the console's
API change the call's audio, are refused by role and are audited.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests import audio, ports
from tests.consoleclient import ConsoleClient, next_event
from tests.harness import report
from tests.test_spine_calls import window
from web.auth import hash_password

PASSWORD = "correct horse battery"
ADMINS = [
    {"name": "ana", "role": "administrator", "password_hash": hash_password(PASSWORD)},
    {"name": "carla", "role": "read_only", "password_hash": hash_password(PASSWORD)},
]


class Hooks:
    """A webhook receiver on 127.0.0.1 that keeps every JSON body."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def types(self) -> list[str]:
        return [e["type"] for e in self.received]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def test_events_and_webhooks_follow_a_conference_and_actions_reach_the_audio(server_factory, phone):
    hooks = Hooks()
    port = ports.allocate(1)
    base = f"http://127.0.0.1:{port}"
    srv = server_factory(
        web={"listen": f"127.0.0.1:{port}", "webhooks": [hooks.url]}, admins=ADMINS
    )
    mod = part = None
    marks: dict[str, float] = {}

    async def scenario() -> list[dict[str, Any]]:
        nonlocal mod, part
        seen: list[dict[str, Any]] = []
        ana, carla = ConsoleClient(base), ConsoleClient(base)
        try:
            assert await ana.login("ana", PASSWORD) == 303
            assert await carla.login("carla", PASSWORD) == 303
            ws = await ana.events()
            first = await ws.receive_json(timeout=5)
            assert first["type"] == "snapshot" and first["rooms"] == {}

            mod = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; tone 1000; wait_end 30")
            everything_before: list[dict[str, Any]] = []
            joined = await next_event(ws, {"member_joined"}, 15)
            seen.append(joined)
            # Talking is what the others hear: pjmedia measures a member's
            # level only while someone listens, so it starts with a listener.
            part = phone(srv.uri("conf"), "wait_media 5; dtmf 1111#; tone 440; wait_end 30")
            other = await next_event(ws, {"member_joined"}, 15, log=everything_before)
            seen.append(other)
            everything = [e for e in everything_before if e["type"] == "talking_started"]
            while len({e["member"] for e in everything if e["type"] == "talking_started"}) < 2:
                await next_event(ws, {"talking_started"}, log=everything)
            talkers = {e["member"] for e in everything if e["type"] == "talking_started"}
            assert talkers == {joined["member"], other["member"]}, everything
            seen.append({"type": "talking_started", "room": "demo", "ts": 1.0})
            await asyncio.sleep(1.5)  # the moderator hears the participant

            # Read-only: refused, nothing changes.
            code, body = await carla.act("demo", "mute", other["member"])
            assert code == 403, body
            marks["mute"] = time.monotonic()
            code, body = await ana.act("demo", "mute", other["member"])
            assert code == 200 and body["ok"], body
            muted = await next_event(ws, {"muted"})
            assert muted["member"] == other["member"] and muted["caller"] == "softphone"
            seen.append(muted)
            marks["muted"] = time.monotonic()
            await asyncio.sleep(1.5)

            code, body = await ana.act("demo", "lock")
            assert code == 200, body
            seen.append(await next_event(ws, {"locked"}))
            code, body = await ana.act("demo", "dial", number="not a number")
            assert code == 400 and "number" in body["error"], body

            marks["end"] = time.monotonic()
            code, body = await ana.act("demo", "end")
            assert code == 200, body
            seen.append(await next_event(ws, {"member_left"}))
            seen.append(await next_event(ws, {"room_ended"}))
            await ws.close()
            status, _ = await ana.get("/api/rooms")
            assert status == 200
        finally:
            await ana.close()
            await carla.close()
        return seen

    try:
        seen = asyncio.run(scenario())
        deadline = time.monotonic() + 5
        while "room_ended" not in hooks.types() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        hooks.close()
    kinds = [e["type"] for e in seen]
    assert kinds == [
        "member_joined",
        "member_joined",
        "talking_started",
        "muted",
        "locked",
        "member_left",
        "room_ended",
    ]
    assert all(e["room"] == "demo" and e["ts"] > 0 for e in seen)
    # The webhook got the same story, in order.
    wanted = ["member_joined", "talking_started", "muted", "locked", "room_ended"]
    got = [t for t in hooks.types() if t in wanted]
    assert got[:1] == ["member_joined"] and got[-1] == "room_ended", got
    for kind in wanted:
        assert kind in got, (kind, got)

    # The mute from the console reached the audio: the moderator heard the
    # participant before it and not after it.
    assert mod is not None and part is not None
    rm = mod.result()
    part.result()
    samples, rate = audio.load(mod.record)
    before = audio.segment(samples, rate, *window(rm, marks["mute"] - 1.0, marks["mute"]))
    # After the mute, past the moderator's own jitter buffer (the test phone
    # plays what it received up to ~0.4 s late), nothing of the participant:
    # not a share of the energy (over near-silence any tail dominates it) but
    # the tone's own level.
    after = audio.segment(samples, rate, *window(rm, marks["muted"] + 0.6, marks["end"]))
    assert audio.band_fraction(before, rate, 440) > 0.3
    assert not audio.hears_tone(after, rate, 440)

    # Each action is in the audit, from the web, by its admin.
    audit = [r for r in report(srv, "audit") if r["source"] == "web"]
    assert [(r["action"], r["by"]) for r in audit] == [
        ("mute", "ana"),
        ("lock", "ana"),
        ("end", "ana"),
    ]


LINES = {
    "lines": {
        "room:demo": {"area_code": "11", "profile": "equipe"},
        "1001": {"area_code": "11", "department": "vendas", "profile": "diretoria"},
        "1002": {"area_code": "11", "department": "vendas"},
    },
    "departments": {"vendas": {"profile": "equipe"}},
    "profiles": {
        "diretoria": {"quota": "individual", "limits": {"mobile": 120, "national_fixed": 60}},
        "equipe": {"quota": "shared", "limits": {"local": 300, "national": 60}},
    },
}


def test_usage_page_shows_each_lines_use_to_its_admins(server_factory):
    import datetime as dt
    import re

    from lines.usage import UsageStore

    port = ports.allocate(1)
    base = f"http://127.0.0.1:{port}"
    admins = [
        *ADMINS,
        {
            "name": "bruno",
            "role": "sub_administrator",
            "departments": ["vendas"],
            "password_hash": hash_password(PASSWORD),
        },
    ]
    srv = server_factory(web={"listen": f"127.0.0.1:{port}"}, admins=admins, **LINES)
    rows = report(srv, "usage")
    mobile = next(r for r in rows if r["limit"] == "mobile")
    UsageStore(srv.config["database"]).add(
        mobile["key"], dt.date.fromisoformat(mobile["cycle"]), "local_mobile", 90 * 60
    )

    async def pages() -> dict[str, tuple[int, str]]:
        got: dict[str, tuple[int, str]] = {}
        for name in ("ana", "bruno"):
            client = ConsoleClient(base)
            try:
                assert await client.login(name, PASSWORD) == 303
                got[name] = await client.get("/usage")
                got[f"{name}.svg"] = await client.get("/usage/chart.svg")
            finally:
                await client.close()
        anon = ConsoleClient(base)
        try:
            got["anonymous"] = await anon.get("/usage")
            got["anonymous.svg"] = await anon.get("/usage/chart.svg")
        finally:
            await anon.close()
        return got

    got = asyncio.run(pages())
    status, html = got["ana"]
    assert status == 200
    # 90 of the 120 mobile minutes: 75 %, drawn as a bar of that width.
    assert re.search(r">1001<.*?>90(\.0)?<.*?>120(\.0)?<.*?75(\.0)?\s*%", html, re.S), html
    assert "room:demo" in html
    # The sub-administrator of vendas sees vendas' lines only.
    status, html = got["bruno"]
    assert status == 200 and ">1001<" in html and "room:demo" not in html
    status, svg = got["ana.svg"]
    assert status == 200 and svg.startswith("<svg") and svg.count("<rect") >= 1
    # Nothing without a login.
    assert got["anonymous"][0] in (302, 303) and got["anonymous.svg"][0] == 401


def test_console_dials_a_guest_into_the_room_through_the_line_profile(server_factory, phone):
    import sqlite3

    from tests.test_dialout_calls import config, guest_phone

    trunk = ports.allocate(1)
    port = ports.allocate(1)
    base = f"http://127.0.0.1:{port}"
    srv = server_factory(**config(trunk), web={"listen": f"127.0.0.1:{port}"}, admins=ADMINS)
    guest = guest_phone(phone, trunk, "wait_media 5; tone 700; wait 9; hangup")
    mod = phone(srv.uri("conf-en"), "wait_media 5; dtmf 9999#; tone 440; wait_end 30")
    marks: dict[str, float] = {}

    async def scenario() -> None:
        ana = ConsoleClient(base)
        try:
            assert await ana.login("ana", PASSWORD) == 303
            ws = await ana.events()
            await ws.receive_json(timeout=5)
            await next_event(ws, {"member_joined"}, 15)
            # A number the room line's profile denies: refused, nothing dialed.
            code, body = await ana.act("demo", "dial", number="+552133339999")
            assert code == 400 and "line profile" in body["error"], body
            code, body = await ana.act("demo", "dial", number="021 (21) 3333-4444")
            assert code == 200 and body["ok"], body
            joined = await next_event(ws, {"member_joined"}, 20)
            marks["joined"] = time.monotonic()
            assert joined["caller"].endswith("33334444"), joined
            await asyncio.sleep(2.5)
            marks["heard"] = time.monotonic()
            code, body = await ana.act("demo", "end")
            assert code == 200, body
            await ws.close()
        finally:
            await ana.close()

    asyncio.run(scenario())
    rg = guest.result()
    mod.result()
    assert len([rg]) == 1
    # The guest heard the invitation, then the room (the moderator's 440 Hz).
    samples, rate = audio.load(guest.record)
    invitation = audio.segment(samples, rate, 0.2, 2.0)
    assert audio.speech_like(invitation, rate)
    in_room = audio.segment(samples, rate, *window(rg, marks["joined"] + 0.3, marks["heard"]))
    assert audio.band_fraction(in_room, rate, 440) > 0.3
    db = sqlite3.connect(srv.config["database"])
    n = db.execute("SELECT COUNT(*) FROM conference_legs WHERE joined_by = 'admin'").fetchone()
    assert n[0] == 1
    dials = [r for r in report(srv, "audit") if r["action"] == "dial"]
    assert len(dials) == 1 and dials[0]["by"] == "ana" and dials[0]["source"] == "web"
    calls = report(srv, "calls", "--line", "room:demo")
    assert len(calls) == 1 and calls[0]["disposition"] == "answered", calls


def test_rooms_show_each_members_call_quality_from_rtpengine(server_factory, phone):
    """A registered extension dials the bridge through Kamailio (so rtpengine
    relays its media and measures it from RTCP); a second caller comes
    straight to the app server (no rtpengine call). After a few seconds of
    talk the snapshot carries the first member's quality, no loss either way
    on loopback, `quality` events bring it to the page, and the second member
    has none. Changing figures are not member changes (no joins, leaves or
    mutes), and webhooks do not get the figures."""
    from tests.pbx_helpers import pbx_overrides, proxy, register

    hooks = Hooks()
    port = ports.allocate(1)
    base = f"http://127.0.0.1:{port}"
    srv = server_factory(
        **pbx_overrides(),
        web={"listen": f"127.0.0.1:{port}", "webhooks": [hooks.url]},
        admins=ADMINS,
    )
    found: dict[str, Any] = {}

    async def scenario() -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = []
        ana = ConsoleClient(base)
        try:
            assert await ana.login("ana", PASSWORD) == 303
            ws = await ana.events()
            assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
            phone(
                f"sip:conf@{proxy(srv)}",
                "wait_media 8; wait 1.5; dtmf 9999#; tone 440; wait_end 60",
                record=False,
                bind=ports.loopback_ip(),
                extra=register("1001", srv),
            )
            relayed = await next_event(ws, {"member_joined"}, 25, log=log)
            phone(srv.uri("conf"), "wait_media 5; dtmf 1111#; tone 700; wait_end 60", record=False)
            direct = await next_event(ws, {"member_joined"}, 15, log=log)
            assert (relayed["caller"], direct["caller"]) == ("1001", "softphone"), log
            joined_at = time.monotonic()
            found["ids"] = relayed["member"], direct["member"]
            found["joined"] = direct

            # Both sides' RTCP reports (every ~5 s) and the console's own
            # refresh (every 5 s): figures within ~10 s of talk. rtpengine
            # averages the reports over the call, and pjmedia's very first
            # report may count a packet or two of the stream's start as lost
            # (1 %, seen on loopback): wait for the average to say 0.
            members: dict[int, dict[str, Any]] = {}
            while (elapsed := time.monotonic() - joined_at) < 25:
                status, text = await ana.get("/api/rooms")
                assert status == 200, text
                members = {m["id"]: m for m in json.loads(text)["rooms"]["demo"]["members"]}
                q = members[relayed["member"]]["quality"]
                if q and q["loss_in"] is not None and q["loss_out"] is not None:
                    found.setdefault("measured", (elapsed, q))
                    if q["loss_in"] == 0 and q["loss_out"] == 0:
                        found["clean"] = elapsed
                        break
                await asyncio.sleep(0.25)
            found["members"] = members
            # Let one more refresh go by, then read what the page was sent.
            await asyncio.sleep(6)
            while True:
                try:
                    log.append(await ws.receive_json(timeout=0.2))
                except TimeoutError:
                    break
            code, body = await ana.act("demo", "end")
            assert code == 200, body
            await next_event(ws, {"room_ended"}, 10, log=log)
            await ws.close()
        finally:
            await ana.close()
        return log

    try:
        log = asyncio.run(scenario())
        deadline = time.monotonic() + 5
        while "room_ended" not in hooks.types() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        hooks.close()
    relayed, direct = found["ids"]
    assert "measured" in found, f"no quality for the relayed member: {found['members']}"
    first_at, first = found["measured"]
    q = found["members"][relayed]["quality"]
    print(f"\nrelayed member: first figures {first_at:.1f} s after joining: {first}")
    print(f"loss 0 both ways {found.get('clean', -1):.1f} s after joining: {q}")
    assert first_at < 12, first_at
    # Loopback loses nothing, either way; the rest is measured too.
    assert "clean" in found and q["loss_in"] == 0 and q["loss_out"] == 0, q
    assert set(q) == {"loss_in", "loss_out", "jitter_in", "jitter_out", "rtt_ms", "mos"}, q
    assert q["jitter_in"] is not None and q["jitter_out"] is not None, q
    assert q["mos"] is not None and 1.0 <= q["mos"] <= 5.0, q
    # Straight to the app server: no rtpengine call, no figures.
    assert found["members"][direct]["quality"] is None, found["members"]

    # The page was told by `quality` events, about the relayed member only.
    updates = [e for e in log if e["type"] == "quality"]
    assert updates and {e["member"] for e in updates} == {relayed}, log
    assert all(e["room"] == "demo" and e["caller"] == "1001" for e in updates), updates
    assert updates[-1]["quality"]["loss_in"] == 0, updates
    # At most one refresh per member every 5 s (the tick is 0.1 s).
    gaps = [b["ts"] - a["ts"] for a, b in zip(updates, updates[1:], strict=False)]
    print(f"quality events: {len(updates)}, {[round(g, 2) for g in gaps]} s apart")
    assert all(g >= 4.8 for g in gaps), gaps
    # New figures are not member changes: between the joins and the end,
    # only talking and quality.
    between = log[log.index(found["joined"]) + 1 :]
    before_end = [e["type"] for e in between if e["type"] not in ("member_left", "room_ended")]
    assert set(before_end) <= {"quality", "talking_started", "talking_stopped"}, log
    assert [e["type"] for e in log].count("member_joined") == 2, log
    # Webhooks get the story of the room, not the figures.
    assert "member_joined" in hooks.types() and "quality" not in hooks.types(), hooks.types()
