"""Call set-up rate with SIPp: its runs, and the ramp that finds the highest
rate the server takes (shared by bench/pbx.py and bench/nodes.py).

SIPp's `uac` at rising rates (INVITE, 200, ACK, a 2 s hold in the IVR, BYE);
the set-up capacity is the highest rate at which at least 99.9 % of the calls
succeeded and INVITE -> 200 p99 stayed within 50 ms; the ramp stops at the
first rate that misses either. Every SIPp run is bounded by a call count,
`-recv_timeout` and a timeout.
"""

from __future__ import annotations

import contextlib
import csv
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

from tests import ports
from tests.harness import Server

SUCCESS_GOAL = 99.9  # % of offered calls answered
P99_GOAL_MS = 50.0  # INVITE -> 200


def sipp(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run SIPp to completion (no keyboard), bounded by `timeout`."""
    return subprocess.run(
        ["sipp", *args, "-nostdin"], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def stat_counts(path: Path) -> tuple[int, int]:
    """(successful, failed) calls from the last row of SIPp's -trace_stat file."""
    rows = list(csv.DictReader(path.open(), delimiter=";"))
    last = rows[-1]
    return int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])


def drained(srv: Server, timeout: float) -> int:
    """Wait until the server holds no calls; the calls still up when time ran out."""
    deadline = time.monotonic() + timeout
    calls: int = srv.status()["calls"]
    while calls and time.monotonic() < deadline:
        time.sleep(0.25)
        calls = srv.status()["calls"]
    return calls


def invite_rate(
    srv: Server,
    tmp: Path,
    rate: int,
    seconds: int,
    target: str = "",
    scenario: Sequence[str] = ("-sn", "uac", "-s", "conf"),
    local_port: int = 0,
    pids: Sequence[int] = (),
    hold_ms: int = 2000,
    edge: Sequence[int] = (),
) -> dict[str, Any]:
    """SIPp at `rate` calls/s for `seconds` against `target` (host:port; by
    default the app server's own SIP port, where the built-in `uac` calls
    the access number `conf`).

    Each call: INVITE, 200, ACK, a pause of `hold_ms` in the IVR (the PIN
    prompt playing), BYE. INVITE -> 200 is SIPp's response-time measure (the 200 is
    the scenario's `rtd` message), one sample per call (-rtt_freq 1). `pids`:
    the processes whose CPU is the server's (default: srv.proc); the first
    is also measured per thread; `edge`: Kamailio's and rtpengine's, summed.
    """
    count = rate * seconds
    stat = tmp / f"uac{rate}.csv"
    cmd = [
        "sipp",
        *scenario,
        "-i",
        "127.0.0.1",
        "-p",
        str(local_port or ports.allocate(1)),
        # SIPp binds media ports even when it sends no RTP (audio and video, RTP
        # and RTCP: -mp to -mp + 3): never its default 6000.
        "-mp",
        str(ports.allocate(4)),
        "-r",
        str(rate),
        "-m",
        str(count),
        "-d",
        str(hold_ms),
        "-l",
        str(rate * 4),
        # A call that waits 10 s for an answer has failed (not just unfinished).
        "-recv_timeout",
        "10000",
        "-timeout",
        f"{seconds + 30}s",
        "-trace_stat",
        "-stf",
        str(stat),
        "-trace_rtt",
        "-rtt_freq",
        "1",
        target or f"127.0.0.1:{srv.sip_port}",
        "-nostdin",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pids = list(pids) or [srv.proc.pid]
    # The server's CPU while the calls arrive at `rate` (not the tail of BYEs).
    cpu = common.CpuWindow(pids[0], list(edge), peers=pids[1:])
    cpu.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end and proc.poll() is None:
        cpu.sample_syscalls()
        time.sleep(0.2)
    used = cpu.stop()
    try:
        _, err = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    ok, failed = stat_counts(stat) if stat.exists() else (0, count)
    if ok == 0 and err:
        print(err.decode(errors="replace")[-500:], file=sys.stderr)
    rtts: list[float] = []
    for f in tmp.glob("*_rtt.csv"):
        for row in csv.DictReader(f.open(), delimiter=";"):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                rtts.append(float(row["response_time_ms"]))
        f.unlink()
    lat = common.summary(rtts)
    success = 100.0 * ok / count
    return {
        "rate": rate,
        "offered": count,
        "ok": ok,
        "failed": failed,
        "success_pct": success,
        "invite_200_ms": lat,
        "server_cpu": sum(used["process_cpu"]),
        "process_cpu": used["process_cpu"],
        "edge_cpu": used["generator_cpu"] if edge else None,
        "busiest_thread_cpu": used["busiest_thread_cpu"],
        "busiest_thread": used["server_threads"][0]["what"] if used["server_threads"] else "",
        "machine_busy": used["machine_busy"],
        "passed": success >= SUCCESS_GOAL and lat["p99"] <= P99_GOAL_MS,
    }


def ramp(
    srv: Server, tmp: Path, rates: Sequence[int], seconds: int, label: str = "uac", **kw: Any
) -> dict[str, Any]:
    """invite_rate at each of `rates` (each once the server holds no call),
    up to the first that fails; `kw` goes to invite_rate. The steps and the
    set-up capacity (0: not even the first rate passed)."""
    steps: list[dict[str, Any]] = []
    for rate in rates:
        left = drained(srv, 15)
        r = invite_rate(srv, tmp, rate, seconds, **kw)
        r["calls_left_before"] = left
        steps.append(r)
        print(
            f"{label} {rate}/s: {r['success_pct']:.2f} % ok, INVITE->200 p50 "
            f"{r['invite_200_ms']['p50']:.1f} p99 {r['invite_200_ms']['p99']:.1f} ms, "
            f"server CPU {r['server_cpu']:.0f} %",
            file=sys.stderr,
            flush=True,
        )
        if not r["passed"]:
            break  # the rates above would only fail harder
    passing = [r["rate"] for r in steps if r["passed"]]
    return {"uac": steps, "setup_capacity_cps": max(passing, default=0)}


def admission_limits() -> dict[str, Any]:
    """The server's admission settings (sip.max_new_calls_per_second, sip.max_calls):
    their shipped defaults and the largest values the schema allows."""
    from provisioning.network import SipConfig

    out: dict[str, Any] = {}
    fields = SipConfig.model_fields
    for name in ("max_new_calls_per_second", "max_calls"):
        if name in fields:
            out[name] = fields[name].default
            if name == "max_new_calls_per_second":
                le = [m.le for m in fields[name].metadata if getattr(m, "le", None) is not None]
                out["allowed_max"] = le[0] if le else 2000
    return out


def print_ramp(steps: list[dict[str, Any]]) -> None:
    """The ramp as a Markdown table."""
    print("| uac calls/s | offered | ok | failed | success % | INVITE->200 p50 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for u in steps:
        lat = u["invite_200_ms"]
        print(
            f"| {u['rate']} | {u['offered']} | {u['ok']} | {u['failed']} | "
            f"{u['success_pct']:.2f} | {lat['p50']:.1f} | {lat['p99']:.1f} |"
        )
