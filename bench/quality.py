"""Voice quality (PESQ) on real speech, through the bridge and on a direct call.

    bench/quality.py [--loss 3] [--seed 1] [--codecs PCMU,G722,OPUS] [--keep DIR]
        [--opus-complexity N]

The speech is Debian's `asterisk-core-sounds-en-wav` (8 kHz recordings of a
real voice) for PCMU and the same prompts from `asterisk-core-sounds-en-g722`
(decoded to 16 kHz with PyAV) for G.722 and Opus (16 kHz): 4 prompts of
4-8 s, joined with 1 s of silence into one WAV that the talking phone plays
once (pbx/softphone.py's `play`). Phones sit in network namespaces
(tests/netns.py), on the LAN of an appliance that runs in its own
(Kamailio, rtpengine, the app server):

- "bridge": talker -> room -> listener, both phones on the codec; PCMU in
  the default 8 kHz room, G.722 and Opus in a 16 kHz room
  (`sip.clock_rate: 16000`);
  with the talker gate on (the default `sip.talker_threshold_dbfs`, and the
  shared encode) and off (`talker_threshold_dbfs: null`); `--paths
  bridge-on-noshare` keeps the gate and turns the shared encode off
  (`sip.shared_encode: false`), to tell the two apart;
- "direct": talker -> listener, a call between the two phones, no appliance.

Each runs clean and with --loss % of the talker's packets lost each way by
tests/udprelay.py, seeded and counted from the talker's first loud packet
(`--from-voice`; the talk WAV opens with a 40 ms noise burst for it): every
path loses the same 20 ms frames of the same speech. Counted from the call's
start, as before, the packets of the PIN and the waits (more on the bridge,
and a few more or less each run) moved the drops onto other syllables, so
the bridge and the direct call were not compared at the same loss.

Scoring: each prompt is found in the listener's recording by
cross-correlation (searched from the talker's play time on, up to
SEARCH_S later), cut with 0.2 s either side and scored with the `pesq`
package, narrowband (P.862) at 8 kHz for PCMU, wideband (P.862.2) at 16 kHz
for G.722 and Opus; the row is the mean of the 4 prompts, its delay (talker's play ->
listener's recording: RTP, the bridge, the listener's jitter buffer, capped
at 200 ms) the median of theirs. A fixed window from the play time, as
before, cut a prompt whose delay had grown in the call.

Holes: 20-ms frames of digital silence in the recording where the prompt is
loud. Neither the codecs nor PLC make them; a jitter buffer that ran dry
and refills (pjmedia's prefetch) does, and each one delays what follows.
They come from CPU starvation of a phone or the server (seen with two busy
loops beside a C build: 3.38 bridge / 3.83 direct clean, a prompt 465 ms
late). Slips: the delay moved by 10 ms or more within a prompt (each loud
quarter-second aligned on its own), a jitter buffer that grew or shed a
frame with PLC over the seam; a slipped prompt scores 0.4-1.2 lower. Seen
on every path, gate on or off and on a direct call (a first try in 4 to 5
of 12 cases a run; most often G.722 through the bridge with the gate on:
8 of 11 tries against 0 of 6 with it off). In the bridge the listener's
buffer mostly stays clean (no
discard, loss or empty frame; its stream gets every packet), while the
app server's buffer for the talker, run at no prefetch, finds itself empty
now and then in the call (pjmedia's "Jitter buffer empty, plc invoked" at
log level 5: the talker's packet, through rtpengine, came just after the
bridge's tick) and sheds the frame again later. A case with holes or slips
is measured once more; the second try counts, the first is kept in the row.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import common  # noqa: E402
from pesq import pesq  # noqa: E402

from tests import audio, ports, udprelay  # noqa: E402
from tests.harness import start_server  # noqa: E402
from tests.netns import APPLIANCE_IP, Host, topology  # noqa: E402
from tests.test_edge_calls import PBX, edge_config, reg  # noqa: E402

# Where Debian's asterisk-core-sounds-en-wav/-g722 put the recordings; `en` is
# a link that only the asterisk-core-sounds-en package (not installed by
# scripts/setup) makes to it.
SOUNDS = next(
    (
        d
        for d in (
            Path("/usr/share/asterisk/sounds/en"),
            Path("/usr/share/asterisk/sounds/en_US_f_Allison"),
        )
        if d.is_dir()
    ),
    Path("/usr/share/asterisk/sounds/en_US_f_Allison"),
)
PROMPTS = 4
GAP_S = 1.0
MARK_AT_S, MARK_S = 0.4, 0.04  # the noise burst --from-voice starts the loss at
SEARCH_S = 1.5  # how much later than its play time a prompt may arrive
EDGE_S = 0.2  # silence either side of a prompt given to PESQ
LISTENER_PORT = 5070  # the direct call's callee
LISTENER_RTP = "31000-31019"
# codec -> the phones' codec, the room's (sip.codecs, sip.clock_rate), the
# speech's rate and package, the PESQ mode.
CODECS: dict[str, dict[str, Any]] = {
    "PCMU": {
        "phone": "PCMU/8000",
        "server": ["PCMU/8000"],
        "rate": 8000,
        "package": "asterisk-core-sounds-en-wav",
        "mode": "nb",
    },
    "G722": {
        "phone": "G722/16000",
        "server": ["G722/16000", "PCMU/8000"],
        "rate": 16000,
        "package": "asterisk-core-sounds-en-g722",
        "mode": "wb",
    },
    # Opus at 16 kHz (a browser's or an Opus phone's wideband call), from the
    # same 16 kHz speech as G.722; the bridge's encoder as `sip.opus` says
    # (--opus-complexity), the phones' at pjmedia's defaults.
    "OPUS": {
        "phone": "opus/48000",
        "phone_extra": ["--opus-rate", "16000"],
        "server": ["opus/48000", "PCMU/8000"],
        "rate": 16000,
        "package": "asterisk-core-sounds-en-g722",
        "mode": "wb",
    },
}
# The bridge's `sip.opus` for the OPUS rows (main() sets it from the options).
SERVER_OPUS: dict[str, Any] = {}


def prompt_names() -> list[str]:
    """The first PROMPTS recordings (by name) of 4 to 8 s at 8 kHz: a fixed choice."""
    chosen = []
    for path in sorted(SOUNDS.glob("*.wav")):
        with wave.open(str(path)) as w:
            if w.getframerate() != 8000 or w.getnchannels() != 1:
                continue
            if not 4 * 8000 <= w.getnframes() <= 8 * 8000:
                continue
        if not path.with_suffix(".g722").exists():
            continue
        chosen.append(path.stem)
        if len(chosen) == PROMPTS:
            return chosen
    raise SystemExit(
        f"fewer than {PROMPTS} prompts in {SOUNDS}: "
        "apt install asterisk-core-sounds-en-wav asterisk-core-sounds-en-g722"
    )


def decode_g722(path: Path) -> np.ndarray:
    """A raw .g722 file as 16 kHz samples in [-1, 1] (FFmpeg's decoder, by PyAV)."""
    with av.open(str(path), format="g722") as c:
        frames = [f.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0])]
    return np.concatenate(frames).astype(np.float64) / 32768.0


def pick_speech(codec: str) -> list[np.ndarray]:
    """The prompts as the codec's package has them, at its rate."""
    out = []
    for name in prompt_names():
        if CODECS[codec]["rate"] == 8000:
            samples, _ = audio.load(SOUNDS / f"{name}.wav")
        else:
            samples = decode_g722(SOUNDS / f"{name}.g722")
        out.append(samples)
    return out


def write_talk(path: Path, prompts: list[np.ndarray], rate: int) -> list[tuple[float, float]]:
    """One WAV: the noise burst, then the prompts with GAP_S silence around
    each; the prompts' (start, end) in s."""
    gap = np.zeros(int(GAP_S * rate))
    lead = gap.copy()
    # Whole 20-ms frames (the phone plays the file from a frame's start), so
    # the burst's frames are the same packets on every run.
    burst = np.random.default_rng(0).standard_normal(int(MARK_S * rate)) * 0.1
    lead[int(MARK_AT_S * rate) : int(MARK_AT_S * rate) + len(burst)] = burst
    parts, spans, at = [lead], [], GAP_S
    for p in prompts:
        parts += [p, gap]
        spans.append((at, at + len(p) / rate))
        at += len(p) / rate + GAP_S
    audio.write_wav(path, np.concatenate(parts), rate)
    return spans


def softphone(host: Host, tmp: Path, name: str, args: list[str]) -> subprocess.Popen[str]:
    """Our softphone in `host`'s namespace, recording to tmp/name.wav."""
    cmd = [sys.executable, "-m", "pbx.softphone", "--bind", host.ip, "--record"]
    cmd += [str(tmp / f"{name}.wav"), *args]
    err = (tmp / f"{name}.err").open("w")
    return host.popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)


def report(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    """The softphone's JSON report."""
    out, _ = proc.communicate(timeout=timeout)
    try:
        rep: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise RuntimeError(f"softphone's output is no report ({exc}): {out[-600:]!r}") from exc
    if "error" in rep:
        raise RuntimeError(f"softphone: {rep['error']}")
    return rep


def xcorr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sum(x[k + i] * y[i]) for k = 0 .. len(x) - len(y) (numpy's "valid"), by FFT."""
    n = 1 << (len(x) + len(y) - 1).bit_length()
    full: np.ndarray = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(y, n)), n)
    return full[: len(x) - len(y) + 1]


def frame_db(x: np.ndarray, n: int) -> np.ndarray:
    """Level of each whole n-sample frame, dB of full scale (-200 for zeros)."""
    f = x[: len(x) // n * n].reshape(-1, n)
    db: np.ndarray = 10 * np.log10(np.mean(f**2, axis=1) + 1e-20)
    return db


def slipped(samples: np.ndarray, begin: int, prompt: np.ndarray, rate: int) -> bool:
    """Whether the delay moved within the prompt: each loud quarter-second of
    it found again within 60 ms of where the whole prompt is, the spread of
    those lags 10 ms or more (a jitter buffer that grew after a
    late burst, or shed a frame, without a hole: PLC filled it)."""
    n, slack = rate // 4, int(0.06 * rate)
    lags = []
    for k in range(0, len(prompt) - n, n):
        chunk = prompt[k : k + n]
        if audio.rms(chunk) < 0.03:  # about -30 dBFS: too little to align on
            continue
        lo = begin + k - slack
        seg = samples[max(0, lo) : begin + k + n + slack]
        if lo < 0 or len(seg) < n + 2 * slack:
            continue
        c = xcorr(seg, chunk)
        j = int(np.argmax(np.abs(c)))
        got = seg[j : j + n]
        if abs(c[j]) < 0.95 * np.sqrt(np.sum(chunk**2) * np.sum(got**2)):
            continue  # a lost packet in it: its lag says little
        lags.append(j - slack)
    return bool(lags) and max(lags) - min(lags) >= rate // 100


def score(
    rec: Path,
    rep: dict[str, Any],
    play_at: float,
    spans: list[tuple[float, float]],
    ref: list[np.ndarray],
    mode: str,
) -> dict[str, Any]:
    """Each prompt found in the recording and scored (see the module docstring)."""
    samples, rate = audio.load(rec)
    at = play_at - rep["record_start"]  # the play's start, in the recording
    edge, frame = int(EDGE_S * rate), rate // 50
    scores, delays, holes, slips = [], [], 0, 0
    for (start, _), prompt in zip(spans, ref, strict=True):
        lo = max(0, int((at + start) * rate))
        seg = samples[lo : lo + len(prompt) + int(SEARCH_S * rate)]
        if len(seg) < len(prompt):
            raise RuntimeError(f"the recording ends before the prompt at {start:.1f} s")
        begin = lo + int(np.argmax(np.abs(xcorr(seg, prompt))))
        deg = samples[max(0, begin - edge) : begin + len(prompt) + edge]
        scores.append(pesq(rate, prompt, deg, mode))
        delays.append((begin / rate - at - start) * 1000)
        got = frame_db(samples[begin : begin + len(prompt)], frame)
        loud = frame_db(prompt, frame)[: len(got)] > -40
        holes += int(np.sum(loud & (got < -150)))
        slips += slipped(samples, begin, prompt, rate)
    return {
        "pesq": round(float(np.mean(scores)), 2),
        "prompts": [round(float(x), 2) for x in scores],
        "delay_ms": round(float(np.median(delays))),
        "delay_spread_ms": round(float(max(delays) - min(delays))),
        "holes": holes,
        "slips": slips,
    }


def server_config(codec: str, gate: bool, share: bool = True) -> dict[str, Any]:
    """The appliance's config: the room's codecs and rate, the gate on or off,
    the shared encode on or off."""
    cfg = edge_config()
    sip = {**cfg["sip"], "codecs": CODECS[codec]["server"], "clock_rate": CODECS[codec]["rate"]}
    if not gate:
        sip["talker_threshold_dbfs"] = None
    if not share:
        sip["shared_encode"] = False
    if codec == "OPUS" and SERVER_OPUS:
        sip["opus"] = dict(SERVER_OPUS)
    cfg["sip"] = sip
    return cfg


def run_case(
    net: Any,
    tmp: Path,
    codec: str,
    via: str,
    loss: float,
    seed: int,
    talk: Path,
    gate: bool = True,
    share: bool = True,
) -> dict[str, Any]:
    """One call (bridge or direct), clean or lossy: the listener's recording."""
    talker, listener = net.lan[0], net.lan[1]
    with wave.open(str(talk)) as w:
        talk_seconds = w.getnframes() / w.getframerate()
    seconds = talk_seconds + 8
    # The listener hangs up first (its report then has what its stream
    # received and its jitter buffer's counts): about 2.5 s after the play's
    # end, the talker 1.5 s later.
    play = f"play {talk}; wait {talk_seconds + 4:.1f}; hangup"
    media = ["--codecs", CODECS[codec]["phone"], "--clock-rate", str(CODECS[codec]["rate"])]
    media += CODECS[codec].get("phone_extra", [])
    srv = None
    relay = None
    # The last case's server is gone: its ports may be given again (else 12
    # cases of ~400 media ports each run out of the block).
    ports.new_test()
    try:
        if via == "bridge":
            (tmp / "srv").mkdir()
            srv = start_server(
                tmp / "srv",
                common.prompt_cache(),
                netns=net.appliance.name,
                **server_config(codec, gate, share),
            )
            to, far_ports = APPLIANCE_IP, srv.config["pbx"]["media_ports"]
        else:
            to, far_ports = listener.ip, LISTENER_RTP
        if loss:
            relay, _ = udprelay.interpose(
                talker, to, far_ports, loss, seconds + 30, seed, clean=0.0, from_voice=True
            )
        if via == "bridge":
            lp = softphone(
                listener,
                tmp,
                "listener",
                [
                    *reg("1002"),
                    *media,
                    "--target",
                    f"sip:conf@{PBX}",
                    "--script",
                    f"wait_media 5; dtmf 1111#; wait {talk_seconds + 5:.1f}; hangup",
                ],
            )
            tp = softphone(
                talker,
                tmp,
                "talker",
                [
                    *reg("1001"),
                    *media,
                    "--target",
                    f"sip:conf@{PBX}",
                    "--script",
                    f"wait_media 5; wait 1.5; dtmf 9999#; wait 1; {play}",
                ],
            )
        else:
            lp = softphone(
                listener,
                tmp,
                "listener",
                [
                    *media,
                    "--answer",
                    "--port",
                    str(LISTENER_PORT),
                    "--rtp",
                    LISTENER_RTP,
                    "--script",
                    f"wait_end {seconds + 10:.1f}",
                ],
            )
            time.sleep(1.0)  # its transport bound before the INVITE
            tp = softphone(
                talker,
                tmp,
                "talker",
                [
                    *media,
                    "--target",
                    f"sip:listener@{listener.ip}:{LISTENER_PORT}",
                    "--script",
                    f"wait_media 5; wait 1; {play}",
                ],
            )
        rt, rl = report(tp), report(lp)
        (tmp / "reports.json").write_text(json.dumps({"talker": rt, "listener": rl}))
        counts = udprelay.counts(relay) if relay else {}
        return {"talker": rt, "listener": rl, "relay": counts, "rec": tmp / "listener.wav"}
    finally:
        if relay and relay.poll() is None:
            relay.kill()
        if srv is not None:
            srv.stop()
        # Each case starts from a clean namespace table.
        talker.run(["nft", "delete", "table", "ip", "ponte_relay"])


def measure(
    net: Any,
    d: Path,
    codec: str,
    via: str,
    gate: bool | None,
    loss: float,
    seed: int,
    talk: Path,
    share: bool = True,
) -> dict[str, Any]:
    """One row: the case scored, measured once more if the recording has holes."""
    spans, prompts = TALKS[codec]
    tries = []
    for attempt in range(2):
        name = f"{codec}-{via}-{'on' if gate else 'off' if gate is not None else 'x'}-{loss:g}"
        name += "" if share else "-noshare"
        tmp = d / f"{name}-{attempt}"
        tmp.mkdir()
        r = run_case(net, tmp, codec, via, loss, seed, talk, gate=gate is not False, share=share)
        play_at = r["talker"]["plays"][0][1]
        got = score(r["rec"], r["listener"], play_at, spans, prompts, CODECS[codec]["mode"])
        got["relay"] = r["relay"]
        # What the listener's stream received and its jitter buffer's counts
        # (the bridge's listener hangs up itself; a direct call's does not).
        got["rx"] = r["listener"].get("rx")
        got["jbuf"] = r["listener"].get("jbuf")
        # Where the relay's loss started, from the play (the burst is at MARK_AT_S).
        got["loss_from_s"] = [round(t - play_at, 3) for t in r["relay"].get("voice_at", [])]
        tries.append(got)
        if not got["holes"] and not got["slips"]:
            break
    row = {"codec": codec, "loss_pct": loss, "path": via, "gate": gate}
    if not share:
        row["shared_encode"] = False
    row |= {"mode": CODECS[codec]["mode"], **tries[-1]}
    if len(tries) > 1:
        row["first_try"] = {k: tries[0][k] for k in ("pesq", "prompts", "holes", "slips")}
    return row


# codec -> (the prompts' spans in the talk WAV, the prompts): set by main().
TALKS: dict[str, tuple[list[tuple[float, float]], list[np.ndarray]]] = {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loss", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--codecs", default="PCMU,G722,OPUS", help="of " + ",".join(CODECS))
    ap.add_argument("--paths", default="bridge-on,bridge-off,direct")
    ap.add_argument("--conditions", default="clean,loss", help="clean, loss or both")
    ap.add_argument("--keep", type=Path, help="keep the recordings in this (new) folder")
    ap.add_argument(
        "--opus-complexity",
        type=int,
        choices=range(11),
        help="the bridge's sip.opus.complexity for the OPUS rows (default: the YAML's)",
    )
    args = ap.parse_args()
    if args.opus_complexity is not None:
        SERVER_OPUS["complexity"] = args.opus_complexity
    common.use_bench_ports()
    common.graceful_sigterm()
    load_start, started = common.loadavg(), time.monotonic()
    codecs = [c.strip().upper() for c in args.codecs.split(",") if c.strip()]
    paths = {
        "bridge-on": ("bridge", True, True),
        "bridge-off": ("bridge", False, True),
        # The gate on and the shared encode off: which of the two a difference
        # between bridge-on and bridge-off comes from (not in the default run).
        "bridge-on-noshare": ("bridge", True, False),
        "direct": ("direct", None, True),
    }
    cases = [paths[p.strip()] for p in args.paths.split(",") if p.strip()]
    if args.keep:
        args.keep.mkdir(parents=True)
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="quality-") as tmpd,
        topology(2, 0, attacker=False) as net,
    ):
        d = args.keep or Path(tmpd)
        for codec in codecs:
            prompts = pick_speech(codec)
            talk = d / f"talk-{codec}.wav"
            TALKS[codec] = (write_talk(talk, prompts, CODECS[codec]["rate"]), prompts)
            losses = [0.0] if "clean" in args.conditions else []
            losses += [args.loss] if "loss" in args.conditions else []
            for loss in losses:
                for via, gate, share in cases:
                    row = measure(net, d, codec, via, gate, loss, args.seed, talk, share)
                    print(row, flush=True)
                    rows.append(row)
    common.emit(
        "quality",
        {"rows": rows, "prompts": prompt_names(), "seed": args.seed, "opus": SERVER_OPUS},
        load_start,
        started,
    )


if __name__ == "__main__":
    main()
