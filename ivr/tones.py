"""Generated signals: entry/exit beeps and the default hold music.

Made from sine segments at set-up, like the prompts, so nothing copyrighted
ships and every signal has a known spectrum that tests can look for. Each is
written at the bridge's clock rate (`sip.clock_rate`), one file per rate.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

from pcm import CLOCK_RATE

AMPLITUDE = 0.3

# name -> [(frequency Hz or 0 for silence, milliseconds), ...]
# The room's signals start with 60 ms of silence: one player plays them to all
# of a room's listeners (ponte/media.py's say_to), and the bridge's talker
# gate keeps a player out of every mix until its first loud frame, so all of
# them start hearing it in the same tick, whatever tick each was linked in.
SIGNALS: dict[str, list[tuple[float, int]]] = {
    "join_tone": [(0, 60), (1400, 180), (0, 80), (1400, 180)],
    "leave_tone": [(0, 60), (1100, 180), (0, 80), (1100, 180)],
    "record_beep": [(1000, 250), (0, 50)],
    "ringback": [(425, 1000), (0, 4000)],  # Brazil's ring-back: 425 Hz, 1 s on, 4 s off
    "limit_warning": [(600, 200), (0, 150), (600, 200), (0, 150), (600, 200)],
    # A slow C-major arpeggio: recognisably "music", easy to find by FFT.
    "hold_music": [(523, 250), (659, 250), (784, 250), (659, 250)] * 4,
}
MUSIC_NOTES = (523, 659, 784)


def write_segments(
    path: Path,
    segments: Sequence[tuple[float, int]],
    rate: int = CLOCK_RATE,
    amplitude: float = AMPLITUDE,
) -> None:
    """Write sine segments to a mono 16-bit WAV, atomically (`amplitude`: of
    full scale)."""
    amp = int(32767 * amplitude)
    frames = bytearray()
    for hz, ms in segments:
        n = int(rate * ms / 1000)
        for i in range(n):
            v = int(amp * math.sin(2 * math.pi * hz * i / rate)) if hz else 0
            frames += v.to_bytes(2, "little", signed=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    os.close(fd)
    with wave.open(tmp, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    os.replace(tmp, path)


def signal_path(cache_dir: Path, name: str, rate: int = CLOCK_RATE) -> Path:
    """The WAV of a named signal at `rate`, generated on first use (the rate is
    in the file name: a cache shared by bridges of different rates never mixes them)."""
    # Under a digest of its segments: a changed signal is made anew.
    digest = hashlib.sha1(repr(SIGNALS[name]).encode()).hexdigest()[:8]
    path = Path(cache_dir) / "signals" / digest / f"{name}-{rate}.wav"
    if not path.exists():
        write_segments(path, SIGNALS[name], rate)
    return path
