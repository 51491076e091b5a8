"""tests/udprelay.py on this host's loopback: it loses about the share of
packets it is told to, the same packets for the same seed, both ways, and
ends by itself when its time is up.

The relay listens on 127.0.0.1 and relays to an echo socket on 127.0.0.2
(same port); nothing leaves the loopback.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
from collections.abc import Iterator

import pytest

from tests import ports, udprelay

PACKETS = 2000


@pytest.fixture
def echo() -> Iterator[tuple[socket.socket, int]]:
    """A UDP socket on 127.0.0.2 at a free port (the relay's far end)."""
    port = ports.allocate(1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.2", port))
    s.settimeout(2.0)
    yield s, port
    s.close()


def start(
    port: int, loss: float, seed: int, seconds: float = 60.0, extra: tuple[str, ...] = ()
) -> subprocess.Popen:
    """The relay at 127.0.0.1:port -> 127.0.0.2:port (with `extra` options), ready to relay."""
    argv = [*udprelay.command("127.0.0.2", str(port), loss, seed, seconds), *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stderr.readline().startswith("ready ")
    return proc


def exchange(echo_sock: socket.socket, port: int, proc: subprocess.Popen) -> tuple[set, set]:
    """Send PACKETS numbered datagrams through the relay, echo each one that
    arrives back through it; the numbers that arrived each way."""
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.settimeout(0.05)
    sender.connect(("127.0.0.1", port))
    there, back = set(), set()
    try:
        for i in range(PACKETS):
            sender.send(struct.pack("!I", i))
            # One packet in flight at a time: no socket buffer overflows, so
            # every loss is the relay's.
            echo_sock.settimeout(0.05)
            try:
                data, addr = echo_sock.recvfrom(64)
            except TimeoutError:
                continue
            there.add(struct.unpack("!I", data)[0])
            echo_sock.sendto(data, addr)
            with contextlib.suppress(TimeoutError):
                back.add(struct.unpack("!I", sender.recv(64))[0])
    finally:
        sender.close()
    return there, back


def test_it_loses_about_the_share_it_is_told_the_same_packets_for_a_seed(echo) -> None:
    echo_sock, port = echo
    runs = []
    for _ in range(2):
        proc = start(port, loss=3.0, seed=7)
        there, back = exchange(echo_sock, port, proc)
        c = udprelay.counts(proc)
        runs.append((there, back))
        assert c["up"] == PACKETS and c["flows"] == 1, c
        assert c["up"] - c["up_dropped"] == len(there), (c, len(there))
        assert c["down"] == len(there) and c["down"] - c["down_dropped"] == len(back), c
        # 3 % of 2,000 is 60 (binomial sd 7.6): within 4 sd either way.
        assert 30 <= c["up_dropped"] <= 90, c
        assert 30 * len(there) / PACKETS <= c["down_dropped"] <= 90, c
    assert runs[0] == runs[1], "the same seed lost different packets"
    proc = start(port, loss=3.0, seed=8)
    there, _ = exchange(echo_sock, port, proc)
    udprelay.counts(proc)
    assert there != runs[0][0], "another seed lost the same packets"


def test_no_loss_relays_everything(echo) -> None:
    echo_sock, port = echo
    proc = start(port, loss=0.0, seed=1)
    there, back = exchange(echo_sock, port, proc)
    c = udprelay.counts(proc)
    assert len(there) == len(back) == PACKETS, c
    assert c["up_dropped"] == c["down_dropped"] == 0, c


def test_it_ends_by_itself_when_its_time_is_up(echo) -> None:
    _, port = echo
    proc = start(port, loss=0.0, seed=1, seconds=1.0)
    # Nobody stops it: it must exit on its own (the wait's timeout only
    # keeps a broken relay from hanging the suite).
    assert proc.wait(timeout=30) == 0
    assert proc.stdout is not None
    # It ran its loop and reported (a crash at start prints no counts).
    assert '"up": 0' in proc.stdout.read()


def rtp(seq: int, loud: bool) -> bytes:
    """A PCMU RTP packet: 160 bytes of digital silence, or of a loud frame."""
    payload = bytes(range(160)) if loud else b"\xff" * 160
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, 160 * seq, 1) + payload


def test_from_voice_loses_the_same_loud_packets_whatever_came_before(echo) -> None:
    # A call's set-up sends a different number of quiet packets by path and
    # by run: counted from the first loud packet, the same ones are lost.
    echo_sock, port = echo
    lost = []
    for quiet in (37, 112):
        proc = start(port, 10.0, 3, extra=("--from-voice",))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.connect(("127.0.0.1", port))
        echo_sock.settimeout(0.05)
        got = set()
        try:
            for i in range(quiet + 300):
                sender.send(rtp(i, loud=i >= quiet))
                with contextlib.suppress(TimeoutError):
                    data, _ = echo_sock.recvfrom(400)
                    got.add(struct.unpack("!H", data[2:4])[0] - quiet)
        finally:
            sender.close()
        c = udprelay.counts(proc)
        assert all(i in got for i in range(-quiet, 0)), "a quiet packet was lost"
        lost.append(sorted(set(range(300)) - got))
        assert c["up_dropped"] == len(lost[-1]) and 10 <= len(lost[-1]) <= 55, c
    assert lost[0] == lost[1]


def event(seq: int, ts: int, digit: int, duration: int, *, start: bool, end: bool) -> bytes:
    """An RFC 4733 telephone-event packet (payload type 101)."""
    header = struct.pack("!BBHII", 0x80, (0x80 if start else 0) | 101, seq, ts, 0x1234)
    return header + struct.pack("!BBH", digit, (0x80 if end else 0) | 10, duration)


def test_drop_event_starts_loses_only_each_digits_first_packet(echo) -> None:
    # A digit as pjmedia sends it over Opus: one start packet, three end
    # packets; between digits, audio. Only the start packets are lost.
    echo_sock, port = echo
    proc = start(port, 0.0, 1, extra=("--drop-event-starts",))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(("127.0.0.1", port))
    echo_sock.settimeout(0.2)
    sent: list[bytes] = []
    for d in range(3):
        sent.append(rtp(10 * d, loud=True))
        ts = 960 * 10 * d
        sent.append(event(10 * d + 1, ts, 1, 960, start=True, end=False))
        sent += [event(10 * d + k, ts, 1, 1600, start=False, end=True) for k in (2, 3, 4)]
    got = []
    try:
        for packet in sent:
            sender.send(packet)
            with contextlib.suppress(TimeoutError):
                got.append(echo_sock.recvfrom(400)[0])
    finally:
        sender.close()
    c = udprelay.counts(proc)
    assert got == [p for p in sent if not udprelay.is_event_start(p)]
    assert len(got) == 12 and c["events_dropped"] == 3 == c["up_dropped"], c


def test_a_loud_frame_is_voice_on_static_and_dynamic_payload_types() -> None:
    """--from-voice starts the loss at the first loud frame: G.711 (static
    type 0) and Opus (dynamic, 96-127) alike; silence, RFC 4733 events and
    RTCP never count."""
    loud = bytes(range(60))  # as many distinct byte values as a loud frame has

    def rtp(pt: int, payload: bytes) -> bytes:
        return struct.pack("!BBHII", 0x80, pt, 1, 160, 7) + payload

    assert udprelay.is_voice(rtp(0, loud * 3))  # PCMU speech
    assert udprelay.is_voice(rtp(111, loud))  # Opus speech at 24 kbit/s
    assert not udprelay.is_voice(rtp(0, b"\xff" * 160))  # PCMU digital silence
    assert not udprelay.is_voice(rtp(111, loud[:8]))  # an Opus frame of silence
    assert not udprelay.is_voice(rtp(101 | 0x80, b"\x01\x0a\x00\xa0"))  # a DTMF event
    assert not udprelay.is_voice(struct.pack("!BBH", 0x81, 200, 12) + loud)  # RTCP SR
