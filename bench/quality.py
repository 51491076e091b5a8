"""Voice quality (PESQ) on real speech, through the bridge and on a direct call.

    bench/quality.py [--loss 3] [--seed 1]

The speech is Debian's `asterisk-core-sounds-en-wav` (8 kHz recordings of a
real voice): 4 prompts of 4-8 s, joined with 1 s of silence into one WAV
that the talking phone plays once (pbx/softphone.py's `play`). Phones sit in
network namespaces (tests/netns.py), on the LAN of an appliance that runs in
its own (Kamailio, rtpengine, the app server):

- "bridge": talker -> room -> listener (both G.711 PCMU phones);
- "direct": talker -> listener, a call between the two phones, no appliance.

Each runs clean and with --loss % of the talker's packets lost each way by
tests/udprelay.py (seeded: the same packets each run). The listener's
recording is cut at each prompt (from the talker's play time, with room
for the delay: PESQ aligns by itself) and scored with the `pesq` package,
narrowband (P.862) for PCMU; the row is the mean of the 4 prompts.

The bridge's delay, RTP in to RTP out plus the listener's jitter buffer
(capped at 200 ms: --jitter-ms), is read by cross-correlating each prompt
with what the listener recorded.

Left for later: the G.722 rows (a 16 kHz room, wideband P.862.2 on the
`-g722` package's recordings, which need a G.722 decoder to become PCM).
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

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import common  # noqa: E402
from pesq import pesq  # noqa: E402

from tests import audio, udprelay  # noqa: E402
from tests.harness import start_server  # noqa: E402
from tests.netns import APPLIANCE_IP, Host, topology  # noqa: E402
from tests.test_edge_calls import PBX, edge_config, reg  # noqa: E402

SOUNDS = Path("/usr/share/asterisk/sounds/en")
PROMPTS = 4
GAP_S = 1.0
LISTENER_PORT = 5070  # the direct call's callee
LISTENER_RTP = "31000-31019"


def pick_speech(rate: int = 8000) -> list[np.ndarray]:
    """The first PROMPTS recordings (by name) of 4 to 8 s: a fixed choice."""
    chosen = []
    for path in sorted(SOUNDS.glob("*.wav")):
        with wave.open(str(path)) as w:
            if w.getframerate() != rate or w.getnchannels() != 1:
                continue
            if not 4 * rate <= w.getnframes() <= 8 * rate:
                continue
        samples, _ = audio.load(path)
        chosen.append(samples)
        if len(chosen) == PROMPTS:
            return chosen
    raise SystemExit(
        f"fewer than {PROMPTS} prompts in {SOUNDS}: apt install asterisk-core-sounds-en-wav"
    )


def write_talk(path: Path, prompts: list[np.ndarray], rate: int) -> list[tuple[float, float]]:
    """One WAV of the prompts with GAP_S silence around each; their (start, end) in s."""
    gap = np.zeros(int(GAP_S * rate))
    parts, spans, at = [gap], [], GAP_S
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
    rep: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if "error" in rep:
        raise RuntimeError(f"softphone: {rep['error']}")
    return rep


def score(
    rec: Path,
    rep: dict[str, Any],
    play_at: float,
    spans: list[tuple[float, float]],
    ref: list[np.ndarray],
) -> tuple[float, float]:
    """Mean PESQ (narrowband) of the prompts and the median delay in ms."""
    samples, rate = audio.load(rec)
    scores, delays = [], []
    for (start, end), prompt in zip(spans, ref, strict=True):
        a = play_at - rep["record_start"] + start - 0.2
        deg = samples[max(0, int(a * rate)) : int((a + end - start + 0.6) * rate)]
        scores.append(pesq(rate, prompt, deg, "nb"))
        corr = np.correlate(deg, prompt, mode="valid")
        delays.append((int(np.argmax(np.abs(corr))) / rate - 0.2) * 1000)
    return float(np.mean(scores)), float(np.median(delays))


def run_case(net: Any, tmp: Path, via: str, loss: float, seed: int, talk: Path) -> dict[str, Any]:
    """One call (bridge or direct), clean or lossy: the listener's recording."""
    talker, listener = net.lan[0], net.lan[1]
    with wave.open(str(talk)) as w:
        talk_seconds = w.getnframes() / w.getframerate()
    seconds = talk_seconds + 8
    play = f"play {talk}; wait {talk_seconds + 1.5:.1f}; hangup"
    srv = None
    relay = None
    try:
        if via == "bridge":
            (tmp / "srv").mkdir()
            srv = start_server(
                tmp / "srv", common.prompt_cache(), netns=net.appliance.name, **edge_config()
            )
            to, ports = APPLIANCE_IP, srv.config["pbx"]["media_ports"]
        else:
            to, ports = listener.ip, LISTENER_RTP
        if loss:
            relay, _ = udprelay.interpose(talker, to, ports, loss, seconds + 30, seed, clean=0.0)
        if via == "bridge":
            lp = softphone(
                listener,
                tmp,
                "listener",
                [
                    *reg("1002"),
                    "--target",
                    f"sip:conf@{PBX}",
                    "--script",
                    f"wait_media 5; dtmf 1111#; wait {seconds + 3:.1f}; hangup",
                ],
            )
            tp = softphone(
                talker,
                tmp,
                "talker",
                [
                    *reg("1001"),
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
                    "--target",
                    f"sip:listener@{listener.ip}:{LISTENER_PORT}",
                    "--script",
                    f"wait_media 5; wait 1; {play}",
                ],
            )
        rt, rl = report(tp), report(lp)
        counts = udprelay.counts(relay) if relay else {}
        return {"talker": rt, "listener": rl, "relay": counts, "rec": tmp / "listener.wav"}
    finally:
        if relay and relay.poll() is None:
            relay.kill()
        if srv is not None:
            srv.stop()
        # Each case starts from a clean namespace table.
        talker.run(["nft", "delete", "table", "ip", "ponte_relay"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loss", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    common.use_bench_ports()
    common.graceful_sigterm()
    load_start, started = common.loadavg(), time.monotonic()
    prompts = pick_speech()
    rows = []
    with tempfile.TemporaryDirectory(prefix="quality-") as d, topology(2, 0, attacker=False) as net:
        talk = Path(d) / "talk.wav"
        spans = write_talk(talk, prompts, 8000)
        for loss in (0.0, args.loss):
            for via in ("bridge", "direct"):
                tmp = Path(d) / f"{via}-{loss:g}"
                tmp.mkdir()
                r = run_case(net, tmp, via, loss, args.seed, talk)
                play_at = r["talker"]["plays"][0][1]
                mos, delay = score(r["rec"], r["listener"], play_at, spans, prompts)
                row = {
                    "codec": "PCMU",
                    "loss_pct": loss,
                    "path": via,
                    "pesq_nb": round(mos, 2),
                    "delay_ms": round(delay),
                    "relay": r["relay"],
                }
                print(row, flush=True)
                rows.append(row)
    common.emit(
        "quality", {"rows": rows, "prompts": PROMPTS, "seed": args.seed}, load_start, started
    )


if __name__ == "__main__":
    main()
