"""`sip.opus`: the app server's Opus encoder follows the YAML, on real calls.

Opus phones (our softphone offering only opus, at 16 kHz) call the appliance
from the LAN and from behind NAT, through Kamailio and rtpengine, into a
16 kHz room. What the server's encoder sends shows in what a phone receives:
at 8 kbit/s (constant) a 20 ms packet carries at most 20 bytes of Opus (the
default 24 kbit/s sends about 50), and with DTX a silent room sends a packet
every 400 ms instead of every 20 ms (to Opus legs only: a G.711 phone still
gets one every 20 ms).
The audio is checked by tone, so the settings cost no sound.
"""

from __future__ import annotations

import pytest

from tests.netns import Topology, net_fixture  # noqa: F401
from tests.test_edge_calls import appliance, heard, softphone
from tests.test_spine_calls import hash_time

OPUS_PHONE = ["--clock-rate", "16000", "--codecs", "opus/48000", "--opus-rate", "16000"]


def opus_sip(**opus: object) -> dict[str, object]:
    return {
        "listen": "127.0.0.1:5080",
        "rtp_ports": "40000-40199",
        "clock_rate": 16000,
        "codecs": ["opus/48000", "PCMU/8000"],
        "opus": opus,
    }


def test_the_configured_bitrate_reaches_the_phone(server_factory, phone, net: Topology):
    appliance(server_factory, net, sip=opus_sip(bitrate=8000, cbr=True, complexity=3))
    mod = softphone(
        phone,
        net.lan[0],
        "1001",
        "wait_media 5; dtmf 9999#; tone 700; wait 7; hangup",
        "conf",
        extra=OPUS_PHONE,
    )
    part = softphone(
        phone,
        net.nat[0],
        "1002",
        "wait_media 5; wait 1; dtmf 1111#; wait 5; hangup",
        "conf",
        extra=OPUS_PHONE,
    )
    rm, rp = mod.result(), part.result()
    assert "error" not in rm and "error" not in rp, (rm, rp)
    rx = rp["rx"]
    assert rx["codec"].lower() == "opus", rx
    assert rx["packets"] > 200, rx
    # 8,000 bit/s x 20 ms = 160 bits: 20 bytes a packet (pjmedia's
    # repacketizer strips CBR's padding: silence carries less).
    assert 3 * rx["packets"] <= rx["bytes"] <= 20 * rx["packets"], rx
    start = hash_time(rp) + 1.0
    assert heard(part, rp, start, rp["hangup_sent_at"] - 0.3, 700) > 0.3


def test_dtx_stops_the_packets_while_the_room_is_silent(server_factory, phone, net: Topology):
    appliance(server_factory, net, sip=opus_sip(dtx=True))
    mod = softphone(
        phone,
        net.lan[0],
        "1001",
        "wait_media 5; dtmf 9999#; wait 14; hangup",
        "conf",
        extra=OPUS_PHONE,
    )
    # A G.711 phone in the same silent room: silence suppression stays off
    # for the other codecs, whose phones expect a packet every 20 ms.
    pcmu = softphone(
        phone,
        net.nat[0],
        "1002",
        "wait_media 5; wait 1; dtmf 1111#; wait 10; hangup",
        "conf",
        extra=["--codecs", "PCMU/8000"],
    )
    rm, rp = mod.result(), pcmu.result()
    assert "error" not in rm and "error" not in rp, (rm, rp)
    rx = rm["rx"]
    seconds = rm["hangup_sent_at"] - rm["media_at"]
    assert seconds > 14, rm
    # Without DTX: one packet per 20 ms all along. With it, only the
    # prompts (a few seconds) are sent in full; the silence after them
    # costs one packet per 400 ms.
    assert rx["packets"] < 0.5 * 50 * seconds, (rx, seconds)
    assert rp["rx"]["codec"].lower() == "pcmu", rp["rx"]
    pcmu_seconds = rp["hangup_sent_at"] - rp["media_at"]
    assert rp["rx"]["packets"] > 0.9 * 50 * pcmu_seconds, (rp["rx"], pcmu_seconds)


@pytest.mark.parametrize("bad", [{"bitrate": 5000}, {"complexity": 11}, {"dtx": "often"}])
def test_bad_opus_settings_are_refused_with_the_key(bad):
    from provisioning.network import SipConfig

    with pytest.raises(ValueError, match="opus"):
        SipConfig.model_validate({"opus": bad})
