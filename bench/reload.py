#!/usr/bin/env python3
"""RTP continuity while `ponte reload` swaps a 10,000-line provisioning file.

Starts the appliance on a generated file (2,000 extensions, 500 rooms, line
profiles), puts a softphone moderator in a room sending a tone, and joins the
same room with a minimal raw SIP UA (bench/rawleg.py): a plain UDP socket
sends the INVITE (SDP pointing at an RTP port this script owns), ACKs the 200
and keys the participant PIN as SIP INFO (application/dtmf-relay). The kernel
stamps the arrival of every RTP packet the server sends to that port
(SO_TIMESTAMPNS), so a slow bench process cannot fake a gap. Then it reloads a slightly changed
file N times through the CLI and N times straight through the control socket,
and prints reload times and the largest RTP inter-arrival gap during the
reloads against a quiet baseline. Goal: no gap over 40 ms. SIP OPTIONS sent
back to back meanwhile show how long the server's loop thread (which alone
answers SIP and DTMF) was kept busy.

    .venv/bin/python bench/reload.py [--reloads 5] [--baseline 5]

Bounded: loopback only, ports from the benches' block (bench/common.py), and an
alarm ends the run after 115 s whatever happens. The last line is the
`BENCH-RESULT` JSON that `bench/run` collects.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# The repository first (bench/pbx.py must not shadow the `pbx` package), then
# bench/ for the benches' shared modules.
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import common  # noqa: E402

common.use_bench_ports()  # before tests.ports hands out a single port

from dialcheck import make_config  # noqa: E402
from rawleg import RawLeg, gaps, lost  # noqa: E402

from tests import ports  # noqa: E402
from tests.harness import PY, Server, start_server  # noqa: E402

GOAL_MS = 40.0
DEADLINE_S = 115  # the whole run, start to finish
EXTENSIONS = 2000
ROOMS = 500
LINES = 500  # line profiles: with the extensions and rooms, about 10,000 YAML lines
PROFILES = 20
ROOM = 0  # the room both callers join


def participant_pin(i: int) -> str:
    """Room i's participant PIN (6 digits: unique across the 500 rooms)."""
    return f"{100000 + i}"


def moderator_pin(i: int) -> str:
    """Room i's moderator PIN."""
    return f"{600000 + i}"


def big_config(tmp: Path) -> dict[str, Any]:
    """The provisioning overrides: dialcheck's line profiles, plus rooms and extensions."""
    random.seed(7)  # make_config draws area codes: the same file every run
    lines_file = tmp / "lines.yaml"
    make_config(lines_file, LINES, PROFILES, tmp / "unused.db")
    cfg: dict[str, Any] = yaml.safe_load(lines_file.read_text())
    cfg.pop("database")  # start_server puts the database in the server's own folder
    cfg["rooms"] = [
        {"name": f"r{i}", "participant_pin": participant_pin(i), "moderator_pin": moderator_pin(i)}
        for i in range(ROOMS)
    ]
    # Passwords hold "0" + a 4-digit index below 2000; numbers start with 2 or 3,
    # so no password contains its number (the schema refuses that).
    cfg["extensions"] = [
        {"number": f"{2000 + i}", "name": f"Ramal {i}", "password": f"pw-Secret-{i:05d}x"}
        for i in range(EXTENSIONS)
    ]
    cfg["pbx"] = {"listen": f"127.0.0.1:{ports.allocate(1)}", "flood_density": 1000}
    cfg["sip"] = {"listen": f"127.0.0.1:{ports.allocate(1)}", "rtp_ports": ports.rtp_range(40)}
    return cfg


def variant(config: dict[str, Any], n: int) -> str:
    """The running file with one room and one extension changed: a real diff each time."""
    cfg = dict(config)
    cfg["rooms"] = list(cfg["rooms"])
    room = dict(cfg["rooms"][1 + n])
    room["max_members"] = 20 + n
    cfg["rooms"][1 + n] = room
    cfg["extensions"] = list(cfg["extensions"])
    ext = dict(cfg["extensions"][n])
    ext["password"] = f"pw-Changed-{n:03d}-x"
    cfg["extensions"][n] = ext
    return yaml.safe_dump(cfg)


def log_times(server: Server, needle: str) -> list[float]:
    """Wall-clock times (epoch s) of the server's log lines containing `needle`."""
    out = []
    for line in server.log().splitlines():
        if needle in line:
            with contextlib.suppress(ValueError):
                stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                out.append(stamp.timestamp())
    return out


def members(server: Server, room: str) -> int:
    """Members of a running room (0 if it is not running)."""
    live = server.status()["rooms"].get(room)
    return len(live["members"]) if live else 0


def wait_for(pred: Any, timeout: float, what: str) -> None:
    """Poll `pred` until it holds; TimeoutError naming `what` if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class Reload:
    """One reload and what it did to the RTP stream."""

    via: str
    sent: float  # wall clock when the request (or the CLI) started
    answered: float
    server_done: float = float("nan")  # the server's "reloaded" log line
    max_gap: float = 0.0
    lost: int = 0
    sip_delay: float = 0.0  # the slowest answer to an OPTIONS probe during the reload


def reload_probed(server: Server, leg: RawLeg, via: str) -> Reload:
    """One reload (by the CLI, or straight through the control socket) while
    SIP OPTIONS probe the server's loop thread back to back."""
    from ponte.control import request

    done: dict[str, Any] = {}

    def act() -> None:
        done["sent"] = time.time()
        if via == "CLI":
            r = subprocess.run(
                [PY, "-m", "ponte.cli", "reload", "--config", str(server.config_path)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=30,
            )
            done["ok"], done["why"] = r.returncode == 0, r.stderr.strip()
        else:
            answer = request(server.control, "reload", timeout=30)
            done["ok"], done["why"] = bool(answer.get("ok")), str(answer)
        done["answered"] = time.time()

    worker = threading.Thread(target=act, daemon=True, name=f"reload-{via}")
    worker.start()
    worst = 0.0
    while worker.is_alive():
        worst = max(worst, leg.options())
        time.sleep(0.01)
    worker.join()
    if not done.get("ok"):
        raise RuntimeError(f"reload via {via} refused: {done.get('why')}")
    return Reload(via, done["sent"], done["answered"], sip_delay=worst)


def breakdown(server: Server, before: str, after: str, tmp: Path) -> dict[str, float]:
    """Where a reload's time goes, the server's steps timed one by one in process."""
    import shutil

    from pbx.kamailio import sync_subscribers
    from provisioning.diff import diff_configs
    from provisioning.loader import load_config

    old_path, new_path = tmp / "before.yaml", tmp / "after.yaml"
    old_path.write_text(before)
    new_path.write_text(after)
    t = []
    for _ in range(3):
        t0 = time.perf_counter()
        new = load_config(new_path)
        t.append(time.perf_counter() - t0)
    old = load_config(old_path)
    t0 = time.perf_counter()
    diff_configs(old, new)
    diff_s = time.perf_counter() - t0
    db = tmp / "kamailio-copy.db"
    shutil.copy(Path(server.config["state_dir"]) / "kamailio" / "kamailio.db", db)
    t0 = time.perf_counter()
    sync_subscribers(db, new.extensions)
    sync_s = time.perf_counter() - t0
    return {
        "load+validate YAML": statistics.median(t),
        "diff for the audit": diff_s,
        "Kamailio subscriber sync": sync_s,
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Set up, measure, tear down, print the tables; return the numbers."""
    setup = (ROOT / "pbx" / "sipsetup.py").read_text()
    vad_off = bool(re.search(r"noVad\s*=\s*True", setup))
    cache = common.prompt_cache()
    overrides = big_config(tmp)
    srv = start_server(tmp / "srv", cache, log_level="info", **overrides)
    nlines = len(srv.config_path.read_text().splitlines())
    size_kib = srv.config_path.stat().st_size // 1024
    # Every variant is rendered now, so writing one during the run is a plain write.
    variants = [variant(srv.config, n) for n in range(2 * args.reloads)]
    mod: subprocess.Popen[bytes] | None = None
    leg: RawLeg | None = None
    room = f"r{ROOM}"
    try:
        mod = subprocess.Popen(
            [
                PY,
                "-m",
                "pbx.softphone",
                "--target",
                srv.uri("conf"),
                "--script",
                f"wait_media 5; dtmf {moderator_pin(ROOM)}#; tone 440; wait_end 100",
                "--rtp",
                ports.rtp_range(8),
                "--max-seconds",
                "105",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: members(srv, room) == 1, 15, "the moderator to join")
        leg = RawLeg(("127.0.0.1", srv.sip_port))
        leg.call()
        time.sleep(0.5)  # the PIN prompt starts; digits barge in
        leg.info_digits(participant_pin(ROOM) + "#")
        wait_for(lambda: members(srv, room) == 2, 10, "the raw UA to join")
        time.sleep(1.0)  # past the join beep
        base_start = time.time()
        base_sip = []  # OPTIONS answer times with nothing else going on
        while time.time() < base_start + args.baseline:
            base_sip.append(leg.options())
            time.sleep(0.01)
        base_end = time.time()

        reloads: list[Reload] = []
        for n, text in enumerate(variants):
            srv.config_path.write_text(text)
            rl = reload_probed(srv, leg, "CLI" if n < args.reloads else "socket")
            reloads.append(rl)
            time.sleep(args.pause)  # quiet between reloads: each gap belongs to one
        time.sleep(0.3)
        still = members(srv, room)
    finally:
        if leg is not None and leg.target:
            leg.bye()
        if mod is not None:
            mod.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                mod.wait(10)
        srv.stop()

    parts = breakdown(srv, variants[-2], variants[-1], tmp)
    done = log_times(srv, "reloaded ")
    assert leg is not None
    for rl in reloads:
        after = [t for t in done if t >= rl.sent - 0.002]  # log stamps are to the ms
        rl.server_done = after[0] if after else float("nan")
        # Each reload's window: from its request to 200 ms after its answer.
        g = gaps(leg.arrivals, rl.sent, rl.answered + 0.2)
        rl.max_gap = max(g, default=float("nan"))
        rl.lost = lost(leg.arrivals, rl.sent, rl.answered + 0.2)
    base = gaps(leg.arrivals, base_start, base_end)
    during = [x for rl in reloads for x in gaps(leg.arrivals, rl.sent, rl.answered + 0.2)]

    print(
        f"config: {nlines} YAML lines, {size_kib} KiB ({EXTENSIONS} extensions, {ROOMS} rooms, "
        f"{LINES} lines, {PROFILES} profiles); VAD {'off' if vad_off else 'ON (gaps expected)'}"
        f" (pbx/sipsetup.py noVad); members in {room} after the reloads: {still}"
    )
    print()
    print(
        "| reload | via | wall ms (request -> answer) | server ms (-> 'reloaded' log) "
        "| slowest SIP answer ms | max RTP gap ms | lost |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for i, rl in enumerate(reloads, 1):
        print(
            f"| {i} | {rl.via} | {(rl.answered - rl.sent) * 1000:.0f} | "
            f"{(rl.server_done - rl.sent) * 1000:.0f} | {rl.sip_delay * 1000:.0f} | "
            f"{rl.max_gap:.1f} | {rl.lost} |"
        )
    print()
    print("| phase | RTP packets | p50 gap ms | p99 gap ms | max gap ms | lost | slowest SIP ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| baseline {args.baseline:g} s | {len(base) + 1} | {statistics.median(base):.1f} | "
        f"{common.pct(base, 99):.1f} | {max(base):.1f} | "
        f"{lost(leg.arrivals, base_start, base_end)} | "
        f"{max(base_sip) * 1000:.0f} |"
    )
    print(
        f"| during {len(reloads)} reloads | {len(during) + len(reloads)} | "
        f"{statistics.median(during):.1f} | {common.pct(during, 99):.1f} | {max(during):.1f} | "
        f"{sum(rl.lost for rl in reloads)} | {max(rl.sip_delay for rl in reloads) * 1000:.0f} |"
    )
    print()
    for via in ("CLI", "socket"):
        walls = [(rl.answered - rl.sent) * 1000 for rl in reloads if rl.via == via]
        label = "ponte reload (whole CLI)" if via == "CLI" else "control request -> answer"
        print(f"{label}: p50 {statistics.median(walls):.0f} ms, max {max(walls):.0f} ms")
    print(
        "the server's reload, in process on the same file: "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in parts.items())
    )
    worst = max(during)
    verdict = "met" if worst <= GOAL_MS else "NOT met"
    print(f"goal (no RTP gap over {GOAL_MS:.0f} ms during reloads): {verdict} (max {worst:.1f} ms)")
    by_via = {
        via: [(rl.answered - rl.sent) * 1000 for rl in reloads if rl.via == via]
        for via in ("CLI", "socket")
    }
    return {
        "config_lines": nlines,
        "reloads": len(reloads),
        "cli_wall_ms": common.summary(by_via["CLI"]),
        "socket_wall_ms": common.summary(by_via["socket"]),
        "server_ms": common.summary([(rl.server_done - rl.sent) * 1000 for rl in reloads]),
        "slowest_sip_ms": max(rl.sip_delay for rl in reloads) * 1000,
        "baseline_max_gap_ms": max(base),
        "during_max_gap_ms": worst,
        "during_p99_gap_ms": common.pct(during, 99),
        "during_lost": sum(rl.lost for rl in reloads),
        "steps_ms": {k: v * 1000 for k, v in parts.items()},
        "members_after": still,
        "ok": still == 2,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reloads", type=int, default=5, help="reloads by CLI, and as many by socket")
    ap.add_argument("--baseline", type=float, default=5.0, help="seconds of RTP before reloading")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between reloads")
    args = ap.parse_args()

    def overdue(_sig: int, _frame: FrameType | None) -> None:
        raise TimeoutError(f"bench/reload.py ran over {DEADLINE_S} s")

    signal.signal(signal.SIGALRM, overdue)
    signal.alarm(DEADLINE_S)
    common.graceful_sigterm()
    load0, t0 = common.loadavg(), time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="ponte-bench-reload-") as tmp:
            result = run(args, Path(tmp))
    finally:
        signal.alarm(0)
    common.emit("reload", result, load0, t0)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
