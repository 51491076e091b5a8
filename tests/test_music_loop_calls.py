"""A room's waiting music loops without a gap (pjproject patch 0014).

pjmedia's WAV player, with the end-of-file callback pjsua2 always sets,
gave the conference bridge an empty frame at every end of the file, looping
or not: every loop of the waiting music (and of the ringback) had 20 ms of
silence in it. The patched player goes on with the file's start.

The room's `music` is a 1-second 700 Hz tone here (a whole number of
cycles: its loop is seamless in the file), so a participant waiting for
the moderator hears a loop point every second. baresip, behind NAT,
through Kamailio and rtpengine, keys the participant PIN and listens for
several seconds. In its recording, cut into 1 s spans, the tone must break
in fewer than half of them: a gap at the loop point breaks every one (the
stock player failed here with 6 of 6), the odd jitter-buffer glitch of a
loaded machine one now and then.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tests import audio
from tests.baresip import Baresip
from tests.netns import APPLIANCE_IP, Topology, net_fixture  # noqa: F401
from tests.test_edge_calls import ALL_PASSWORDS, PBX, appliance
from tests.test_edge_room_calls import _wait_members

MUSIC_HZ = 700
PERIOD_S = 1.0  # the music file's length: one loop point per second
WINDOW_S = 0.02  # tone_residual's window (hop: half of it)


def test_waiting_music_loops_without_a_gap(server_factory, net: Topology, tmp_path: Path):
    music = audio.write_tone_wav(tmp_path / "music.wav", MUSIC_HZ, PERIOD_S, 8000, -12.0)
    rooms = [
        {"name": "demo", "participant_pin": "1111", "moderator_pin": "9999", "music": str(music)}
    ]
    srv = appliance(server_factory, net, rooms=rooms)
    account = (
        f"<sip:1002@{APPLIANCE_IP}>;auth_pass={ALL_PASSWORDS['1002']};"
        f'outbound="sip:{PBX}";regint=60'
    )
    with Baresip(net.nat[0], tmp_path / "baresip", account=account, tone_hz=None) as bs:
        bs.wait_event("REGISTER_OK")
        bs.dial("conf")
        bs.wait_event("CALL_ESTABLISHED")
        time.sleep(1.5)
        bs.sndcode("1111#")
        _wait_members(srv, 1)
        time.sleep(7.0)
        bs.hangup()
        bs.wait_event("CALL_CLOSED")
        heard = bs.recording()
    samples, rate = audio.load(heard)
    assert rate == 8000

    # The music: the longest run of 100 ms slices (every 50 ms) carrying the tone.
    levels = audio.tone_levels(samples, rate, (MUSIC_HZ,))[:, 0]
    on = levels > 0.5 * levels.max()
    best, start, run_start = (0, 0), 0, None
    for k, v in enumerate([*on, False]):
        if v and run_start is None:
            run_start = k
        elif not v and run_start is not None:
            best = max(best, (k - run_start, run_start))
            run_start = None
    length, start = best
    # Whole periods of it, clear of its first and last slices.
    first = (start + 2) * audio.SLICE / 2
    periods = int(((length - 4) * audio.SLICE / 2 - WINDOW_S) / PERIOD_S)
    assert periods >= 4, f"only {length * audio.SLICE / 2:.1f} s of music heard"
    # One window more, for the last hop's window.
    part = samples[int(first * rate) : int((first + periods * PERIOD_S + WINDOW_S) * rate)]

    # A gap of 20 ms leaves a window or two unfitted by the tone (residual
    # near 1); G.711's noise on a -12 dBFS tone leaves a few %. A gap at the
    # loop point is in every loop (each then lasts 1.02 s, so it is not at
    # one phase of a 1 s fold); the odd glitch of a loaded machine in one.
    residual = audio.tone_residual(part, rate, (MUSIC_HZ,), WINDOW_S)
    per_period = int(PERIOD_S / (WINDOW_S / 2))
    worst = residual[: periods * per_period].reshape(periods, per_period).max(axis=1)
    broken = int(np.sum(worst > 0.3))
    print(f"{periods} loops: worst residual in each {np.round(worst, 3)}")
    assert broken < periods / 2, f"the music breaks in {broken} of {periods} loops: {worst}"
