#!/usr/bin/env python3
"""What `sip.opus` costs: CPU per Opus leg for each encoder setting.

Every Opus leg of the app server encodes its own 20 ms frame 50 times a
second on the bridge clock thread, with libopus (the system's libopus.so.0,
which the pjsua2 build links to: `ldd` on _pjsua2 shows it). This bench
drives that library directly through ctypes, on the same kind of audio a
room sends (a 16 kHz mix of speech-like tones, then silence), and prints for
each complexity and bit rate:

- the encoder's CPU per frame (median of repeated runs, thread CPU time),
- what that is per leg (% of one core at 50 frames a second) and how many
  legs' encoding one core could carry,
- the bytes per packet it produced.

Decoding (what each talker costs) is measured once at the default setting.
The numbers are the encoder's alone: the per-leg RTP, jitter buffer and mix
costs are bench/legs.py's.

    .venv/bin/python bench/opus_cost.py [--seconds 10] [--rate 16000]

Bounded: no network, a fixed amount of audio per setting.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import common  # noqa: E402

OPUS_APPLICATION_VOIP = 2048
OPUS_SET_BITRATE = 4002
OPUS_SET_VBR = 4006
OPUS_SET_COMPLEXITY = 4010
OPUS_SET_INBAND_FEC = 4012
OPUS_SET_SIGNAL = 4024
OPUS_SIGNAL_VOICE = 3001
OPUS_AUTO = -1000
FRAME_MS = 20


def libopus() -> ctypes.CDLL:
    """The system's libopus, as the pjsua2 build uses it."""
    name = ctypes.util.find_library("opus") or "libopus.so.0"
    lib = ctypes.CDLL(name)
    ptr, i32, cint = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int
    err = ctypes.POINTER(ctypes.c_int)
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "opus_encoder_create": (ptr, [i32, cint, cint, err]),
        "opus_encode": (i32, [ptr, ptr, cint, ptr, i32]),
        "opus_encoder_destroy": (None, [ptr]),
        "opus_decoder_create": (ptr, [i32, cint, err]),
        "opus_decode": (cint, [ptr, ptr, i32, ptr, cint, cint]),
        "opus_decoder_destroy": (None, [ptr]),
        "opus_get_version_string": (ctypes.c_char_p, []),
    }
    for fn, (restype, argtypes) in signatures.items():
        getattr(lib, fn).restype = restype
        getattr(lib, fn).argtypes = argtypes
    return lib


def room_audio(rate: int, seconds: float) -> np.ndarray:
    """What a listener's encoder gets: two voices' worth of gliding,
    amplitude-modulated harmonics (speech-like spectra) for 80 % of the
    time, then silence, as int16."""
    t = np.arange(int(rate * seconds)) / rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    signal = 6000 * voice * envelope
    signal[int(0.8 * len(t)) :] = 0
    rng = np.random.default_rng(7)
    signal += rng.normal(0, 30, len(t))  # the line noise a real mix carries
    return np.clip(signal, -32768, 32767).astype(np.int16)


def thread_cpu() -> float:
    return time.clock_gettime(time.CLOCK_THREAD_CPUTIME_ID)


def encode_cost(
    lib: ctypes.CDLL, pcm: np.ndarray, rate: int, complexity: int, bitrate: int, repeat: int
) -> dict[str, float]:
    """CPU per 20 ms frame (µs, median of `repeat` runs) and bytes per packet."""
    frame = rate * FRAME_MS // 1000
    frames = len(pcm) // frame
    out = ctypes.create_string_buffer(1500)
    runs: list[float] = []
    sizes: list[int] = []
    for _ in range(repeat):
        err = ctypes.c_int()
        enc = lib.opus_encoder_create(rate, 1, OPUS_APPLICATION_VOIP, ctypes.byref(err))
        if err.value != 0 or not enc:
            raise RuntimeError(f"opus_encoder_create: {err.value}")
        # As pjmedia's opus.c sets its encoder up (codec_open).
        settings = (
            (OPUS_SET_SIGNAL, OPUS_SIGNAL_VOICE),
            (OPUS_SET_BITRATE, bitrate or OPUS_AUTO),
            (OPUS_SET_INBAND_FEC, 1),
            (OPUS_SET_COMPLEXITY, complexity),
            (OPUS_SET_VBR, 1),
        )
        for request, value in settings:
            # Variadic: every argument's C type spelled out.
            lib.opus_encoder_ctl(ctypes.c_void_p(enc), request, ctypes.c_int(value))
        buf = np.ascontiguousarray(pcm)
        base = buf.ctypes.data
        sizes.clear()
        start = thread_cpu()
        for i in range(frames):
            n = lib.opus_encode(enc, base + 2 * i * frame, frame, out, 1500)
            sizes.append(n)
        runs.append((thread_cpu() - start) / frames * 1e6)
        lib.opus_encoder_destroy(enc)
    us = statistics.median(runs)
    per_leg = us * (1000 / FRAME_MS) / 1e6 * 100
    return {
        "complexity": complexity,
        "bitrate": bitrate,
        "us_per_frame": round(us, 1),
        "core_pct_per_leg": round(per_leg, 3),
        "legs_per_core": int(100 / per_leg) if per_leg else 0,
        "bytes_per_packet": round(statistics.mean(sizes), 1),
    }


def decode_cost(lib: ctypes.CDLL, pcm: np.ndarray, rate: int, repeat: int) -> float:
    """CPU per 20 ms frame (µs) to decode what the default encoder makes."""
    frame = rate * FRAME_MS // 1000
    frames = len(pcm) // frame
    err = ctypes.c_int()
    enc = lib.opus_encoder_create(rate, 1, OPUS_APPLICATION_VOIP, ctypes.byref(err))
    for request, value in ((OPUS_SET_BITRATE, 24000), (OPUS_SET_COMPLEXITY, 5)):
        lib.opus_encoder_ctl(ctypes.c_void_p(enc), request, ctypes.c_int(value))
    packets: list[bytes] = []
    out = ctypes.create_string_buffer(1500)
    buf = np.ascontiguousarray(pcm)
    for i in range(frames):
        n = lib.opus_encode(enc, buf.ctypes.data + 2 * i * frame, frame, out, 1500)
        packets.append(out.raw[:n])
    lib.opus_encoder_destroy(enc)
    pcm_out = np.zeros(frame, dtype=np.int16)
    runs: list[float] = []
    for _ in range(repeat):
        dec = lib.opus_decoder_create(rate, 1, ctypes.byref(err))
        start = thread_cpu()
        for p in packets:
            lib.opus_decode(dec, p, len(p), pcm_out.ctypes.data, frame, 0)
        runs.append((thread_cpu() - start) / len(packets) * 1e6)
        lib.opus_decoder_destroy(dec)
    return round(statistics.median(runs), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per run")
    ap.add_argument("--rate", type=int, default=16000, help="opus clock rate (the bridge's)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--complexities", default="0,1,3,5,8,10")
    ap.add_argument("--bitrates", default="16000,24000,32000")
    args = ap.parse_args()
    started, load_start = time.monotonic(), common.loadavg()
    lib = libopus()
    pcm = room_audio(args.rate, args.seconds)
    rows = []
    for bitrate in (int(b) for b in args.bitrates.split(",")):
        for c in (int(c) for c in args.complexities.split(",")):
            rows.append(encode_cost(lib, pcm, args.rate, c, bitrate, args.repeat))
    decode_us = decode_cost(lib, pcm, args.rate, args.repeat)
    version = lib.opus_get_version_string().decode()
    print(f"## Opus encoder cost per leg ({version}, {args.rate} Hz mono, 20 ms frames)\n")
    print(
        "| bit rate | complexity | µs per frame | % of a core per leg | legs per core "
        "| bytes/packet |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['bitrate']} | {r['complexity']} | {r['us_per_frame']} | "
            f"{r['core_pct_per_leg']} | {r['legs_per_core']} | {r['bytes_per_packet']} |"
        )
    print(f"\nDecoding (24 kbit/s, complexity 5): {decode_us} µs per frame")
    result = {
        "libopus": version,
        "rate": args.rate,
        "encode": rows,
        "decode_us_per_frame": decode_us,
    }
    common.emit("opus_cost", result, load_start, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
