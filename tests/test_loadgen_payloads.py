"""The bench's load generator (bench/loadgen.py) sends pre-encoded loops: they
must decode to the tone they were cut from, seamlessly round the loop, or every
capacity figure would be measured on noise."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

import av
import numpy as np
import pytest
from av.audio.codeccontext import AudioCodecContext

from tests import audio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import loadgen  # noqa: E402


def decode(codec: str, payloads: list[bytes]) -> tuple[np.ndarray, int]:
    """The payloads as a decoder at the far end hears them (PyAV's ffmpeg, not ours)."""
    if codec == "pcmu":
        return loadgen.ulaw_decode(b"".join(payloads)), 8000
    name = {"g722": "g722", "opus": "libopus"}[codec]
    ctx = cast(AudioCodecContext, av.CodecContext.create(name, "r"))
    ctx.sample_rate = 16000
    ctx.layout = "mono"
    out = []
    rate = 16000
    for data in payloads:
        for frame in ctx.decode(av.Packet(data)):
            rate = frame.sample_rate  # libopus decodes at 48 kHz whatever was coded
            pcm = frame.to_ndarray().astype(np.float64).reshape(-1)
            if frame.format.name.startswith("s16"):
                pcm /= 32768.0
            out.append(pcm)
    return np.concatenate(out), rate


@pytest.mark.parametrize("codec", sorted(loadgen.CODECS))
def test_tone_loop_decodes_to_the_tone(codec: str) -> None:
    """Three rounds of the 440 Hz loop: the tone at its level, with no hole
    where the loop starts again."""
    loop = loadgen.payload_loop(codec, 440)
    assert len(loop) == loadgen.FRAMES
    if codec != "opus":
        assert {len(p) for p in loop} == {160}
    samples, rate = decode(codec, loop * 3)
    settled = samples[rate // 2 :]  # past the decoder's own start-up
    assert audio.band_fraction(settled, rate, 440) > 0.9
    # A sine of amplitude LEVEL has an RMS of LEVEL / sqrt(2): within 1 dB.
    assert abs(20 * np.log10(audio.rms(settled) / (loadgen.LEVEL / np.sqrt(2)))) < 1.0
    assert audio.longest_gap(settled, rate, 440) < 0.03


@pytest.mark.parametrize("codec", sorted(loadgen.CODECS))
def test_silence_loop_is_silent(codec: str) -> None:
    """The listeners' loop decodes to silence."""
    samples, _ = decode(codec, loadgen.payload_loop(codec, 0) * 2)
    assert audio.rms(samples) < 0.001


def test_dtx_silence_loop_sends_only_the_comfort_noise_updates() -> None:
    """An Opus phone asked for usedtx=1 sends, while silent, a packet about
    every 400 ms (libopus's update), each of them silence."""
    loop = loadgen.dtx_silence_loop()
    sent = [i for i, p in enumerate(loop) if p is not None]
    assert 3 <= len(sent) <= len(loop) // 15
    # Twice round the loop: no silence without an update longer than ~420 ms.
    gaps = np.diff(sent + [i + len(loop) for i in sent])
    assert gaps.max() <= 22
    samples, _ = decode("opus", [p for p in loop if p is not None])
    assert audio.rms(samples) < 0.001


def test_only_an_opus_answer_with_usedtx_asks_for_dtx() -> None:
    """The generator's leg honours the server's usedtx=1 on the Opus payload
    type, and nothing else: not another format's fmtp, not usedtx=0."""
    gen = object.__new__(loadgen.LoadGen)
    gen.codec_name = "opus"
    sdp = "m=audio 4000 RTP/AVP 96 101\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 {}\r\n"
    assert gen._asks_dtx(sdp.format("useinbandfec=1;usedtx=1"))
    assert gen._asks_dtx(sdp.format("usedtx=1; maxplaybackrate=16000"))
    assert not gen._asks_dtx(sdp.format("usedtx=0;useinbandfec=1"))
    assert not gen._asks_dtx(sdp.format("useinbandfec=1") + "a=fmtp:101 usedtx=1\r\n")
    gen.codec_name = "pcmu"
    assert not gen._asks_dtx(sdp.format("usedtx=1"))


@pytest.mark.parametrize("codec", sorted(loadgen.CODECS))
def test_syllable_loop_swells_and_fades_on_the_tone(codec: str) -> None:
    """--syllables: the talker's tone, 4 swells a second some 20 dB deep, round
    the loop with no hole (what DTX's voice detector must take for speech)."""
    samples, rate = decode(codec, loadgen.payload_loop(codec, 440, syllables=True) * 3)
    settled = samples[rate // 2 :]
    assert audio.band_fraction(settled, rate, 440) > 0.9
    slices = settled[: len(settled) // (rate // 40) * (rate // 40)].reshape(-1, rate // 40)
    level = np.sqrt((slices**2).mean(axis=1))
    assert 20 * np.log10(level.max() / level.min()) > 12
