#!/usr/bin/env python3
"""Conference capacity: legs in rooms versus app-server CPU and media health.

One series = one codec and one room size on one app server. The legs rise in
steps; each step adds a softphone process (pbx/softphone.py; --opus-rate for opus)
placing the new calls at --rate per second. Every leg keys
its room's PIN (the first of each room the moderator PIN, so the room mixes
instead of playing hold music) and then sends a 440 Hz tone: every leg really
sends audio. A few raw probe legs (bench/rawleg.py) sit in the first rooms,
send a tone in PCMU too, and have the kernel stamp each RTP packet the server
sends them. Once all legs have joined and a second has passed, a steady window
measures:

- the server's CPU (utime + stime from /proc/PID/stat; 100 = one core), and
  per thread (/proc/PID/task/*/stat), with each thread named by the syscall
  it waits in (pjlib leaves them all `python`);
- the load generators' CPU, and how busy the whole machine was (/proc/stat);
- on the probes: packets received versus expected (one per 20 ms), sequence
  gaps, and inter-arrival gaps over 40 ms.

A step is *degraded* when a probe lost more than 1 % of its packets, saw any
gap over 40 ms, the server used more than 90 % of a core, or not every leg
could join. The machine is shared (test runs, builds), so a degraded window
is measured once more at the same legs and only a second bad one counts. The
series stops at the first degraded step, at the last step, or when its time
budget would run out. The load generators run at nice 5: on the server's own
two cores they take what the server leaves, as phones elsewhere would.

    .venv/bin/python bench/legs.py [--codec g711] [--room 10] [--steps 30,60,120]
                                   [--window 10] [--budget 120]

Bounded: loopback only, ports from the benches' block (bench/common.py),
every softphone has --max-seconds, every wait a deadline. The last line is the
`BENCH-RESULT` JSON that `bench/run` collects.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The repository first (bench/pbx.py must not shadow the `pbx` package), then
# bench/ for the benches' shared modules.
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import common  # noqa: E402

common.use_bench_ports()

from rawleg import RawLeg, health  # noqa: E402

from tests import ports  # noqa: E402
from tests.harness import PY, Server, start_server  # noqa: E402

# codec name -> what the server accepts (sip.codecs) and what the load phones offer.
# The probes offer PCMU only, so the server keeps PCMU for them beside the codec
# under test; the softphones offer only the codec under test.
CODECS: dict[str, dict[str, Any]] = {
    "g711": {"label": "G.711 u-law 8 kHz", "server": ["PCMU/8000"], "phone": "PCMU/8000"},
    "g722": {
        "label": "G.722 16 kHz",
        "server": ["G722/16000", "PCMU/8000"],
        "phone": "G722/16000",
    },
    "opus16": {
        "label": "opus 16 kHz",
        "server": ["opus/48000", "PCMU/8000"],
        "phone": "opus/48000",
        "opus_rate": 16000,
    },
}
LOSS_LIMIT_PCT = 1.0
GAP_LIMIT_MS = 40.0
CPU_LIMIT = 90.0  # % of one core
JOIN_SETTLE_S = 1.0  # after the last join: past the join beeps
PHONE_NICE = 5  # the load generators' niceness


def degraded(step: dict[str, Any]) -> list[str]:
    """Why a step counts as degraded (empty: healthy)."""
    why = []
    if step["joined"] < step["legs"]:
        why.append(f"only {step['joined']}/{step['legs']} joined")
    if step["probe_loss_pct"] > LOSS_LIMIT_PCT:
        why.append(f"probe loss {step['probe_loss_pct']:.1f} %")
    if step["probe_gaps_over_40ms"] > 0:
        gaps, worst = step["probe_gaps_over_40ms"], step["probe_max_gap_ms"]
        why.append(f"{gaps} gaps > 40 ms (max {worst:.0f} ms)")
    if step["server_cpu"] > CPU_LIMIT:
        why.append(f"server CPU {step['server_cpu']:.0f} %")
    return why


def codec_available(name: str) -> bool:
    """Whether this pjsua2 build has the codec, asked of the adapter in a child
    process (`python -m pbx.sipua`) so this one never creates an Endpoint."""
    wanted = CODECS[name]["phone"].lower()
    return wanted in [c.lower().rsplit("/", 1)[0] for c in pjsua2_build()["codecs"]]


def pjsua2_build() -> dict[str, Any]:
    """Version and codecs of the pjsua2 build (its last output line is JSON)."""
    out = subprocess.run(
        [PY, "-m", "pbx.sipua"], capture_output=True, text=True, timeout=30, cwd=ROOT
    ).stdout
    try:
        build: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return build
    except (IndexError, ValueError):
        return {"version": "?", "codecs": []}


@dataclass
class Layout:
    """Which PIN each leg keys: slot s is member s % size of room s // size."""

    size: int
    max_legs: int
    probe_slots: list[int] = field(default_factory=list)
    record: str = "none"  # none | mix | tracks: what each room records once joined

    @property
    def rooms(self) -> list[dict[str, Any]]:
        """The rooms for the server's configuration."""
        extra: dict[str, Any] = {}
        if self.record != "none":
            # Recording needs the room's consent and a level above 1.
            extra = {
                "allow_recording": True,
                "security_level": 2,
                "record_tracks": self.record == "tracks",
            }
        return [
            {
                "name": f"r{i}",
                "participant_pin": f"{10000 + i}",
                "moderator_pin": f"{50000 + i}",
                **extra,
            }
            for i in range(math.ceil(self.max_legs / self.size))
        ]

    def pin(self, slot: int) -> str:
        """The first member of each room moderates it, so its room mixes."""
        room, pos = divmod(slot, self.size)
        return f"{50000 + room}" if pos == 0 else f"{10000 + room}"

    def place_probes(self, count: int, first_step: int) -> None:
        """Probes take the last places of the first step's rooms (never a moderator's)."""
        first_rooms = math.ceil(first_step / self.size)
        slots = [
            room * self.size + pos
            for pos in range(self.size - 1, 0, -1)
            for room in range(first_rooms)
            if room * self.size + pos < first_step
        ]
        self.probe_slots = slots[:count]


def start_phones(
    srv: Server,
    codec: str,
    pins: list[str],
    rate: float,
    tmp: Path,
    seconds: float,
    port: int = 0,
    tones: list[int] | None = None,
) -> subprocess.Popen[str]:
    """One load softphone process placing len(pins) calls into rooms (at the
    SIP `port` of one node; default: the server's)."""
    spec = CODECS[codec]
    tones = tones or [440]
    cmd = [
        PY,
        "-m",
        "pbx.softphone",
        "--target",
        f"sip:conf@127.0.0.1:{port}" if port else srv.uri("conf"),
        "--script",
        "wait_media 10; dtmf {pin}#; tone {tone}; wait_end 3600",
        "--tones",
        ",".join(str(t) for t in tones),
        "--calls",
        str(len(pins)),
        "--rate",
        str(rate),
        "--pins",
        ",".join(pins),
        "--codecs",
        spec["phone"],
        "--rtp",
        ports.rtp_range(3 * len(pins) + 10),
        "--max-seconds",
        str(seconds),
    ]
    if spec.get("opus_rate"):
        cmd += ["--opus-rate", str(spec["opus_rate"])]
    err = (tmp / f"phones-{time.monotonic_ns()}.err").open("w")
    # The load generators share the server's two cores; at a lower priority they
    # take what the server leaves, as phones on other machines would.
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        preexec_fn=lambda: os.nice(PHONE_NICE),
    )


def joined(srv: Server) -> int:
    """Members in all rooms of the server."""
    return sum(len(r["members"]) for r in srv.status()["rooms"].values())


def wait_joined(srv: Server, want: int, timeout: float) -> int:
    """Poll the control socket until `want` members are in rooms (or time is up)."""
    deadline = time.monotonic() + timeout
    n = joined(srv)
    while n < want and time.monotonic() < deadline:
        time.sleep(0.25)
        n = joined(srv)
    return n


def start_recordings(srv: Server, started: set[str]) -> list[str]:
    """Start recording every room with members that is not recording yet,
    through the control socket (the path `ponte room record-start` takes)."""
    from ponte.control import request

    errors: list[str] = []
    for name, room in srv.status()["rooms"].items():
        if name in started or not room["members"]:
            continue
        answer = request(srv.control, "room", action="record-start", room=name, by="bench")
        if answer.get("ok"):
            started.add(name)
        else:
            errors.append(f"record-start {name}: {answer.get('error')}")
    return errors


def join_probe(port: int, pin: str, out: list[RawLeg], errors: list[str]) -> None:
    """Call the SIP `port`, key the PIN as SIP INFO, and keep the probe (thread target)."""
    leg = RawLeg(("127.0.0.1", port), tone=True)
    try:
        leg.call()
        time.sleep(0.5)  # the PIN prompt starts; digits barge in
        leg.info_digits(pin + "#")
        out.append(leg)
    except (OSError, RuntimeError, TimeoutError) as exc:
        errors.append(f"probe: {exc}")
        leg.close()


def node_pids(srv: Server) -> list[int]:
    """The app-server processes: the nodes of a `--nodes N` parent, else itself."""
    st = srv.status()
    if "nodes" in st:
        return [int(n["pid"]) for n in st["nodes"].values()]
    return [srv.proc.pid]


def wait_nodes(srv: Server, timeout: float) -> None:
    """Wait until every node of a `--nodes N` parent answers its status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = srv.status().get("nodes")
        if nodes is None or all("calls" in n for n in nodes.values()):
            return
        time.sleep(0.2)


def steady_window(
    pids: list[int],
    phones: list[subprocess.Popen[str]],
    probes: list[RawLeg],
    window: float,
    known: dict[int, str],
) -> dict[str, Any]:
    """CPU and probe media health over `window` seconds of steady state
    (`pids`: the app-server processes, one per node; `known`: the first one's
    thread labels so far, kept across windows). With several nodes,
    server_cpu is the busiest node's: each is one process, bound by one core."""
    cpu = common.CpuWindow(pids[0], [p.pid for p in phones], peers=pids[1:], known=known)
    cpu.start()
    w0 = time.time()
    end = time.monotonic() + window
    while time.monotonic() < end:
        cpu.sample_syscalls()
        time.sleep(0.2)
    w1 = time.time()
    out = cpu.stop()
    out["server_cpu"] = max(out["process_cpu"])
    per_probe = [health(p.arrivals, w0, w1) for p in probes]
    out["probes"] = per_probe
    out["probe_loss_pct"] = max((h["loss_pct"] for h in per_probe), default=math.nan)
    out["probe_gaps_over_40ms"] = sum(h["gaps_over_40ms"] for h in per_probe)
    out["probe_max_gap_ms"] = max((h["max_gap_ms"] for h in per_probe), default=math.nan)
    out["probe_received"] = sum(h["received"] for h in per_probe)
    out["probe_expected"] = sum(h["expected"] for h in per_probe)
    return out


def series(
    codec: str,
    room: int,
    steps: list[int],
    window: float,
    budget: float,
    cache: Path,
    probes: int = 3,
    rate: float = 50.0,
    keep_log: Path | None = None,
    nodes: int = 1,
    server: dict[str, Any] | None = None,
    record: str = "none",
    talkers: int = 0,
    talker_gate: bool = True,
    shared_encode: bool = True,
) -> dict[str, Any]:
    """Raise legs through `steps` on one server; stop at the first degraded step
    (`talkers`: that many members of each room send the tone, the others
    silence; 0: every member talks)
    (`keep_log`: where to copy the server's log; `record`: none, mix or tracks,
    every room records from its step on). With `nodes` > 1 the server
    is `ponte serve --nodes N` and room i's callers call node i % N (so each
    room is homed where its callers are: no hand-offs); `server`: more of its
    configuration (a PostgreSQL `database`, a `pbx` edge); `shared_encode`
    False: every leg encodes its own frames (sip.shared_encode), the A/B's
    "before" on the same build."""
    started = time.monotonic()
    spec = CODECS[codec]
    result: dict[str, Any] = {
        "codec": codec,
        "label": spec["label"],
        "room": room,
        "talkers": talkers or room,
        "talker_gate": talker_gate,
        "shared_encode": shared_encode,
        "window_s": window,
        "rate": rate,
        "probes": probes,
        "nodes": nodes,
        "record": record,
        "steps": [],
        "errors": [],
    }
    if not codec_available(codec):
        result["unavailable"] = f"{spec['phone']} is not in this pjsua2 build (codecEnum2)"
        return result
    layout = Layout(room, steps[-1], record=record)
    layout.place_probes(probes, steps[0])
    sip = {
        "listen": f"127.0.0.1:{ports.allocate(nodes)}",  # node i on port + i
        "rtp_ports": ports.rtp_range(2 * steps[-1] + 40 * nodes),
        "codecs": spec["server"],
    }
    if not talker_gate:  # every member mixed, as stock pjmedia (the A/B's "before")
        sip["talker_threshold_dbfs"] = None
    if not shared_encode:  # every leg encodes its own frames (the A/B's "before")
        sip["shared_encode"] = False
    phones: list[subprocess.Popen[str]] = []
    legs: list[RawLeg] = []
    known: dict[int, str] = {}  # the server's thread labels, by thread id
    recording: set[str] = set()  # rooms recording
    with tempfile.TemporaryDirectory(prefix="ponte-bench-legs-") as tmpdir:
        tmp = Path(tmpdir)
        extra = ["--nodes", str(nodes)] if nodes > 1 else []
        srv = start_server(
            tmp / "srv",
            cache,
            log_level="info",
            extra_args=extra,
            rooms=layout.rooms,
            sip=sip,
            **(server or {}),
        )
        try:
            wait_nodes(srv, 30)
            pids = node_pids(srv)

            def port(slot: int) -> int:
                return srv.sip_port + (slot // room) % nodes

            have = 0
            for target in steps:
                new = target - have
                # Placing the calls, keying PINs (about 1 s), the settle, and the
                # window (twice, should the first be degraded).
                need = new / rate + 6 + JOIN_SETTLE_S + 2 * window
                if time.monotonic() - started + need > budget:
                    result["stopped"] = f"time budget ({budget:.0f} s) before {target} legs"
                    break
                slots = [s for s in range(have, target) if s not in layout.probe_slots]
                pins = [layout.pin(s) for s in slots]
                left = budget - (time.monotonic() - started) + 30
                for node in range(nodes):
                    here = [s for s in slots if port(s) == srv.sip_port + node]
                    mine = [layout.pin(s) for s in here]
                    tones = [440 if not talkers or s % room < talkers else 0 for s in here]
                    if mine:
                        p = start_phones(
                            srv, codec, mine, rate / nodes, tmp, left, srv.sip_port + node, tones
                        )
                        phones.append(p)
                if have == 0 and layout.probe_slots:
                    # The moderators are in: the probes join as participants.
                    wait_joined(srv, len(pins), 10 + new / 20)
                    errors: list[str] = []
                    threads = [
                        threading.Thread(
                            target=join_probe, args=(port(s), layout.pin(s), legs, errors)
                        )
                        for s in layout.probe_slots
                    ]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join(15)
                    result["errors"] += errors
                n = wait_joined(srv, target, 10 + new / 20)
                if record != "none":
                    result["errors"] += start_recordings(srv, recording)
                time.sleep(JOIN_SETTLE_S)
                st = srv.status()
                step = {"legs": target, "joined": n, "conf_ports": st["conf_ports"]}
                if record != "none":
                    step["rooms_recording"] = len(recording)
                step |= steady_window(pids, phones, legs, window, known)
                step["degraded"] = degraded(step)
                print(_step_line(codec, room, step), file=sys.stderr, flush=True)
                if step["degraded"] and n >= target:
                    again = {"legs": target, "joined": joined(srv), "conf_ports": st["conf_ports"]}
                    again |= steady_window(pids, phones, legs, window, known)
                    step = second_window(step, again)
                    print(_step_line(codec, room, step), file=sys.stderr, flush=True)
                result["steps"].append(step)
                have = target
                if step["degraded"]:
                    break
            st = srv.status()
            each = [n.get("join_latencies", []) for n in st.get("nodes", {}).values()]
            lat = st.get("join_latencies") or [x for n in each for x in n]
            result["join_latencies_ms"] = [x * 1000 for x in lat]
        finally:
            for p in phones:
                if p.poll() is None:
                    p.terminate()  # the softphone hangs its calls up and reports
            for p in phones:
                try:
                    out, _ = p.communicate(timeout=20)
                    reports = json.loads(out.strip().splitlines()[-1]) if out.strip() else []
                    if isinstance(reports, dict):
                        reports = [reports]
                    bad = [r.get("error") for r in reports if r.get("error")]
                    bad = [e for e in bad if e != "script did not finish"]  # we stopped them
                    if bad:
                        result["errors"].append(f"softphone: {len(bad)} calls: {bad[0]}")
                except (subprocess.TimeoutExpired, json.JSONDecodeError, ValueError):
                    p.kill()
                    p.communicate()
            for leg in legs:
                leg.bye()
            srv.stop()
        result["server_log"] = log_summary(srv.log())
        if keep_log is not None:
            keep_log.write_text(srv.log())
        errors_logged = [ln for ln in srv.log().splitlines() if " ERROR " in ln]
        if errors_logged:
            result["errors"].append(
                f"server log: {len(errors_logged)} ERROR lines, first: {errors_logged[0][:200]}"
            )
    summarize(result)
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def second_window(first: dict[str, Any], again: dict[str, Any]) -> dict[str, Any]:
    """The step as a second window at the same legs found it.

    The machine is shared (test runs, builds): one bad window may be another
    process's burst, so a degraded window is measured once more and the
    second decides; the first's figures are kept as `first_window`."""
    again["degraded"] = degraded(again)
    again["first_window"] = {
        k: first[k] for k in ("server_cpu", "probe_loss_pct", "probe_max_gap_ms", "degraded")
    }
    return again


def summarize(result: dict[str, Any]) -> None:
    """A series' headline figures from its steps, into `result`."""
    healthy = [s["legs"] for s in result["steps"] if not s["degraded"]]
    bad_steps = [s for s in result["steps"] if s["degraded"]]
    result["max_healthy_legs"] = max(healthy, default=0)
    result["bridge_ceiling_legs"] = bridge_ceiling(result["steps"])
    result["first_degraded_legs"] = bad_steps[0]["legs"] if bad_steps else None
    result["first_degraded_why"] = bad_steps[0]["degraded"] if bad_steps else []


def log_summary(log: str, top: int = 5) -> list[list[Any]]:
    """The server's most frequent WARNING/ERROR messages, numbers masked, with counts:
    what the server complained about while it was loaded."""
    counts: Counter[str] = Counter()
    for line in log.splitlines():
        if " WARNING " in line or " ERROR " in line:
            counts[re.sub(r"\d+", "N", line[24:])[:160]] += 1
    return [[n, msg] for msg, n in counts.most_common(top)]


def bridge_ceiling(steps: list[dict[str, Any]]) -> float | None:
    """Legs at which the conference bridge's clock thread would reach 90 % of a
    core, extrapolated linearly from the largest step measured.

    pjmedia mixes, encodes and sends every leg's audio on that one thread, so
    when it cannot finish a 20 ms tick in 20 ms every room's audio stutters,
    whatever the other core is doing. None when no thread was labelled so.
    """
    for st in reversed(steps):
        clock = [t for t in st.get("server_threads", []) if t["what"].startswith("bridge clock")]
        if clock and clock[0]["cpu"] > 0:
            legs: int = round(st["legs"] * CPU_LIMIT / clock[0]["cpu"])
            return legs
    return None


def _step_line(codec: str, room: int, s: dict[str, Any]) -> str:
    return (
        f"{codec} room {room}: {s['joined']}/{s['legs']} legs, server {s['server_cpu']:.0f} %"
        f" (busiest thread {s['busiest_thread_cpu']:.0f} %), phones {s['generator_cpu']:.0f} %,"
        f" machine {s['machine_busy']:.0f} %, probe loss {s['probe_loss_pct']:.2f} %,"
        f" gaps>40 {s['probe_gaps_over_40ms']}, max gap {s['probe_max_gap_ms']:.1f} ms"
        + (f"  DEGRADED: {'; '.join(s['degraded'])}" if s["degraded"] else "")
    )


def print_table(r: dict[str, Any]) -> None:
    """One Markdown table for a series."""
    recording = f", recording {r['record']}" if r.get("record", "none") != "none" else ""
    print(f"\n{r['label']}, rooms of {r['room']}{recording}")
    if r.get("unavailable"):
        print(f"(not measured: {r['unavailable']})")
        return
    print(
        "| legs | joined | server CPU % | busiest thread % | phones CPU % | machine % "
        "| probe rx/expected | loss % | gaps > 40 ms | max gap ms | verdict |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in r["steps"]:
        print(
            f"| {s['legs']} | {s['joined']} | {s['server_cpu']:.1f} | "
            f"{s['busiest_thread_cpu']:.1f} | {s['generator_cpu']:.1f} | {s['machine_busy']:.0f} | "
            f"{s['probe_received']}/{s['probe_expected']} | {s['probe_loss_pct']:.2f} | "
            f"{s['probe_gaps_over_40ms']} | {s['probe_max_gap_ms']:.1f} | "
            f"{'; '.join(s['degraded']) or 'ok'} |"
        )


def series_args(ap: argparse.ArgumentParser, steps: str, window: float, rate: float) -> None:
    """The options a capacity series takes (here and in bench/capacity.py)."""
    ap.add_argument("--codec", default="g711", choices=sorted(CODECS))
    ap.add_argument("--room", type=int, default=10, help="members per room")
    ap.add_argument("--steps", default=steps, help="legs at each step")
    ap.add_argument("--window", type=float, default=window, help="steady seconds measured")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds for the series")
    ap.add_argument("--probes", type=int, default=3)
    ap.add_argument("--rate", type=float, default=rate, help="new calls per second")
    ap.add_argument("--keep-log", type=Path, help="copy the server's log here")


def main() -> int:
    """One series from the command line; tables, then the `BENCH-RESULT` line."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    series_args(ap, "30,60,120,180,240,300", 10.0, 50.0)
    ap.add_argument(
        "--talkers",
        type=int,
        default=0,
        help="members per room who talk (0: all); the rest are silent",
    )
    ap.add_argument(
        "--no-talker-gate",
        action="store_true",
        help="mix every member (sip.talker_threshold_dbfs: null), as stock pjmedia",
    )
    ap.add_argument(
        "--no-shared-encode",
        action="store_true",
        help="every leg encodes its own frames (sip.shared_encode: false), as stock pjmedia",
    )
    ap.add_argument(
        "--record",
        default="none",
        choices=["none", "mix", "tracks"],
        help="every room records (its mix, or its mix and a track per member) once joined",
    )
    args = ap.parse_args()
    common.graceful_sigterm()
    load0, t0 = common.loadavg(), time.monotonic()
    steps = [int(x) for x in args.steps.split(",")]
    r = series(
        args.codec,
        args.room,
        steps,
        args.window,
        args.budget,
        common.prompt_cache(),
        args.probes,
        args.rate,
        args.keep_log,
        record=args.record,
        talkers=args.talkers,
        talker_gate=not args.no_talker_gate,
        shared_encode=not args.no_shared_encode,
    )
    print_table(r)
    lat = common.summary(r.get("join_latencies_ms", []))
    print(
        f"PIN # -> joined over {lat['n']} joins: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms"
    )
    common.emit("legs", r, load0, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
