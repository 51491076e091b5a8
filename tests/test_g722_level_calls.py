"""A G.722 talker keeps its level after packet loss (issue 22).

pjmedia's G.722 decoder, by default, halves its output for the rest of the
call on the first sample it clips (`PJMEDIA_G722_STOP_PCM_SHIFT_ON_CLIPPING`);
a lost packet puts its ADPCM state off, the next frames overshoot, and from
then on every listener heard that talker 6 dB quieter. scripts/build-pjsua2
builds with the define at 0.

Two wideband phones (G.722 only) meet in a room on a 16 kHz bridge
(`sip.clock_rate: 16000`) through Kamailio and rtpengine. The talker's media
goes through tests/udprelay.py in its own namespace: clean until both are
in the room and the talker's tone has been heard a few seconds (a reference
level), then 3 % of its packets lost each way, with a fixed seed. The
listener hears the talker's tone within 1 dB of its level before the loss.

Checked against the stock build (a venv with the wheel built without the
define, 2026-12-06): the same call read -6.06 dB, and this test failed;
with the define it reads -0.04 dB.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tests import audio, udprelay
from tests.netns import APPLIANCE_IP, Topology, net_fixture  # noqa: F401
from tests.test_edge_calls import appliance, softphone
from tests.test_edge_room_calls import _wait_members
from tests.test_spine_calls import hash_time, window

WIDEBAND = ["--clock-rate", "16000", "--codecs", "G722/16000"]
TONE_HZ = 1000
# Loud: with the stock build a clean call of this tone stays just under the
# decoder's clipping point (-5 dBFS clipped with no loss at all), and the
# first loss tips it over.
TONE_DBFS = -5.5
REFERENCE_S = 3.0  # of the talker's tone in the room before the loss starts
LOSS_PERCENT = 3.0
SEED = 22  # this seed's loss made the stock build's listener 6 dB quieter


def tone_level_db(samples: np.ndarray, rate: int) -> float:
    """The tone's own level in dBFS (its share of the energy, not the PLC's noise)."""
    level = audio.rms(samples) * np.sqrt(audio.band_fraction(samples, rate, TONE_HZ))
    return float(20 * np.log10(max(level, 1e-9)))


def test_a_g722_talker_keeps_its_level_after_packet_loss(
    server_factory, phone, net: Topology, tmp_path: Path
):
    sip = {"listen": "127.0.0.1:5080", "rtp_ports": "40000-40199", "clock_rate": 16000}
    srv = appliance(server_factory, net, sip=sip)
    talker_host, listener_host = net.lan[0], net.lan[1]
    relay, _ = udprelay.interpose(
        talker_host,
        APPLIANCE_IP,
        srv.config["pbx"]["media_ports"],
        LOSS_PERCENT,
        seconds=60,
        seed=SEED,
        clean=None,  # no loss before start_loss()
    )

    def wideband(host, number: str, script: str):
        return softphone(phone, host, number, script, "conf", extra=WIDEBAND)

    listener = wideband(listener_host, "1002", "wait_media 5; dtmf 1111#; wait 25; hangup")
    tone = audio.write_tone_wav(tmp_path / "tone.wav", TONE_HZ, 1.0, 16000, TONE_DBFS)
    talk = f"wait_media 5; wait 1; dtmf 9999#; play {tone} loop; wait 20; hangup"
    talker = wideband(talker_host, "1001", talk)
    # Both in the room, the talker's tone heard for a while: now the loss.
    joined = _wait_members(srv, 2, timeout=30)
    time.sleep(REFERENCE_S)
    loss_at = udprelay.start_loss(relay)
    rt, rl = talker.result(), listener.result()
    assert "error" not in rt and "error" not in rl, (rt, rl)
    c = udprelay.counts(relay)
    print("relay:", c)
    # The talker's media went through the relay, and it lost some of it.
    assert c["up"] > 500 and c["up_dropped"] > 5, c

    samples, rate = audio.load(listener.record)
    assert rate == 16000
    talking = max(hash_time(rt), joined) + 0.5
    before = audio.segment(samples, rate, *window(rl, talking, loss_at))
    # The loss has had its time to clip the decoder (the stock build's level
    # fell within the first seconds of it).
    after = audio.segment(samples, rate, *window(rl, loss_at + 4.0, rt["hangup_sent_at"] - 0.5))
    assert audio.hears_tone(before, rate, TONE_HZ), "the listener never heard the talker"
    level_before, level_after = tone_level_db(before, rate), tone_level_db(after, rate)
    change = level_after - level_before
    print(
        f"tone level before {level_before:.2f} dBFS, during the loss {level_after:.2f}",
        f"({change:+.2f} dB)",
    )
    assert abs(change) <= 1.0, f"the talker's level moved {change:+.2f} dB after the loss"
