"""A browser participant over WebRTC, with a real peer: aiortc as the browser
(ICE, DTLS-SRTP, opus on 127.0.0.1) against the appliance's /join, and a SIP
softphone in the same room. Audio is checked by its content both ways.

The headless-Chromium version of the same call is tests/test_console_browser.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import audio, ports
from tests.harness import Server, cli, report
from tests.test_spine_calls import window
from tests.webclient import WebClient


def web_server(server_factory: Any, **overrides: Any) -> tuple[Server, str]:
    port = ports.allocate(1)
    srv = server_factory(web={"listen": f"127.0.0.1:{port}"}, **overrides)
    return srv, f"http://127.0.0.1:{port}"


@pytest.fixture
def clients() -> Iterator:
    made: list[WebClient] = []

    def make(base: str, hz: float) -> WebClient:
        c = WebClient(base, hz)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def members(srv: Server, room: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = srv.status()["rooms"].get(room, {}).get("members", [])
        if len(found) == count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"room {room} has {found}, not {count} members")


def until(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never became true")
        time.sleep(0.05)


def test_browser_member_hears_and_is_heard_mutes_itself_and_is_billed(
    server_factory, phone, clients
):
    srv, base = web_server(server_factory)
    mod = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; tone 1000; wait_end 30")
    members(srv, "demo", 1)
    web = clients(base, 440)
    code, answer = web.join("1111")
    assert code == 200 and answer["ok"], answer
    until(web.connected)
    joined = members(srv, "demo", 2)
    browser = next(m for m in joined if m["caller"] == "web:127.0.0.1")
    assert browser["role"] == "participant" and browser["leg"] == answer["member"]

    time.sleep(2.0)
    t_talk = time.monotonic()
    # The browser hears the SIP moderator's 1000 Hz...
    heard = web.heard(t_talk - 1.5, t_talk).astype(float)
    assert len(heard) > 8000
    assert audio.band_fraction(heard, 8000, 1000) > 0.8
    # ...and not its own 440 Hz back.
    assert audio.band_fraction(heard, 8000, 440) < 0.02

    code, _ = web.key("mute")
    assert code == 200
    t_muted = time.monotonic()
    until(
        lambda: (
            [
                m["muted"]
                for m in srv.status()["rooms"]["demo"]["members"]
                if m["leg"] == answer["member"]
            ]
            == [True]
        )
    )
    time.sleep(1.5)
    code, _ = web.key("unmute")
    t_unmuted = time.monotonic()
    time.sleep(1.5)
    code, _ = web.leave()
    assert code == 200
    members(srv, "demo", 1)
    t_left = time.monotonic()
    until(lambda: "closed" in web.states or "failed" in web.states)
    time.sleep(0.5)
    srv.stop()
    rm = mod.result()

    samples, rate = audio.load(mod.record)
    talking = audio.segment(samples, rate, *window(rm, t_talk - 1.5, t_talk))
    muted = audio.segment(samples, rate, *window(rm, t_muted + 0.4, t_unmuted))
    unmuted = audio.segment(samples, rate, *window(rm, t_unmuted + 0.5, t_left - 0.3))
    after = audio.segment(samples, rate, *window(rm, t_left + 0.3, t_left + 0.8))
    # The SIP moderator heard the browser's 440 Hz, not while it was muted,
    # again once unmuted, and not after it left.
    assert audio.band_fraction(talking, rate, 440) > 0.5
    assert audio.band_fraction(muted, rate, 440) < 0.02
    assert audio.band_fraction(unmuted, rate, 440) > 0.5
    assert audio.band_fraction(after, rate, 440) < 0.02

    # Billed like any participant, and in the call history.
    sessions = report(srv, "conferences")
    done = cli(srv, "report", "participants", str(sessions[-1]["id"]), "--json")
    legs = json.loads(done.stdout)
    web_leg = next(r for r in legs if r["caller"] == "web:127.0.0.1")
    assert web_leg["role"] == "participant" and web_leg["joined_by"] == "web"
    calls = [r for r in report(srv, "calls") if r["call_type"] == "web"]
    assert len(calls) == 1 and calls[0]["disposition"] == "answered"
    assert calls[0]["destination"] == "room:demo" and calls[0]["duration"] > 4


def test_browser_waits_with_music_and_wrong_pins_lock_it_out(server_factory, clients):
    srv, base = web_server(
        server_factory, ivr={"lockout_after": 3, "lockout_window": 600, "lockout_seconds": 900}
    )
    web = clients(base, 440)
    code, answer = web.join("1111")
    assert code == 200 and answer["ok"], answer
    until(web.connected)
    time.sleep(2.0)
    # Alone, before the moderator: music, not silence.
    now = time.monotonic()
    waiting = web.heard(now - 1.0, now).astype(float)
    assert audio.rms(waiting) > 300
    # A moderator PIN from a browser is refused (browsers join as participants),
    # as are wrong PINs; after 3 wrong the address is locked out, right PIN or not.
    for pin in ("9999", "1234", "5678"):
        other = clients(base, 440)
        code, refused = other.join(pin)
        assert code == 403 and refused["error"] == "wrong PIN", refused
    locked = clients(base, 440)
    code, refused = locked.join("1111")
    assert code == 403 and "try again later" in refused["error"], refused
    assert len(srv.status()["rooms"]["demo"]["members"]) == 1


def test_browser_buttons_raise_a_hand_and_play_help_and_a_bad_offer_changes_nothing(
    server_factory, phone, clients
):
    srv, base = web_server(server_factory)
    phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; wait_end 30", record=False)
    members(srv, "demo", 1)
    # A broken offer: refused, and no member, leg or port is left behind.
    bad = clients(base, 440)
    broken = {"pin": "1111", "sdp": "v=0\r\nnonsense", "type": "offer"}
    ports_before = srv.status()["conf_ports"]
    code, answer = bad.post("/join/offer", broken)
    assert code == 403 and "offer" in answer["error"], answer
    assert len(members(srv, "demo", 1)) == 1 and srv.status()["legs"] == 1
    assert srv.status()["conf_ports"] == ports_before

    web = clients(base, 0)  # silent: what it hears is the room, or the help prompt
    code, answer = web.join("1111")
    assert code == 200, answer
    until(web.connected)
    leg = answer["member"]

    def hand() -> list[bool]:
        return [m["hand"] for m in srv.status()["rooms"]["demo"]["members"] if m["leg"] == leg]

    assert web.key("hand")[0] == 200
    until(lambda: hand() == [True])
    assert web.key("hand")[0] == 200  # pressed again: lowered
    until(lambda: hand() == [False])

    # The room's hand, as *94's: the browser is told "your hand is lowered"
    # (bridge.controls.set_hand); past that prompt, the quiet room.
    time.sleep(2.5)
    quiet_until = time.monotonic()
    quiet = web.heard(quiet_until - 0.8, quiet_until).astype(float)
    assert web.key("help")[0] == 200
    time.sleep(2.5)
    now = time.monotonic()
    spoken = web.heard(now - 2.0, now).astype(float)
    # The moderator is silent: before, near silence; after *help*, a voice.
    assert audio.rms(quiet) < 300
    assert audio.speech_like(spoken, 8000)
    assert f"call {leg} key action=help" in srv.log()
    code, answer = clients(base, 0).post("/join/not-a-token/key", {"key": "mute"})
    assert code == 404, answer
