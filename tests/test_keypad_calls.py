"""The Zoom/Teams keys with real calls, checked by what callers hear: *94 raises
a hand (the moderator hears "one hand raised", the console and `ponte status`
show it), *96 gives the oldest hand the floor (heard again, in lecture mode or
after a mute), *95 speaks the head count (as a number: "três participantes",
"duas mãos levantadas"), and a participant's *96 is refused.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from tests import audio, ports
from tests.consoleclient import ConsoleClient, next_event
from tests.harness import cli, report
from tests.test_conference_calls import digits_time, seg
from tests.test_console_browser import wait_status
from tests.test_console_calls import ADMINS, PASSWORD
from tests.test_spine_calls import window


def heard_only_after_star96(mod: Any, rm: dict[str, Any], since: float, star96: float) -> bool:
    """The moderator heard no 440 Hz participant from `since` to its *96, and
    heard it once its own "the floor is given" prompt was over."""
    before, rate = seg(mod, rm, since, star96 - 0.1)
    after, _ = seg(mod, rm, star96 + 3.8, rm["hangup_sent_at"] - 0.2)
    return not audio.hears_tone(before, rate, 440) and audio.hears_tone(after, rate, 440)


def test_hand_by_phone_shows_on_the_console_and_star96_lets_it_speak_in_lecture_mode(
    server_factory, phone
):
    port = ports.allocate(1)
    srv = server_factory(web={"listen": f"127.0.0.1:{port}"}, admins=ADMINS)
    # The moderator starts a lecture; once its prompt is over the participant
    # raises a hand; later the moderator's *96 gives that hand the floor.
    mod = phone(
        srv.uri("conf-en"),
        "wait_media 5; dtmf 9999#; wait 2; dtmf *5; wait 10; dtmf *96; wait 7; hangup",
    )
    part = phone(
        srv.uri("conf-en"),
        "wait_media 5; dtmf 1111#; tone 440; wait 7.5; dtmf *94; wait 14; hangup",
    )
    seen: dict[str, Any] = {}

    async def console() -> None:
        ana = ConsoleClient(f"http://127.0.0.1:{port}")
        try:
            assert await ana.login("ana", PASSWORD) == 303
            ws = await ana.events()
            # The same events a browser's hand button makes (web/hub.py).
            raised = await next_event(ws, {"hand_raised"}, 25)
            seen["raised"] = raised
            room = srv.status()["rooms"]["demo"]
            seen["status_raised"] = (room["hands"], [m["hand"] for m in room["members"]])
            _, rooms = await ana.get("/api/rooms")
            seen["snapshot"] = rooms
            seen["lowered"] = await next_event(ws, {"hand_lowered"}, 15)
            seen["status_lowered"] = srv.status()["rooms"]["demo"]["hands"]
            await ws.close()
        finally:
            await ana.close()

    asyncio.run(console())
    rm, rp = mod.result(), part.result()
    leg = seen["raised"]["member"]
    assert seen["raised"]["room"] == "demo" and seen["lowered"]["member"] == leg
    assert seen["status_raised"][0] == [leg] and sorted(seen["status_raised"][1]) == [False, True]
    assert '"hand": true' in seen["snapshot"]
    assert seen["status_lowered"] == []

    raised, star96 = digits_time(rp, "4"), digits_time(rm, "6")
    assert digits_time(rm, "5") + 4 < raised < star96 - 3, "the script's order held"
    # Lecture mode: the moderator hears nothing of the participant, then, on
    # the hand, "one hand raised".
    quiet, rate = seg(mod, rm, raised - 1.5, raised)
    assert audio.rms(quiet) < 0.01
    told, _ = seg(mod, rm, raised + 0.2, raised + 2.0)
    assert audio.speech_like(told, rate), "the moderator heard 'one hand raised'"
    assert heard_only_after_star96(mod, rm, raised + 2.5, star96), "given the floor, heard"
    # The participant was told it has the floor (over the silent moderator).
    turn, _ = seg(part, rp, star96 + 0.3, star96 + 2.5)
    assert audio.speech_like(turn, rate)
    log = srv.log()
    assert "key action=hand room=demo" in log and "key action=next_hand room=demo" in log


def test_star95_counts_star96_is_refused_to_a_participant_and_unmutes_a_muted_hand(server, phone):
    # The participant mutes itself (*6) before its tone starts, tries *96
    # (moderator only), then raises a hand (*94); the moderator asks the count
    # (*95) and later gives the floor (*96).
    part = phone(
        server.uri("conf-en"),
        "wait_media 5; dtmf 1111#; wait 0.5; dtmf *6; tone 440; wait 4; dtmf *96; wait 4;"
        " dtmf *94; wait 12; hangup",
    )
    mod = phone(
        server.uri("conf-en"),
        "wait_media 5; dtmf 9999#; wait 4; dtmf *95; wait 10; dtmf *96; wait 7; hangup",
    )
    # Bad input from the CLI while the hand is up: a clear error, the queue as it was.
    hands = wait_status(server, lambda st: st["rooms"].get("demo", {}).get("hands"), 25)
    bad = cli(server, "room", "lower-hand", "demo", "nobody")
    assert bad.returncode != 0 and "no member 'nobody'" in bad.stderr, bad.stderr
    assert server.status()["rooms"]["demo"]["hands"] == hands
    rp, rm = part.result(), mod.result()
    count = digits_time(rm, "5")
    refused = digits_time(rp, "6", -1)
    raised = digits_time(rp, "4")
    star96 = digits_time(rm, "6")
    assert raised + 1.5 < star96, "the script's order held"
    # *95: "two participants in the conference", over a muted room.
    heard, rate = seg(mod, rm, count + 0.2, count + 2.5)
    assert audio.speech_like(heard, rate), "the moderator heard the count"
    # The participant's *96: "that feature is not available".
    no, _ = seg(part, rp, refused + 0.2, refused + 2.0)
    assert audio.speech_like(no, rate), "the participant heard 'not available'"
    assert heard_only_after_star96(mod, rm, count + 3.5, star96), "the muted hand, unmuted"
    log = server.log()
    assert "key action=count room=demo" in log
    assert "key action=next_hand refused room=demo" in log
    assert log.count("key action=next_hand room=demo") == 1


def test_star95_says_the_count_as_a_number_in_the_callers_language(server, phone):
    """pt-BR, three in the room: two hands go up, the moderator is told
    "duas mãos levantadas" (feminine), then *95 says "três participantes na
    conferência": numbers, not digits, by prompt id in the app log."""
    mod = phone(server.uri("conf"), "wait_media 5; dtmf 9999#; wait 9; dtmf *95; wait 4; hangup")
    for raise_at in (3, 5):
        phone(
            server.uri("conf"),
            f"wait_media 5; dtmf 1111#; wait {raise_at}; dtmf *94; wait {13 - raise_at}; hangup",
            record=False,
        )
    rm = mod.result()
    log = server.log()
    found = re.search(r"call (\d+) key action=count room=demo", log)
    assert found, "the moderator's *95 ran"
    leg = found.group(1)
    assert f"call {leg} says (hands): num_2f hands_raised" in log, "duas mãos levantadas"
    assert f"call {leg} says (prompt): digit_3 participants_count" in log
    count = digits_time(rm, "5")
    heard, rate = seg(mod, rm, count + 0.2, count + 2.5)
    assert audio.speech_like(heard, rate), "the moderator heard the count"


@pytest.mark.browser  # Chromium: with one other such test at most (scripts/test)
def test_console_shows_phone_hands_and_its_buttons_lower_one_and_give_the_next_the_floor(
    server_factory, phone
):
    """The rooms page in Chromium: two phones' *94 show as "hand up"; "Lower
    hand" lowers the newer, "Next hand" gives the older (self-muted) the floor,
    and the moderator hears it from then on."""
    from playwright.sync_api import expect

    from tests import browser

    with browser.loopback_netns():
        port = ports.allocate(1)
        base = f"http://127.0.0.1:{port}"
        srv = server_factory(web={"listen": f"127.0.0.1:{port}"}, admins=ADMINS)
        mod = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; wait_end 40")
        phone(
            srv.uri("conf"),
            "wait_media 5; dtmf 1111#; wait 0.5; dtmf *6; tone 440; wait 1; dtmf *94; wait_end 40",
            record=False,
        )
        phone(srv.uri("conf"), "wait_media 5; dtmf 1111#; wait 4; dtmf *94; wait_end 40", False)

        def hands(s: dict[str, Any]) -> list[int]:
            return list(s["rooms"].get("demo", {}).get("hands", []))

        with browser.chromium() as page:
            page.goto(f"{base}/login")
            page.fill("input[name=name]", "ana")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            older, newer = wait_status(srv, lambda s: hands(s) if len(hands(s)) == 2 else None)
            rows = {leg: page.locator(f"tr[data-member='{leg}']") for leg in (older, newer)}
            for row in rows.values():
                expect(row.locator(".hand")).to_have_text("hand up", timeout=5000)
            rows[newer].get_by_role("button", name="Lower hand").click()
            wait_status(srv, lambda s: hands(s) == [older])
            expect(rows[newer].locator(".hand")).to_have_count(0, timeout=5000)
            expect(rows[newer].get_by_role("button", name="Lower hand")).to_have_count(0)
            time.sleep(1.5)
            t_click = time.monotonic()
            page.get_by_role("button", name="Next hand").click()
            wait_status(
                srv,
                lambda s: (
                    not hands(s)
                    and not [m for m in s["rooms"]["demo"]["members"] if m["leg"] == older][0][
                        "muted"
                    ]
                ),
            )
            t_done = time.monotonic()
            expect(rows[older].locator(".hand")).to_have_count(0, timeout=5000)
            time.sleep(2.5)
            t_end = time.monotonic()
        srv.stop()
        rm = mod.result()
    samples, rate = audio.load(mod.record)
    muted = audio.segment(samples, rate, *window(rm, t_click - 1.5, t_click))
    floor = audio.segment(samples, rate, *window(rm, t_done + 1.0, t_end))
    assert not audio.hears_tone(muted, rate, 440)
    assert audio.hears_tone(floor, rate, 440), "the console's Next hand unmuted the older hand"
    audit = [r["action"] for r in report(srv, "audit") if r["source"] == "web"]
    assert audit == ["lower-hand", "next-hand"]
