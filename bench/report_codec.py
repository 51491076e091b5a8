"""The codecs' own costs in RESULTS.md (bench/opus_cost.py)."""

from __future__ import annotations

from report_format import Result, _err, f, table


def opus_cost_section(r: Result | None) -> list[str]:
    """What each `sip.opus` setting costs per leg in encoder CPU."""
    out = ["## Opus encoder cost", ""]
    if _err(r):
        return out + _err(r)
    assert r is not None
    out += [
        f"How measured (`bench/opus_cost.py`): the system's {r['libopus']} (the library the "
        "pjsua2 build links to) through ctypes, set up as pjmedia's `opus.c` does (voice, "
        f"in-band FEC, VBR), encoding {r['rate']} Hz mono 20 ms frames of a speech-like room "
        "mix (80 % voiced, 20 % silence); thread CPU time per frame, median of repeated runs. "
        "A leg encodes 50 frames a second on the bridge clock thread: `% of a core per leg` "
        "is that, `legs per core` its inverse (the encoder alone: RTP, jitter buffer and mix "
        "are the capacity series').",
        "",
    ]
    rows = [
        [
            e["bitrate"],
            e["complexity"],
            f(e["us_per_frame"]),
            f(e["core_pct_per_leg"], 3),
            e["legs_per_core"],
            f(e["bytes_per_packet"]),
        ]
        for e in r["encode"]
    ]
    out += table(
        ["bit rate", "complexity", "µs per frame", "% of a core per leg", "legs per core"]
        + ["bytes/packet"],
        rows,
        "rrrrrr",
    )
    out += [
        "",
        f"Decoding (what each talker costs, 24 kbit/s): {f(r['decode_us_per_frame'])} µs "
        f"per frame. loadavg {r.get('loadavg_start')} → {r.get('loadavg_end')}",
        "",
    ]
    return out
