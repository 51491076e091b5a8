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

import re
from pathlib import Path

import numpy as np
import pytest

from tests import audio
from tests.netns import APPLIANCE_IP, Topology, net_fixture  # noqa: F401
from tests.test_edge_calls import ALL_PASSWORDS, PBX, appliance, heard, softphone
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


def opus_phone(phone, host, number: str, script: str):
    """Our softphone on `host`, registered as `number`, calling the room on Opus only."""
    return softphone(phone, host, number, script, "conf", extra=OPUS_PHONE)


def test_the_configured_bitrate_reaches_the_phone(server_factory, phone, net: Topology):
    appliance(server_factory, net, sip=opus_sip(bitrate=8000, cbr=True, complexity=3))
    mod = opus_phone(
        phone, net.lan[0], "1001", "wait_media 5; dtmf 9999#; tone 700; wait 7; hangup"
    )
    part = opus_phone(phone, net.nat[0], "1002", "wait_media 5; wait 1; dtmf 1111#; wait 5; hangup")
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
    mod = opus_phone(phone, net.lan[0], "1001", "wait_media 5; dtmf 9999#; wait 14; hangup")
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


def _syllables(path: Path, hz: int) -> Path:
    """A talker for DTX: two seconds of `hz` in syllables (audio.syllable_envelope)."""
    rate = 16000
    t = np.arange(2 * rate) / rate
    wave = 0.3 * audio.syllable_envelope(len(t), rate) * np.sin(2 * np.pi * hz * t)
    return audio.write_wav(path, wave, rate)


def test_with_dtx_listeners_still_share_one_encode_and_a_silent_phone_is_heard_when_it_talks(
    server_factory, phone, net: Topology, tmp_path
):
    """`dtx: true` on a room: the moderator talks (500 Hz); two participants
    behind the NAT and baresip on the LAN listen. The listeners' phones were
    asked for usedtx=1, and one participant's sends next to nothing while
    silent; it then talks (900 Hz) and is heard at once. The two NAT'd
    listeners' phones are alike and hear the same thing, so they share one
    encode (pjproject patch 0019:
    before it, DTX kept every Opus leg out of the shared encode, and the
    bridge's capacity halved). Checked by tone on both sides, by the server's
    count of shared frames, and by what the participant sent."""
    from tests.baresip import Baresip, visit_room

    srv = appliance(server_factory, net, sip=opus_sip(dtx=True))
    talk500, talk900 = (_syllables(tmp_path / f"talk{hz}.wav", hz) for hz in (500, 900))
    mod = opus_phone(
        phone, net.lan[0], "1001", f"wait_media 5; dtmf 9999#; play {talk500} loop; wait 15; hangup"
    )
    part = opus_phone(
        phone,
        net.nat[0],
        "1002",
        f"wait_media 5; wait 1; dtmf 1111#; wait 7; mark talk; play {talk900} loop; wait 4; hangup",
    )
    # A second listener like the participant: the two share one encode.
    listener = opus_phone(
        phone, net.nat[1], "1004", "wait_media 5; wait 1; dtmf 1111#; wait 11; hangup"
    )
    account = (
        f"<sip:1003@{APPLIANCE_IP}>;auth_pass={ALL_PASSWORDS['1003']};"
        f'outbound="sip:{PBX}";regint=60'
    )
    with Baresip(
        net.lan[1], tmp_path / "baresip", account=account, codecs=("opus.so",), rate=16000
    ) as bs:
        visit = visit_room(bs, "conf", "1111#", stay=12.0, before_pin=1.5)
    rm, rp, rl = mod.result(), part.result(), listener.result()
    assert "error" not in rm and "error" not in rp and "error" not in rl, (rm, rp, rl)
    assert "opus/48000" in visit.trace, "baresip's call is not on Opus"
    assert rp["rx"]["codec"].lower() == "opus", rp["rx"]
    # The participant heard the moderator while silent, and the moderator
    # heard it from its first talk on (its encoder came out of DTX).
    talk = rp["marks"]["talk"]
    assert heard(part, rp, talk - 4.0, talk - 0.5, 500) > 0.3
    assert heard(listener, rl, talk - 4.0, talk - 0.5, 500) > 0.3
    assert heard(listener, rl, talk + 0.5, talk + 3.0, 900) > 0.2
    assert heard(mod, rm, talk + 0.5, talk + 3.5, 900) > 0.3
    # baresip (its own Opus decoder) heard the moderator, then both.
    samples, rate = audio.load(visit.heard)
    before = audio.segment(samples, rate, visit.pin_at - visit.up + 2.0, talk - visit.up - 0.5)
    both = audio.segment(samples, rate, talk - visit.up + 0.5, talk - visit.up + 3.0)
    assert audio.band_fraction(before, rate, 500, width=40) > 0.3
    assert audio.band_fraction(both, rate, 900, width=40) > 0.2
    assert audio.band_fraction(both, rate, 500, width=40) > 0.2
    # The listeners shared: frames went out with the group's payload.
    shared = [int(n) for n in re.findall(r"shared encode (\d+),", srv.log())]
    assert shared and shared[-1] > 100, shared[-3:]
    # The participant honoured usedtx=1: 7 s of its ~12 s were silence
    # (prompts are what it hears, not what it sends).
    seconds = rp["hangup_sent_at"] - rp["media_at"]
    assert rp["rx"]["sent"] < 0.75 * 50 * seconds, (rp["rx"], seconds)


@pytest.mark.parametrize("bad", [{"bitrate": 5000}, {"complexity": 11}, {"dtx": "often"}])
def test_bad_opus_settings_are_refused_with_the_key(bad):
    from provisioning.network import SipConfig

    with pytest.raises(ValueError, match="opus"):
        SipConfig.model_validate({"opus": bad})
