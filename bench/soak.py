#!/usr/bin/env python3
"""Soak: a bounded stretch of steady calls, to show a leak as a number.

One app server on loopback takes, for --minutes:

- short calls at --cps per second (SIPp's built-in `uac` against the access
  number `conf`: INVITE, 200, ACK, --hold seconds in the IVR while the PIN
  prompt plays, BYE), offered at a steady rate;
- --long-legs conference legs that stay up the whole time, in a room of
  their own: a moderator sending a 700 Hz tone, a listener that records what
  it hears, and participants (our softphone, pbx/softphone.py).

Every second it reads the app server's resident memory (VmRSS) and open file
descriptors (/proc/PID/status and /proc/PID/fd); every minute it prints a
row: calls answered and failed in that minute (SIPp's statistics file),
RSS at the minute's end and its highest, fds likewise, and the server's CPU
(100 = one core). After the load it waits until the server holds no call
and reads RSS and fds once more: the fds should be back where they were
before the first call.

At the end:

- calls answered out of those offered (SIPp), and the history rows: one row
  per short call with the hold's length (`ponte report calls`), and one per
  long leg;
- whether the listener heard the moderator's tone in every second it was in
  the room (tests/audio.py's hears_tone on each 1-s slice of its recording);
- the ERROR and WARNING lines the server logged from the load's start.

    .venv/bin/python bench/soak.py                          # 10 minutes, 40 calls/s, 20 long legs
    .venv/bin/python bench/soak.py --minutes 1 --cps 10 --long-legs 5    # a smoke run

Bounded: every wait has a deadline, SIPp stops at its call count (and a
timeout), every softphone has --max-seconds, and the server and the phones
are stopped in `finally`. Loopback only, ports from the benches' block
(bench/common.py). The last line is the `BENCH-RESULT` JSON `bench/run`
collects (`bench/run --only soak`: the soak is not part of the default run,
which it would fill).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The repository first (bench/pbx.py must not shadow the `pbx` package), then
# bench/ for the benches' shared modules.
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import common  # noqa: E402

common.use_bench_ports()

from tests import audio, ports  # noqa: E402
from tests.harness import PY, Server, cli, start_server  # noqa: E402

TONE_HZ = 700  # what the long legs' moderator sends
ROOM = {"name": "soak", "participant_pin": "31111", "moderator_pin": "39999"}
JOIN_S = 12.0  # the long legs' time to dial, hear the prompt and key the PIN
IDLE_WAIT_S = 30.0  # after the load, for the server to hold no call
SLICE_S = 1.0  # the listener's recording is judged second by second


def rss_kb(pid: int) -> int:
    """Resident memory of a process, in kB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def softphone(
    srv: Server, script: str, calls: int, seconds: float, record: Path | None = None
) -> subprocess.Popen[str]:
    """Our softphone placing `calls` calls to `conf`, one script each."""
    cmd = [
        PY,
        "-m",
        "pbx.softphone",
        "--target",
        srv.uri("conf"),
        "--script",
        script,
        "--calls",
        str(calls),
        "--rate",
        "5",
        "--bind",
        ports.loopback_ip(),
        "--rtp",
        ports.rtp_range(4 * calls + 8),
        "--max-seconds",
        str(int(seconds)),
    ]
    if record is not None:
        cmd += ["--record", str(record)]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def start_long_legs(srv: Server, n: int, hold: float, tmp: Path) -> dict[str, Any]:
    """The moderator (tone), the recording listener and n - 2 participants."""
    seconds = hold + JOIN_S + 60
    mod = softphone(
        srv,
        f"wait_media 5; dtmf {ROOM['moderator_pin']}#; tone {TONE_HZ}; wait {hold + 4}; hangup",
        1,
        seconds,
    )
    time.sleep(1.0)  # the moderator first: the room starts when it joins
    part = f"wait_media 5; wait 1; dtmf {ROOM['participant_pin']}#; wait {hold}; hangup"
    listener = softphone(srv, part, 1, seconds, record=tmp / "listener.wav")
    others = softphone(srv, part, n - 2, seconds) if n > 2 else None
    return {"moderator": mod, "listener": listener, "others": others, "wav": tmp / "listener.wav"}


def start_short_calls(
    srv: Server, cps: float, minutes: float, hold: float, tmp: Path
) -> tuple[subprocess.Popen[bytes], Path, int]:
    """SIPp `uac` at `cps` for `minutes`: (process, its statistics file)."""
    count = int(round(cps * minutes * 60))
    stat = tmp / "short.csv"
    cmd = [
        "sipp",
        "-sn",
        "uac",
        "-s",
        "conf",
        "-i",
        "127.0.0.1",
        "-p",
        str(ports.allocate(1)),
        # SIPp binds media ports even when it sends no RTP (-mp to -mp + 3):
        # never its default 6000.
        "-mp",
        str(ports.allocate(4)),
        "-r",
        f"{cps:g}",
        "-m",
        str(count),
        "-d",
        str(int(hold * 1000)),
        "-l",
        str(int(cps * (hold + 10))),
        "-recv_timeout",
        "10000",
        "-timeout",
        f"{int(minutes * 60 + hold + 60)}s",
        "-trace_stat",
        "-stf",
        str(stat),
        "-fd",
        "5",
        f"127.0.0.1:{srv.sip_port}",
        "-nostdin",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, stat, count


def sipp_counts(stat: Path) -> tuple[int, int]:
    """(successful, failed) calls so far, from SIPp's latest statistics row."""
    try:
        rows = list(csv.DictReader(stat.open(), delimiter=";"))
    except OSError:
        return 0, 0
    if not rows:
        return 0, 0
    last = rows[-1]
    try:
        return int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])
    except (KeyError, ValueError):
        return 0, 0


def tone_every_second(wav: Path, rep: dict[str, Any]) -> dict[str, Any]:
    """Seconds of the listener's stay in the room in which it heard the tone."""
    samples, rate = audio.load(wav)
    joined = [t for d, _m, t in rep.get("digits_sent", []) if d == "#"]
    if not joined or "hangup_sent_at" not in rep:
        return {"seconds": 0, "heard": 0, "missing": [], "error": "listener did not join"}
    start = joined[-1] + 1.5 - rep["record_start"]  # past the join beep
    end = rep["hangup_sent_at"] - 0.5 - rep["record_start"]
    missing: list[float] = []
    n = 0
    t = start
    while t + SLICE_S <= end:
        part = audio.segment(samples, rate, t, t + SLICE_S)
        n += 1
        if not audio.hears_tone(part, rate, TONE_HZ):
            missing.append(round(t - start, 1))
        t += SLICE_S
    return {"seconds": n, "heard": n - len(missing), "missing": missing[:20]}


def history(srv: Server, hold: float, long_hold: float) -> dict[str, Any]:
    """History rows of the soak's calls (the server's records are its own):
    short ones of the hold's length, long ones."""
    done = cli(srv, "report", "calls", "--json")
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-300:]}
    rows = json.loads(done.stdout or "[]")
    conf = [r for r in rows if r.get("destination") == "conf"]
    durations = [float(r.get("duration") or 0) for r in conf]
    short = [d for d in durations if d < hold + 5]
    return {
        "rows": len(conf),
        "answered": sum(1 for r in conf if r.get("disposition") == "answered"),
        "short": len(short),
        "short_right_length": sum(1 for d in short if hold - 0.5 <= d <= hold + 1.5),
        "long": sum(1 for d in durations if d >= long_hold - 10),
    }


def log_problems(srv: Server, since: int) -> dict[str, Any]:
    """ERROR and WARNING lines of the server's log from offset `since` (the
    load's start: not start-up notes): how many, and the first ones."""
    text = srv.log()[since:]
    lines = [ln for ln in text.splitlines() if re.search(r"\s(ERROR|WARNING|CRITICAL)\s", ln)]
    kinds: dict[str, int] = {}
    for ln in lines:
        key = re.sub(r"^\S+ \S+ ", "", ln)[:120]
        kinds[key] = kinds.get(key, 0) + 1
    return {
        "errors": sum(1 for ln in lines if " ERROR " in ln or " CRITICAL " in ln),
        "warnings": sum(1 for ln in lines if " WARNING " in ln),
        "first": list(kinds.items())[:8],
    }


def wait_idle(srv: Server, timeout: float) -> bool:
    """Wait until the server holds no call."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if int(srv.status()["calls"]) == 0:
                return True
        except OSError:
            return False
        time.sleep(0.5)
    return False


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    hold = args.hold
    concurrent = args.cps * (hold + 1) + args.long_legs
    srv = start_server(
        tmp / "srv",
        common.prompt_cache(),
        log_level="info",
        sip={
            "listen": f"127.0.0.1:{ports.allocate(1)}",
            "rtp_ports": ports.rtp_range(max(400, int(4 * concurrent))),
        },
        rooms=[{"name": "demo", "participant_pin": "1111", "moderator_pin": "9999"}, ROOM],
    )
    pid = srv.proc.pid
    phones: dict[str, Any] = {}
    sipp: subprocess.Popen[bytes] | None = None
    minutes: list[dict[str, Any]] = []
    try:
        time.sleep(1.0)
        idle_before = {"rss_mb": rss_kb(pid) / 1024, "fds": fds(pid)}
        log_mark = len(srv.log())
        load_s = args.minutes * 60
        phones = start_long_legs(srv, args.long_legs, load_s + JOIN_S, tmp)
        time.sleep(JOIN_S)
        sipp, stat, offered = start_short_calls(srv, args.cps, args.minutes, hold, tmp)
        t0 = time.monotonic()
        cpu0 = common.cpu_seconds(pid)
        minute_start, ok_before, failed_before = t0, 0, 0
        rss: list[int] = []
        fd: list[int] = []
        print(
            f"soak: {args.minutes:g} min, {args.cps:g} calls/s of {hold:g} s, "
            f"{args.long_legs} long legs; idle before: {idle_before['rss_mb']:.1f} MB, "
            f"{idle_before['fds']} fds",
            flush=True,
        )
        print("| minute | answered | failed | RSS MB (end / max) | fds (end / max) | CPU % |")
        print("|---:|---:|---:|---:|---:|---:|")
        while True:
            now = time.monotonic()
            rss.append(rss_kb(pid))
            fd.append(fds(pid))
            over = now - t0 >= load_s + hold + 15 or (sipp.poll() is not None and now - t0 > 5)
            if now - minute_start >= 60 or over:
                ok, failed = sipp_counts(stat)
                cpu1 = common.cpu_seconds(pid)
                row = {
                    "minute": len(minutes) + 1,
                    "seconds": round(now - minute_start, 1),
                    "answered": ok - ok_before,
                    "failed": failed - failed_before,
                    "rss_mb": round(rss[-1] / 1024, 1),
                    "rss_max_mb": round(max(rss) / 1024, 1),
                    "fds": fd[-1],
                    "fds_max": max(fd),
                    "cpu": round(100 * (cpu1 - cpu0) / (now - minute_start), 1),
                }
                minutes.append(row)
                print(
                    f"| {row['minute']} | {row['answered']} | {row['failed']} | "
                    f"{row['rss_mb']} / {row['rss_max_mb']} | {row['fds']} / {row['fds_max']} | "
                    f"{row['cpu']} |",
                    flush=True,
                )
                minute_start, ok_before, failed_before, cpu0 = now, ok, failed, cpu1
                rss, fd = [], []
            if over:
                break
            if srv.proc.poll() is not None:
                raise RuntimeError(f"the server died:\n{srv.log()[-2000:]}")
            time.sleep(1.0)
        try:
            _, err = sipp.communicate(timeout=hold + 60)
        except subprocess.TimeoutExpired:
            sipp.kill()
            sipp.communicate()
        ok, failed = sipp_counts(stat)
        reports: dict[str, Any] = {}
        for name in ("moderator", "listener", "others"):
            p = phones.get(name)
            if p is None:
                continue
            out, _ = p.communicate(timeout=JOIN_S + 90)
            lines = out.strip().splitlines()
            got = json.loads(lines[-1]) if lines else []
            reports[name] = got if isinstance(got, list) else [got]  # one call: a dict
        idle = wait_idle(srv, IDLE_WAIT_S)
        time.sleep(2.0)
        idle_after = {"rss_mb": rss_kb(pid) / 1024, "fds": fds(pid), "no_calls": idle}
        listener = reports.get("listener") or [{}]
        tone = tone_every_second(phones["wav"], listener[0])
        long_ok = sum(
            1
            for rs in reports.values()
            for r in rs
            if r.get("hung_up_by") == "local" and "error" not in r
        )
        rows = history(srv, hold, load_s)
        problems = log_problems(srv, log_mark)
    finally:
        if sipp is not None and sipp.poll() is None:
            sipp.kill()
            sipp.communicate()
        for p in phones.values():
            if isinstance(p, subprocess.Popen) and p.poll() is None:
                p.kill()
                p.communicate()
        srv.stop()
    warm = minutes[min(len(minutes) - 1, 2) :] if minutes else []
    return {
        "minutes": args.minutes,
        "cps": args.cps,
        "hold_s": hold,
        "long_legs": args.long_legs,
        "offered": offered,
        "answered": ok,
        "failed": failed,
        "per_minute": minutes,
        "idle_before": idle_before,
        "idle_after": idle_after,
        "rss_growth_after_warmup_mb": (
            round(warm[-1]["rss_mb"] - warm[0]["rss_mb"], 1) if len(warm) > 1 else None
        ),
        "long_legs_whole": long_ok,
        "tone_every_second": tone,
        "history": rows,
        "log": problems,
    }


def print_summary(r: dict[str, Any]) -> None:
    tone = r["tone_every_second"]
    print()
    print(f"calls answered: {r['answered']} of {r['offered']} ({r['failed']} failed)")
    print(f"history rows: {r['history']}")
    print(
        f"long legs up to the end: {r['long_legs_whole']} of {r['long_legs']}; the listener "
        f"heard the tone in {tone.get('heard')} of {tone.get('seconds')} seconds"
        + (f" (missing at {tone['missing']})" if tone.get("missing") else "")
    )
    before, after = r["idle_before"], r["idle_after"]
    print(
        f"idle: {before['rss_mb']:.1f} MB, {before['fds']} fds before; "
        f"{after['rss_mb']:.1f} MB, {after['fds']} fds after"
        + ("" if after["no_calls"] else " (calls still up)")
    )
    if r["rss_growth_after_warmup_mb"] is not None:
        print(f"RSS from minute 3 to the last: {r['rss_growth_after_warmup_mb']:+.1f} MB")
    print(f"log: {r['log']['errors']} errors, {r['log']['warnings']} warnings")
    for line, n in r["log"]["first"]:
        print(f"  {n} x {line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the calls arrive")
    ap.add_argument("--cps", type=float, default=40.0, help="short calls per second")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds each short call stays")
    ap.add_argument("--long-legs", type=int, default=20, help="legs up the whole time (>= 2)")
    args = ap.parse_args(argv)
    if args.long_legs < 2:
        ap.error("--long-legs: at least the moderator and the listener")
    common.graceful_sigterm()
    started, load0 = time.monotonic(), common.loadavg()
    with tempfile.TemporaryDirectory(prefix="ponte-soak-") as tmp:
        result = run(args, Path(tmp))
    print_summary(result)
    common.emit("soak", result, load0, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
