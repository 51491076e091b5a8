"""The PBX with real peers: softphones registering to Kamailio, a SIPp
provider on the trunk, sipvicious and a REGISTER flood."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests import audio, ports
from tests.pbx_helpers import (
    answering_extension,
    assert_two_way_audio,
    busiest_window,
    pbx_overrides,
    proxy,
    register,
    via_proxy,
)
from tests.test_spine_calls import window


def test_two_extensions_register_and_talk(server_factory, phone):
    srv = server_factory(**pbx_overrides())
    callee = answering_extension(phone, srv)
    caller = phone(
        f"sip:1002@{proxy(srv)}",
        "wait_media 8; tone 440; wait 3.5; hangup",
        bind=ports.loopback_ip(),
        extra=register("1001", srv),
    )
    ra, rb = caller.result(), callee.result()
    assert ra["registration"]["code"] == 200 and "error" not in ra, ra
    assert rb["from_user"] == "1001"
    assert_two_way_audio(caller, callee, ra, rb)


def test_wrong_password_and_unknown_extension(server_factory, phone):
    srv = server_factory(**pbx_overrides())
    bad = phone(
        "",
        "",
        record=False,
        bind=ports.loopback_ip(),
        extra=["--register", f"1001:not-the-password@{proxy(srv)}"],
    ).result()
    assert bad["registration"]["code"] in (401, 403) and not bad["registration"]["active"]
    # An unknown or unregistered extension gets 480, not 404: nothing to enumerate.
    r = phone(
        f"sip:1009@{proxy(srv)}",
        "wait_media 3; hangup",
        record=False,
        bind=ports.loopback_ip(),
        extra=register("1001", srv),
    ).result()
    assert r["code"] == 480
    r = phone(
        f"sip:1002@{proxy(srv)}",
        "wait_media 3; hangup",
        record=False,
        bind=ports.loopback_ip(),
        extra=register("1001", srv),
    ).result()
    assert r["code"] == 480


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_svwar_finds_no_extension(server_factory, method):
    srv = server_factory(**pbx_overrides())
    host, port = proxy(srv).split(":")
    out = subprocess.run(
        [
            "svwar",
            "-m",
            method,
            "-e",
            "1000-1010",
            "-p",
            port,
            "-b",
            ports.loopback_ip(),
            "-t",
            "0.05",
            host,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = out.stdout + out.stderr
    for number in ("1001", "1002"):
        assert f"| {number} " not in text and f"{number}  " not in text, text


def test_register_flood_bans_the_source(server_factory, phone, tmp_path):
    srv = server_factory(
        **pbx_overrides(
            pbx={"listen": f"127.0.0.1:{ports.allocate(1)}", "flood_density": 30, "ban_seconds": 60}
        )
    )
    flooder = ports.loopback_ip()
    host, port = proxy(srv).split(":")
    subprocess.run(
        [
            "sipp",
            "-sf",
            "tests/sipp/register_flood.xml",
            "-i",
            flooder,
            "-p",
            str(ports.allocate(1)),
            "-r",
            "300",
            "-m",
            "300",
            "-nostdin",
            "-timeout",
            "20s",
            f"{host}:{port}",
        ],
        capture_output=True,
        timeout=60,
        cwd=tmp_path.parent.parent.parent if False else None,
    )
    banned = phone(
        "", "", record=False, bind=flooder, extra=[*register("1001", srv), "--max-seconds", "12"]
    ).result()
    assert banned["registration"] is None or banned["registration"]["code"] in (408, 0, 503)
    other = phone(
        "", "", record=False, bind=ports.loopback_ip(), extra=register("1001", srv)
    ).result()
    assert other["registration"]["code"] == 200
    kam_log = (srv.log_path.parent / "state" / "kamailio" / "kamailio.log").read_text()
    assert f"flood from {flooder}" in kam_log


def test_trunk_registers_with_digest_and_did_reaches_the_entry_ivr(server_factory, phone, provider):
    srv = server_factory(**pbx_overrides(provider.port))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        "REGISTER-AUTH" in e for _, e in provider.events()
    ):
        time.sleep(0.1)
    assert any(e == "REGISTER-AUTH user=trunkuser" for _, e in provider.events())
    # The registration went out through Kamailio, which put itself in a Path.
    kam = proxy(srv)
    assert any(e.endswith(f"sip:{kam}") for _, e in provider.events() if "PATH-ON" in e), (
        provider.events()
    )
    time.sleep(0.5)
    assert "trunk:provider1 registration 200" in srv.log()
    # The provider delivers a call to the DID following that Path (a Route to
    # Kamailio): the caller hears the PIN prompt.
    p = phone(
        srv.uri("+551130001000"),
        "wait_media 5; wait 2.5; dtmf 1111#; wait 1; hangup",
        bind="127.0.0.1",  # the provider's address: `localhost` resolves to it
        extra=via_proxy(srv),
    )
    assert p.result()["hung_up_by"] == "local"
    samples, rate = audio.load(p.record)
    assert audio.speech_like(audio.segment(samples, rate, 0.3, 2.3), rate)
    assert "DID +551130001000" in srv.log() and "join room=demo" in srv.log()
    assert f"src={kam}" in srv.log(), "the DID call reached the app server from Kamailio"


def test_extension_calls_out_through_the_trunk_with_audio(server_factory, phone, provider):
    srv = server_factory(**pbx_overrides(provider.port))
    p = phone(
        f"sip:011999998888@{proxy(srv)}",
        "wait_media 8; tone 440; wait 3; hangup",
        bind=ports.loopback_ip(),
        extra=register("1001", srv),
    )
    r = p.result()
    assert "confirmed_at" in r and r["hung_up_by"] == "local", r
    assert [c for c, _t in r.get("progress", [])][:1] == [180]
    invites = [e for _, e in provider.events() if e.startswith("INVITE")]
    assert len(invites) == 1
    # The call left through Kamailio, which stays in its route for the BYE.
    rr = [e for _, e in provider.events() if e.startswith("RR-ON-INVITE")]
    assert rr and proxy(srv) in rr[0], provider.events()
    # The provider echoes RTP: our own tone comes back through the B2BUA.
    samples, rate = audio.load(p.record)
    heard = audio.segment(samples, rate, *window(r, r["media_at"] + 1.0, r["hangup_sent_at"]))
    assert audio.hears_tone(heard, rate, 440)
    assert "outbound ext=1001 number=011999998888 trunk=provider1" in srv.log()


def test_ten_calls_at_once_reach_the_trunk_at_two_per_second(server_factory, phone, provider):
    srv = server_factory(**pbx_overrides(provider.port))
    p = phone(
        f"sip:0011999990000@{proxy(srv)}",
        "wait_media 8; wait 2; hangup",
        record=False,
        bind=ports.loopback_ip(),
        calls=10,
        rate=200,
        extra=register("1001", srv),
    )
    reports = p.result(timeout=60)
    refused = [r for r in reports if r.get("code") == 503]
    placed = [r for r in reports if "confirmed_at" in r]
    assert len(placed) + len(refused) == 10, [(r.get("code"), r.get("headers")) for r in reports]
    assert len(placed) == 2, [r.get("code") for r in reports]
    assert all(r["headers"].get("Retry-After") == "1" for r in refused)
    ticks = [t for t, e in provider.events() if e.startswith("INVITE")]
    assert busiest_window(ticks, 1000) <= 2, ticks


def test_did_routed_to_an_extension(server_factory, phone, provider):
    # The provider's trunk makes its address trusted to deliver DID calls.
    srv = server_factory(
        **pbx_overrides(provider.port, dids={"+551130002000": {"extension": "1002"}})
    )
    callee = answering_extension(phone, srv)
    caller = phone(
        srv.uri("+551130002000"),
        "wait_media 8; tone 440; wait 3.5; hangup",
        bind="127.0.0.1",  # a trunk provider's address (the DID call comes from it)
        extra=via_proxy(srv),
    )
    ra, rb = caller.result(), callee.result()
    assert "error" not in ra and rb["dialed"] == "1002", (ra, rb)
    assert_two_way_audio(caller, callee, ra, rb)


def test_only_an_authenticated_extension_calls_out(server_factory, phone, provider):
    """A provider's (or anyone's) call through Kamailio reaches the app server
    unauthenticated, but a forged X-Ponte-Line never makes it an extension."""
    srv = server_factory(**pbx_overrides(provider.port))
    forged = ["--header", "X-Ponte-Line: 1001"]
    # Routed to the app server through Kamailio, as a provider's DID call is.
    routed = phone(
        srv.uri("0011999990000"),
        "wait_end 5",
        record=False,
        bind="127.0.0.1",  # the provider's address
        extra=[*via_proxy(srv), *forged],
    ).result()
    assert routed["code"] == 404, routed
    # Straight to Kamailio: challenged, and no credentials to answer with.
    direct = phone(
        f"sip:0011999990000@{proxy(srv)}",
        "wait_end 5",
        record=False,
        bind=ports.loopback_ip(),
        extra=forged,
    ).result()
    assert direct["code"] == 407, direct
    assert not [e for _, e in provider.events() if e.startswith("INVITE")]
    assert "outbound" not in srv.log()
