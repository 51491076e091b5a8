"""What every bench shares: its port block, CPU and load sampling, percentiles,
the prompt cache, and the JSON line that `bench/run` reads back.

Each bench script is also a plain command. Its last line of output is
`BENCH-RESULT {json}`: `bench/run` parses that line, so a bench can print a
human table above it and still be collected by machine.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULT_TAG = "BENCH-RESULT "
TICKS = os.sysconf("SC_CLK_TCK")
# tests/ports.py gives every pytest-xdist worker its own block of 3,000 UDP
# ports (21000 + 3000 * index) and its own 127.(20 + index).x.x addresses.
# A `pytest -n 4` run uses blocks 0-3, bench/reload.py used block 12 on its
# own: the benches take block 13 (ports 60000-62999, addresses 127.33.x.x), so
# they can run while the test suite runs. PONTE_BENCH_BLOCK moves them, so a
# second bench run (a helper's, say) can go beside the lead's on block 13.
BENCH_BLOCK = int(os.environ.get("PONTE_BENCH_BLOCK", "13"))
# Linux syscall numbers (x86-64) a thread of the server is parked in: they tell
# pjmedia's threads apart, since pjlib does not name its threads.
SYSCALL_NAMES = {
    "232": "epoll_wait",
    "281": "epoll_pwait",
    "230": "clock_nanosleep",
    "35": "nanosleep",
    "202": "futex",
    "7": "poll",
    "271": "ppoll",
    "43": "accept",
    "288": "accept4",
    "0": "read",
}


def use_bench_ports() -> None:
    """Point tests/ports.py at the benches' own block (call before any allocate)."""
    os.environ["PYTEST_XDIST_WORKER"] = f"gw{BENCH_BLOCK}"
    os.environ["PONTE_TEST_SLOT_OFFSET"] = "0"


def loadavg() -> str:
    """The 1/5/15-minute load averages, as /proc/loadavg has them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def thread_cpu(pid: int) -> dict[int, float]:
    """utime + stime of each thread of a process, in seconds, by thread id."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended between listing and reading
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def thread_syscall(pid: int, tid: int) -> str:
    """The syscall a thread is blocked in ("running" when it is on a CPU)."""
    try:
        first = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return "?"
    return SYSCALL_NAMES.get(first, first)


def system_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank); NaN for no values."""
    s = sorted(values)
    if not s:
        return math.nan
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    """n, p50, p99 and max of some measurements."""
    return {
        "n": len(values),
        "p50": statistics.median(values) if values else math.nan,
        "p99": pct(values, 99),
        "max": max(values) if values else math.nan,
    }


def prompt_cache() -> Path:
    """The rendered prompts the test suite also uses (rendered once, then reused)."""
    from ivr.prompts import PromptLibrary

    cache = Path(os.environ.get("PONTE_TEST_PROMPTS", "/tmp/ponte-test-prompts"))
    PromptLibrary(cache).render_all()
    return cache


THREAD_ROLES = {
    # What a pjmedia thread waits in, most telling first: the bridge clock sleeps
    # between ticks (and, when busy, may also wait on the bridge's mutex), the
    # ioqueue worker waits in epoll.
    "clock_nanosleep": "bridge clock (mix + encode + send)",
    "nanosleep": "bridge clock (mix + encode + send)",
    "epoll_wait": "media ioqueue (RTP receive)",
    "epoll_pwait": "media ioqueue (RTP receive)",
}


def label_thread(pid: int, tid: int, samples: list[str]) -> str:
    """Name a server thread by what it waits in: pjlib leaves them all `python`.

    The loop thread is the process's first thread (it polls pjsua: SIP, the
    IVR and the rooms in Python). pjmedia's ioqueue worker waits in epoll (RTP
    receive); the conference bridge's clock (the null sound device's master
    port: mix, encode, RTP send every 20 ms) sleeps in clock_nanosleep. A
    single such sample names the thread, however busy it was otherwise.
    """
    if tid == pid:
        return "loop (pjsua poll: SIP + Python)"
    for wait, role in THREAD_ROLES.items():
        if wait in samples:
            return role
    waits = Counter(s for s in samples if s not in ("running", "?"))
    what = waits.most_common(1)[0][0] if waits else "running"
    return f"other ({what})"


@dataclass
class CpuWindow:
    """CPU used over a window by the server (total and per thread), by other
    processes of ours (the load generators), and by the whole machine."""

    server_pid: int
    others: list[int] = field(default_factory=list)
    # More app-server processes (the other nodes of `ponte serve --nodes N`):
    # each one's total CPU, beside the server's (measured per thread too).
    peers: list[int] = field(default_factory=list)
    p0: dict[int, float] = field(default_factory=dict)
    t0: float = 0.0
    s0: float = 0.0
    o0: dict[int, float] = field(default_factory=dict)
    th0: dict[int, float] = field(default_factory=dict)
    sys0: tuple[int, int] = (0, 0)
    syscalls: dict[int, list[str]] = field(default_factory=dict)
    # Labels found in earlier windows on the same server (thread ids stay): a
    # thread saturated in this window may never be seen waiting at all.
    known: dict[int, str] = field(default_factory=dict)

    def start(self) -> None:
        """Take the first readings."""
        self.t0 = time.monotonic()
        self.s0 = cpu_seconds(self.server_pid)
        self.th0 = thread_cpu(self.server_pid)
        self.o0 = {p: _cpu_or_zero(p) for p in self.others}
        self.p0 = {p: _cpu_or_zero(p) for p in self.peers}
        self.sys0 = system_jiffies()

    def sample_syscalls(self) -> None:
        """Note what each server thread is doing now (call a few times a second)."""
        for tid in self.th0:
            self.syscalls.setdefault(tid, []).append(thread_syscall(self.server_pid, tid))

    def stop(self) -> dict[str, Any]:
        """CPU % over the window: 100 = one core busy."""
        dt = time.monotonic() - self.t0
        s1 = cpu_seconds(self.server_pid)
        th1 = thread_cpu(self.server_pid)
        o1 = {p: _cpu_or_zero(p) for p in self.others}
        p1 = {p: _cpu_or_zero(p) for p in self.peers}
        busy1, total1 = system_jiffies()
        threads: list[dict[str, Any]] = []
        for tid, c1 in th1.items():
            used = 100 * (c1 - self.th0.get(tid, 0.0)) / dt
            label = label_thread(self.server_pid, tid, self.syscalls.get(tid, []))
            if label.startswith("other") and tid in self.known:
                label = self.known[tid]
            elif not label.startswith("other"):
                self.known[tid] = label
            seen = self.syscalls.get(tid, [])
            # Where the thread was when sampled: a thread with little CPU that is
            # mostly in futex waits for a lock (e.g. the bridge's mutex).
            waits = {k: round(n / len(seen), 2) for k, n in Counter(seen).most_common(3)}
            threads.append({"tid": tid, "what": label, "cpu": round(used, 1), "waits": waits})
        threads.sort(key=lambda t: -t["cpu"])
        server = 100 * (s1 - self.s0) / dt
        return {
            "seconds": round(dt, 2),
            "server_cpu": server,
            # The server first, then each peer; with peers, server_cpu is the
            # server's alone and this their sum.
            "process_cpu": [server, *(100 * (p1[p] - self.p0[p]) / dt for p in self.peers)],
            "server_threads": threads,
            "busiest_thread_cpu": threads[0]["cpu"] if threads else 0.0,
            "generator_cpu": sum(100 * (o1[p] - self.o0[p]) / dt for p in self.others),
            # Whole machine, 100 = every core busy: shows when the load
            # generators, a test run and the server fight for the same cores.
            "machine_busy": 100 * (busy1 - self.sys0[0]) / max(1, total1 - self.sys0[1]),
        }


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def graceful_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so `finally:` blocks stop the servers
    (and their Kamailio) when `bench/run` ends a bench that ran over."""

    def handler(_sig: int, _frame: FrameType | None) -> None:
        raise SystemExit(f"{Path(sys.argv[0]).name}: terminated")

    signal.signal(signal.SIGTERM, handler)


def emit(bench: str, result: dict[str, Any], load_start: str, started: float) -> None:
    """Print the bench's result as the `BENCH-RESULT` line `bench/run` reads."""
    result = {
        "bench": bench,
        **result,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(RESULT_TAG + json.dumps(result, default=_jsonable), flush=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {value!r}")
