"""The conference bridge's audio format: one clock rate for every layer.

pjmedia's conference bridge mixes every leg at one clock rate, `sip.clock_rate` in
the YAML. What is played into the bridge (prompts, signals, the test phone's tones)
is rendered at that rate, and what Python pushes and pulls (the browser's leg) is
framed at it; pjmedia resamples each call's codec to and from it.

This module only names the choices and the default. It imports nothing of ponte, so
every package (ivr, pbx, web, provisioning) may import it without importing upward.
"""

from __future__ import annotations

# 8 kHz suits PCMU/PCMA phones (no resampling); 16 kHz keeps G.722 and wideband
# opus wideband across the room. pjmedia's bridge and our media port
# (pbx/_pjx.c) take any rate from 8 to 48 kHz; these are the ones offered.
CLOCK_RATES: tuple[int, ...] = (8000, 16000, 32000, 48000)
CLOCK_RATE = 8000  # the default: `sip.clock_rate` when the YAML says nothing
FRAME_MS = 20  # every frame on the bridge (and of a port fed by Python)


def frame_samples(rate: int = CLOCK_RATE) -> int:
    """Samples in one frame at `rate` (mono)."""
    return rate * FRAME_MS // 1000


def frame_bytes(rate: int = CLOCK_RATE) -> int:
    """Bytes in one frame at `rate`: mono, signed 16-bit little-endian."""
    return 2 * frame_samples(rate)
