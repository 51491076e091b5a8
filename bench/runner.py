"""Run every bench with bounded parameters and write bench/results/ (see bench/run).

Each bench runs as its own process (its own process group), its output is
echoed and kept in bench/results/logs/NAME.log, and its last line
`BENCH-RESULT {json}` is collected. A bench that runs over its time is sent
SIGTERM (the benches turn it into SystemExit, so their servers and Kamailio
stop), then, 30 s later, SIGKILL for its whole group. The conference-capacity
series run last and share whatever time is left of the run's budget, so the
whole run stays under it whatever the machine's load did to the rest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import common  # noqa: E402
import report  # noqa: E402

PY = sys.executable
RUN_BUDGET_S = 14 * 60  # the whole run; the brief is "under 15 minutes"
# Run only when --only names them: the soak alone would fill the whole budget.
# The nodes bench (1 node against 2, about 8 minutes) would take most of it too.
# Recording's cost (two legs series, about 5 minutes) likewise; voice quality
# (PESQ, about 12 minutes) too.
ON_DEMAND = {"soak", "nodes", "recording", "quality"}
MARGIN_S = 25  # kept back for writing the results and a last teardown


@dataclass
class Job:
    """One bench process: a script, its arguments and its time limit."""

    name: str
    script: str
    args: list[str]
    timeout: float
    weight: float = 0.0  # capacity series: share of the time left (timeout unused)
    extra: dict[str, Any] = field(default_factory=dict)


# codec, room size, steps, share of the capacity time: each codec in rooms of
# 10 and of 100, through the edge with bench/loadgen.py as the load
# (bench/capacity.py, 2 talkers a room); G.711 with a larger share.
SERIES_FULL = [
    (codec, room, "100,200,400,600,800,1000", 0.2 if codec == "g711" else 0.15)
    for codec in ("g711", "g722", "opus16")
    for room in (10, 100)
]
SERIES_QUICK = [
    (codec, room, "20,40" if room == 10 else "100", 0.2 if codec == "g711" else 0.15)
    for codec in ("g711", "g722", "opus16")
    for room in (10, 100)
]


def plan(
    quick: bool,
    python: str = "",
    label: str = "",
    direct: bool = False,
    stock_mix: bool = False,
    opus_dtx: bool = False,
    opus_complexity: int | None = None,
) -> tuple[list[Job], list[Job]]:
    """(fixed benches, capacity series) for a full or a quick (smoke) run;
    `python`: the capacity series' server runs on it (another venv's build);
    `label`: names the series (before, after), so merged runs keep both;
    `direct`: legs straight to the app server; `stock_mix`: no talker gate and
    no shared encode (the before on the same build); `opus_dtx`: only the Opus
    series, with `sip.opus.dtx` and phones that honour it; `opus_complexity`:
    only the Opus series, with that `sip.opus.complexity` on the bridge."""
    if quick:
        fixed = [
            Job("dialcheck", "dialcheck.py", ["--n", "300", "--cli-runs", "1"], 60),
            Job("reload", "reload.py", ["--reloads", "1", "--baseline", "2", "--pause", "0.5"], 90),
            Job("trunk", "trunk.py", ["--calls", "10"], 60),
            Job("dtmf", "dtmf.py", ["--legs", "20", "--probe-presses", "3"], 60),
            Job(
                "pbx",
                "pbx.py",
                ["--rates", "10,25", "--seconds", "2", "--reg-rates", "100", "--reg-seconds", "1"]
                + ["--ext-calls", "3"],
                90,
            ),
            Job("webrtc", "webrtc.py", ["--steps", "2,4", "--window", "3", "--budget", "60"], 90),
            Job("relay", "relay.py", ["--quick"], 60),
            Job("opus_cost", "opus_cost.py", ["--seconds", "2", "--repeat", "1"], 60),
            Job("store", "storage.py", ["--seconds", "1"], 60, extra={"bench": "store"}),
            Job("soak", "soak.py", ["--minutes", "1", "--cps", "10", "--long-legs", "5"], 180),
            Job(
                "nodes",
                "nodes.py",
                ["--rates", "25,50", "--seconds", "2", "--handoffs", "2"]
                + ["--legs-steps", "10", "--legs-window", "3", "--legs-budget", "40"],
                240,
            ),
            Job("recording", "recording.py", ["--steps", "10,20", "--window", "3"], 120),
        ]
        window = "3"
        series = SERIES_QUICK
    else:
        fixed = [
            Job("dialcheck", "dialcheck.py", ["--n", "3000", "--cli-runs", "3"], 90),
            Job(
                "reload", "reload.py", ["--reloads", "3", "--baseline", "3", "--pause", "0.5"], 120
            ),
            Job("trunk", "trunk.py", ["--calls", "30"], 90),
            Job("dtmf", "dtmf.py", ["--legs", "100", "--probe-presses", "10"], 120),
            Job(
                "pbx",
                "pbx.py",
                ["--rates", "25,50,100,150,200,250,300,400", "--seconds", "5"]
                + ["--reg-rates", "200,500,1000", "--reg-seconds", "3", "--ext-calls", "20"],
                240,
            ),
            # Browsers through the edge, in steps to 150 (tests/wsbrowser.py in
            # two processes of their own): about 3 minutes.
            Job(
                "webrtc",
                "webrtc.py",
                ["--steps", "10,25,50,75,100,125,150", "--window", "5", "--budget", "240"],
                300,
            ),
            # Two series (direct, relayed) of four steps: about 110 s; fewer steps
            # and a shorter window than its own default, to leave the capacity
            # series their time within the run's budget.
            Job(
                "relay",
                "relay.py",
                ["--steps", "10,40,80,160", "--window", "8", "--budget", "150"],
                180,
            ),
            # Every complexity at three bit rates: about 20 s.
            Job("opus_cost", "opus_cost.py", ["--seconds", "10", "--repeat", "3"], 90),
            # Both backends, 3 s per measure: about 50 s. The script is not
            # store.py: that module would shadow the `store` package.
            Job("store", "storage.py", ["--seconds", "3"], 120, extra={"bench": "store"}),
            # PESQ on real speech, PCMU and G.722, bridge (gate on and off) and
            # direct, clean and lossy, for PCMU, G.722 and Opus: 18 calls of
            # about 40 s, one more for a case with holes (a starved jitter
            # buffer): about 12 minutes.
            Job("quality", "quality.py", [], 1080),
            # 10 minutes at 40 calls/s with 20 long legs, and its tail.
            Job("soak", "soak.py", ["--minutes", "10", "--cps", "40", "--long-legs", "20"], 780),
            # 1 node, then 2: the set-up ramp, G.711 legs, the hand-off (bench/nodes.py).
            Job(
                "nodes",
                "nodes.py",
                ["--rates", "50,100,200,300,400,500,700,1000", "--seconds", "5"]
                + ["--handoffs", "8", "--legs-steps", "40,80,160,240,320"]
                + ["--legs-window", "8", "--legs-budget", "150"],
                780,
            ),
            # G.711 legs without, then with every room recording (bench/recording.py).
            Job("recording", "recording.py", ["--steps", "60,120,240", "--window", "8"], 400),
        ]
        window = "5"
        series = SERIES_FULL
    more = (["--python", python] if python else []) + (["--label", label] if label else [])
    more += (["--direct"] if direct else []) + (["--stock-mix"] if stock_mix else [])
    if opus_dtx:
        more.append("--opus-dtx")
    if opus_complexity is not None:
        more += ["--opus-complexity", str(opus_complexity)]
    if opus_dtx or opus_complexity is not None:
        series = [s for s in series if s[0] == "opus16"]
    capacity = [
        Job(
            f"legs {codec} room {room}"
            + (" direct" if direct else "")
            + (f" {label}" if label else ""),
            "capacity.py",
            ["--codec", codec, "--room", str(room), "--steps", steps, "--window", window, *more],
            0,
            weight,
        )
        for codec, room, steps, weight in series
    ]
    return fixed, capacity


def run_job(job: Job, log_dir: Path) -> dict[str, Any]:
    """Run one bench, echo and keep its output; its result (or why there is none)."""
    log_path = log_dir / (job.name.replace(" ", "_") + ".log")
    # The capacity series runs its generator here and takes --python for the
    # server alone (plan()); the other benches run wholly on --python.
    python = PY if job.script == "capacity.py" else os.environ.get("PONTE_BENCH_PYTHON", PY)
    cmd = [python, str(BENCH / job.script), *job.args]
    print(f"\n=== {job.name}: {' '.join(cmd[1:])} (limit {job.timeout:.0f} s)", flush=True)
    started, load0 = time.monotonic(), common.loadavg()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group: a stuck bench is ended with its children
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        with log_path.open("w") as log:
            for line in proc.stdout:
                lines.append(line)
                log.write(line)
                if not line.startswith(common.RESULT_TAG):
                    print(f"  {line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    why = ""
    try:
        proc.wait(timeout=job.timeout)
    except subprocess.TimeoutExpired:
        why = f"ran over {job.timeout:.0f} s"
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    result: dict[str, Any] = {}
    for line in reversed(lines):
        if line.startswith(common.RESULT_TAG):
            result = json.loads(line[len(common.RESULT_TAG) :])
            break
    if not result:
        tail = "".join(lines[-3:]).strip().replace("\n", " / ")[-300:]
        result = {
            "failed": why or f"exit {proc.returncode}, no result: {tail}",
            "loadavg_start": load0,
            "loadavg_end": common.loadavg(),
            "wall_s": round(time.monotonic() - started, 1),
            "bench": "legs"
            if job.script in ("legs.py", "capacity.py")
            else job.script.removesuffix(".py"),
        }
        result |= job.extra
    result["name"] = job.name
    print(f"=== {job.name}: {result.get('failed') or 'done'} in {result['wall_s']} s", flush=True)
    return result


def build_meta(mode: str) -> dict[str, Any]:
    """Where and what was measured: machine, commit, pjsua2 build."""
    cpu_model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip()

    from legs import pjsua2_build

    build = pjsua2_build()
    version, codecs = build["version"], ",".join(build["codecs"])
    return {
        "mode": mode,
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", "ponte", "pbx", "bridge", "ivr")),
        "pjsua2": version,
        "codecs": codecs,
        "loadavg_start": common.loadavg(),
    }


def merged(
    saved_path: Path, results: list[dict[str, Any]], meta: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A saved run with these benches' results in place of (or after) its
    own, and their run noted in its meta's `remeasured` (oldest first)."""
    saved = json.loads(saved_path.read_text())
    fresh = {r["name"]: r for r in results}
    out = [fresh.pop(r["name"], r) for r in saved["results"]]
    out += list(fresh.values())
    again = saved["meta"].get("remeasured") or []
    again = [again] if isinstance(again, dict) else again
    again.append(
        {
            "benches": [r["name"] for r in results],
            "at": meta["started"],
            "loadavg": meta["loadavg_start"],
            "commit": meta["commit"],
        }
    )
    return out, {**saved["meta"], "remeasured": again}


def main(argv: list[str] | None = None) -> int:
    """Run the plan; write results.json, RESULTS.md and cpu_latency.png."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny parameters: a smoke run")
    ap.add_argument("--only", default="", help="comma-separated bench names (dialcheck,legs,...)")
    ap.add_argument("--budget", type=float, default=RUN_BUDGET_S, help="seconds for the run")
    ap.add_argument("--out", default=str(BENCH / "results"), help="results folder")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="with --only: merge into the run already in --out (its RESULTS.md says what was "
        "measured again when) instead of replacing it",
    )
    ap.add_argument(
        "--python",
        default="",
        help="another venv's interpreter (e.g. the stock pjsua2 wheel's, for 'before' "
        "figures): the capacity series' server runs on it, the other benches wholly",
    )
    ap.add_argument("--label", default="", help="capacity series: before, after (side by side)")
    ap.add_argument(
        "--direct", action="store_true", help="capacity series: legs straight to the app server"
    )
    ap.add_argument(
        "--stock-mix",
        action="store_true",
        help="capacity series: no talker gate, no shared encode (a before on the same build)",
    )
    ap.add_argument(
        "--opus-dtx",
        action="store_true",
        help="capacity series: only Opus, with sip.opus.dtx and phones that honour it "
        "(label it, e.g. dtx)",
    )
    ap.add_argument(
        "--opus-complexity",
        type=int,
        choices=range(11),
        metavar="0-10",
        help="capacity series: only Opus, with this sip.opus.complexity on the bridge "
        "(label it, e.g. c1)",
    )
    args = ap.parse_args(argv)
    if args.python:
        os.environ["PONTE_BENCH_PYTHON"] = args.python
    t0 = time.monotonic()
    out_dir = Path(args.out)
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    meta = build_meta("quick" if args.quick else "full")
    fixed, capacity = plan(
        args.quick,
        args.python,
        args.label,
        args.direct,
        args.stock_mix,
        args.opus_dtx,
        args.opus_complexity,
    )
    if args.only:
        keep = set(args.only.split(","))
        fixed = [j for j in fixed if j.name in keep]
        capacity = [j for j in capacity if "legs" in keep or j.name in keep]
    else:
        fixed = [j for j in fixed if j.name not in ON_DEMAND]
    results: list[dict[str, Any]] = []
    try:
        for job in fixed:
            left = args.budget - MARGIN_S - (time.monotonic() - t0)
            job.timeout = min(job.timeout, max(10.0, left))
            results.append(run_job(job, log_dir))
        for i, job in enumerate(capacity):
            # What is left, shared by weight among the series still to run: a
            # series that ended early leaves its time to the next ones.
            left = args.budget - MARGIN_S - (time.monotonic() - t0)
            share = left * job.weight / sum(j.weight for j in capacity[i:])
            # The series plans its steps within `budget`; the limit adds its start
            # and teardown (softphones hang up, the server stops).
            budget = max(20.0, share - 35)
            job.args += ["--budget", f"{budget:.0f}"]
            job.args += ["--keep-log", str(log_dir / (job.name.replace(" ", "_") + ".server.log"))]
            job.timeout = max(30.0, share)
            codec, room = job.args[1], int(job.args[3])
            job.extra = {"codec": codec, "room": room, "label": codec, "variant": args.label}
            results.append(run_job(job, log_dir))
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
    meta["wall_s"] = wall = time.monotonic() - t0
    meta["loadavg_end"] = common.loadavg()
    if args.merge and args.only and (out_dir / "results.json").exists():
        results, meta = merged(out_dir / "results.json", results, meta)
    (out_dir / "results.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1, default=str)
    )
    md = report.write(results, meta, out_dir)
    print(f"\nwrote {md} and {out_dir / 'cpu_latency.png'} in {wall:.0f} s")
    return 0 if all(not r.get("failed") for r in results) else 1
