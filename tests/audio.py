"""What a caller heard, measured from its recording with numpy."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def load(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples as float in [-1, 1] and the sample rate; of a stereo file (a
    baresip Opus decoder's), the first channel."""
    with wave.open(str(path), "rb") as w:
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    return data[::channels] / 32768.0, rate


def segment(samples: np.ndarray, rate: int, start: float, end: float) -> np.ndarray:
    """Samples between `start` and `end` seconds from the recording's start."""
    return samples[max(0, int(start * rate)) : max(0, int(end * rate))]


def rms(samples: np.ndarray) -> float:
    """Root-mean-square level (0 for silence)."""
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def band_fraction(samples: np.ndarray, rate: int, hz: float, width: float = 25.0) -> float:
    """Share of the segment's energy within ±width Hz of `hz` (0..1)."""
    if len(samples) < rate // 10:
        return 0.0
    windowed = samples * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(windowed)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1.0 / rate)
    total = spectrum[freqs > 50].sum()
    if total <= 0:
        return 0.0
    band = spectrum[(freqs >= hz - width) & (freqs <= hz + width)].sum()
    return float(band / total)


def hears_tone(samples: np.ndarray, rate: int, hz: float) -> bool:
    """A tone is heard: loud enough and holding most of the energy."""
    return rms(samples) > 0.01 and band_fraction(samples, rate, hz) > 0.5


def speech_like(samples: np.ndarray, rate: int) -> bool:
    """Not silence and not a pure tone: energy spread over the voice band."""
    if rms(samples) < 0.005:
        return False
    windowed = samples * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(windowed)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1.0 / rate)
    voice = spectrum[(freqs > 150) & (freqs < 3400)]
    # A pure tone puts nearly all energy into a few bins; speech does not.
    top = np.sort(voice)[-20:].sum()
    return bool(voice.sum() > 0 and top / voice.sum() < 0.8)


SLICE = 0.1  # seconds: the granularity at which a steady tone must never go missing
HOLE = 0.7  # a slice whose tone is below this share of its steady level has a hole


def tone_levels(samples: np.ndarray, rate: int, hear: tuple[int, ...]) -> np.ndarray:
    """RMS of each tone in `hear` per 100 ms slice, every 50 ms (rows: slices).

    band_fraction x energy is the tone's own energy, whatever else plays with
    it (a join beep adds energy; it must not count as the tone going missing).
    """
    n = int(SLICE * rate)
    rows = []
    # Slices overlap by half: a hole of 60 ms or more fills most of one of them
    # wherever it falls.
    for i in range(0, len(samples) - n + 1, n // 2):
        part = samples[i : i + n]
        level = rms(part)
        rows.append([level * np.sqrt(band_fraction(part, rate, hz)) for hz in hear])
    return np.array(rows)


def holes(samples: np.ndarray, rate: int, hear: tuple[int, ...]) -> list[str]:
    """Every 100 ms slice in which one of the tones it should carry is missing."""
    levels = tone_levels(samples, rate, hear)
    steady = np.median(levels, axis=0)
    bad = []
    for k, row in enumerate(levels):
        # Below 0.7 of its steady level, at least half of the slice lacks the tone.
        if np.any(row < HOLE * steady):
            shown = ", ".join(f"{hz} Hz {v:.3f}" for hz, v in zip(hear, row, strict=True))
            at = k * SLICE / 2
            bad.append(f"slice at {at:.2f} s: {shown} (steady {np.round(steady, 3)})")
    return bad


def longest_gap(samples: np.ndarray, rate: int, hz: float, step: float = 0.02) -> float:
    """Seconds of the longest run in which a steady tone is missing.

    The tone's amplitude is taken per `step` (20 ms) by projecting onto that
    frequency (a 20 ms window still tells 440, 700 and 1200 Hz apart); a step
    below half the median amplitude counts as missing.
    """
    n = int(step * rate)
    steps = len(samples) // n
    if not steps:
        return 0.0
    frames = samples[: steps * n].reshape(steps, n)
    t = np.arange(n) / rate
    amplitude = np.abs(frames @ np.exp(-2j * np.pi * hz * t)) * 2 / n
    missing = amplitude < 0.5 * np.median(amplitude)
    longest = run = 0
    for m in missing:
        run = run + 1 if m else 0
        longest = max(longest, run)
    return longest * step


def tone_amplitude(samples: np.ndarray, rate: int, hz: float) -> float:
    """Peak amplitude (of full scale) of the `hz` sine in the segment, by a
    Hann-windowed projection onto that frequency: finds a tone far below
    whatever else plays (a -60 dBFS tone next to -10 dBFS ones)."""
    if not len(samples):
        return 0.0
    w = np.hanning(len(samples))
    t = np.arange(len(samples)) / rate
    return float(np.abs(np.sum(samples * w * np.exp(-2j * np.pi * hz * t))) * 2 / w.sum())


def tone_residual(
    samples: np.ndarray, rate: int, hear: tuple[int, ...], frame: float = 0.02
) -> np.ndarray:
    """For each `frame`-long window (every half frame): the RMS of what is left
    once the tones in `hear` are fitted (each its own amplitude and phase, on
    that window) and taken out, over the window's RMS.

    Steady tones leave only the codec's noise (a few %). A click, a dropout, a
    jump of phase or a decoder out of step inside a window leaves far more:
    no pair of sines fits across it. Windows overlap by half, so a
    discontinuity on one window's edge lies inside the next.
    """
    n = int(frame * rate)
    if len(samples) < n:
        return np.zeros(0)
    t = np.arange(n) / rate
    basis = np.column_stack([f(2 * np.pi * hz * t) for hz in hear for f in (np.sin, np.cos)])
    frames = np.lib.stride_tricks.sliding_window_view(samples, n)[:: n // 2]
    coef, *_ = np.linalg.lstsq(basis, frames.T, rcond=None)
    left = frames.T - basis @ coef
    level = np.sqrt((frames**2).mean(axis=1))
    return np.sqrt((left**2).mean(axis=0)) / np.maximum(level, 1e-9)


SYLLABLE_HZ = 4  # swells a second: a whole number, so a 1 s loop stays seamless


def syllable_envelope(n: int, rate: int) -> np.ndarray:
    """`n` samples' gain that swells and fades SYLLABLE_HZ times a second
    between 0.1 and 1 (20 dB), as speech comes in syllables. A steady tone is
    what DTX must not be tested on: libopus's voice detector takes it for
    background noise after about 3 s and sends comfort noise 20 dB down."""
    t = np.arange(n) / rate
    return 0.55 + 0.45 * np.cos(2 * np.pi * SYLLABLE_HZ * t)


def write_tone_wav(
    path: Path, hz: float, seconds: float = 2.0, rate: int = 48000, dbfs: float = -12.0
) -> Path:
    """16-bit mono PCM WAV, by default at 48 kHz (what Chromium's fake capture
    reads) and -12 dBFS; a whole number of cycles so the loop is seamless."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    return write_wav(path, 10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t), rate)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Samples in [-1, 1] as a 16-bit mono PCM WAV (load()'s inverse)."""
    data = (samples * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
    return path
