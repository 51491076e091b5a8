#!/usr/bin/env python3
"""Conference capacity through the edge, with bench/loadgen.py as the load.

bench/legs.py loads the server with pjsua2 softphones, which cost as much as
the server: on two cores it ran out of machine at 300 G.711 legs. This series
uses the cheap generator instead (raw SIP, pre-encoded RTP loops, one tick),
and puts the legs where phones are: through Kamailio and rtpengine (the
trunk's DID, as bench/relay.py calls it). Per room the first member
(moderator) talks 440 Hz and the second 700 Hz; the rest, and the PCMU probe
legs, send silence frames. G.722 and Opus rooms run a 16 kHz bridge
(`sip.clock_rate: 16000`).

Legs rise in steps (one generator process per step, or `--procs` of them);
after all joined + 1 s a steady window measures the CPU of the app server
(and per thread), rtpengine, Kamailio and the generator apart, how busy the
machine was, and on the probes (kernel arrival stamps) loss and gaps, and
which talkers' tones they heard. Degraded: the health rules of bench/legs.py
(probe loss > 1 %, a gap > 40 ms, server > 90 % of a core, not all joined),
a degraded window measured once more.

    .venv/bin/python bench/capacity.py --codec g711 --room 10 --steps 100,200,400
    .venv/bin/python bench/capacity.py --python /other/venv/bin/python --label before

Bounded: loopback only, every wait a deadline, generators with --max-seconds,
the server (with Kamailio and rtpengine) stopped in `finally`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import common  # noqa: E402

common.use_bench_ports()

from legs import (  # noqa: E402
    CODECS,
    JOIN_SETTLE_S,
    PHONE_NICE,
    Layout,
    degraded,
    log_summary,
    second_window,
    series_args,
    summarize,
)
from legs import _step_line as legs_step_line  # noqa: E402
from loadgen import PROBE_RECORD, ulaw_decode  # noqa: E402
from rawleg import Arrival, health  # noqa: E402
from relay import DID, Relay  # noqa: E402

from tests import (  # noqa: E402
    audio,
    harness,  # noqa: E402
    ports,
)
from tests.pbx_helpers import pbx_overrides  # noqa: E402

GEN_CODEC = {"g711": "pcmu", "g722": "g722", "opus16": "opus"}
TALKER_HZ = (440, 700)  # room positions 0 and 1
# rtpengine takes 4 ports a relayed call (RTP and RTCP on both sides) and the
# server 2: at 1,000 legs more than the benches' 3,000-port block. Below the
# test blocks (21000 on) and the kernel's ephemeral ports there is room.
LOW_PORTS = (10000, 21000)


def low_range(size: int) -> str:
    """`size` consecutive ports free on 127.0.0.1 below the test blocks."""
    start = LOW_PORTS[0]
    while start + size <= LOW_PORTS[1]:
        busy = None
        for p in range(start, start + size):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    busy = p
                    break
        if busy is None:
            return f"{start}-{start + size - 1}"
        start = busy + 1 + (busy + 1) % 2
    raise RuntimeError(f"no {size} free UDP ports below {LOW_PORTS[1]}")


class Probes:
    """The probes' arrival files, read as they grow."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.offsets = [0] * len(paths)
        self.arrivals: list[list[Arrival]] = [[] for _ in paths]
        self.payloads: list[list[tuple[float, bytes]]] = [[] for _ in paths]

    def read(self) -> None:
        """Take what the generator wrote since the last read."""
        size = PROBE_RECORD.size
        for i, path in enumerate(self.paths):
            try:
                raw = path.read_bytes()[self.offsets[i] :]
            except OSError:
                continue
            n = len(raw) // size
            self.offsets[i] += n * size
            for k in range(n):
                at, seq, length, payload = PROBE_RECORD.unpack_from(raw, k * size)
                self.arrivals[i].append(Arrival(at, seq))
                self.payloads[i].append((at, payload[:length]))

    def window(self, w0: float, w1: float) -> dict[str, Any]:
        """Health and tones heard of every probe in [w0, w1]."""
        self.read()
        per = [health(a, w0, w1) for a in self.arrivals]
        shares = []
        for pl in self.payloads:
            s = ulaw_decode(b"".join(p for at, p in pl if w0 <= at <= w1))
            shares.append([round(audio.band_fraction(s, 8000, hz), 3) for hz in TALKER_HZ])
        return {
            "probes": per,
            "probe_tones": shares,
            # The weaker talker's share of the energy, worst probe: ~0.5 when
            # both talkers are heard equally, 0 when one is missing.
            "probe_tone_min": min((min(s) for s in shares), default=math.nan),
            "probe_loss_pct": max((h["loss_pct"] for h in per), default=math.nan),
            "probe_gaps_over_40ms": sum(h["gaps_over_40ms"] for h in per),
            "probe_max_gap_ms": max((h["max_gap_ms"] for h in per), default=math.nan),
            "probe_received": sum(h["received"] for h in per),
            "probe_expected": sum(h["expected"] for h in per),
        }


def joined(srv: harness.Server) -> int:
    """Members in all rooms. Through the edge a status asks rtpengine about
    every member, which takes seconds at hundreds of legs on a busy machine:
    a long timeout, polled slowly, and -1 when it still gave no answer."""
    from ponte.control import request

    try:
        answer = request(srv.control, "status", timeout=30)
    except (OSError, ValueError):  # TimeoutError is an OSError
        return -1
    rooms = answer.get("rooms")
    if rooms is None:  # the server answered with an error (its own wait ran out)
        return -1
    return sum(len(r["members"]) for r in rooms.values())


def wait_joined(srv: harness.Server, want: int, timeout: float) -> int:
    """Poll once a second until `want` members are in rooms or time is up."""
    deadline = time.monotonic() + timeout
    n = joined(srv)
    while n < want and time.monotonic() < deadline:
        time.sleep(1.0)
        n = max(n, joined(srv))
    return n


def start_gen(
    srv: harness.Server,
    codec: str,
    legs: list[str],
    rate: float,
    tmp: Path,
    name: str,
    seconds: float,
    direct: bool = False,
    syllables: bool = False,
) -> subprocess.Popen[str]:
    """One generator process placing `legs` (PIN[:HZ|:p]) through Kamailio,
    or (`direct`) straight to the app server, its RTP to the server's ports."""
    probes = sum(1 for x in legs if x.endswith(":p"))
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "loadgen.py"),
        "--target",
        srv.config["sip" if direct else "pbx"]["listen"],
        "--user",
        DID,
        *([] if direct else ["--edge"]),
        "--codec",
        GEN_CODEC[codec],
        "--legs",
        ",".join(legs),
        "--rate",
        str(rate),
        "--ports",
        str(ports.allocate(4 + 2 * probes)),
        "--probe-dir",
        str(tmp),
        "--name",
        name,
        "--max-seconds",
        f"{seconds:.0f}",
        *(["--syllables"] if syllables else []),
    ]
    # On the server's own two cores the generator takes what the server and
    # the relay leave, as phones elsewhere would (as bench/legs.py's phones).
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=(tmp / f"gen-{name}.err").open("w"),
        text=True,
        preexec_fn=lambda: os.nice(PHONE_NICE),
    )


def leg_spec(layout: Layout, slot: int) -> str:
    """What slot `slot` sends: the room's talkers a tone, probes listen, the rest silence."""
    pin = layout.pin(slot)
    if slot in layout.probe_slots:
        return f"{pin}:p"
    pos = slot % layout.size
    return f"{pin}:{TALKER_HZ[pos]}" if pos < len(TALKER_HZ) else pin


def window(
    srv: harness.Server,
    relay: Relay,
    gens: list[subprocess.Popen[str]],
    probes: Probes,
    seconds: float,
    known: dict[int, str],
) -> dict[str, Any]:
    """CPU of the server (per thread too), rtpengine, Kamailio and the
    generators over `seconds`, and the probes' health in that window."""
    cpu = common.CpuWindow(srv.proc.pid, [g.pid for g in gens], known=known)
    cpu.start()
    r0, k0 = common.cpu_seconds(relay.rtpengine_pid), relay.kamailio_cpu()
    t0, w0 = time.monotonic(), time.time()
    while time.monotonic() < t0 + seconds:
        cpu.sample_syscalls()
        time.sleep(0.2)
    out = cpu.stop()
    w1, dt = time.time(), time.monotonic() - t0
    out["rtpengine_cpu"] = 100 * (common.cpu_seconds(relay.rtpengine_pid) - r0) / dt
    out["kamailio_cpu"] = 100 * (relay.kamailio_cpu() - k0) / dt
    out |= probes.window(w0, w1)
    return out


def series(
    codec: str,
    room: int,
    steps: list[int],
    window_s: float,
    budget: float,
    probes: int = 3,
    rate: float = 100.0,
    procs: int = 1,
    keep_log: Path | None = None,
    direct: bool = False,
    stock_mix: bool = False,
    opus_dtx: bool = False,
    syllables: bool = False,
    opus_complexity: int | None = None,
) -> dict[str, Any]:
    """Raise the legs through `steps` on one server behind its edge; stop at
    the first degraded step."""
    started = time.monotonic()
    spec = CODECS[codec]
    result: dict[str, Any] = {
        "codec": codec,
        "label": spec["label"],
        "room": room,
        "window_s": window_s,
        "rate": rate,
        "probes": probes,
        "procs": procs,
        "edge": not direct,
        "stock_mix": stock_mix,
        "opus_dtx": opus_dtx,
        "opus_complexity": opus_complexity,
        "syllables": syllables,
        "load": "bench/loadgen.py",
        "talkers": len(TALKER_HZ),
        "server_python": harness.PY,
        "steps": [],
        "errors": [],
    }
    layout = Layout(room, steps[-1])
    layout.place_probes(probes, steps[0])
    top = steps[-1]
    cache = common.prompt_cache()
    gens: list[subprocess.Popen[str]] = []
    known: dict[int, str] = {}
    with tempfile.TemporaryDirectory(prefix="ponte-bench-capacity-") as tmpdir:
        tmp = Path(tmpdir)
        overrides = pbx_overrides(ports.allocate(1))
        overrides["trunks"][0]["registration"] = False  # only trusts 127.0.0.1's DID calls
        overrides["rooms"] = layout.rooms
        overrides["sip"] = {
            "listen": f"127.0.0.1:{ports.allocate(1)}",
            "rtp_ports": ports.rtp_range(2 * top + 40),
            "codecs": spec["server"],
            "clock_rate": 8000 if codec == "g711" else 16000,
            "max_calls": max(top, 10),
            "max_new_calls_per_second": 2 * rate,
        }
        if stock_mix:  # pjmedia's own bridge: every member mixed, every leg encoding
            overrides["sip"] |= {"talker_threshold_dbfs": None, "shared_encode": False}
        opus: dict[str, Any] = {}
        if opus_dtx:  # the server asks usedtx=1: the generator's silent Opus legs honour it
            opus["dtx"] = True
        if opus_complexity is not None:  # the bridge's encoders (the phones' stay as they are)
            opus["complexity"] = opus_complexity
        if opus:
            overrides["sip"]["opus"] = opus
        overrides["pbx"]["media_ports"] = low_range(4 * top + 40)
        srv = harness.start_server(tmp / "srv", cache, log_level="info", **overrides)
        try:
            relay = Relay.of(srv)
            time.sleep(1.0)  # past the start-up
            probe_files: list[Path] = []
            probes_now = Probes([])
            have = 0
            for i, target in enumerate(steps):
                new = target - have
                need = new / rate + 8 + JOIN_SETTLE_S + 2 * window_s
                if time.monotonic() - started + need > budget:
                    result["stopped"] = f"time budget ({budget:.0f} s) before {target} legs"
                    break
                specs = [leg_spec(layout, s) for s in range(have, target)]
                left = budget - (time.monotonic() - started) + 60
                for k in range(procs):
                    part = specs[k::procs]
                    if not part:
                        continue
                    name = f"s{i}p{k}"
                    gens.append(
                        start_gen(
                            srv, codec, part, rate / procs, tmp, name, left, direct, syllables
                        )
                    )
                    probe_files += [
                        tmp / f"probe-{name}-{j}.bin"
                        for j, x in enumerate(part)
                        if x.endswith(":p")
                    ]
                if i == 0:  # the probes are among the first step's legs
                    probes_now = Probes(probe_files)
                n = wait_joined(srv, target, 10 + new / 20)
                time.sleep(JOIN_SETTLE_S)
                step: dict[str, Any] = {"legs": target, "joined": n}
                step |= window(srv, relay, gens, probes_now, window_s, known)
                step["degraded"] = degraded(step)
                print(_step_line(codec, room, step), file=sys.stderr, flush=True)
                if step["degraded"] and n >= target:
                    again: dict[str, Any] = {"legs": target, "joined": n}
                    again |= window(srv, relay, gens, probes_now, window_s, known)
                    step = second_window(step, again)
                    print(_step_line(codec, room, step), file=sys.stderr, flush=True)
                result["steps"].append(step)
                have = target
                if step["degraded"]:
                    break
            try:
                lat = srv.status()["join_latencies"]
                result["join_latencies_ms"] = [x * 1000 for x in lat]
            except OSError as exc:  # a status timed out on a loaded server: noted
                result["errors"].append(f"status: {exc}")
        finally:
            result["generators"] = stop_gens(gens, result["errors"])
            srv.stop()
        log = srv.log()
        result["server_log"] = log_summary(log)
        if keep_log is not None:
            keep_log.write_text(log)
            # Through the edge, Kamailio's own log too: why a call never
            # reached the app server is only there.
            kam = Path(srv.config["state_dir"]) / "kamailio" / "kamailio.log"
            if kam.exists():
                keep_log.with_suffix(".kamailio.log").write_bytes(kam.read_bytes())
    summarize(result)
    return result


def stop_gens(gens: list[subprocess.Popen[str]], errors: list[str]) -> dict[str, Any]:
    """SIGTERM every generator (each hangs its calls up, then reports); their sum."""
    for g in gens:
        if g.poll() is None:
            g.terminate()
    total: dict[str, Any] = {"legs": 0, "answered": 0, "late_ticks": 0, "ticks": 0}
    total |= {"max_late_ms": 0.0, "cpu_s": 0.0, "not_hung_up": 0, "failed": {}}
    for g in gens:
        try:
            out, _ = g.communicate(timeout=20)
            r = json.loads(out.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            g.kill()
            g.communicate()
            errors.append("a generator gave no report")
            continue
        for k in ("legs", "answered", "late_ticks", "ticks", "not_hung_up", "cpu_s"):
            total[k] += r[k]
        total["max_late_ms"] = max(total["max_late_ms"], r["max_late_ms"])
        for code, n in r["failed"].items():
            total["failed"][code] = total["failed"].get(code, 0) + n
    if total["failed"]:
        errors.append(f"calls failed: {total['failed']}")
    return total


def _step_line(codec: str, room: int, s: dict[str, Any]) -> str:
    """bench/legs.py's progress line (its "phones" are the generator here), and the edge's."""
    return legs_step_line(codec, room, s) + (
        f" | rtpengine {s['rtpengine_cpu']:.0f} %, weaker tone {s['probe_tone_min']:.2f}"
    )


def print_table(r: dict[str, Any]) -> None:
    """One Markdown table for the series."""
    path = "through the edge" if r.get("edge") else "direct to the app server"
    print(f"\n{r['label']}, rooms of {r['room']}, {path} ({r.get('variant') or ''})")
    print(
        "| legs | joined | server CPU % | busiest thread % | rtpengine CPU % | generator CPU % "
        "| machine % | loss % | gaps > 40 ms | max gap ms | weaker tone | verdict |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in r["steps"]:
        print(
            f"| {s['legs']} | {s['joined']} | {s['server_cpu']:.1f} | "
            f"{s['busiest_thread_cpu']:.1f} | {s['rtpengine_cpu']:.1f} | "
            f"{s['generator_cpu']:.1f} | {s['machine_busy']:.0f} | {s['probe_loss_pct']:.2f} | "
            f"{s['probe_gaps_over_40ms']} | {s['probe_max_gap_ms']:.1f} | "
            f"{s['probe_tone_min']:.2f} | {'; '.join(s['degraded']) or 'ok'} |"
        )
    print(f"generators: {r.get('generators')}")


def main() -> int:
    """One series from the command line; the table, then the `BENCH-RESULT` line."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    series_args(ap, "100,200,400,600,800,1000", 5.0, 100.0)
    ap.add_argument("--procs", type=int, default=1, help="generator processes per step")
    ap.add_argument(
        "--direct",
        action="store_true",
        help="legs straight to the app server (its capacity without the relay's cost)",
    )
    ap.add_argument(
        "--stock-mix",
        action="store_true",
        help="no talker gate, no shared encode (sip.talker_threshold_dbfs: null, "
        "sip.shared_encode: false): the before of a before/after on one build",
    )
    ap.add_argument(
        "--opus-dtx",
        action="store_true",
        help="sip.opus.dtx: true: the server asks usedtx=1, and the generator's silent "
        "Opus legs then send only libopus's comfort-noise updates, as browsers do",
    )
    ap.add_argument(
        "--syllables",
        action="store_true",
        help="talkers swell and fade 4 times a second (implied by --opus-dtx: DTX "
        "takes a steady tone for background noise and sends comfort noise instead)",
    )
    ap.add_argument(
        "--opus-complexity",
        type=int,
        choices=range(11),
        metavar="0-10",
        help="sip.opus.complexity for the bridge's encoders (default: the server's, 5)",
    )
    ap.add_argument("--python", help="run the server with this interpreter (another venv)")
    ap.add_argument("--label", default="", help="names the run (before, after) in results.json")
    args = ap.parse_args()
    if args.python:
        harness.PY = args.python  # serve_command reads it at each start
    common.graceful_sigterm()
    load0, t0 = common.loadavg(), time.monotonic()
    r = series(
        args.codec,
        args.room,
        [int(x) for x in args.steps.split(",")],
        args.window,
        args.budget,
        probes=args.probes,
        rate=args.rate,
        procs=args.procs,
        keep_log=args.keep_log,
        direct=args.direct,
        stock_mix=args.stock_mix,
        opus_dtx=args.opus_dtx,
        syllables=args.syllables or args.opus_dtx,
        opus_complexity=args.opus_complexity,
    )
    r["variant"] = args.label
    print_table(r)
    common.emit("legs", r, load0, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
