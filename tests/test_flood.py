"""A call flood at 10x the measured set-up capacity: the app server answers
what it can, sheds the rest with 503, keeps its memory bounded, and the
conference already running keeps its audio."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import audio, ports
from tests.test_spine_calls import window

# The flood saturates both cores: run it with nothing beside it (scripts/test).
pytestmark = pytest.mark.alone

SIPP = Path(__file__).resolve().parent / "sipp" / "flood_uac.xml"
CAPACITY = 150  # calls/s: sip.max_new_calls_per_second, within the measured 200/s
FLOOD_RATE = 10 * CAPACITY
FLOOD_SECONDS = 20
# Stated bound: idle the server holds ~230 MB; each live call about 1 MB more,
# and admission caps the live calls (max_calls, the RTP range).
RSS_BOUND_MB = 1000
MEMBERS = (("9999", 700), ("1111", 440), ("1111", 1200))  # PIN and tone of each member


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_flood_is_shed_with_503_and_the_conference_keeps_its_audio(server_factory, phone):
    # The large range first: 2,004 ports in a row must fit in the block.
    rtp_ports = ports.rtp_range(2000)
    srv = server_factory(
        log_level="info",  # debug logging of 30,000 INVITEs would be the bottleneck
        sip={
            "listen": f"127.0.0.1:{ports.allocate(1)}",
            "rtp_ports": rtp_ports,
            "max_new_calls_per_second": CAPACITY,
        },
    )
    # Room demo: a moderator and two participants, each sending its own tone.
    members = [
        phone(srv.uri("conf"), f"wait_media 5; dtmf {pin}#; tone {hz}; wait_end 90")
        for pin, hz in MEMBERS
    ]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if len(srv.status()["rooms"].get("demo", {}).get("members", [])) == 3:
            break
        time.sleep(0.1)
    time.sleep(2.0)  # the jitter buffers settle before the flood starts

    flood_port = ports.allocate(1)
    media_port = ports.allocate(4)  # SIPp binds -mp to -mp + 3
    t0 = time.monotonic()
    sipp = subprocess.Popen(
        [
            "sipp",
            "-sf",
            str(SIPP),
            "-s",
            "conf",
            "-i",
            "127.0.0.1",
            "-p",
            str(flood_port),
            "-mp",
            str(media_port),
            "-r",
            str(FLOOD_RATE),
            "-m",
            str(FLOOD_RATE * FLOOD_SECONDS),
            "-l",
            "3000",
            "-nostdin",
            f"127.0.0.1:{srv.sip_port}",
        ],
        cwd=srv.log_path.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak_rss = 0.0
    try:
        while time.monotonic() - t0 < FLOOD_SECONDS:  # bounded: 20 s of flood
            peak_rss = max(peak_rss, rss_mb(srv.proc.pid))
            time.sleep(0.5)
    finally:
        sipp.kill()
        sipp.wait(5)
    t1 = time.monotonic()
    status = srv.status()
    for m in members:
        m.proc.send_signal(signal.SIGTERM)  # the phone sends BYE and closes its WAV
    reports = [m.result() for m in members]

    print(f"\nflood: shed={status['shed']} peak_rss={peak_rss:.0f} MB")
    assert srv.proc.poll() is None, "the app server survived the flood"
    # Far more was offered than the 150/s admitted: the rest got 503.
    assert status["shed"] > CAPACITY * FLOOD_SECONDS, status["shed"]
    assert peak_rss < RSS_BOUND_MB, peak_rss
    # Each member still heard the other two throughout the flood.
    hz = [tone for _, tone in MEMBERS]
    for i, (m, r) in enumerate(zip(members, reports, strict=True)):
        samples, rate = audio.load(m.record)
        during = audio.segment(samples, rate, *window(r, t0 + 1.0, t1))
        assert len(during) > rate * (FLOOD_SECONDS - 5)
        for j, other in enumerate(hz):
            if j != i:
                gap = audio.longest_gap(during, rate, other)
                print(f"member {i} hears {other} Hz: longest gap {gap * 1000:.0f} ms")
                assert gap <= 0.1, f"member {i} lost {other} Hz for {gap:.2f} s"
