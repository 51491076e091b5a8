"""The upstream pjproject security fixes that scripts/build-pjsua2 applies.

Each test drives our own pjsua2 build (the wheel in the venv, the library the
app server runs) with the packet that triggered the upstream bug, inside a
throwaway pjsua2 process on loopback, and checks that the process survives
and behaves. docs/security.md lists the advisories and says which patch each
test covers; the tests marked there as "fails without the patch" were run
against the unpatched 2.12.1 build and crashed it.

The victim process runs the app server's own adapter, pbx/sipua.py (one UDP
transport on 127.0.0.1, no sound device, mainThreadOnly, NAT rewriting off,
its SIP screen), answering every call: the code paths are the ones ponte
uses, and nothing but the adapter imports pjsua2.
"""

from __future__ import annotations

import random
import re
import socket
import struct
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# -- the victim: the app server's pjsua2 adapter ------------------------------------------------

VICTIM = textwrap.dedent(
    r"""
    import logging, os, sys, time

    from pbx.sipua import SipUA

    mode, arg, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    # pjsip's log (ponte.pjsip, level 4 as DEBUG) is what the tests read.
    logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format="%(message)s")


    class Events:
        # Answers every call, as the app server does once the IVR takes it.
        def on_incoming(self, call):
            ua.answer(call.leg, 200)

        def on_media_ready(self, leg): pass
        def on_confirmed(self, leg): pass
        def on_digit(self, leg, digit, method): pass
        def on_disconnected(self, leg, code, reason, headers): pass


    # The app server's own adapter, configured as it is; only opus at the
    # clock rate given (sipua's opus_rate) in the opus mode.
    opus = mode == "opus"
    ua = SipUA(
        Events(), "127.0.0.1", 0, (0, 0), user="victim", pj_log_level=4,
        codecs=("opus/48000",) if opus else ("PCMU/8000", "PCMA/8000"),
        opus_rate=int(arg) if opus else 0,
    )
    ua.start()
    if mode == "register":
        ua.add_account("trunk", "sip:trunk@127.0.0.1", registrar=arg,
                       username="trunk", password="secret")
    print(f"READY {ua.bound_port}", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ua.poll(20)
    print("ALIVE", flush=True)
    # Survival is the point; teardown is tested elsewhere.
    os._exit(0)
    """
)


@dataclass
class Victim:
    proc: subprocess.Popen
    sip_port: int

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        """Wait for the process; its exit code (negative: killed by a signal) and log."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return self.proc.returncode, out


def start_victim(mode: str, arg: str = "", seconds: float = 4.0) -> Victim:
    proc = subprocess.Popen(
        [sys.executable, "-c", VICTIM, mode, arg or "-", str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"READY (\d+)", line)
        if m:
            return Victim(proc, int(m.group(1)))
    proc.kill()
    out = proc.communicate()[0]
    raise AssertionError(f"victim did not start:\n{out}")


def assert_survived(victim: Victim) -> str:
    code, out = victim.finish()
    assert code == 0 and "ALIVE" in out, f"pjsua2 died (exit {code}); log tail:\n{out[-3000:]}"
    return out


# -- SIP over UDP by hand -----------------------------------------------------------


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.5)
    return s


def recv_sip(sock: socket.socket, timeout: float) -> tuple[str, tuple[str, int]] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data, addr = sock.recvfrom(65535)
        except TimeoutError:
            continue
        return data.decode("utf-8", "replace"), addr
    return None


def header(msg: str, name: str) -> str:
    m = re.search(rf"^{name}\s*:\s*(.*?)\r$", msg, re.M | re.I)
    return m.group(1) if m else ""


def headers(msg: str, name: str) -> list[str]:
    return re.findall(rf"^{name}\s*:\s*(.*?)\r$", msg, re.M | re.I)


def invite(sock: socket.socket, port: int, body: bytes, ctype: str) -> tuple[str, str, str]:
    """Send an INVITE to the victim; returns (call_id, from_tag, branch)."""
    me = sock.getsockname()[1]
    call_id, tag, branch = uuid.uuid4().hex, uuid.uuid4().hex[:8], "z9hG4bK" + uuid.uuid4().hex[:12]
    head = (
        f"INVITE sip:victim@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:attacker@127.0.0.1:{me}>;tag={tag}\r\n"
        f"To: <sip:victim@127.0.0.1:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: <sip:attacker@127.0.0.1:{me}>\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendto(head.encode() + body, ("127.0.0.1", port))
    return call_id, tag, branch


def ack(sock: socket.socket, port: int, resp: str, call_id: str, tag: str) -> None:
    me = sock.getsockname()[1]
    msg = (
        f"ACK sip:victim@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:attacker@127.0.0.1:{me}>;tag={tag}\r\n"
        f"To: {header(resp, 'To')}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 ACK\r\n"
        f"Content-Length: 0\r\n\r\n"
    )
    sock.sendto(msg.encode(), ("127.0.0.1", port))


def final_response(sock: socket.socket, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = recv_sip(sock, deadline - time.monotonic())
        if got is None:
            break
        msg, _ = got
        m = re.match(r"SIP/2\.0 (\d{3})", msg)
        if m and int(m.group(1)) >= 200:
            return msg
    return ""


def sdp_offer(rtp_port: int, codec: str = "111 opus/48000/2") -> bytes:
    pt, name = codec.split(" ", 1)
    return (
        "v=0\r\n"
        "o=attacker 1 1 IN IP4 127.0.0.1\r\n"
        "s=-\r\n"
        "c=IN IP4 127.0.0.1\r\n"
        "t=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP {pt}\r\n"
        f"a=rtpmap:{pt} {name}\r\n"
        "a=sendrecv\r\n"
    ).encode()


# -- pjsua_acc.c: Service-Route (upstream acc03b57c) ----------------------------------


def fake_registrar(sock: socket.socket, routes: int, timeout: float = 8.0) -> int:
    """Challenge the REGISTER, then accept it with `routes` Service-Route headers.

    Returns how many REGISTERs were answered 200.
    """
    accepted = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = recv_sip(sock, deadline - time.monotonic())
        if got is None:
            break
        msg, addr = got
        if not msg.startswith("REGISTER "):
            continue
        common = "".join(
            f"{name}: {value}\r\n"
            for name in ("Via", "From", "Call-ID", "CSeq")
            for value in headers(msg, name)
        )
        to = header(msg, "To") + ";tag=reg1"
        if not header(msg, "Authorization"):
            resp = (
                "SIP/2.0 401 Unauthorized\r\n" + common + f"To: {to}\r\n"
                'WWW-Authenticate: Digest realm="provider", nonce="abc123", algorithm=MD5\r\n'
                "Content-Length: 0\r\n\r\n"
            )
        else:
            contact = header(msg, "Contact").split(";")[0]
            service = "".join(
                f"Service-Route: <sip:sr{i}@127.0.0.1:{sock.getsockname()[1]};lr>\r\n"
                for i in range(routes)
            )
            resp = (
                "SIP/2.0 200 OK\r\n" + common + f"To: {to}\r\n"
                f"Contact: {contact};expires=300\r\n" + service + "Content-Length: 0\r\n\r\n"
            )
            accepted += 1
        sock.sendto(resp.encode(), addr)
        if accepted:
            break
    return accepted


def test_registrar_with_many_service_routes_does_not_smash_the_stack() -> None:
    """A trunk's registrar (or anyone spoofing it over UDP) answering REGISTER
    with more Service-Route headers than pjsua keeps (PJSUA_ACC_MAX_PROXIES, 8):
    2.12.1 writes past its stack array and dies; patched, it logs and ignores
    the route set, and the account stays registered."""
    reg = udp_socket()
    victim = start_victim("register", f"sip:127.0.0.1:{reg.getsockname()[1]}", seconds=3.0)
    try:
        answered = fake_registrar(reg, routes=64)
        assert answered == 1, "the victim never sent an authenticated REGISTER"
    finally:
        reg.close()
    out = assert_survived(victim)
    assert "too many Service-Route headers" in out


# -- sip_multipart.c: parsing (upstream f0fa32a22) and printing (568be8ec2) ----------------


def test_malformed_multipart_invites_are_answered_and_survived() -> None:
    """Multipart bodies are parsed with the message (sip_parser.c), before any
    screen: a body ending right after a boundary (no CRLF), one ending in the
    middle of a closing delimiter, and one with no part at all. Each must get
    a final answer and leave the stack running."""
    victim = start_victim("plain", seconds=4.0)
    sock = udp_socket()
    answers = []
    try:
        bodies = [
            b"--XyZ",  # ends right after the delimiter: 2.12.1 reads past the body
            b"--XyZ-",  # half a closing delimiter
            b"--XyZ--",  # no parts at all
            # one good part, then a last delimiter with nothing after it
            b"--XyZ\r\nContent-Type: application/sdp\r\n\r\n"
            + sdp_offer(4000, "0 PCMU/8000")
            + b"\r\n--XyZ",
        ]
        for body in bodies:
            invite(sock, victim.sip_port, body, "multipart/mixed;boundary=XyZ")
            answers.append(final_response(sock))
    finally:
        sock.close()
    assert_survived(victim)
    for body, resp in zip(bodies, answers, strict=True):
        assert resp, f"no final answer to a multipart body {body[:20]!r}"


# -- opus.c: codec_parse frame count (6c9024511) and FEC buffer size (17897e835) ------------


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 111) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def opus_call(rate: int) -> tuple[Victim, socket.socket, socket.socket, int, str, str, str]:
    """Set up an opus-only call with the victim; returns the victim, the SIP
    and RTP sockets, the victim's RTP port and the dialog identifiers."""
    victim = start_victim("opus", str(rate), seconds=5.0)
    sig, media = udp_socket(), udp_socket()
    offer = sdp_offer(media.getsockname()[1])
    call_id, tag, _ = invite(sig, victim.sip_port, offer, "application/sdp")
    resp = final_response(sig)
    assert resp.startswith("SIP/2.0 200"), f"the opus call was not answered: {resp[:200]!r}"
    ack(sig, victim.sip_port, resp, call_id, tag)
    m = re.search(r"^m=audio (\d+) RTP/AVP (\d+)", resp, re.M)
    assert m and m.group(2) == "111", f"opus was not negotiated: {resp!r}"
    return victim, sig, media, int(m.group(1)), call_id, tag, resp


def test_opus_packet_with_48_frames_does_not_overflow_the_stream() -> None:
    """An opus RTP payload may pack up to 48 frames (code 3, 2.5 ms each);
    pjmedia's stream gives codec_parse() room for 16. 2.12.1's opus parser
    writes them all, past the stack array; patched, it keeps the first 16.
    rtpengine relays payloads as they come, so a phone or a provider can send it."""
    victim, sig, media, rtp_port, *_ = opus_call(48000)
    try:
        ssrc = random.getrandbits(32)
        # TOC: config 16 (CELT NB 2.5 ms), code 3; then CBR, 48 frames of 1 byte.
        burst = bytes([16 << 3 | 3, 48]) + bytes(range(1, 49))
        normal = bytes([16 << 3 | 0]) + bytes(20)
        for i in range(60):
            payload = burst if i % 3 == 2 else normal
            media.sendto(rtp(1000 + i, 160 * i, ssrc, payload), ("127.0.0.1", rtp_port))
            time.sleep(0.02)
    finally:
        sig.close()
        media.close()
    assert_survived(victim)


def test_opus_large_frames_at_8khz_fit_the_fec_buffer() -> None:
    """At an 8 kHz opus clock (pbx/sipua.py's opus_rate), 2.12.1 sizes the FEC
    buffers from the PCM rate (960 bytes) but copies whole encoded frames of up
    to 1275 bytes into them: a heap overflow on every large packet. Patched,
    the buffers hold any encoded frame."""
    victim, sig, media, rtp_port, *_ = opus_call(8000)
    try:
        ssrc = random.getrandbits(32)
        big = bytes([16 << 3 | 0]) + bytes(random.getrandbits(8) for _ in range(1270))
        for i in range(60):
            media.sendto(rtp(2000 + i, 160 * i, ssrc, big), ("127.0.0.1", rtp_port))
            time.sleep(0.02)
    finally:
        sig.close()
        media.close()
    assert_survived(victim)


def test_opus_ptime_changes_and_gaps_are_survived() -> None:
    """Opus packets whose duration changes (60 ms SILK frames after nothing
    decoded yet) with sequence gaps: the jitter buffer prefetches and reports
    losses, so the stream runs opus' PLC before any frame was decoded and
    zero-fills after failed decodes, with a decoder ptime the sender chose.
    2.12.1 sized those writes from the codec frame, not from what was left of
    the output buffer."""
    for rate in (48000, 8000):
        victim, sig, media, rtp_port, *_ = opus_call(rate)
        try:
            ssrc = random.getrandbits(32)
            sixty = bytes([3 << 3 | 0]) + bytes(random.getrandbits(8) for _ in range(40))
            short = bytes([16 << 3 | 0]) + bytes(20)
            for i in range(40):
                payload = sixty if i % 4 else short
                media.sendto(rtp(3000 + 2 * i, 2880 * i, ssrc, payload), ("127.0.0.1", rtp_port))
                time.sleep(0.06)
        finally:
            sig.close()
            media.close()
        assert_survived(victim)
