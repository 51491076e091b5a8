#!/usr/bin/env python3
"""The relay's cost: legs in rooms versus the CPU of the app server, rtpengine
and Kamailio, with the media straight to the app server and through the relay.

One app server with Kamailio and rtpengine beside it (a trunk whose provider
is this host, so Kamailio accepts its DID calls unauthenticated) runs two
series of the same calls, one after the other:

1. **direct**: softphones (pbx/softphone.py, PCMU) call the access number
   `conf` on the app server's loopback `sip.listen`; Kamailio and rtpengine
   sit idle beside it.
2. **relayed**: the same softphones call the trunk's DID (+551130001000,
   routed to `conf`) at Kamailio, as the trunk provider would (from
   127.0.0.1, the provider's address, with a Route to Kamailio): Kamailio
   hands the SDP to rtpengine, which relays every RTP packet both ways
   between the phone and the app server.

The legs rise in steps (each step a new softphone process placing the new
calls at --rate per second); every leg keys its room's PIN (the first of each
room the moderator's, so the room mixes) and sends a 440 Hz tone, so every
leg sends and receives a packet every 20 ms. Three sample phones, counted
among the legs, sit in a room of their own, each sending its own tone (500,
700 and 900 Hz) and recording what it hears: the other two tones, one source
each. Once every leg of a step has joined and a second has passed, a steady
window measures:

- the CPU (utime + stime from /proc/PID/stat; 100 = one core) of the app
  server (`ponte serve`), of rtpengine (its pid file), of Kamailio (its whole
  process group: the pid in its pid file leads the group), of the load
  phones, and how busy the whole machine was (/proc/stat);
- the legs the server holds (`ponte status`: SIP calls and room members) and
  the calls rtpengine holds (ng `list`), read after the window, since a
  status in relayed mode asks rtpengine about every member;
- whether the audio still arrives: the part of each sample phone's recording
  written during the window (the WAV grows as it records), the share of its
  energy in the two tones it should hear and the longest stretch in which
  one of them was missing (tests/audio.py). Audio is *ok* when every sample
  heard them (level > 0.01, share > 0.5) with no hole over 100 ms.

An idle window before the first call gives every process's baseline, so the
per-leg figures are least-squares slopes through the idle point and the
steps: "rtpengine CPU per relayed leg" and "server CPU per leg, direct vs
relayed", in % of one core.

    .venv/bin/python bench/relay.py [--steps 10,20,40,80,160] [--window 10] [--budget 200]
    .venv/bin/python bench/relay.py --quick      # one step of 10 legs, 3-s windows

Bounded: loopback only, ports from the benches' block (bench/common.py),
every softphone has --max-seconds, every wait a deadline, steps that would
not fit the time budget are skipped, and the server (with its Kamailio and
rtpengine) and every softphone are stopped in `finally`. The last line is
the `BENCH-RESULT` JSON that `bench/run` collects.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The repository first (bench/pbx.py must not shadow the `pbx` package), then
# bench/ for the benches' shared modules.
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import common  # noqa: E402

common.use_bench_ports()

import numpy as np  # noqa: E402
from callrate import drained  # noqa: E402
from legs import Layout, log_summary, wait_joined  # noqa: E402

from pbx.rtpengine import NgClient, RtpEngineError, split_host_port  # noqa: E402
from tests import audio, ports  # noqa: E402
from tests.harness import PY, Server, start_server  # noqa: E402
from tests.pbx_helpers import pbx_overrides  # noqa: E402

DID = "+551130001000"  # pbx_overrides' DID, routed to the access number `conf`
ROOM = 10  # members per room
TONE_HZ = 440  # what every load leg sends
# The sample room: three recording phones, each sending its own tone, so each
# hears two tones from one source apiece. (Phones hearing the load rooms' mix
# of many 440 Hz legs would see its level swing as the senders' phases shift
# against each other, which reads as holes that are not there.)
SAMPLE_TONES = (500, 700, 900)
SAMPLE_ROOM = {"name": "sample", "participant_pin": "20000", "moderator_pin": "60000"}
PHONE_NICE = 5  # the load generators' niceness (as bench/legs.py)
JOIN_SETTLE_S = 1.0  # after the last join: past the join beeps
TONE_SHARE_MIN = 0.5  # tests/audio.hears_tone's own bar
GAP_LIMIT_MS = 100.0  # longest stretch without the tone a sample may hear
MODES = ("direct", "relayed")


@dataclass
class Relay:
    """The server's Kamailio and rtpengine: where to read their CPU."""

    rtpengine_pid: int
    kamailio_pgid: int
    ng: NgClient

    @classmethod
    def of(cls, srv: Server) -> Relay:
        """Read both pid files under the server's state_dir (waiting for them briefly)."""
        state = Path(srv.config["state_dir"])
        rtp = _read_pid(state / "rtpengine" / "rtpengine.pid")
        kam = _read_pid(state / "kamailio" / "kamailio.pid")
        host, port = split_host_port(srv.config["pbx"]["rtpengine_control"])
        return cls(rtp, _pgid(kam), NgClient(host, port, timeout=1.0))

    def kamailio_pids(self) -> list[int]:
        """Every process in Kamailio's group (the creator, main process and
        SIP/timer/ctl workers)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # a process that ended while we listed
            if int(fields[2]) == self.kamailio_pgid:
                found.append(int(stat.parent.name))
        return found

    def pids(self) -> list[int]:
        """rtpengine and every process in Kamailio's group."""
        return [self.rtpengine_pid, *self.kamailio_pids()]

    def kamailio_cpu(self) -> float:
        """utime + stime, in seconds, of every process in Kamailio's group."""
        total = 0.0
        for pid in self.kamailio_pids():
            with contextlib.suppress(OSError):  # a process that ended meanwhile
                total += common.cpu_seconds(pid)
        return total

    def rtpengine_calls(self) -> int | None:
        """How many calls rtpengine holds (deleted ones linger for its delete-delay)."""
        try:
            return len(self.ng.list_calls(limit=5000))
        except RtpEngineError:
            return None


def _read_pid(path: Path, timeout: float = 5.0) -> int:
    """The pid in a pid file (the server writes them as its children start)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no pid in {path}") from None
            time.sleep(0.1)


def _pgid(pid: int) -> int:
    """A process's group id, from /proc/PID/stat."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])


@dataclass
class Recording:
    """A sample phone's WAV while pjmedia still writes it: the header's sizes
    are not filled in until the call ends, so the data is read by offset."""

    path: Path
    data_at: int = 0
    rate: int = 8000
    marks: list[int] = field(default_factory=list)

    def size(self) -> int:
        """Bytes written so far (0 before the file exists)."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def _header(self) -> bool:
        if self.data_at:
            return True
        try:
            head = self.path.read_bytes()[:128]
        except OSError:
            return False
        at = head.find(b"data")
        if head[:4] != b"RIFF" or at < 0:
            return False
        self.rate = int.from_bytes(head[24:28], "little")
        self.data_at = at + 8
        return True

    def samples(self, start: int, end: int) -> np.ndarray:
        """The 16-bit samples written between two file sizes, in [-1, 1]."""
        if not self._header():
            return np.zeros(0)
        start = max(start, self.data_at)
        start += (start - self.data_at) % 2  # on a sample boundary
        with self.path.open("rb") as fh:
            fh.seek(start)
            raw = fh.read(max(0, end - start))
        raw = raw[: len(raw) // 2 * 2]
        return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0


def heard(rec: Recording, start: int, end: int, tones: list[int]) -> dict[str, Any]:
    """What a sample phone heard during the window: seconds recorded, level,
    the share of the energy in the other phones' tones, and the longest
    stretch in which one of them was missing (tests/audio.longest_gap: a
    20 ms step below half the tone's median amplitude)."""
    s = rec.samples(start, end)
    seconds = len(s) / rec.rate
    if seconds < 0.5:
        return {"seconds": round(seconds, 2), "rms": 0.0, "tone_share": 0.0, "max_gap_ms": None}
    return {
        "seconds": round(seconds, 2),
        "rms": round(audio.rms(s), 4),
        "tone_share": round(sum(audio.band_fraction(s, rec.rate, hz) for hz in tones), 3),
        "max_gap_ms": round(1000 * max(audio.longest_gap(s, rec.rate, hz) for hz in tones)),
    }


def audio_ok(h: dict[str, Any]) -> bool:
    """The tone arrived: loud enough, most of the energy, no long hole."""
    return (
        h["rms"] > 0.01
        and h["tone_share"] > TONE_SHARE_MIN
        and h["max_gap_ms"] is not None
        and h["max_gap_ms"] <= GAP_LIMIT_MS
    )


def start_phones(
    mode: str,
    srv: Server,
    pins: list[str],
    rate: float,
    seconds: float,
    err: Path,
    record: str | None = None,
    tone: int = TONE_HZ,
) -> subprocess.Popen[str]:
    """One softphone process placing len(pins) calls into rooms, each sending
    `tone` Hz, direct or through Kamailio (the provider's DID, with a Route to
    Kamailio); `record`: a WAV path for what each call hears."""
    cmd = [PY, "-m", "pbx.softphone"]
    if mode == "direct":
        cmd += ["--target", srv.uri("conf")]
    else:
        proxy = srv.config["pbx"]["listen"]
        # From 127.0.0.1 (the trunk provider's address) with Kamailio as the
        # loose route: Kamailio takes it as the provider's DID call, hands the
        # SDP to rtpengine and forwards it to the app server.
        cmd += ["--target", f"sip:{DID}@{proxy}", "--proxy", f"sip:{proxy};lr"]
    cmd += [
        "--bind",
        "127.0.0.1",
        "--script",
        f"wait_media 10; dtmf {{pin}}#; tone {tone}; wait_end 3600",
        "--calls",
        str(len(pins)),
        "--rate",
        str(rate),
        "--pins",
        ",".join(pins),
        "--codecs",
        "PCMU/8000",
        "--rtp",
        ports.rtp_range(3 * len(pins) + 10),
        "--max-seconds",
        f"{seconds:.0f}",
    ]
    if record:
        cmd += ["--record", record]
    # The load generators share the server's two cores; at a lower priority they
    # take what the server and the relay leave, as phones elsewhere would.
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=err.open("a"),
        text=True,
        preexec_fn=lambda: os.nice(PHONE_NICE),
    )


def stop_phones(phones: list[subprocess.Popen[str]], errors: list[str], mode: str) -> None:
    """SIGTERM every softphone (it hangs its calls up and prints its reports);
    note calls that failed for another reason than being stopped."""
    for p in phones:
        if p.poll() is None:
            p.terminate()
    for p in phones:
        try:
            out, _ = p.communicate(timeout=20)
            lines = out.strip().splitlines()
            reports = json.loads(lines[-1]) if lines else []
            if isinstance(reports, dict):
                reports = [reports]
            bad = [r.get("error") for r in reports if r.get("error")]
            bad = [e for e in bad if e != "script did not finish"]  # we stopped them
            if bad:
                errors.append(f"{mode} softphone: {len(bad)} calls: {bad[0]}")
        except (subprocess.TimeoutExpired, json.JSONDecodeError, ValueError):
            p.kill()
            p.communicate()


def window(
    srv: Server, relay: Relay, phones: list[subprocess.Popen[str]], seconds: float
) -> dict[str, Any]:
    """CPU of the server (and per thread), rtpengine, Kamailio and the phones
    over `seconds`, nothing else asked of the server meanwhile."""
    cpu = common.CpuWindow(srv.proc.pid, [p.pid for p in phones if p.poll() is None])
    cpu.start()
    r0, k0 = common.cpu_seconds(relay.rtpengine_pid), relay.kamailio_cpu()
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        cpu.sample_syscalls()
        time.sleep(0.2)
    out = cpu.stop()
    dt = time.monotonic() - t0
    out["rtpengine_cpu"] = 100 * (common.cpu_seconds(relay.rtpengine_pid) - r0) / dt
    out["kamailio_cpu"] = 100 * (relay.kamailio_cpu() - k0) / dt
    out["total_cpu"] = out["server_cpu"] + out["rtpengine_cpu"] + out["kamailio_cpu"]
    return out


def series(
    mode: str,
    srv: Server,
    relay: Relay,
    steps: list[int],
    window_s: float,
    rate: float,
    deadline: float,
    tmp: Path,
    errors: list[str],
) -> tuple[list[dict[str, Any]], str]:
    """Raise the legs through `steps` in one mode; (steps measured, why it stopped early)."""
    layout = Layout(ROOM, steps[-1])
    recordings = [Recording(tmp / f"{mode}-sample-{hz}.wav") for hz in SAMPLE_TONES]
    phones: list[subprocess.Popen[str]] = []
    out: list[dict[str, Any]] = []
    stopped = ""
    have = 0
    try:
        for target in steps:
            new = target - have
            # Placing the calls, keying PINs (about 1.5 s), the settle, the
            # window and the status afterwards.
            need = new / rate + 4 + JOIN_SETTLE_S + window_s + 3
            if time.monotonic() + need > deadline:
                stopped = f"time budget before {target} legs"
                break
            left = deadline - time.monotonic() + 60  # --max-seconds: outlive us, not hang
            err = tmp / f"{mode}-phones.err"
            if have == 0:
                # The sample room first (one process per tone: a process sends
                # one tone), its first member the moderator so the room mixes.
                for i, (hz, rec) in enumerate(zip(SAMPLE_TONES, recordings, strict=True)):
                    pin = SAMPLE_ROOM["moderator_pin" if i == 0 else "participant_pin"]
                    phones.append(
                        start_phones(mode, srv, [pin], rate, left, err, str(rec.path), hz)
                    )
            # The load legs fill rooms of ROOM; the sample phones count as legs.
            load_have = max(0, have - len(SAMPLE_TONES))
            pins = [layout.pin(s) for s in range(load_have, target - len(SAMPLE_TONES))]
            if pins:
                phones.append(start_phones(mode, srv, pins, rate, left, err))
            n = wait_joined(srv, target, 10 + new / 20)
            time.sleep(JOIN_SETTLE_S)
            marks0 = [r.size() for r in recordings]
            step: dict[str, Any] = {"mode": mode, "legs": target, "joined": n}
            step |= window(srv, relay, phones, window_s)
            marks1 = [r.size() for r in recordings]
            t = time.monotonic()
            st = srv.status()
            # In relayed mode a status asks rtpengine about every member: timed,
            # and kept out of the window.
            step["status_ms"] = round(1000 * (time.monotonic() - t), 1)
            step["calls_up"] = st["calls"]
            step["members"] = sum(len(r["members"]) for r in st["rooms"].values())
            step["rtpengine_calls"] = relay.rtpengine_calls()
            step["samples"] = [
                heard(r, a, b, [hz for hz in SAMPLE_TONES if hz != own])
                for own, r, a, b in zip(SAMPLE_TONES, recordings, marks0, marks1, strict=True)
            ]
            step["samples_ok"] = sum(audio_ok(h) for h in step["samples"])
            step["audio_ok"] = bool(step["samples"]) and step["samples_ok"] == len(step["samples"])
            print(_step_line(step), file=sys.stderr, flush=True)
            out.append(step)
            have = target
    finally:
        stop_phones(phones, errors, mode)
    return out, stopped


def fit(points: list[tuple[float, float]]) -> dict[str, float | None]:
    """Least-squares line through (legs, CPU %) points: per-leg slope and intercept."""
    if len(points) < 2:
        return {"per_leg": None, "intercept": None}
    xs = np.array([p[0] for p in points], dtype=float)
    ys = np.array([p[1] for p in points], dtype=float)
    slope, intercept = np.polyfit(xs, ys, 1)
    return {"per_leg": round(float(slope), 4), "intercept": round(float(intercept), 2)}


def derive(idle: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-leg CPU (% of one core) by process and mode: slopes through the
    idle window and the steps, and the cost the relay adds per leg."""
    out: dict[str, Any] = {}
    for mode in MODES:
        mine = [s for s in steps if s["mode"] == mode]
        out[mode] = {
            what: fit([(0, idle[key])] + [(s["legs"], s[key]) for s in mine])
            for what, key in (
                ("server", "server_cpu"),
                ("rtpengine", "rtpengine_cpu"),
                ("kamailio", "kamailio_cpu"),
                ("total", "total_cpu"),
                ("phones", "generator_cpu"),
            )
        }
    d, r = out["direct"], out["relayed"]

    def minus(a: float | None, b: float | None) -> float | None:
        """a - b, or None when either is unknown (a series with a single step)."""
        return None if a is None or b is None else round(a - b, 4)

    out["rtpengine_per_relayed_leg"] = r["rtpengine"]["per_leg"]
    out["server_per_leg_direct"] = d["server"]["per_leg"]
    out["server_per_leg_relayed"] = r["server"]["per_leg"]
    # What relaying adds per leg, all processes of the appliance together.
    out["relay_cost_per_leg"] = minus(r["total"]["per_leg"], d["total"]["per_leg"])
    # The same at the largest step both modes reached, from the two windows
    # alone (no fit): a check on the slopes.
    both = sorted(
        {s["legs"] for s in steps if s["mode"] == "direct"}
        & {s["legs"] for s in steps if s["mode"] == "relayed"}
    )
    if both:
        n = both[-1]
        sd = next(s for s in steps if s["mode"] == "direct" and s["legs"] == n)
        sr = next(s for s in steps if s["mode"] == "relayed" and s["legs"] == n)
        out["at_largest"] = {
            "legs": n,
            "rtpengine_per_leg": round((sr["rtpengine_cpu"] - idle["rtpengine_cpu"]) / n, 4),
            "server_per_leg_direct": round((sd["server_cpu"] - idle["server_cpu"]) / n, 4),
            "server_per_leg_relayed": round((sr["server_cpu"] - idle["server_cpu"]) / n, 4),
            "total_direct": round(sd["total_cpu"], 1),
            "total_relayed": round(sr["total_cpu"], 1),
        }
        if out["rtpengine_per_relayed_leg"]:
            # Where rtpengine alone would fill one core, linearly: an extrapolation.
            out["rtpengine_core_legs"] = round(100 / out["rtpengine_per_relayed_leg"])
    return out


def measure(
    steps: list[int], window_s: float, budget: float, rate: float, keep_log: Path | None
) -> dict[str, Any]:
    """Both series on one server with Kamailio and rtpengine; the idle baseline first."""
    started = time.monotonic()
    cache = common.prompt_cache()
    result: dict[str, Any] = {
        "steps": [],
        "errors": [],
        "window_s": window_s,
        "rate": rate,
        "room": ROOM,
        "sample_tones": list(SAMPLE_TONES),
        "codec": "PCMU/8000",
        "stopped": {},
    }
    with tempfile.TemporaryDirectory(prefix="ponte-bench-relay-") as tmpdir:
        tmp = Path(tmpdir)
        overrides = pbx_overrides(ports.allocate(1))
        # Nothing listens at the provider's address: the trunk must not try to
        # register there (it only makes Kamailio trust 127.0.0.1's DID calls).
        overrides["trunks"][0]["registration"] = False
        layout = Layout(ROOM, steps[-1])
        overrides["rooms"] = [*layout.rooms, SAMPLE_ROOM]
        overrides["sip"] = {
            "listen": f"127.0.0.1:{ports.allocate(1)}",
            "rtp_ports": ports.rtp_range(2 * steps[-1] + 40),
            "codecs": ["PCMU/8000"],
        }
        # rtpengine opens a port pair on each side of every relayed call.
        overrides["pbx"]["media_ports"] = ports.rtp_range(4 * steps[-1] + 40)
        srv = start_server(tmp / "srv", cache, log_level="info", **overrides)
        try:
            relay = Relay.of(srv)
            result["rtpengine_pid"] = relay.rtpengine_pid
            result["kamailio_pgid"] = relay.kamailio_pgid
            time.sleep(1.0)  # past the start-up: prompts loaded, relay warmed up
            idle = window(srv, relay, [], min(window_s, 5.0))
            result["idle"] = {k: v for k, v in idle.items() if k != "server_threads"}
            print(
                f"idle: server {idle['server_cpu']:.1f} %, rtpengine "
                f"{idle['rtpengine_cpu']:.1f} %, kamailio {idle['kamailio_cpu']:.1f} %",
                file=sys.stderr,
                flush=True,
            )
            end = started + budget
            for i, mode in enumerate(MODES):
                # Each mode gets its share of what is left after start-up and the
                # idle window; what the direct series leaves unused (and what
                # stopping its phones and draining took) moves on to the relayed.
                left = end - time.monotonic()
                deadline = time.monotonic() + left / (len(MODES) - i)
                done, why = series(
                    mode, srv, relay, steps, window_s, rate, deadline, tmp, result["errors"]
                )
                result["steps"] += done
                if why:
                    result["stopped"][mode] = why
                still = drained(srv, 15)
                if still:
                    result["errors"].append(f"{still} calls still up 15 s after the {mode} series")
            result["join_latencies_ms"] = [x * 1000 for x in srv.status()["join_latencies"]]
        finally:
            srv.stop()
        log = srv.log()
        result["server_log"] = log_summary(log)
        if keep_log is not None:
            keep_log.write_text(log)
    result["derived"] = derive(result["idle"], result["steps"]) if "idle" in result else {}
    return result


def _step_line(s: dict[str, Any]) -> str:
    gaps = [h["max_gap_ms"] for h in s["samples"] if h["max_gap_ms"] is not None]
    return (
        f"{s['mode']}: {s['joined']}/{s['legs']} joined, {s['calls_up']} calls up, server "
        f"{s['server_cpu']:.1f} %, rtpengine {s['rtpengine_cpu']:.1f} %, kamailio "
        f"{s['kamailio_cpu']:.1f} %, phones {s['generator_cpu']:.0f} %, machine "
        f"{s['machine_busy']:.0f} %, rtpengine calls {s['rtpengine_calls']}, audio "
        f"{s['samples_ok']}/{len(s['samples'])} ok (max gap {max(gaps, default=math.nan):.0f} ms)"
    )


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def print_table(r: dict[str, Any]) -> None:
    """The steps of both modes, then the derived per-leg figures."""
    print("\nLegs vs CPU, direct to the app server and relayed by rtpengine (G.711, rooms of 10)")
    print(
        "| mode | legs | joined | calls up | rtpengine calls | server CPU % | rtpengine CPU % "
        "| Kamailio CPU % | total % | phones CPU % | machine % | tone share min "
        "| max gap ms | audio | status ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    idle = r.get("idle")
    if idle:
        print(
            f"| idle | 0 | | | | {idle['server_cpu']:.1f} | {idle['rtpengine_cpu']:.1f} | "
            f"{idle['kamailio_cpu']:.1f} | {idle['total_cpu']:.1f} | | "
            f"{idle['machine_busy']:.0f} | | | | |"
        )
    for s in r["steps"]:
        shares = [h["tone_share"] for h in s["samples"]]
        gaps = [h["max_gap_ms"] for h in s["samples"] if h["max_gap_ms"] is not None]
        print(
            f"| {s['mode']} | {s['legs']} | {s['joined']} | {s['calls_up']} | "
            f"{s['rtpengine_calls']} | {s['server_cpu']:.1f} | {s['rtpengine_cpu']:.1f} | "
            f"{s['kamailio_cpu']:.1f} | {s['total_cpu']:.1f} | {s['generator_cpu']:.1f} | "
            f"{s['machine_busy']:.0f} | {min(shares, default=0):.2f} | "
            f"{max(gaps, default=math.nan):.0f} | "
            f"{s['samples_ok']}/{len(s['samples'])} {'ok' if s['audio_ok'] else 'BAD'} | "
            f"{s['status_ms']:.1f} |"
        )
    d = r.get("derived") or {}
    if d:
        print(
            f"\nrtpengine CPU per relayed leg: {_f(d.get('rtpengine_per_relayed_leg'), 3)} % of a "
            f"core; server CPU per leg: direct {_f(d.get('server_per_leg_direct'), 3)} %, relayed "
            f"{_f(d.get('server_per_leg_relayed'), 3)} %; the relay adds "
            f"{_f(d.get('relay_cost_per_leg'), 3)} % per leg (server + rtpengine + Kamailio)"
        )
        a = d.get("at_largest")
        if a:
            print(
                f"at {a['legs']} legs (windows alone, idle subtracted): rtpengine "
                f"{a['rtpengine_per_leg']:.3f} %/leg, server {a['server_per_leg_direct']:.3f} "
                f"direct vs {a['server_per_leg_relayed']:.3f} relayed %/leg; all three processes "
                f"{a['total_direct']:.1f} % direct vs {a['total_relayed']:.1f} % relayed"
            )
    for e in r.get("errors", []):
        print(f"note: {e}")


def main() -> int:
    """Both series from the command line; the table, then the `BENCH-RESULT` line."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", default="10,20,40,80,160", help="legs at each step")
    ap.add_argument("--window", type=float, default=10.0, help="steady seconds measured")
    ap.add_argument("--budget", type=float, default=200.0, help="seconds for both series")
    ap.add_argument("--rate", type=float, default=50.0, help="new calls per second")
    ap.add_argument("--quick", action="store_true", help="one step of 10 legs, 3-s windows")
    ap.add_argument("--keep-log", type=Path, help="copy the server's log here")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.window, args.budget = "10", 3.0, min(args.budget, 60.0)
    common.graceful_sigterm()
    load0, t0 = common.loadavg(), time.monotonic()
    steps = [int(x) for x in args.steps.split(",")]
    if steps[0] <= len(SAMPLE_TONES) or steps != sorted(steps):
        ap.error(f"--steps must rise, from more than {len(SAMPLE_TONES)} legs (the sample room)")
    r = measure(steps, args.window, args.budget, args.rate, args.keep_log)
    print_table(r)
    common.emit("relay", r, load0, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
