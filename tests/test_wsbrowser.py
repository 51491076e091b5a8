"""The simulated browser (tests/wsbrowser.py) on its own: its SIP parsing, and
a real call over SIP/WebSocket through a bare Kamailio (websocket module) and
rtpengine (ICE + DTLS-SRTP to the browser, plain RTP beyond) to a softphone,
with audio checked by content both ways.

The Kamailio here is not ponte's (`pbx/kamailio.cfg.tmpl`): a few lines that
route every WebSocket INVITE to one softphone, so the test peer is proven
apart from the product it tests elsewhere.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx.rtpengine import RtpEngine
from tests import audio, ports
from tests.harness import PY
from tests.pbx_helpers import pbx_overrides
from tests.test_rtpengine import make_config
from tests.test_spine_calls import window
from tests.wsbrowser import (
    BrowserLoop,
    SipError,
    SipMessage,
    join_token,
    split_list,
    tag_of,
    uri_of,
)

ROOT = Path(__file__).resolve().parent.parent

# rtpengine's flags, as the edge's: plain RTP without ICE towards the phone,
# ICE + DTLS-SRTP with rtcp-mux back to the browser.
TO_PHONE = (
    "trust-address replace-origin replace-session-connection ICE=remove RTP/AVP rtcp-mux-demux"
)
TO_BROWSER = "trust-address replace-origin replace-session-connection ICE=force rtcp-mux-require"
KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
listen=udp:127.0.0.1:{udp}
listen=tcp:127.0.0.1:{ws}
tcp_accept_no_cl=yes
loadpath "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "kex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "nathelper.so"
loadmodule "rtpengine.so"
loadmodule "xhttp.so"
loadmodule "websocket.so"
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{ng}")
modparam("websocket", "keepalive_mechanism", 0)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    force_rport();
    if (proto == WS || proto == WSS) {{
        if (is_method("INVITE") && !has_totag()) {{ add_contact_alias(); }}
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            handle_ruri_alias();
            if (is_method("BYE")) {{ rtpengine_delete(); }}
            t_relay();
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{ t_relay(); exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
        rtpengine_offer("{to_phone}");
        $ru = "sip:phone@127.0.0.1:{phone}";
        t_on_reply("ANSWER");
        t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    sl_send_reply("405", "Not allowed");
}}

onreply_route[ANSWER] {{
    if (has_body("application/sdp")) {{
        rtpengine_answer("{to_browser}");
    }}
}}

event_route[xhttp:request] {{
    if ($hdr(Upgrade) =~ "websocket" && $hdr(Connection) =~ "Upgrade" && $rm =~ "GET") {{
        if (ws_handle_handshake()) {{ exit; }}
    }}
    xhttp_reply("404", "Not Found", "", "");
}}
"""


def test_parses_responses_requests_and_refuses_garbage():
    msg = SipMessage.parse(
        "SIP/2.0 200 OK\r\n"
        "v: SIP/2.0/WS a.invalid;branch=z9hG4bKx;rport\r\n"
        "Record-Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5066;transport=ws;lr>\r\n"
        'To: "Room" <sip:web-abc@ponte>;tag=t1\r\n'
        "f: <sip:b@a.invalid>;tag=f1\r\n"
        "CSeq: 1 INVITE\r\n"
        "m: <sip:app@127.0.0.1:5080>\r\n"
        "Content-Length: 3\r\n\r\nv=0trailing"
    )
    assert (msg.status, msg.cseq) == (200, (1, "INVITE"))
    assert msg.all("record-route") == [
        "<sip:127.0.0.1:5060;lr>",
        "<sip:127.0.0.1:5066;transport=ws;lr>",
    ]
    assert tag_of(msg.get("to") or "") == "t1" and tag_of(msg.get("from") or "") == "f1"
    assert uri_of(msg.get("contact") or "") == "sip:app@127.0.0.1:5080"
    assert msg.body == "v=0"  # Content-Length wins over what follows
    req = SipMessage.parse("BYE sip:b@a.invalid;transport=ws SIP/2.0\r\nCSeq: 2 BYE\r\n\r\n")
    assert (req.method, req.uri, req.cseq) == ("BYE", "sip:b@a.invalid;transport=ws", (2, "BYE"))
    assert split_list('"a, b" <sip:x>, <sip:y;p=1,2>') == ['"a, b" <sip:x>', "<sip:y;p=1,2>"]
    for bad in ("", "HELLO\r\n\r\n", "SIP/2.0 OK\r\n\r\n", "BYE x SIP/2.0\r\nnocolon\r\n\r\n"):
        with pytest.raises(SipError):
            SipMessage.parse(bad)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[dict]:
    """rtpengine, a bare Kamailio with a WebSocket listener, and a softphone
    answering with 1000 Hz and recording; the WebSocket URL."""
    if shutil.which("kamailio") is None:
        pytest.skip("no kamailio")
    udp = ports.allocate(3)
    ws, phone = udp + 1, udp + 2
    cfg = make_config(tmp_path, media_ports=ports.rtp_range(40))
    ng = int(cfg.pbx.rtpengine_control.rpartition(":")[2])
    rtp = RtpEngine(cfg, tmp_path / "rtpengine")
    rtp.start()
    (tmp_path / "kam").mkdir()
    kcfg = tmp_path / "kam" / "kamailio.cfg"
    kcfg.write_text(
        KAMAILIO_CFG.format(
            udp=udp, ws=ws, ng=ng, phone=phone, to_phone=TO_PHONE, to_browser=TO_BROWSER
        )
    )
    klog = (tmp_path / "kam" / "log").open("w")
    kam = subprocess.Popen(
        ["kamailio", "-DD", "-E", "-f", str(kcfg), "-Y", str(tmp_path / "kam"), "-m", "64"],
        stdout=klog,
        stderr=subprocess.STDOUT,
    )
    wav = tmp_path / "phone.wav"
    sp = subprocess.Popen(
        [
            PY, "-m", "pbx.softphone", "--answer", "--bind", "127.0.0.1", "--port", str(phone),
            "--codecs", "opus/48000", "--rtp", ports.rtp_range(6), "--record", str(wav),
            "--script", "tone 1000; wait_end 60", "--max-seconds", "60",
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # both listening (a refused connect says so below)
        assert kam.poll() is None, (tmp_path / "kam" / "log").read_text()[-3000:]
        yield {"ws": f"ws://127.0.0.1:{ws}", "wav": wav, "phone": sp,
               "klog": tmp_path / "kam" / "log"}  # fmt: skip
    finally:
        sp.kill()
        sp.communicate()
        kam.terminate()
        kam.wait(10)
        rtp.stop()


def test_a_call_over_websocket_hears_and_is_heard(rig):
    loop = BrowserLoop()
    try:
        b = loop.browser(tone_hz=700)
        loop.run(b.connect(rig["ws"]))
        status = loop.run(b.call("sip:room@127.0.0.1"))
        assert status == 200, (b.got, rig["klog"].read_text()[-3000:])
        loop.run(b.wait_connected())
        t0 = time.monotonic()
        time.sleep(3)
        t1 = time.monotonic()
        heard = b.heard(t0, t1).astype(float)
        assert len(heard) > 0.95 * 8000 * (t1 - t0)
        assert audio.band_fraction(heard, 8000, 1000) > 0.8
        gaps = [y - x for x, y in zip(b.arrivals(t0, t1), b.arrivals(t0, t1)[1:], strict=False)]
        assert max(gaps) < 0.1
        assert loop.run(b.hangup()) == 200
        out, _ = rig["phone"].communicate(timeout=20)
        samples, rate = audio.load(rig["wav"])
        assert audio.band_fraction(samples[rate:], rate, 700) > 0.5, out
        via = next(m for m in b.sent if m.startswith("INVITE")).split("\r\n")[1]
        assert via.startswith("Via: SIP/2.0/WS ") and ".invalid;" in via
    finally:
        loop.close()


def test_through_the_edge_joins_by_pin_hears_is_heard_and_is_hung_up(server_factory, phone):
    # The path bench/webrtc.py takes: /join/token, Kamailio's WebSocket,
    # rtpengine's DTLS-SRTP, Opus to the app server; the server's BYE (the
    # room ending when its moderator leaves) answered.
    web = f"127.0.0.1:{ports.allocate(1)}"
    base = f"http://{web}"
    overrides = pbx_overrides()
    overrides["pbx"]["websocket"] = {"listen": f"127.0.0.1:{ports.allocate(1)}"}
    srv = server_factory(
        web={"listen": web},
        sip={
            "listen": f"127.0.0.1:{ports.allocate(1)}",
            "rtp_ports": ports.rtp_range(40),
            "codecs": ["opus/48000", "PCMU/8000"],
        },
        **overrides,
    )
    mod = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; tone 1000; wait 14; hangup")
    deadline = time.monotonic() + 15
    while not srv.status()["rooms"].get("demo", {}).get("members"):
        assert time.monotonic() < deadline, "the moderator did not join"
        time.sleep(0.1)
    loop = BrowserLoop()
    try:
        b = loop.browser(tone_hz=600)
        source = ports.loopback_ip()
        code, reply = loop.run(join_token(base, "1111", source))
        assert code == 200 and reply["ok"], reply
        loop.run(b.connect(reply["ws"], origin=base, source=source))
        assert loop.run(b.call(reply["uri"])) == 200, b.got
        loop.run(b.wait_connected())
        time.sleep(1.5)  # past the join beep
        t0 = time.monotonic()
        time.sleep(3)
        t1 = time.monotonic()
        heard = b.heard(t0, t1).astype(float)
        assert len(b.arrivals(t0, t1)) >= 0.95 * (t1 - t0) / 0.02
        assert audio.band_fraction(heard, 8000, 1000) > 0.8
        assert audio.band_fraction(heard, 8000, 600) < 0.05  # not itself
        # The moderator leaves, the room ends: the server hangs up on the
        # browser, which answers its BYE.
        loop.run(asyncio.wait_for(b.ended.wait(), 25))
        assert b.ended_by == "remote"
        assert any(m.startswith("SIP/2.0 200") and "BYE" in m for m in b.sent)
    finally:
        loop.close()
    report = mod.result()
    samples, rate = audio.load(mod.record)
    talk = audio.segment(samples, rate, *window(report, t0, t1))
    assert audio.band_fraction(talk, rate, 600) > 0.3
