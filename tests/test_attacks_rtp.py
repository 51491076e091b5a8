"""RTP from a stranger aimed at a live call's media port (the attack suite:
tests/attack_helpers.py)."""

from __future__ import annotations

import math
import random
import re
import select
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from tests import audio, ports
from tests.attack_helpers import (
    PhoneFactory,
    ServerFactory,
    StrangerHeard,
    recv_all,
    udp_socket,
    wait_for,
)
from tests.test_spine_calls import window


def ulaw(sample: int) -> int:
    """G.711 mu-law encoding of one 16-bit sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = 7
    while exponent > 0 and not magnitude & (0x4000 >> (7 - exponent)):
        exponent -= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | exponent << 4 | mantissa) & 0xFF


def server_rtp_port(phone_stderr: Path, rtp_range: str) -> int | None:
    """The server's media port from the SDP answer in a softphone's pjsip log."""
    lo, _, hi = rtp_range.partition("-")
    for m in re.finditer(r"m=audio (\d+) ", phone_stderr.read_text(errors="replace")):
        if int(lo) <= int(m.group(1)) <= int(hi):
            return int(m.group(1))
    return None


@dataclass
class RtpAttack:
    """What the stranger sent and what it got back."""

    sent: int
    received: int  # RTP the server sent to the stranger (the room's audio leaking out)
    start: float
    end: float


def rtp_stranger(target: tuple[str, int], seconds: float, burst: int, every: float) -> RtpAttack:
    """Send a loud 1000 Hz PCMU stream with plausible headers (version 2, PT 0,
    one SSRC, consecutive sequence numbers, timestamps +160 per 20 ms) from a
    fresh 127.x address. Packets leave in bursts: pjmedia lets a new source in
    after a run of consecutive packets from it, and the real peer's own packets
    (one per 20 ms) break any slower run."""
    sock = udp_socket(ports.loopback_ip())
    frame = [int(26000 * math.sin(2 * math.pi * 1000 * i / 8000)) for i in range(160)]
    payload = bytes(ulaw(s) for s in frame)  # 1000 Hz fits 160 samples exactly: loopable
    ssrc, seq, ts = random.getrandbits(32), random.getrandbits(16), random.getrandbits(32)
    sent = received = 0
    start = time.monotonic()
    next_burst = start
    while next_burst < start + seconds:
        for _ in range(burst):
            marker = 0x80 if sent == 0 else 0
            header = struct.pack("!BBHII", 0x80, marker, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
            sock.sendto(header + payload, target)
            sent, seq, ts = sent + 1, seq + 1, ts + 160
        next_burst += every
        while (left := next_burst - time.monotonic()) > 0:
            if select.select([sock], [], [], left)[0]:
                sock.recv(2048)
                received += 1
    end = time.monotonic()
    received += len(recv_all(sock, 0.3))
    sock.close()
    return RtpAttack(sent, received, start, end)


def test_rtp_from_a_stranger_does_not_reach_the_room(
    server_factory: ServerFactory, phone: PhoneFactory
) -> None:
    """A caller sends 440 Hz into a room, a second member records. A stranger
    sends ~300 RTP packets of a loud 1000 Hz tone to the first caller's media
    port on the server, from another address: the member must not hear it."""
    srv = server_factory()
    rtp_range = srv.config["sip"]["rtp_ports"]
    caller = phone(
        srv.uri("conf"),
        "wait_media 8; dtmf 9999#; tone 440; wait 8; hangup",
        bind=ports.loopback_ip(),
        extra=["--pj-log-level", "5"],  # logs the SDP answer: the server's media port
    )
    member = phone(
        srv.uri("conf"),
        "wait_media 8; wait 0.3; dtmf 1111#; tone 700; wait 8; hangup",
        bind=ports.loopback_ip(),
    )
    port: list[int] = []
    wait_for(
        lambda: bool(p := server_rtp_port(caller.stderr_path, rtp_range)) and not port.append(p),
        15,
        "the server's SDP answer",
    )
    wait_for(lambda: srv.log().count("join room=demo") >= 2, 15, "both callers in the room")
    time.sleep(1.2)  # a baseline of the room's normal audio
    attack = rtp_stranger(("127.0.0.1", port[0]), seconds=3.0, burst=25, every=0.25)
    rc, rm = caller.result(), member.result()
    assert "error" not in rc and "error" not in rm, (rc, rm)
    assert attack.sent >= 250

    ms, rate = audio.load(member.record)
    cs, _ = audio.load(caller.record)
    before = audio.segment(ms, rate, *window(rm, attack.start - 1.0, attack.start))
    during = audio.segment(ms, rate, *window(rm, attack.start + 0.1, attack.end + 0.2))
    caller_during = audio.segment(cs, rate, *window(rc, attack.start + 0.1, attack.end + 0.2))
    # The set-up works: before the attack the member hears the caller.
    assert audio.hears_tone(before, rate, 440), "the member hears the caller before"
    evidence = (
        f"stranger sent {attack.sent} packets to port {port[0]}; the member heard 1000 Hz at "
        f"{audio.band_fraction(during, rate, 1000):.2f} of its audio (the caller's 440 Hz at "
        f"{audio.band_fraction(during, rate, 440):.2f}, "
        f"{audio.band_fraction(before, rate, 440):.2f} before); "
        f"the caller still heard the room's 700 Hz at "
        f"{audio.band_fraction(caller_during, rate, 700):.2f}; the stranger received "
        f"{attack.received} RTP packets from the server"
    )
    print(evidence)
    if audio.band_fraction(during, rate, 1000) > 0.02:
        raise StrangerHeard(evidence)
    assert audio.hears_tone(during, rate, 440), "the caller is still heard: " + evidence
    assert attack.received == 0, "the room's audio went to the stranger: " + evidence
