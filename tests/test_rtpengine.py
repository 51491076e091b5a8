"""rtpengine, ponte's media relay: config, process, ng client, quality figures
and strict-source latching, with the real daemon and real RTP/RTCP on loopback."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pbx.rtpengine import (
    DIRECTION_INBOUND,
    STRICT_FLAGS,
    NgClient,
    RtpEngine,
    RtpEngineError,
    UnknownCallError,
    quality,
    render_config,
)
from provisioning.schema import Config
from tests import ports
from tests.harness import ROOT

INTRUDER = "127.0.0.9"  # any 127.x is the loopback interface on Linux
PCMU_FRAME = 160  # 20 ms at 8 kHz


def make_config(tmp_path: Path, **pbx: object) -> Config:
    """A provisioning with rtpengine on this worker's free ports."""
    return Config.model_validate(
        {
            "pbx": {
                "listen": f"127.0.0.1:{ports.allocate(1)}",
                "media_ports": ports.rtp_range(20),
                "rtpengine_control": f"127.0.0.1:{ports.allocate(1)}",
                **pbx,
            },
            "state_dir": str(tmp_path / "state"),
            "database": str(tmp_path / "ponte.db"),
        }
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[RtpEngine]:
    rtp = RtpEngine(make_config(tmp_path), tmp_path / "rtpengine")
    rtp.start()
    try:
        yield rtp
    finally:
        rtp.stop()


class Endpoint:
    """A fake phone: RTP on an even port, RTCP on the next one."""

    def __init__(self, host: str = "127.0.0.1", ssrc: int = 0) -> None:
        self.host = host
        self.ssrc = ssrc
        port = ports.allocate(2)
        self.rtp = self._bind(port)
        self.rtcp = self._bind(port + 1)
        self.port = port
        self.seq = 0
        self.peer: tuple[str, int] | None = None  # rtpengine's RTP address for us
        self.peer_rtcp: tuple[str, int] | None = None

    def _bind(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((self.host, port))
        return s

    def sdp(self) -> str:
        return (
            f"v=0\r\no=- 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\nt=0 0\r\n"
            f"m=audio {self.port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
        )

    def learn(self, sdp: str) -> None:
        """Where rtpengine told us to send (the SDP it rewrote for us)."""
        host = re.search(r"c=IN IP4 (\S+)", sdp).group(1)  # type: ignore[union-attr]
        port = int(re.search(r"m=audio (\d+)", sdp).group(1))  # type: ignore[union-attr]
        rtcp = re.search(r"a=rtcp:(\d+)", sdp)
        self.peer = (host, port)
        self.peer_rtcp = (host, int(rtcp.group(1)) if rtcp else port + 1)

    def send_rtp(self, count: int, sock: socket.socket | None = None) -> None:
        assert self.peer
        for _ in range(count):
            header = struct.pack(
                "!BBHII", 0x80, 0, self.seq & 0xFFFF, self.seq * PCMU_FRAME, self.ssrc
            )
            (sock or self.rtp).sendto(header + b"\xff" * PCMU_FRAME, self.peer)
            self.seq += 1
            time.sleep(0.002)

    def send_sr(self) -> int:
        """An RTCP sender report; returns its NTP middle 32 bits (the LSR
        a receiver report quotes back)."""
        assert self.peer_rtcp
        now = time.time() + 2208988800  # NTP epoch
        msw, lsw = int(now), int((now % 1) * 2**32)
        body = struct.pack(
            "!IIIIII", self.ssrc, msw, lsw, self.seq * PCMU_FRAME, self.seq, self.seq * 160
        )
        self.rtcp.sendto(struct.pack("!BBH", 0x80, 200, len(body) // 4) + body, self.peer_rtcp)
        return ((msw & 0xFFFF) << 16) | (lsw >> 16)

    def send_rr(
        self, about: int, fraction: int, lost: int, jitter: int, lsr: int, dlsr_s: float
    ) -> None:
        """An RTCP receiver report about `about`'s stream: `fraction` lost out
        of 256, `lost` in total, `jitter` in RTP clock units (8 kHz)."""
        assert self.peer_rtcp
        block = struct.pack(
            "!IIIIII",
            about,
            (fraction << 24) | lost,
            self.seq,
            jitter,
            lsr,
            int(dlsr_s * 65536),
        )
        body = struct.pack("!I", self.ssrc) + block
        self.rtcp.sendto(struct.pack("!BBH", 0x81, 201, len(body) // 4) + body, self.peer_rtcp)

    def receive(
        self, sock: socket.socket | None = None, expect: int = 0, window: float = 0.4
    ) -> list[bytes]:
        """Datagrams arriving within `window` seconds of the last one, or at
        once when `expect` of them (and a moment for any extra) came."""
        s = sock or self.rtp
        got: list[bytes] = []
        s.settimeout(window)
        try:
            while True:
                got.append(s.recv(2048))
                if expect and len(got) >= expect:
                    s.settimeout(0.05)
        except TimeoutError:
            return got

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


@pytest.fixture
def endpoints() -> Iterator[tuple[Endpoint, Endpoint]]:
    a, b = Endpoint(ssrc=0x1111AAAA), Endpoint(ssrc=0x2222BBBB)
    yield a, b
    a.close()
    b.close()


def set_up_call(
    ng: NgClient, a: Endpoint, b: Endpoint, flags: tuple[str, ...] = STRICT_FLAGS
) -> tuple[str, str, str]:
    """A (a phone, external) offers, B (the app server, internal) answers."""
    call_id, from_tag, to_tag = f"{uuid.uuid4()}@test", "tag-a", "tag-b"
    offer = ng.offer(
        call_id, from_tag, a.sdp(), {"direction": list(DIRECTION_INBOUND), "flags": list(flags)}
    )
    b.learn(offer["sdp"])
    answer = ng.answer(call_id, from_tag, to_tag, b.sdp(), {"flags": list(flags)})
    a.learn(answer["sdp"])
    assert a.peer != b.peer  # one rtpengine port for each side
    return call_id, from_tag, to_tag


def test_config_has_userspace_relay_nat_address_and_quality_settings(tmp_path):
    cfg = make_config(tmp_path, listen="192.0.2.10:5060", public_address="203.0.113.7")
    conf = render_config(cfg, tmp_path)
    lo, hi = cfg.pbx.media_range
    assert "interface = internal/127.0.0.1;external/192.0.2.10!203.0.113.7\n" in conf
    for line in (
        "table = -1",
        f"port-min = {lo}",
        f"port-max = {hi}",
        f"listen-ng = {cfg.pbx.rtpengine_control}",
        "endpoint-learning = immediate",
        "mos = LQ",
        "delete-delay = 30",
        "foreground = true",
    ):
        assert f"\n{line}\n" in conf
    assert "recording" not in conf


def test_relays_rtp_and_rtcp_and_reports_per_direction_quality(engine, endpoints):
    a, b = endpoints
    ng = engine.client()
    call_id, from_tag, to_tag = set_up_call(ng, a, b)
    assert call_id in ng.list_calls()

    a.send_rtp(50)
    assert len(b.receive(expect=50)) == 50
    b.send_rtp(40)
    assert len(a.receive(expect=40)) == 40

    # Both send an SR; each answers the other's with an RR quoting it, as
    # real endpoints do (rtpengine 10.5 ignores an RR whose LSR/DLSR are 0).
    lsr_a, lsr_b = a.send_sr(), b.send_sr()
    assert len(b.receive(b.rtcp, 1)) == 1 and len(a.receive(a.rtcp, 1)) == 1  # SRs relayed
    time.sleep(0.2)
    # B lost a quarter of A's packets (64/256), 12 in all, jitter 160 (20 ms).
    # One after the other, each relayed before the next is sent: rtpengine
    # reads the two sides on threads of their own, and the end-to-end RTT
    # below needs A's RR handled after B's (sent together, a loaded machine
    # sometimes handled them the other way round).
    b.send_rr(a.ssrc, fraction=64, lost=12, jitter=160, lsr=lsr_a, dlsr_s=0.1)
    assert len(a.receive(a.rtcp, 1)) == 1  # B's RR relayed
    a.send_rr(b.ssrc, fraction=0, lost=0, jitter=80, lsr=lsr_b, dlsr_s=0.1)
    assert len(b.receive(b.rtcp, 1)) == 1  # A's RR relayed

    reply = ng.query(call_id)
    q = quality(reply)
    a_to_b, b_to_a = q["directions"][from_tag], q["directions"][to_tag]
    assert (a_to_b["to_tag"], b_to_a["to_tag"]) == (to_tag, from_tag)
    assert a_to_b["codec"] == "PCMU/8000"
    assert (a_to_b["packets"], b_to_a["packets"]) == (50, 40)
    assert a_to_b["dropped"] == b_to_a["dropped"] == 0
    assert a_to_b["rtcp_packets"] == b_to_a["rtcp_packets"] == 2
    # What B's RR said about A's stream, in percent, packets and ms.
    assert a_to_b["packet_loss"] == 25
    assert a_to_b["cumulative_loss"] == 12
    assert a_to_b["jitter"] == 20
    assert (b_to_a["packet_loss"], b_to_a["jitter"]) == (0, 10)
    for d in (a_to_b, b_to_a):
        assert d["reports"] == 1
        assert 1.0 <= d["mos_lowest"] <= d["mos_average"] <= 5.0
        # rtpengine to the reporter and back: the ~0.2 s between SR and RR
        # less the 0.1 s the reporter said it held the SR.
        assert 50 <= d["rtt_leg"] <= 1000
    # The end-to-end RTT needs both legs: known once A's RR came after B's.
    assert b_to_a["rtt"] is not None and b_to_a["rtt"] > b_to_a["rtt_leg"]
    assert a_to_b["mos_average"] < b_to_a["mos_average"]  # 25 % loss hurts

    # After delete, the figures stay queryable for delete-delay.
    deleted = ng.delete(call_id, from_tag)
    assert quality(deleted)["directions"][from_tag]["packet_loss"] == 25
    assert quality(ng.query(call_id))["directions"][to_tag]["packets"] == 40


def test_strict_source_drops_packets_from_other_addresses(engine, endpoints):
    a, b = endpoints
    ng = engine.client()
    call_id, from_tag, to_tag = set_up_call(ng, a, b, STRICT_FLAGS)

    a.send_rtp(5)  # A's first packet latches A's address and port
    assert len(b.receive()) == 5
    b.send_rtp(5)
    assert len(a.receive()) == 5

    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as same_host,
    ):
        intruder.bind((INTRUDER, 0))
        same_host.bind(("127.0.0.1", 0))  # A's address, another port
        a.send_rtp(10, sock=intruder)
        a.send_rtp(10, sock=same_host)
        assert b.receive() == []
        # Towards A too: the answer's flags made B's side strict as well.
        b.send_rtp(10, sock=intruder)
        assert a.receive() == []

    a.send_rtp(5)  # the latched peer still gets through
    assert len(b.receive()) == 5
    q = quality(ng.query(call_id))["directions"]
    assert q[from_tag]["dropped"] == 20 and q[from_tag]["packets"] == 30
    assert q[to_tag]["dropped"] == 10


def test_without_strict_source_another_address_gets_through(engine, endpoints):
    # What the flag buys: without it, a latched stream still accepts others.
    a, b = endpoints
    set_up_call(engine.client(), a, b, flags=())
    a.send_rtp(3)
    assert len(b.receive()) == 3
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
        intruder.bind((INTRUDER, 0))
        a.send_rtp(3, sock=intruder)
    assert len(b.receive()) == 3


def test_ng_client_errors_are_clear(engine):
    ng = engine.client()
    with pytest.raises(UnknownCallError):
        ng.query("no-such-call")
    assert "warning" in ng.delete("no-such-call", "x")  # rtpengine: not an error
    with pytest.raises(RtpEngineError, match="Unrecognized command"):
        ng.request("no such command")
    silent = NgClient("127.0.0.1", ports.allocate(1), timeout=0.2, retries=2)
    with pytest.raises(RtpEngineError, match="did not answer"):
        silent.ping()


def test_child_is_reaped_after_its_ponte_died(tmp_path):
    cfg = make_config(tmp_path)
    first = RtpEngine(cfg, tmp_path / "rt")
    first.start()
    try:
        assert first.alive()
        # A new ponte on the same state finds the old relay and stops it.
        second = RtpEngine(cfg, tmp_path / "rt")
        assert second.running_elsewhere()
        second.start()
        assert first.proc is not None and first.proc.wait(5) is not None
        second.client().ping()
        second.stop()
        assert not second.alive()
    finally:
        first.stop()


def test_start_fails_clearly_when_the_control_port_is_taken(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        cfg = make_config(tmp_path, rtpengine_control=f"127.0.0.1:{port}")
        rtp = RtpEngine(cfg, tmp_path / "rt")
        with pytest.raises(RtpEngineError, match="in use"):
            rtp.start(timeout=3)
        assert not rtp.alive()


def test_refuses_an_address_this_machine_does_not_have(tmp_path):
    # rtpengine itself would start, then fail every offer with "Ran out of ports".
    rtp = RtpEngine(make_config(tmp_path, listen="192.0.2.10:5060"), tmp_path / "rt")
    with pytest.raises(RtpEngineError, match="192.0.2.10"):
        rtp.start()
    assert not rtp.alive()


def test_ponte_rtpengine_becomes_the_relay_and_notifies_systemd(tmp_path):
    cfg = make_config(tmp_path)
    path = tmp_path / "ponte.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_defaults=True)))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ponte.cli", "rtpengine", "--config", str(path)],
        cwd=ROOT,
        env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert notify.recv(4096).startswith(b"READY=1")
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"rtpengine" in cmdline and b"ponte.cli" not in cmdline  # exec'd
        NgClient.for_config(cfg).ping()
        assert (tmp_path / "state/rtpengine/rtpengine.conf").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        notify.close()
    assert proc.returncode == 0
