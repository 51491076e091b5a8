"""The rooms page shows each member's call quality, in a real headless Chromium.

A registered extension comes through Kamailio (rtpengine relays and measures
its call), a browser joins through the edge (Kamailio's WebSocket, rtpengine's
DTLS-SRTP) and a softphone comes straight to the app server: the first two get
a quality line, rendered by the page's script under the page's strict CSP.
The figures themselves (loss 0 on loopback, the refresh period, no spurious
events) are checked against the events WebSocket in tests/test_console_calls.py.
"""

from __future__ import annotations

import re
import time

import pytest

from tests import browser, ports
from tests.audio import write_tone_wav
from tests.pbx_helpers import pbx_overrides, proxy, register
from tests.test_console_browser import keep, members, wait_status
from tests.test_console_calls import ADMINS, PASSWORD

# What console.js writes: "loss 0/0 % · jitter 0/0 ms · rtt 307 ms · MOS 3.7".
QUALITY_LINE = re.compile(r"^loss 0/0 % · jitter \d+/\d+ ms( · rtt \d+ ms)? · MOS \d\.\d$")


@pytest.mark.browser  # Chromium: with one other such test at most (scripts/test)
@pytest.mark.skipif(not browser.available(), reason="needs Chromium and Playwright")
def test_rooms_page_shows_quality_for_relayed_calls_only(server_factory, phone, tmp_path):
    from playwright.sync_api import expect

    mic = write_tone_wav(tmp_path / "mic-600.wav", 600.0)
    with browser.loopback_netns():
        port = ports.allocate(1)
        base = f"http://127.0.0.1:{port}"
        cfg = pbx_overrides()
        cfg["pbx"]["websocket"] = {"listen": f"127.0.0.1:{ports.allocate(1)}"}
        srv = server_factory(**cfg, web={"listen": f"127.0.0.1:{port}"}, admins=ADMINS)
        with browser.chromium(mic) as page:
            csp: list[str] = []
            page.on("console", lambda m: csp.append(m.text) if "Content Security" in m.text else 0)
            page.goto(f"{base}/login")
            page.fill("input[name=name]", "ana")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")

            relayed = phone(
                f"sip:conf@{proxy(srv)}",
                "wait_media 8; wait 1.5; dtmf 9999#; tone 440; wait_end 60",
                record=False,
                bind=ports.loopback_ip(),
                extra=register("1001", srv),
            )
            direct = phone(
                srv.uri("conf"), "wait_media 5; dtmf 1111#; tone 700; wait_end 60", record=False
            )
            joiner = page.context.new_page()
            joiner.goto(f"{base}/join")
            joiner.fill("#pin", "1111")
            joiner.click("#join")
            expect(joiner.locator("#status")).to_have_text("Connected.", timeout=15000)
            rows = {
                m["caller"].split(":")[0]: m["leg"]
                for m in wait_status(srv, lambda s: len(members(s)) == 3 and members(s), 25)
            }
            page.bring_to_front()
            t0 = time.monotonic()
            for caller in ("1001", "web"):
                line = page.locator(f"tr[data-member='{rows[caller]}'] .quality")
                expect(line).to_have_text(QUALITY_LINE, timeout=25000)
                shown = line.text_content()
                print(f"\nthe page showed {shown!r} {time.monotonic() - t0:.1f} s after 3 joined")
            # Straight to the app server: no line at all.
            expect(page.locator(f"tr[data-member='{rows['softphone']}']")).to_be_visible()
            assert page.locator(f"tr[data-member='{rows['softphone']}'] .quality").count() == 0
            shot = tmp_path / "console-quality.png"
            page.screenshot(path=str(shot), full_page=True)
            keep(shot)
            joiner.click("#leave")
            assert not csp, csp
        srv.stop()
        relayed.result()
        direct.result()
