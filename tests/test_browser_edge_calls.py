"""Browsers through the edge (issue 21): the join page's JsSIP calls over
Kamailio's WebSocket with the console's one-time token, rtpengine turns
DTLS-SRTP + ICE into plain RTP for the app server.

The appliance runs in its namespace (tests/netns.py); a SIP moderator sits on
the LAN, a headless Chromium on the LAN or behind the NAT router. What each
hears is checked by tone. The attacks come from the attacker's LAN address
with a bare WebSocket client
(tests/ws_sip.py): no SIP over WebSocket reaches the app server without a
fresh token from a right PIN.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ivr.tones import MUSIC_NOTES
from ponte.entry import WEB_RTP_SILENCE
from tests import audio, browser
from tests.harness import ROOT, Server
from tests.netns import (  # noqa: F401  (fixture `net`)
    APPLIANCE_IP,
    ROUTER_OUTER_IP,
    Host,
    net_fixture,
)
from tests.pbx_helpers import pbx_overrides
from tests.pglink import db_link_fixture  # noqa: F401  (fixture `db_link`)
from tests.test_attacks_dialog import RawUac
from tests.test_crash import wait_for
from tests.test_edge_calls import (
    PBX,
    _wait_rows,
    appliance,
    edge_config,
    no_registration,
    softphone,
)
from tests.test_edge_tls_calls import make_pair
from tests.test_pg_calls import dial, node_config, pbx_of, two_lan_net  # noqa: F401  (fixture)
from tests.test_spine_calls import window
from tests.ws_sip import WsSip, webrtc_sdp

BUNDLE = ROOT / "web" / "static" / "jssip.min.js"  # JsSIP, built by scripts/setup
WEB = f"{APPLIANCE_IP}:8088"
WS_PORT = 8089
WSS_PORT = 8443
ORIGIN = f"http://{WEB}"
PROXIED = "https://Conf.Example.com"  # the console as a reverse proxy would serve it
MOD_TONE, BROWSER_TONE = 700, 600
# s of the moderator's tone after its PIN: room for a slow join on a loaded
# machine (the browser's hearing it is the check, not how fast it joined).
MOD_TALKS = 16.0


def browser_config(tls: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """The edge_config() settings of an appliance with the console and the
    browsers' WebSocket on its LAN address; with `tls` (pbx.tls), wss:// on
    WSS_PORT too."""
    assert BUNDLE.is_file(), f"{BUNDLE} is missing: run scripts/setup (npm ci, then the build)"
    return {
        "sip": {
            "listen": "127.0.0.1:5080",
            "rtp_ports": "40000-40199",
            # Opus for the browsers (the phones offer PCMU only).
            "codecs": ["opus/48000", "PCMU/8000", "PCMA/8000", "G722/16000"],
        },
        "pbx": {
            "listen": PBX,
            "media_ports": "30000-30399",
            "rtpengine_control": "127.0.0.1:2223",
            "websocket": {
                "listen": f"{APPLIANCE_IP}:{WS_PORT}",
                "origins": [PROXIED],
                **({"tls_listen": f"{APPLIANCE_IP}:{WSS_PORT}"} if tls else {}),
            },
            **({"tls": tls} if tls else {}),
        },
        "web": {"listen": WEB},
        **extra,
    }


def browser_appliance(
    server_factory: Any, net: Any, tls: dict[str, str] | None = None, **extra: Any
) -> Server:
    """The appliance of browser_config(), started in its namespace."""
    return appliance(server_factory, net, **browser_config(tls, **extra))


def post(host: Host, path: str, body: dict[str, Any], origin: str = ORIGIN) -> tuple[int, Any]:
    """POST JSON to the console from `host`'s namespace."""
    sock = host.socket()
    sock.settimeout(10)
    sock.connect((APPLIANCE_IP, int(WEB.rpartition(":")[2])))
    conn = http.client.HTTPConnection(APPLIANCE_IP, int(WEB.rpartition(":")[2]), timeout=10)
    conn.sock = sock
    data = json.dumps(body)
    conn.request("POST", path, data, {"Content-Type": "application/json", "Origin": origin})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(payload)
    except ValueError:
        return resp.status, payload


def ws_client(host: Host, origin: str | None = ORIGIN) -> tuple[WsSip, int]:
    """A WebSocket to Kamailio from `host`, and the handshake's status."""
    ws = WsSip(host.socket(), APPLIANCE_IP, WS_PORT)
    return ws, ws.handshake(origin)


def talking_moderator(phone: Any, net: Any, srv: Server) -> tuple[Any, float]:
    """The SIP moderator on the LAN, in room demo, and when it was seen there.
    It talks (its tone) for MOD_TALKS s, then listens: the browser's echo
    canceller would take a tone heard and a tone said at once for double talk
    and hold the microphone down, as a person talking over the far end would be."""
    mod = softphone(
        phone,
        net.lan[0],
        "1001",
        f"wait_media 5; dtmf 9999#; tone {MOD_TONE}; wait {MOD_TALKS}; tone 0; wait_end 60",
        "conf",
    )
    return mod, wait_member(srv, "moderator")


def wait_member(srv: Server, role: str, timeout: float = 15.0) -> float:
    """When (monotonic) a member of `role` was first seen in room demo."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        room = srv.status()["rooms"].get("demo", {})
        if any(m["role"] == role for m in room.get("members", [])):
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"no {role} in room demo")


def wait_browser(srv: Server, check: Any, timeout: float = 8.0) -> dict[str, Any]:
    """The browser member of room demo once `check(member)` holds."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        members = srv.status()["rooms"].get("demo", {}).get("members", [])
        found = [m for m in members if m["caller"].startswith("web")]
        if found and check(found[0]):
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"the browser member never changed so: {found}")


def browser_lines(srv: Server) -> list[str]:
    """The app server's log lines of INVITEs over the WebSocket it received."""
    return re.findall(r"call \d+ incoming from=\S+ to=web-.*", srv.log())


@pytest.mark.browser  # Chromium: with one other such test at most (scripts/test)
@pytest.mark.parametrize("side", ["lan", "nat"])
def test_a_browser_joins_by_pin_through_the_edge(server_factory, phone, net, tmp_path, side):
    """Chromium on the LAN (or behind the NAT router: ICE finds its way) keys
    the PIN on the join page: JsSIP calls over Kamailio's WebSocket,
    rtpengine bridges DTLS-SRTP to plain RTP. The
    browser hears the SIP moderator's tone, the moderator the browser's
    microphone; the page's Mute silences it and its hand button raises the
    room's hand; its used token opens nothing again; the history has a
    `web` call."""
    from playwright.sync_api import expect

    srv = browser_appliance(server_factory, net)
    mod, t_mod = talking_moderator(phone, net, srv)
    mic = audio.write_tone_wav(tmp_path / "mic-600.wav", BROWSER_TONE)
    flags = browser_flags()
    tokens: list[dict[str, Any]] = []
    host = net.lan[1] if side == "lan" else net.nat[0]
    with browser.chromium(mic, flags, netns=host.name) as page:
        page.on(
            "response",
            lambda r: tokens.append(r.json()) if r.url.endswith("/join/token") else None,
        )
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else 0)
        join_by_pin(page)
        heard = page.evaluate(f"ponteMeasure([{MOD_TONE}, {BROWSER_TONE}], 1500)")
        stats = page.evaluate("ponteStats()")
        print(f"browser heard {heard}\nbrowser transport {stats}")
        members = srv.status()["rooms"]["demo"]["members"]
        # The moderator listens: the browser's microphone, then muted.
        t_listen = t_mod + MOD_TALKS + 1.0
        time.sleep(max(0.0, t_listen + 2.0 - time.monotonic()))
        t_talk = time.monotonic()
        # The buttons are the room's keys, DTMF on the browser's own call
        # (the key map's *6, *94 from the join reply), acted on by the
        # member's key reader as a phone's.
        page.click("#mute")
        expect(page.locator("#status")).to_have_text("Connected (muted).", timeout=5000)
        wait_browser(srv, lambda m: m["muted"])
        t_muted = time.monotonic()
        time.sleep(2.5)
        t_muted_end = time.monotonic()
        page.click("#mute")  # again: the key toggles, as on a phone
        expect(page.locator("#status")).to_have_text("Connected.", timeout=5000)
        wait_browser(srv, lambda m: not m["muted"])
        t_unmuted = time.monotonic()
        time.sleep(2.5)
        t_unmuted_end = time.monotonic()
        # The hand button raises the room's hand, as *94 would.
        page.click("#hand")
        expect(page.locator("#status")).to_have_text("Hand raised.", timeout=5000)
        wait_browser(srv, lambda m: m["hand"])
        hands = srv.status()["rooms"]["demo"]["hands"]

        # The used token, replayed over a WebSocket of the attacker's: refused.
        assert len(tokens) == 1 and tokens[0]["ok"], tokens
        ws, code = ws_client(net.attacker)
        assert code == 101
        ws.request("INVITE", tokens[0]["uri"], webrtc_sdp(net.attacker.ip))
        assert ws.final() == 403
        ws.close()

        page.click("#leave")
        time.sleep(0.5)
    srv.stop()
    rm = mod.result()

    assert not [e for e in console_errors if "Content Security" in e], console_errors
    # The browser heard the moderator (and not itself), over DTLS-SRTP.
    assert heard["bands"][str(MOD_TONE)] > 0.5 and heard["bands"][str(BROWSER_TONE)] < 0.05, heard
    assert stats["dtlsState"] == "connected", stats
    # Opus end to end: the browser's, decoded by pjsua's opus on the app server.
    assert stats["inboundCodec"] == stats["outboundCodec"] == "audio/opus", stats
    assert stats["remote"].startswith(APPLIANCE_IP), stats
    browser_member = [m for m in members if m["caller"].startswith("web:")]
    assert browser_member and browser_member[0]["role"] == "participant", members
    assert hands == [browser_member[0]["leg"]], (hands, members)
    # Known by the address it came from (the router's, from behind the NAT).
    seen_as = host.ip if side == "lan" else ROUTER_OUTER_IP
    assert browser_member[0]["caller"] == f"web:{seen_as}", members
    # The moderator heard the browser's microphone, then nothing of it once muted.
    samples, rate = audio.load(mod.record)
    talking = audio.segment(samples, rate, *window(rm, t_listen, t_talk))
    muted = audio.segment(samples, rate, *window(rm, t_muted + 0.5, t_muted_end))
    unmuted = audio.segment(samples, rate, *window(rm, t_unmuted + 0.5, t_unmuted_end))
    assert audio.band_fraction(talking, rate, BROWSER_TONE) > 0.3
    assert audio.band_fraction(muted, rate, BROWSER_TONE) < 0.02
    assert audio.band_fraction(unmuted, rate, BROWSER_TONE) > 0.3
    # Each press's digits arrived once (RFC 2833 only, no INFO beside it):
    # one action per press, no "*6*6" that would have unmuted at once.
    log_text = srv.log()
    assert len(re.findall(r"key action=mute ", log_text)) == 2, log_text[-3000:]
    assert len(re.findall(r"key action=hand ", log_text)) == 1, log_text[-3000:]
    # As telephone-events in the RTP (negotiated through rtpengine), each
    # digit of *6, *6, *94 once.
    leg = browser_member[0]["leg"]
    digits = re.findall(rf"call {leg} digit '(.)' via (\w+)", log_text)
    assert digits == [(d, "rfc2833") for d in "*6*6*94"], digits
    # One browser reached the app server: the replay did not.
    assert len(browser_lines(srv)) == 1, browser_lines(srv)
    rows = _wait_rows(srv, 1, call_type="web")
    assert rows[0]["disposition"] == "answered" and rows[0]["origin"].startswith("web:"), rows


def browser_flags() -> list[str]:
    """Chromium's flags for the console's page on the appliance's address."""
    return [
        # getUserMedia over http: the console's origin counts as secure.
        f"--unsafely-treat-insecure-origin-as-secure={ORIGIN}",
        # No DNS, as tests/browser.py says, but the appliance's IP literal too.
        f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE {APPLIANCE_IP}",
    ]


# The join page as if loaded over https: it takes the PIN reply's wss URL
# (join.js picks by location.protocol, which a test cannot change).
AS_IF_HTTPS = """
const plainFetch = window.fetch.bind(window);
window.ponteReplies = [];
window.fetch = async (url, init) => {
  const resp = await plainFetch(url, init);
  if (!String(url).endsWith("/join/token")) return resp;
  const body = await resp.clone().json();
  window.ponteReplies.push(Object.assign({}, body));
  if (body.wss) body.ws = body.wss;
  return new Response(JSON.stringify(body), {status: resp.status, headers: resp.headers});
};
"""

# Chromium without RTCDTMFSender on its audio sender: the page must key by INFO.
NO_RTP_DTMF = "Object.defineProperty(RTCRtpSender.prototype, 'dtmf', {get: () => null});"


def join_by_pin(page: Any, pin: str = "1111") -> None:
    """Key `pin` on the console's join page and wait for the call's audio."""
    from playwright.sync_api import expect

    page.goto(f"{ORIGIN}/join")
    page.fill("#pin", pin)
    page.click("#join")
    expect(page.locator("#status")).to_have_text("Connected.", timeout=20000)
    time.sleep(1.0)


def music_share(bands: dict[str, float]) -> float:
    """The waiting music's share of a ponteMeasure() of MUSIC_NOTES."""
    return sum(bands[str(hz)] for hz in MUSIC_NOTES)


@pytest.mark.browser  # Chromium: with one other such test at most (scripts/test)
def test_a_browser_alone_hears_music_and_its_help_button_reads_the_keys(
    server_factory, phone, net, tmp_path
):
    """A browser first in the room hears the waiting music until the
    moderator arrives, then the room (no music); its Help button keys *0
    on its own call and it hears the key list spoken, once. This browser
    has no RTP DTMF sender (as where no telephone-event was negotiated):
    the page keys by SIP INFO instead, through Kamailio's WebSocket, and
    the digits arrive once, by INFO only."""
    from playwright.sync_api import expect

    srv = browser_appliance(server_factory, net)
    mic = audio.write_tone_wav(tmp_path / "mic-600.wav", BROWSER_TONE)
    notes = ", ".join(str(hz) for hz in MUSIC_NOTES)
    with browser.chromium(mic, browser_flags(), netns=net.lan[1].name) as page:
        page.add_init_script(NO_RTP_DTMF)
        join_by_pin(page)
        alone = page.evaluate(f"ponteMeasure([{notes}], 1500)")
        # The moderator arrives, silent: the music stops.
        mod = softphone(
            phone, net.lan[0], "1001", "wait_media 5; dtmf 9999#; wait 25; hangup", "conf"
        )
        wait_member(srv, "moderator")
        time.sleep(2.0)  # past the join tone
        with_mod = page.evaluate(f"ponteMeasure([{notes}], 1000)")
        quiet = page.evaluate("ponteRecord(1000)")
        page.click("#help")
        expect(page.locator("#status")).to_have_text("Listen: the keys are read out.")
        time.sleep(0.8)  # *0's two digits, then the prompt starts
        spoken = page.evaluate("ponteRecord(2500)")
        page.click("#leave")
        time.sleep(0.5)
    srv.stop()
    mod.result()
    print(f"alone {alone}\nwith the moderator {with_mod}")
    assert music_share(alone["bands"]) > 0.5, alone
    assert music_share(with_mod["bands"]) < 0.05, with_mod
    quiet_samples = np.array(quiet["samples"])
    spoken_samples = np.array(spoken["samples"])
    assert audio.rms(quiet_samples) < 0.005, audio.rms(quiet_samples)
    assert audio.speech_like(spoken_samples, spoken["rate"])
    # *0 arrived once, by INFO: one help list, not two.
    log_text = srv.log()
    assert len(re.findall(r"key action=help ", log_text)) == 1, log_text[-3000:]
    digits = re.findall(r"call \d+ digit '(.)' via (\w+)", log_text)
    assert digits[-2:] == [("*", "info"), ("0", "info")], digits
    assert len([d for d in digits if d[1] == "info"]) == 2, digits


def test_sip_over_websocket_without_a_fresh_token_reaches_nothing(server_factory, net):
    """Over the browsers' WebSocket: no REGISTER, no INVITE without a token,
    with a made-up one, or with one already used; no handshake from another
    page's origin; no bare SIP over TCP on that port. A wrong PIN at the
    console counts toward the lockout by source, as on the phone. A browser
    that sends no audio leaves the room."""
    srv = browser_appliance(server_factory, net, ivr={"lockout_after": 3})
    attacker = net.attacker

    ws, code = ws_client(attacker, origin="http://evil.example")
    assert code == 403
    ws.close()
    ws, code = ws_client(attacker, origin=None)  # not a browser's page at all
    assert code == 403
    ws.close()
    ws, code = ws_client(attacker, origin=PROXIED.lower())  # pbx.websocket.origins
    assert code == 101
    ws.close()

    ws, code = ws_client(attacker)
    assert code == 101
    ws.request("REGISTER", f"sip:{APPLIANCE_IP}", extra="Expires: 600\r\n")
    assert ws.final() == 403
    sdp = webrtc_sdp(attacker.ip)
    ws.request("INVITE", f"sip:conf@{APPLIANCE_IP}", sdp)
    assert ws.final() == 403
    ws.request("INVITE", f"sip:web-{'0' * 32}@{APPLIANCE_IP}", sdp)
    assert ws.final() == 403
    # A forged app header does not help either (REQINIT strips X-Ponte-*).
    forged = "X-Ponte-Web: " + "ab" * 16 + " demo 1.2.3.4\r\n"
    ws.request("INVITE", f"sip:web-{'ab' * 16}@{APPLIANCE_IP}", sdp, extra=forged)
    assert ws.final() == 403

    # A right PIN's token opens one call, once.
    code, reply = post(attacker, "/join/token", {"pin": "1111"})
    assert code == 200 and reply["ws"] == f"ws://{APPLIANCE_IP}:{WS_PORT}", reply
    assert re.match(rf"^sip:web-[0-9a-f]{{32}}@{re.escape(APPLIANCE_IP)}$", reply["uri"]), reply
    ws.request("INVITE", reply["uri"], sdp)
    assert ws.final(10) == 200
    ws2, _ = ws_client(attacker)
    ws2.request("INVITE", reply["uri"], sdp)
    assert ws2.final() == 403
    ws2.close()
    ws.close()

    # Bare SIP over TCP on the WebSocket's port.
    raw = attacker.socket()
    raw.settimeout(5)
    raw.connect((APPLIANCE_IP, WS_PORT))
    raw.sendall(
        (
            f"OPTIONS sip:{APPLIANCE_IP} SIP/2.0\r\nVia: SIP/2.0/TCP {attacker.ip}:5999;"
            "branch=z9hG4bKraw1\r\nMax-Forwards: 70\r\nFrom: <sip:x@example>;tag=1\r\n"
            f"To: <sip:{APPLIANCE_IP}>\r\nCall-ID: raw1\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    try:
        answer = raw.recv(4096).decode(errors="replace")
    except (TimeoutError, OSError):
        answer = ""
    raw.close()
    assert not answer or answer.startswith("SIP/2.0 403"), answer

    # Only the one good token's INVITE reached the app server.
    assert len(browser_lines(srv)) == 1, browser_lines(srv)

    # Wrong PINs at the console lock the source out, the right one then too.
    for _ in range(3):
        code, reply = post(attacker, "/join/token", {"pin": "4321"})
        assert code == 403 and reply["error"] == "wrong PIN", reply
    code, reply = post(attacker, "/join/token", {"pin": "1111"})  # the 5th post: not rate-limited
    assert code == 403 and reply["error"] == "too many wrong PINs: try again later", reply

    # The one admitted "browser" never sent RTP (a closed tab sends no BYE
    # either): it is ended, not left in the room.
    deadline = time.monotonic() + WEB_RTP_SILENCE + 5
    while "the browser sent no audio" not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "the browser sent no audio" in srv.log()
    assert srv.status()["rooms"] == {}, srv.status()["rooms"]


def test_a_forged_browser_header_straight_to_the_app_server_is_not_believed(server_factory):
    """X-Ponte-Web is Kamailio's word: straight to the app server (not from
    Kamailio's socket) it admits nobody, and the call is refused like any
    unknown number."""
    srv = server_factory(**pbx_overrides())
    token = "ab" * 16
    uac = RawUac(("127.0.0.1", srv.sip_port), f"sip:web-{token}@127.0.0.1:{srv.sip_port}")
    try:
        assert uac.invite(extra=(f"X-Ponte-Web: {token} demo 192.0.2.99",)) == 404
    finally:
        uac.close()
    assert srv.status()["rooms"] == {}
    assert "browser from" not in srv.log()


@pytest.mark.browser  # Chromium and two nodes: with one other such test at most
def test_a_browser_handed_to_the_rooms_home_on_another_node_raises_its_hand(
    server_factory, phone, request, pg_url, db_link
):
    """Nodes a and b on one PostgreSQL, each with its Kamailio, rtpengine,
    console and browsers' WebSocket. The moderator homes room demo on a; a
    browser joins through b's page and WebSocket and is handed to a. Its
    hand button keys *94 on its call at b, which forwards the digits to a
    over the internal leg: the hand is raised at a, where the room is. (The
    token-keyed HTTP key route acted on the console's own node: b, where
    the browser is in no room.)"""
    from playwright.sync_api import expect

    net = request.getfixturevalue("two_lan_net")  # (tests/test_pg_calls.py's)
    database = db_link(net.appliance, pg_url)
    nodes = []
    for index, name in enumerate(("a", "b")):
        cfg = node_config(index, database)
        cfg["sip"]["codecs"] = ["opus/48000", "PCMU/8000", "PCMA/8000", "G722/16000"]
        cfg["pbx"]["websocket"] = {"listen": f"{APPLIANCE_IP}:{WS_PORT + 2 * index}"}
        cfg["web"] = {"listen": f"{APPLIANCE_IP}:{8088 + 2 * index}"}
        nodes.append(server_factory(netns=net.appliance.name, extra_args=["--node", name], **cfg))
    a, b = nodes
    mod = dial(
        phone, net.lan[0], "1001", pbx_of(0), "conf", "wait_media 5; dtmf 9999#; wait 40; hangup"
    )
    wait_for(lambda: "join room=demo role=moderator" in a.log(), 15, message=a.log()[-3000:])
    page_b = f"http://{APPLIANCE_IP}:{8088 + 2}"
    flags = [
        f"--unsafely-treat-insecure-origin-as-secure={page_b}",
        f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE {APPLIANCE_IP}",
    ]
    mic = audio.write_tone_wav(Path(a.config["state_dir"]) / "mic-600.wav", BROWSER_TONE)
    with browser.chromium(mic, flags, netns=net.lan[1].name) as page:
        page.goto(f"{page_b}/join")
        page.fill("#pin", "1111")
        page.click("#join")
        expect(page.locator("#status")).to_have_text("Connected.", timeout=20000)
        wait_for(lambda: "handed off to a" in b.log(), 15, message=b.log()[-3000:])
        time.sleep(1.0)
        page.click("#hand")
        expect(page.locator("#status")).to_have_text("Hand raised.", timeout=5000)
        raised = wait_browser(a, lambda m: m["hand"])
        page.click("#leave")
        time.sleep(0.5)
    b.stop()
    a.stop()
    mod.result()
    assert raised["role"] == "participant", raised
    assert "key action=hand room=demo" in a.log()
    assert "join room=" not in b.log(), "nothing is mixed on b"


@pytest.mark.browser  # Chromium: with one other such test at most (scripts/test)
def test_a_browser_on_an_https_page_joins_over_wss(server_factory, phone, net, tmp_path):
    """With pbx.tls and pbx.websocket.tls_listen, the PIN's reply offers
    wss:// on the TLS certificate, and a page served over https takes it.
    (The console serves http only: the page's fetch is wrapped to act as a
    page on https does, taking the reply's `wss` URL for `ws`.) JsSIP's SIP goes
    over TLS on 8443, nothing over the plain WebSocket, and the browser and
    the SIP moderator hear each other."""
    cert, key = make_pair(tmp_path / "tls")
    srv = browser_appliance(server_factory, net, tls={"certificate": str(cert), "key": str(key)})
    mod, t_mod = talking_moderator(phone, net, srv)
    mic = audio.write_tone_wav(tmp_path / "mic-600.wav", BROWSER_TONE)
    sockets: list[str] = []

    # The lab certificate is self-signed: a user would accept it once.
    flags = [*browser_flags(), "--ignore-certificate-errors"]
    with browser.chromium(mic, flags, netns=net.lan[1].name) as page:
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.add_init_script(AS_IF_HTTPS)
        join_by_pin(page)
        replies = page.evaluate("window.ponteReplies")
        heard = page.evaluate(f"ponteMeasure([{MOD_TONE}, {BROWSER_TONE}], 1500)")
        stats = page.evaluate("ponteStats()")
        t_listen = t_mod + MOD_TALKS + 1.0
        time.sleep(max(0.0, t_listen + 3.0 - time.monotonic()))
        t_end = time.monotonic()
        page.click("#leave")
        time.sleep(0.5)
    srv.stop()
    rm = mod.result()

    assert replies and replies[0]["wss"] == f"wss://{APPLIANCE_IP}:{WSS_PORT}", replies
    assert replies[0]["ws"] == f"ws://{APPLIANCE_IP}:{WS_PORT}", replies
    assert [u.rstrip("/") for u in sockets] == [f"wss://{APPLIANCE_IP}:{WSS_PORT}"], sockets
    assert heard["bands"][str(MOD_TONE)] > 0.5 and heard["bands"][str(BROWSER_TONE)] < 0.05, heard
    assert stats["dtlsState"] == "connected", stats
    samples, rate = audio.load(mod.record)
    talking = audio.segment(samples, rate, *window(rm, t_listen, t_end))
    assert audio.band_fraction(talking, rate, BROWSER_TONE) > 0.3
    # The app server saw the browser's INVITE, relayed from the wss socket.
    assert len(browser_lines(srv)) == 1, browser_lines(srv)


@pytest.mark.browser  # Chromium and two nodes: with one other such test at most
def test_a_browser_joins_under_ponte_serve_nodes_2(
    server_factory, phone, tmp_path, request, pg_url, db_link
):
    """`ponte serve --nodes 2` with the console and the browsers' WebSocket:
    one console (the first node's; a second would find web.listen taken),
    whose tokens reach the one edge; Chromium on the LAN joins by PIN,
    wherever the dispatcher sends its INVITE, and hears the SIP moderator,
    who hears it; both nodes stay up."""
    net = request.getfixturevalue("two_lan_net")  # (tests/test_pg_calls.py's)
    cfg = no_registration(edge_config(provider=True, **browser_config()))
    cfg["database"] = db_link(net.appliance, pg_url)
    srv = server_factory(netns=net.appliance.name, extra_args=["--nodes", "2"], **cfg)
    wait_for(
        lambda: all("calls" in n for n in srv.status()["nodes"].values()),
        20,
        message=srv.log()[-3000:],
    )
    mod = dial(
        phone,
        net.lan[0],
        "1001",
        PBX,
        "conf",
        f"wait_media 5; dtmf 9999#; tone {MOD_TONE}; wait {MOD_TALKS}; tone 0; wait_end 60",
    )
    wait_for(lambda: "join room=demo role=moderator" in srv.log(), 15, message=srv.log()[-3000:])
    t_mod = time.monotonic()
    mic = audio.write_tone_wav(tmp_path / "mic-600.wav", BROWSER_TONE)
    with browser.chromium(mic, browser_flags(), netns=net.lan[1].name) as page:
        join_by_pin(page)
        heard = page.evaluate(f"ponteMeasure([{MOD_TONE}, {BROWSER_TONE}], 1500)")
        t_listen = t_mod + MOD_TALKS + 1.0
        time.sleep(max(0.0, t_listen + 3.0 - time.monotonic()))
        t_end = time.monotonic()
        nodes = srv.status()["nodes"]
        page.click("#leave")
        time.sleep(0.5)
    log = srv.log()
    srv.stop()
    rm = mod.result()
    assert heard["bands"][str(MOD_TONE)] > 0.5, heard
    samples, rate = audio.load(mod.record)
    talking = audio.segment(samples, rate, *window(rm, t_listen, t_end))
    assert audio.band_fraction(talking, rate, BROWSER_TONE) > 0.3
    # Both nodes up all along: no child died on a taken web.listen.
    assert all("calls" in n for n in nodes.values()), nodes
    assert "address already in use" not in log.lower(), log[-3000:]
    assert len(re.findall(r"web console on ", log)) == 1, log[-3000:]
