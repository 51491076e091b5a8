"""What a caller heard, measured from its recording with numpy."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def load(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples as float in [-1, 1] and the sample rate."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    return data / 32768.0, rate


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
