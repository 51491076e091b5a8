"""Real calls with the conference bridge at 16 kHz (`sip.clock_rate: 16000`), and
the same calls at the default 8 kHz as the control.

Wideband phones (our softphone with a 16 kHz bridge, offering G.722 only) call
the appliance through Kamailio and rtpengine from the LAN. A 5 kHz tone lies
above what an 8 kHz bridge can carry (half its rate, 4 kHz): it crosses the
room at 16 kHz and not at 8 kHz, while a 440 Hz tone crosses at both. The
prompt a caller hears before keying the PIN is rendered at the bridge's rate:
its sibilants reach above 4 kHz only at 16 kHz. (A browser is a SIP leg with
opus since it joins through the edge: pjsua resamples it like any codec.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ivr.prompts import PromptLibrary
from tests import audio
from tests.netns import Topology, net_fixture  # noqa: F401
from tests.test_edge_calls import appliance, heard, softphone
from tests.test_spine_calls import hash_time, window

RATES = [8000, 16000]
WIDEBAND = ["--clock-rate", "16000", "--codecs", "G722/16000"]
HIGH_HZ = 5000  # only a 16 kHz bridge carries it
LOW_HZ = 440


@pytest.fixture
def prompts_at(prompt_cache: Path):
    """Render the prompts at a rate into the shared cache (once per rate)."""

    def render(rate: int) -> None:
        PromptLibrary(prompt_cache, rate=rate).render_all()

    return render


def high_band_share(samples: np.ndarray, rate: int, low: float = 4300.0) -> float:
    """The share of the energy above `low` Hz (up to G.722's 7 kHz)."""
    windowed = samples * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(windowed)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1.0 / rate)
    total = spectrum[freqs > 50].sum()
    return float(spectrum[(freqs >= low) & (freqs <= 7000)].sum() / total) if total else 0.0


@pytest.mark.parametrize("rate", RATES)
def test_a_5khz_tone_crosses_the_room_only_on_a_16khz_bridge(
    server_factory, phone, net: Topology, prompts_at, rate
):
    prompts_at(rate)
    sip = {"listen": "127.0.0.1:5080", "rtp_ports": "40000-40199", "clock_rate": rate}
    appliance(server_factory, net, sip=sip)
    lan, other = net.lan[0], net.lan[1]
    mod = softphone(
        phone,
        lan,
        "1001",
        f"wait_media 5; dtmf 9999#; tone {HIGH_HZ}; wait 7; hangup",
        "conf",
        extra=WIDEBAND,
    )
    part = softphone(
        phone,
        other,
        "1002",
        f"wait_media 5; wait 1.5; dtmf 1111#; tone {LOW_HZ}; wait 5; hangup",
        "conf",
        extra=WIDEBAND,
    )
    rm, rp = mod.result(), part.result()
    assert "error" not in rm and "error" not in rp, (rm, rp)
    both = hash_time(rp) + 1.0
    end = rp["hangup_sent_at"] - 0.3
    to_part, to_mod = heard(part, rp, both, end, HIGH_HZ), heard(mod, rm, both, end, LOW_HZ)
    assert to_mod > 0.3, f"the moderator heard {LOW_HZ} Hz at {to_mod:.2f}"
    if rate == 16000:
        assert to_part > 0.3, f"{HIGH_HZ} Hz reached the participant at only {to_part:.2f}"
    else:
        assert to_part < 0.02, f"{HIGH_HZ} Hz crossed an 8 kHz bridge ({to_part:.2f})"

    # The prompt before the PIN, as the participant heard it (16 kHz recording).
    samples, rec_rate = audio.load(part.record)
    prompt = audio.segment(samples, rec_rate, *window(rp, rp["media_at"] + 0.3, hash_time(rp)))
    assert rec_rate == 16000 and audio.speech_like(prompt, rec_rate)
    share = high_band_share(prompt, rec_rate)
    if rate == 16000:
        assert share > 0.005, f"the prompt has {share:.4f} of its energy above 4.3 kHz"
    else:
        assert share < 0.002, f"an 8 kHz prompt has {share:.4f} of its energy above 4.3 kHz"
