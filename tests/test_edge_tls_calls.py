"""Encrypted calls through the edge (issue 21): SIP over TLS, SRTP (SDES).

Phones in the namespaces of tests/netns.py register and call over TLS to
Kamailio's `pbx.tls.listen`; rtpengine speaks SRTP to them and plain RTP to
the app server on loopback. Audio is checked by tone, both ways; a capture
on the encrypted phone's side proves nothing of it travels in clear.
"""

from __future__ import annotations

import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests import audio
from tests.harness import Server, report
from tests.netns import APPLIANCE_IP, PROVIDER_IP, Host, Topology, net_fixture  # noqa: F401
from tests.pbx_helpers import wait_registered
from tests.test_edge_calls import (
    ALL_PASSWORDS,
    PBX,
    PROVIDER_NAME,
    _wait_rows,
    appliance,
    dial_out_config,
    heard,
    softphone,
)
from tests.test_hold_calls import _wait_for_hold
from tests.test_spine_calls import hash_time

TLS_PORT = 5061
PBX_TLS = f"{APPLIANCE_IP}:{TLS_PORT}"
MOD_TONE, PART_TONE = 700, 440


def make_pair(folder: Path, name: str = APPLIANCE_IP) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key for `name` (an address or
    a DNS name; default the appliance's address)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName={'DNS' if name[-1].isalpha() else 'IP'}:{name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def tls_pbx(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """The edge's `pbx:` with TLS on 5061 (and `extra`)."""
    cert, key = make_pair(tmp_path / "tls")
    return {
        "listen": PBX,
        "media_ports": "30000-30399",
        "rtpengine_control": "127.0.0.1:2223",
        "tls": {"certificate": str(cert), "key": str(key), "ca_list": str(cert)},
        **extra,
    }


def tls_phone(phone, host: Host, number: str, script: str, target: str = "", **kw: Any):
    """Our softphone on `host`, registered over TLS as `number`, with SRTP
    unless `srtp=""`, calling `target` over TLS."""
    srtp = kw.pop("srtp", "mandatory")
    uri = f"sip:{target}@{PBX_TLS};transport=tls" if target else ""
    extra = ["--register", f"{number}:{ALL_PASSWORDS[number]}@{PBX_TLS}", "--tls"]
    if srtp:
        extra += ["--srtp", srtp]
    return phone(
        uri, script, bind=host.ip, netns=host.name, extra=[*extra, *kw.pop("extra", [])], **kw
    )


class Capture:
    """tcpdump on a namespace's interface, written to a pcap file."""

    def __init__(self, host: Host, path: Path) -> None:
        self.path = path
        self.proc = host.popen(
            ["tcpdump", "-i", "any", "-nU", "-s", "2048", "-w", str(path), "host", APPLIANCE_IP],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (path.exists() and path.stat().st_size):
            time.sleep(0.05)
        assert path.exists(), "tcpdump did not start"

    def stop(self) -> list[tuple[str, int, int, bytes]]:
        """Stop it; every packet as (proto, src port, dst port, payload)."""
        time.sleep(0.3)
        self.proc.terminate()
        self.proc.wait(timeout=5)
        return read_pcap(self.path)


def read_pcap(path: Path) -> list[tuple[str, int, int, bytes]]:
    """The IPv4 UDP and TCP packets of a pcap (Linux cooked capture, `-i any`)."""
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4, hex(magic)
    link_len = {113: 16, 276: 20, 1: 14}[linktype]  # SLL, SLL2, Ethernet
    out: list[tuple[str, int, int, bytes]] = []
    pos = 24
    while pos + 16 <= len(data):
        _, _, incl, _ = struct.unpack("<IIII", data[pos : pos + 16])
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ip = frame[link_len:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl, proto = (ip[0] & 0x0F) * 4, ip[9]
        seg = ip[ihl : struct.unpack("!H", ip[2:4])[0]]
        if proto == 17 and len(seg) >= 8:
            sport, dport = struct.unpack("!HH", seg[:4])
            out.append(("udp", sport, dport, seg[8:]))
        elif proto == 6 and len(seg) >= 20:
            sport, dport = struct.unpack("!HH", seg[:4])
            out.append(("tcp", sport, dport, seg[(seg[12] >> 4) * 4 :]))
    return out


def ulaw_decode(payload: bytes) -> np.ndarray:
    """G.711 mu-law bytes as floats in -1..1."""
    u = ~np.frombuffer(payload, dtype=np.uint8).astype(np.int32) & 0xFF
    sign, exp, mant = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    mag = (((mant << 3) + 0x84) << exp) - 0x84
    return np.where(sign, -mag, mag).astype(np.float64) / 32768.0


def assert_nothing_in_clear(packets: list[tuple[str, int, int, bytes]], tone: int) -> None:
    """SIP only as TLS records on 5061, media only as SRTP: the payloads of
    the RTP packets, read as PCMU, hold no trace of the phone's tone (nor of
    anything at all: noise)."""
    sip_udp = [p for p in packets if p[0] == "udp" and 5060 in (p[1], p[2])]
    assert not sip_udp, f"{len(sip_udp)} SIP packets over UDP"
    tls = [p[3] for p in packets if p[0] == "tcp" and TLS_PORT in (p[1], p[2]) and p[3]]
    assert len(tls) >= 4, "no SIP over TLS captured"
    assert all(b"SIP/2.0" not in seg and b"INVITE " not in seg for seg in tls)
    # Each TCP segment here starts a TLS record (handshake 22, data 23), or
    # continues one: the first segments at least carry record headers.
    assert tls[0][:1] == b"\x16" and any(seg[:3] == b"\x17\x03\x03" for seg in tls)
    rtp = [
        p[3]
        for p in packets
        if p[0] == "udp" and len(p[3]) > 12 and p[3][0] >> 6 == 2 and p[3][1] & 0x7F == 0
    ]
    assert len(rtp) > 100, f"only {len(rtp)} RTP packets captured"
    # SRTP keeps the 12-byte header and appends a 4- or 10-byte tag to the
    # 160 encrypted bytes.
    assert all(len(p) in (12 + 160 + 10, 12 + 160 + 4) for p in rtp), {len(p) for p in rtp}
    # Decoded as PCMU, it is noise: neither the tone sent nor the one heard.
    pcm = np.concatenate([ulaw_decode(p[12:172]) for p in rtp])
    for hz in (tone, MOD_TONE, PART_TONE):
        assert audio.band_fraction(pcm, 8000, hz) < 0.05, (hz, audio.band_fraction(pcm, 8000, hz))


def test_tls_srtp_phone_talks_in_a_room_and_nothing_is_in_clear(
    server_factory, phone, net: Topology, tmp_path: Path
) -> None:
    """A LAN phone over TLS with SRTP (the moderator) and a plain UDP phone
    behind the NAT meet in a room and hear each other; a capture on the
    TLS phone's host shows TLS records on 5061 and SRTP, nothing in clear.
    The app server got plain RTP all the same (its history row has
    rtpengine's figures and no loss)."""
    srv = appliance(server_factory, net, pbx=tls_pbx(tmp_path))
    cap = Capture(net.lan[0], tmp_path / "lan0.pcap")
    mod = tls_phone(
        phone,
        net.lan[0],
        "1001",
        f"wait_media 5; dtmf 9999#; tone {MOD_TONE}; wait 8; hangup",
        "conf",
    )
    part = softphone(
        phone,
        net.nat[0],
        "1002",
        f"wait_media 5; wait 1; dtmf 1111#; tone {PART_TONE}; wait 5; hangup",
        "conf",
    )
    rm, rp = mod.result(), part.result()
    packets = cap.stop()
    assert "error" not in rm and "error" not in rp, (rm, rp)
    assert rm["registration"]["code"] == 200, rm["registration"]
    both = hash_time(rp) + 1.0
    assert heard(mod, rm, both, rp["hangup_sent_at"] - 0.3, PART_TONE) > 0.2
    assert heard(part, rp, both, rp["hangup_sent_at"] - 0.3, MOD_TONE) > 0.2
    assert_nothing_in_clear(packets, MOD_TONE)
    rows = _wait_rows(srv, 2, call_type="conference")
    assert all(r["disposition"] == "answered" for r in rows), rows


def test_required_refuses_plain_rtp_and_clear_signalling(
    server_factory, phone, net: Topology, tmp_path: Path
) -> None:
    """pbx.media_encryption: required. A TLS phone offering plain RTP, and a
    phone calling over UDP, each get 488 saying encryption is required (no
    downgrade: nothing joins, no history row); a REGISTER over UDP is
    refused. A TLS phone offering SRTP is let in and hears the entry prompt."""
    srv = appliance(server_factory, net, pbx=tls_pbx(tmp_path, media_encryption="required"))
    plain = tls_phone(phone, net.lan[0], "1001", "wait_media 5; wait 2; hangup", "conf", srtp="")
    udp = phone(
        f"sip:conf@{PBX}", "wait_media 5; wait 2; hangup", bind=net.lan[1].ip, netns=net.lan[1].name
    )
    udp_reg = softphone(phone, net.nat[0], "1003", "")
    rp, ru, rr = plain.result(), udp.result(), udp_reg.result()
    for rep in (rp, ru):
        assert "media_at" not in rep and (rep["code"], rep["reason"]) == (
            488,
            "Encryption Required",
        ), rep
    assert rp["registration"]["code"] == 200, rp["registration"]
    assert rr["registration"]["code"] == 403, rr["registration"]
    assert rr["registration"]["reason"] == "TLS Required", rr["registration"]
    log = Path(srv.config["state_dir"], "kamailio", "kamailio.log").read_text()
    assert "over tls refused (488): media encryption required, offer SRTP" in log, log[-3000:]
    assert "over udp refused (488): media encryption required, call over TLS" in log
    # The same extension with SRTP: in, and hearing the entry prompt.
    ok = tls_phone(phone, net.lan[0], "1001", "wait_media 5; wait 3; hangup", "conf")
    ro = ok.result()
    assert "error" not in ro, ro
    samples, rate = audio.load(ok.record)
    assert audio.speech_like(audio.segment(samples, rate, 0.3, 2.8), rate)
    (row,) = _wait_rows(srv, 1)
    assert row["origin"] == "1001" and row["disposition"] == "answered", row
    assert len(report(srv, "calls")) == 1, report(srv, "calls")


def nat_tls_callee(phone, net: Topology, srv: Server, tmp_path: Path) -> tuple[Capture, Any]:
    """Extension 1002 behind the NAT, registered over TLS, demanding SRTP,
    answering with MOD_TONE; its side captured."""
    cap = Capture(net.nat[0], tmp_path / "nat0.pcap")
    callee = tls_phone(
        phone,
        net.nat[0],
        "1002",
        f"wait_media 8; tone {MOD_TONE}; wait 4; hangup",
        extra=["--answer"],
    )
    wait_registered(srv, "1002")
    return cap, callee


def talked_both_ways_unseen(caller: Any, callee: Any, cap: Capture) -> tuple[dict, dict]:
    """The caller (PART_TONE) and nat_tls_callee heard each other, and its
    capture shows nothing in clear; their reports."""
    ra, rb = caller.result(), callee.result()
    packets = cap.stop()
    assert "error" not in ra and "error" not in rb, (ra, rb)
    start = max(ra["media_at"], rb["media_at"]) + 0.5
    end = min(ra["hangup_sent_at"], rb["ended_at"]) - 0.3
    assert heard(caller, ra, start, end, MOD_TONE) > 0.2
    assert heard(callee, rb, start, end, PART_TONE) > 0.2
    assert_nothing_in_clear(packets, MOD_TONE)
    return ra, rb


def test_a_tls_phone_behind_nat_is_called_on_its_own_connection(
    server_factory, phone, net: Topology, tmp_path: Path
) -> None:
    """An extension registered over TLS from behind the NAT router is called
    by a LAN phone over UDP: Kamailio reaches it over the connection it
    registered on (the router lets nothing in), offers it SRTP, and both
    hear each other; the caller's leg stays plain RTP."""
    srv = appliance(server_factory, net, pbx=tls_pbx(tmp_path))
    cap, callee = nat_tls_callee(phone, net, srv, tmp_path)
    caller = softphone(
        phone, net.lan[0], "1001", f"wait_media 8; tone {PART_TONE}; wait 3; hangup", "1002"
    )
    ra, rb = talked_both_ways_unseen(caller, callee, cap)
    (row,) = _wait_rows(srv, 1, call_type="extension")
    assert (row["origin"], row["destination"], row["disposition"]) == ("1001", "1002", "answered")


def test_baresip_over_tls_with_srtp_joins_a_room(
    server_factory, phone, net: Topology, tmp_path: Path
) -> None:
    """baresip (a phone nobody here wrote) behind the NAT, registered over
    TLS with mandatory SRTP (`mediaenc=srtp-mand`): it keys the PIN and talks
    with a LAN moderator both ways."""
    from tests.baresip import Baresip, visit_room

    appliance(server_factory, net, pbx=tls_pbx(tmp_path))
    mod = softphone(
        phone,
        net.lan[0],
        "1001",
        f"wait_media 5; dtmf 9999#; tone {MOD_TONE}; wait 14; hangup",
        "conf",
    )
    account = (
        f"<sip:1002@{APPLIANCE_IP};transport=tls>;auth_pass={ALL_PASSWORDS['1002']};"
        f'outbound="sip:{PBX_TLS};transport=tls";regint=60;mediaenc=srtp-mand'
    )
    with Baresip(
        net.nat[0], tmp_path / "baresip", account=account, tone_hz=PART_TONE, modules=("srtp.so",)
    ) as bs:
        seen = visit_room(bs, f"sip:conf@{PBX_TLS};transport=tls", "1111#", stay=5.0)
    rm = mod.result()
    assert "error" not in rm, rm
    samples, rate = audio.load(seen.heard)
    room = audio.segment(samples, rate, seen.pin_at - seen.up + 1.0, seen.talked - 0.5)
    share = audio.band_fraction(room, rate, MOD_TONE)
    assert share > 0.2, share
    assert heard(mod, rm, seen.pin_at + 1.5, seen.pin_at + 4.5, PART_TONE) > 0.2
    # Its offer and the answer it got were SRTP (baresip logs both SDPs).
    assert "RTP/SAVP" in seen.trace and "a=crypto:" in seen.trace, seen.trace[-3000:]


def tls_provider(
    server_factory, phone, net: Topology, tmp_path: Path, ca_list: Path, cert: Path, key: Path
) -> tuple[Server, Capture, Any]:
    """The appliance with a TLS trunk (its providers checked against
    `ca_list`), and the provider: our softphone answering over TLS on 5061
    with `cert`, demanding SRTP, its side captured."""
    cfg = dial_out_config()
    cfg["trunks"][0]["transport"] = "tls"
    cfg["pbx"] = tls_pbx(tmp_path)
    cfg["pbx"]["tls"]["ca_list"] = str(ca_list)
    net.hosts({PROVIDER_NAME: PROVIDER_IP})
    srv = server_factory(netns=net.appliance.name, **cfg)
    cap = Capture(net.provider, tmp_path / "provider.pcap")
    guest = phone(
        "",
        "wait_media 5; tone 900; wait_end 30",
        bind=PROVIDER_IP,
        netns=net.provider.name,
        extra=[
            *("--tls", "--tls-port", str(TLS_PORT), "--srtp", "mandatory", "--answer"),
            *("--tls-cert", str(cert), "--tls-key", str(key), "--max-seconds", "40"),
        ],
    )
    return srv, cap, guest


DIAL_OUT = (
    "wait_media 5; dtmf 9999#; tone 440; wait 1; dtmf *1; wait 1; "
    "dtmf 212133334444#; wait 1; dtmf 1; mark confirmed; wait 7; mark bye; hangup"
)


def test_room_dial_out_reaches_a_tls_provider_with_srtp(
    server_factory, phone, net: Topology, tmp_path: Path
) -> None:
    """trunks[].transport: tls. A LAN moderator dials out (*1) through the
    trunk: Kamailio reaches the provider (off the host, by its DNS name) over
    TLS, checking its certificate against pbx.tls.ca_list, and offers it SRTP,
    which the provider demands; they hear each other, both ways. A capture on
    the provider's side shows no clear SIP nor RTP."""
    prov_cert, prov_key = make_pair(tmp_path / "provider", PROVIDER_NAME)
    _, cap, guest = tls_provider(
        server_factory, phone, net, tmp_path, prov_cert, prov_cert, prov_key
    )
    mod = softphone(phone, net.lan[0], "1001", DIAL_OUT, "conf-en")
    rm, rg = mod.result(), guest.result()
    packets = cap.stop()
    assert "error" not in rm, rm
    assert rg.get("dialed") == "0212133334444", rg
    private = (rm["marks"]["confirmed"] + 1.5, rm["marks"]["bye"] - 0.2)
    assert heard(mod, rm, *private, 900) > 0.3, "the moderator hears the provider's guest"
    assert heard(guest, rg, *private, 440) > 0.3, "and the guest hears the moderator"
    assert_nothing_in_clear(packets, 900)


def test_a_tls_provider_with_an_unknown_certificate_gets_no_call(
    server_factory, phone, net: Topology, tmp_path: Path
) -> None:
    """An impostor at the provider's address, its certificate not from
    pbx.tls.ca_list: Kamailio's TLS handshake fails, the dial-out never
    reaches it (nothing of the call is sent to it), and Kamailio says why."""
    ca, _ = make_pair(tmp_path / "provider", PROVIDER_NAME)
    impostor = make_pair(tmp_path / "impostor", PROVIDER_NAME)
    srv, cap, guest = tls_provider(server_factory, phone, net, tmp_path, ca, *impostor)
    mod = softphone(phone, net.lan[0], "1001", DIAL_OUT, "conf-en")
    rm = mod.result()
    guest.proc.terminate()
    rg = guest.result()
    packets = cap.stop()
    assert "error" not in rm, rm
    assert "dialed" not in rg and "media_at" not in rg, rg
    # Nothing of the call reached it, in clear or not (the handshake only),
    # and the edge says why.
    assert not [p for p in packets if p[0] == "udp" or b"INVITE" in p[3]]
    assert not [p for p in packets if p[3][:1] == b"\x17"], "application data sent"
    log = Path(srv.config["state_dir"], "kamailio", "kamailio.log").read_text()
    assert "certificate verify failed" in log, log[-3000:]


def test_a_tls_providers_did_call_reaches_the_room(
    server_factory, phone, net: Topology, tmp_path: Path
) -> None:
    """The TLS trunk's provider calls our DID over TLS with SRTP, from a port
    of its own choosing: the edge knows it by its address, the caller keys
    the PIN and talks with a LAN moderator, both ways; a stranger calling
    the same DID over TLS from elsewhere is challenged like any phone."""
    cfg = dial_out_config()
    cfg["trunks"][0]["transport"] = "tls"
    cfg["pbx"] = tls_pbx(tmp_path)
    net.hosts({PROVIDER_NAME: PROVIDER_IP})
    srv = server_factory(netns=net.appliance.name, **cfg)
    mod = softphone(
        phone,
        net.lan[0],
        "1001",
        f"wait_media 5; dtmf 9999#; tone {MOD_TONE}; wait 8; hangup",
        "conf",
    )
    did = f"sip:+551130001000@{PBX_TLS};transport=tls"
    tls_args = ["--tls", "--srtp", "mandatory"]
    caller = phone(
        did,
        f"wait_media 5; wait 1; dtmf 1111#; tone {PART_TONE}; wait 5; hangup",
        bind=PROVIDER_IP,
        netns=net.provider.name,
        extra=tls_args,
    )
    stranger = phone(
        did, "wait_media 3; hangup", bind=net.lan[1].ip, netns=net.lan[1].name, extra=tls_args
    )
    rm, rc, rs = mod.result(), caller.result(), stranger.result()
    assert "error" not in rc, rc
    both = hash_time(rc) + 1.0
    assert heard(mod, rm, both, rc["hangup_sent_at"] - 0.3, PART_TONE) > 0.2
    assert heard(caller, rc, both, rc["hangup_sent_at"] - 0.3, MOD_TONE) > 0.2
    assert "media_at" not in rs and rs["code"] == 407, rs
    (row,) = _wait_rows(srv, 1, destination="+551130001000")
    assert row["disposition"] == "answered", row


def test_a_tls_phone_holds_and_resumes_with_srtp(
    server_factory, phone, net: Topology, tmp_path: Path
) -> None:
    """A TLS + SRTP participant behind the NAT puts the room on hold and
    takes it back (re-INVITEs over TLS, offering RTP/SAVP again): the app
    server sees the hold, and after the resume both sides hear each other,
    the app's side still plain RTP and the phone's still SRTP. Under
    media_encryption: required (both phones on TLS): its re-INVITEs, SRTP
    over TLS, pass the edge's check as its first INVITE did."""
    srv = appliance(server_factory, net, pbx=tls_pbx(tmp_path, media_encryption="required"))
    mod = tls_phone(
        phone,
        net.lan[0],
        "1001",
        f"wait_media 5; dtmf 9999#; tone {MOD_TONE}; wait 16; hangup",
        "conf",
    )
    part = tls_phone(
        phone,
        net.nat[0],
        "1002",
        f"wait_media 5; wait 1; dtmf 1111#; tone {PART_TONE}; wait 3; hold; wait 3; resume; "
        "mark resumed; wait 5; hangup",
        "conf",
    )
    held = _wait_for_hold(srv, timeout=20)
    rm, rp = mod.result(), part.result()
    assert "error" not in rm and "error" not in rp, (rm, rp)
    assert held is not None, "the hold was never seen"
    assert not rp.get("errors"), rp
    after = (rp["marks"]["resumed"] + 1.5, rp["hangup_sent_at"] - 0.3)
    assert heard(part, rp, *after, MOD_TONE) > 0.2, "the phone hears the room after resume"
    assert heard(mod, rm, *after, PART_TONE) > 0.2, "the room hears the phone after resume"


def test_the_app_calls_a_tls_extension_with_srtp(
    server_factory, phone, net: Topology, tmp_path: Path
) -> None:
    """A provider's DID call (UDP, plain RTP) routed to extension 1002,
    registered over TLS behind the NAT: the app server's call to it leaves
    the edge over TLS offering SRTP (the phone demands it), both hear each
    other, and nothing reaches the phone's side in clear."""
    cfg = dial_out_config()
    cfg["pbx"] = tls_pbx(tmp_path)
    cfg["dids"] = {"+551130001000": {"extension": "1002"}}
    net.hosts({PROVIDER_NAME: PROVIDER_IP})
    srv = server_factory(netns=net.appliance.name, **cfg)
    cap, callee = nat_tls_callee(phone, net, srv, tmp_path)
    caller = phone(
        f"sip:+551130001000@{PBX}",
        f"wait_media 8; tone {PART_TONE}; wait 3; hangup",
        bind=PROVIDER_IP,
        netns=net.provider.name,
        extra=["--port", "5060"],
    )
    ra, rb = talked_both_ways_unseen(caller, callee, cap)
    assert rb["dialed"] == "1002", rb
