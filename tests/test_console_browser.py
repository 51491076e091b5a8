"""The web console in a real headless Chromium, against the appliance with
SIP softphones in the room; checked by recording. (A browser participant
joins through the edge: tests/test_browser_edge_calls.py.)

Everything runs in a network namespace with only `lo` (tests/browser.py).
Set PONTE_SCREENSHOTS=DIR to keep the screenshots (the note's pictures come
from there).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests import audio, browser, ports
from tests.test_console_calls import ADMINS, PASSWORD
from tests.test_spine_calls import window


def keep(shot: Path) -> None:
    where = os.environ.get("PONTE_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(where) / shot.name)


def wait_status(srv, check, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check(srv.status())
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the server")


def members(status: dict) -> list[dict]:
    return status["rooms"].get("demo", {}).get("members", [])


@pytest.mark.browser  # Chromium: with one other such test at most (scripts/test)
def test_console_shows_and_mutes_callers(server_factory, phone, tmp_path):
    from playwright.sync_api import expect

    with browser.loopback_netns() as isolated:
        print(f"\nisolated network namespace: {isolated}")
        port = ports.allocate(1)
        base = f"http://127.0.0.1:{port}"
        srv = server_factory(web={"listen": f"127.0.0.1:{port}"}, admins=ADMINS)
        with browser.chromium() as page:
            csp: list[str] = []
            page.on("console", lambda m: csp.append(m.text) if "Content Security" in m.text else 0)
            page.goto(f"{base}/")  # not logged in: the login form
            assert page.url.endswith("/login")
            page.fill("input[name=name]", "ana")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            page.wait_for_selector("#empty", state="visible")

            # A SIP moderator dials in: the page shows them, pushed by the server.
            mod = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; tone 1000; wait_end 40")
            m_row = wait_status(srv, lambda s: members(s))[0]
            t_server = time.monotonic()
            page.wait_for_selector(f"tr[data-member='{m_row['leg']}']", timeout=5000)
            shown = time.monotonic() - t_server
            print(f"rooms page showed the caller {shown * 1000:.0f} ms after the server had them")

            part = phone(srv.uri("conf"), "wait_media 5; dtmf 1111#; tone 440; wait_end 40")
            p_row = wait_status(
                srv, lambda s: [m for m in members(s) if m["role"] == "participant"]
            )[0]
            row = page.locator(f"tr[data-member='{p_row['leg']}']")
            expect(row).to_be_visible(timeout=5000)
            expect(row.locator(".caller")).to_contain_text("softphone")
            time.sleep(1.5)  # the moderator hears the participant

            # Mute from the page: the moderator stops hearing the participant.
            t_mute = time.monotonic()
            row.get_by_role("button", name="Mute").click()
            expect(row.locator(".muted-flag")).to_be_visible(timeout=5000)
            t_muted = time.monotonic()
            wait_status(srv, lambda s: [m for m in members(s) if m["muted"]])
            time.sleep(2.5)
            t_quiet = time.monotonic()
            page.bring_to_front()
            shot = tmp_path / "console-rooms.png"
            page.screenshot(path=str(shot), full_page=True)
            keep(shot)
            page.goto(f"{base}/usage")
            shot = tmp_path / "console-usage.png"
            page.screenshot(path=str(shot), full_page=True)
            keep(shot)
            assert not csp, csp
        srv.stop()
        rm = mod.result()
        part.result()

    samples, rate = audio.load(mod.record)
    before = audio.segment(samples, rate, *window(rm, t_mute - 1.0, t_mute))
    # From a second after the page showed the mute: the moderator's own
    # jitter buffer grows to ~0.4 s while Chromium starts beside it (a run
    # heard the last 440 Hz 0.4 s after the server muted), so what it
    # records lags the bridge by that much.
    muted = audio.segment(samples, rate, *window(rm, t_muted + 1.0, t_quiet))
    # The page's mute silenced the participant for the moderator.
    assert audio.band_fraction(before, rate, 440) > 0.3
    assert audio.band_fraction(muted, rate, 440) < 0.02
