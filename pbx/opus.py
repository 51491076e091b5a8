"""Opus encoder settings the app server applies to every Opus leg.

A plain value (no pjsua2 here): provisioning validates `sip.opus` from the
YAML, the server hands this to the adapter (pbx/sipua.py), which gives it to
pjmedia's Opus codec before any call is made.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpusSettings:
    """How pjmedia's Opus encoder runs on each leg.

    complexity: 0-10, libopus's speed/quality trade (CPU per leg rises with it;
        bench/opus_cost.py measures it).
    bitrate: target bits per second, 6000-510000; 0 lets libopus choose for
        the clock rate (and a peer's `maxaveragebitrate` still caps it).
    dtx: discontinuous transmission: no packets while a leg is silent.
    fec: in-band forward error correction (`useinbandfec=1`), which lets the
        far end rebuild a lost packet from the next one.
    cbr: constant bit rate instead of variable.
    """

    complexity: int = 5
    bitrate: int = 24000
    dtx: bool = False
    fec: bool = True
    cbr: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.complexity <= 10:
            raise ValueError(f"opus complexity must be 0-10, got {self.complexity}")
        if self.bitrate and not 6000 <= self.bitrate <= 510000:
            raise ValueError(f"opus bitrate must be 0 or 6000-510000 bps, got {self.bitrate}")
