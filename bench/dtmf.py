#!/usr/bin/env python3
"""DTMF to action, and PIN to room, with 100 legs live in rooms of 10.

100 softphone legs (one process, 50 new calls a second, 8 kHz G.711, each
sending a 440 Hz tone once in its room) and one raw probe leg
(bench/rawleg.py) join 10 rooms. Once every leg is in, each softphone keys
`*6` (mute), waits 1.5 s and keys `*6` again (unmute) as RFC 2833 events:
200 presses, spread over about 4 s as the calls were.

- **DTMF -> action** is the server's own measure (control socket `status`:
  `action_latencies`, from the arrival of the digit in the app server's loop
  to the key's action applied to the room), p50/p99 over the 200 presses.
- **Cross-check from outside**: the probe then keys `*6` 10 times as RFC 2833
  events it builds itself, and this script polls `status` until the probe's
  `muted` flag flips. That time, from the first RTP packet of the `6` event
  and from its first end-of-event packet, includes a status round trip (about
  the poll interval in resolution); it shows where the server acts: on the
  event's first packet, not at its end.
- **PIN -> room**: the server's `join_latencies` (PIN `#` arrival -> joined)
  for the 101 legs.

    .venv/bin/python bench/dtmf.py [--legs 100] [--room 10] [--probe-presses 10]

Loopback only, ports from the benches' block; the softphone has --max-seconds
and every wait a deadline. The last line is the `BENCH-RESULT` JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The repository first (bench/pbx.py must not shadow the `pbx` package), then
# bench/ for the benches' shared modules.
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import common  # noqa: E402

common.use_bench_ports()

from rawleg import RawLeg  # noqa: E402

from tests import ports  # noqa: E402
from tests.harness import PY, Server, start_server  # noqa: E402

ACTION = "mute"  # what `*6` is mapped to (ivr/keys.py): a toggle
POLL_S = 0.005  # status poll interval of the cross-check


def members(srv: Server) -> list[dict[str, Any]]:
    """Every member of every room."""
    return [m for r in srv.status()["rooms"].values() for m in r["members"]]


def wait_until(pred: Any, timeout: float, poll: float = 0.25) -> bool:
    """Poll `pred` until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(poll)
    return bool(pred())


def probe_muted(srv: Server) -> bool | None:
    """The probe's `muted` flag (its caller is `bench`), None if it is not in a room."""
    for m in members(srv):
        if m["caller"] == "bench":
            return bool(m["muted"])
    return None


def cross_check(srv: Server, probe: RawLeg, presses: int) -> dict[str, Any]:
    """RFC 2833 `*6` from the probe; poll status until its muted flag flips."""
    from_first: list[float] = []
    from_end: list[float] = []
    rtts: list[float] = []
    misses = 0
    for _ in range(presses):
        before = probe_muted(srv)
        sent = len(probe.dtmf_sent)
        probe.rfc2833("*6")
        flipped_at = None
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            t = time.monotonic()
            now = probe_muted(srv)
            rtts.append(time.monotonic() - t)
            if now is not None and now != before:
                flipped_at = time.monotonic()
                break
            time.sleep(POLL_S)
        # Wait for the `6` event to be fully sent (its end packets), then note it.
        wait_until(lambda s=sent: len(probe.dtmf_sent) >= s + 2, 2, 0.01)
        if flipped_at is None or len(probe.dtmf_sent) < sent + 2:
            misses += 1
            continue
        digit, first, end = probe.dtmf_sent[sent + 1]
        assert digit == "6"
        from_first.append((flipped_at - first) * 1000)
        from_end.append((flipped_at - end) * 1000)
        time.sleep(0.4)  # apart, as a person keys: the server drops quick repeats
    return {
        "presses": presses,
        "missed": misses,
        "from_first_packet_ms": common.summary(from_first),
        "from_end_packet_ms": common.summary(from_end),
        "status_rtt_ms": common.summary([x * 1000 for x in rtts]),
        "poll_ms": POLL_S * 1000,
    }


def measure(legs: int, room: int, probe_presses: int) -> dict[str, Any]:
    """Run the presses; the server's and the cross-check's numbers."""
    cache = common.prompt_cache()
    nrooms = -(-legs // room)
    rooms = [
        {"name": f"r{i}", "participant_pin": f"{10000 + i}", "moderator_pin": f"{50000 + i}"}
        for i in range(nrooms)
    ]
    phones = legs  # each keys `*6` twice: 2 x legs presses; the probe is one leg more
    pins = [
        rooms[i // room]["moderator_pin" if i % room == 0 else "participant_pin"]
        for i in range(phones)
    ]
    sip = {
        "listen": f"127.0.0.1:{ports.allocate(1)}",
        "rtp_ports": ports.rtp_range(2 * (legs + 1) + 40),
        "codecs": ["PCMU/8000"],
    }
    result: dict[str, Any] = {"legs": legs, "room": room, "errors": []}
    with tempfile.TemporaryDirectory(prefix="ponte-bench-dtmf-") as tmpdir:
        tmp = Path(tmpdir)
        srv = start_server(tmp / "srv", cache, log_level="info", rooms=rooms, sip=sip)
        phone: subprocess.Popen[str] | None = None
        probe: RawLeg | None = None
        try:
            phone = subprocess.Popen(
                [
                    PY,
                    "-m",
                    "pbx.softphone",
                    "--target",
                    srv.uri("conf"),
                    # 4 s after its own join every leg is in (50 calls/s, 2 s to place).
                    "--script",
                    "wait_media 10; dtmf {pin}#; tone 440; wait 4; dtmf *6; wait 1.5; "
                    "dtmf *6; wait_end 120",
                    "--calls",
                    str(phones),
                    "--rate",
                    "50",
                    "--pins",
                    ",".join(pins),
                    "--codecs",
                    "PCMU/8000",
                    "--rtp",
                    ports.rtp_range(3 * phones + 10),
                    "--max-seconds",
                    "90",
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=(tmp / "phone.err").open("w"),
                text=True,
            )
            probe = RawLeg(("127.0.0.1", srv.sip_port), tone=True)

            def join_probe() -> None:
                assert probe is not None
                probe.call()
                time.sleep(0.5)  # the PIN prompt starts; digits barge in
                probe.info_digits(rooms[0]["participant_pin"] + "#")

            t = threading.Thread(target=join_probe, daemon=True)
            t.start()
            t.join(20)
            in_rooms = wait_until(lambda: len(members(srv)) >= legs + 1, 20)
            result["joined"] = len(members(srv))
            if not in_rooms:
                result["errors"].append(f"only {result['joined']}/{legs + 1} legs joined")

            def presses() -> int:
                return sum(1 for a, _ in srv.status()["action_latencies"] if a == ACTION)

            wait_until(lambda: presses() >= 2 * phones, 20)
            time.sleep(0.5)
            st = srv.status()
            phone_lat = [s * 1000 for a, s in st["action_latencies"] if a == ACTION]
            result["actions"] = {a for a, _ in st["action_latencies"]}
            result["muted_after"] = sum(1 for m in members(srv) if m["muted"])
            result["dtmf_to_action_ms"] = common.summary(phone_lat)
            result["join_ms"] = common.summary([x * 1000 for x in st["join_latencies"]])
            if probe_presses:
                result["cross_check"] = cross_check(srv, probe, probe_presses)
                st = srv.status()
                lat = [s * 1000 for a, s in st["action_latencies"] if a == ACTION]
                result["cross_check"]["server_ms"] = common.summary(lat[len(phone_lat) :])
        finally:
            if phone is not None:
                if phone.poll() is None:
                    phone.terminate()
                try:
                    out, _ = phone.communicate(timeout=20)
                    reports = json.loads(out.strip().splitlines()[-1]) if out.strip() else []
                    bad = [r["error"] for r in reports if r.get("error")]
                    bad = [e for e in bad if e != "script did not finish"]
                    if bad:
                        result["errors"].append(f"softphone: {len(bad)} calls: {bad[0]}")
                except (subprocess.TimeoutExpired, ValueError):
                    phone.kill()
                    phone.communicate()
            if probe is not None:
                probe.bye()
            srv.stop()
    result["actions"] = sorted(result.get("actions", []))
    return result


def main() -> int:
    """Print the numbers, then the `BENCH-RESULT` line."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--legs", type=int, default=100)
    ap.add_argument("--room", type=int, default=10)
    ap.add_argument("--probe-presses", type=int, default=10)
    args = ap.parse_args()
    common.graceful_sigterm()
    load0, t0 = common.loadavg(), time.monotonic()
    r = measure(args.legs, args.room, args.probe_presses)
    d, j = r["dtmf_to_action_ms"], r["join_ms"]
    print(
        f"{r['joined']} legs in rooms of {r['room']}: DTMF -> {ACTION} over {d['n']} presses "
        f"p50 {d['p50']:.2f} ms, p99 {d['p99']:.2f} ms (max {d['max']:.2f}); "
        f"PIN # -> joined over {j['n']} joins p50 {j['p50']:.2f} ms, p99 {j['p99']:.2f} ms"
    )
    if "cross_check" in r:
        c = r["cross_check"]
        print(
            f"cross-check, {c['presses']} RFC 2833 presses ({c['missed']} missed): "
            f"first packet -> muted seen p50 {c['from_first_packet_ms']['p50']:.1f} ms, "
            f"end-of-event -> muted seen p50 {c['from_end_packet_ms']['p50']:.1f} ms "
            f"(status round trip p50 {c['status_rtt_ms']['p50']:.1f} ms)"
        )
    if r["errors"]:
        print("errors:", *r["errors"], sep="\n  ")
    common.emit("dtmf", r, load0, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
