#!/usr/bin/env python3
"""One app-server node against two on this machine (issue 19), in one run, on
one throwaway PostgreSQL (tests/pgcluster.py):

1. **Call set-up through the edge**: `ponte serve` (1 node), then `ponte serve
   --nodes 2`, each with Kamailio and rtpengine on loopback; SIPp calls
   Kamailio as the trunk's provider at rising rates (bench/callrate.py's
   ramp: the highest rate with >= 99.9 % answered and INVITE -> 200 p99 <=
   50 ms). The numbers called are DIDs to the entry IVR (`ivr: entry`, the
   PIN prompt, as the access number), --dids of them in turn: Kamailio's
   dispatcher spreads them round-robin (only one-room access numbers and
   their DIDs are hashed to a node: the roomnum table, pbx/kamailio.py
   room_numbers); the split is measured.
2. **G.711 legs with clean media** (with --legs-steps): bench/legs.py's series
   (rooms of 10, raw probe legs, CPU) on each node set, the rooms split over
   the nodes, each room's callers calling its node's SIP port.
3. **The hand-off**, on the 2-node server: in --handoffs rooms at once, a
   moderator and a participant call node-1 (the room's home), another
   participant calls node-2 and is handed to node-1 over the internal SIP
   leg. Measured per room: the gap from its PIN's `#` to linked (node-2's
   log), and the one-way delay the extra hop adds (the moderator's 700 Hz
   onset at the handed-off participant against the one on node-1).

    .venv/bin/python bench/nodes.py [--rates 50,100,200,300,400,500] [--seconds 5]
                                    [--handoffs 5] [--legs-steps 30,60,120] [--budget 400]

Bounded: loopback only, ports from the benches' block (bench/common.py), each
SIPp run and softphone bounded in count and time; every server is stopped.
The last line is the `BENCH-RESULT` JSON `bench/run` reads.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The repository first (bench/pbx.py must not shadow the `pbx` package), then
# bench/ for the benches' shared modules.
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import common  # noqa: E402

common.use_bench_ports()

import callrate  # noqa: E402
import legs  # noqa: E402
from legs import node_pids, wait_nodes  # noqa: E402
from relay import Relay  # noqa: E402
from report_nodes import nodes_tables  # noqa: E402

from tests import ports  # noqa: E402
from tests.harness import PY, Server, start_server  # noqa: E402
from tests.pbx_helpers import pbx_overrides  # noqa: E402
from tests.pgcluster import PgCluster  # noqa: E402

DID_BASE = 551130002000  # +55 11 3000-2000 …: DIDs to the entry IVR
SCENARIO = ROOT / "bench" / "sipp" / "uac_edge.xml"
HANDOFF_ROOM = "h{i}"
TONE_HZ = 700
LEGS_ROOM = 10  # members per room in the legs series
# The benches' port block is 3,000 ports: the app servers' RTP and rtpengine's
# share it. A call held `--hold-ms` in the IVR keeps 2 ports of the app server
# (its node's share) and 4 of rtpengine's (a pair on each side), so the hold
# is short: at 1,000 calls/s and 0.2 s about 250 calls are up. A third of the
# block stays for the SIP ports and SIPp's (allocated after the ranges, so they
# never fall in them).
APP_RTP_PORTS = 700
EDGE_RTP_PORTS = 1300
HANDOFF_LINE = re.compile(r"handed off to (\S+) on leg \d+ \((\d+) ms after the PIN\)")


def dids(n: int) -> list[str]:
    """The DIDs the set-up ramp calls."""
    return [f"+{DID_BASE + i}" for i in range(n)]


def handoff_rooms(n: int) -> list[dict[str, str]]:
    """Rooms for the hand-off samples (participant PIN 2100+i, moderator 2900+i)."""
    return [
        {
            "name": HANDOFF_ROOM.format(i=i),
            "participant_pin": f"{2100 + i}",
            "moderator_pin": f"{2900 + i}",
        }
        for i in range(n)
    ]


def start(
    tmp: Path, cache: Path, database: str, nodes: int, n_dids: int, extra: int
) -> tuple[Server, int]:
    """`ponte serve [--nodes N]` with its edge, and the port SIPp calls from:
    it is the trunk's provider (an IP peer: no registration), so Kamailio
    takes its DID calls unauthenticated. Back once every node answers."""
    # One range for both (ports.allocate wraps around its block, and ports
    # merely written in a file are free to it): the app servers' RTP, then
    # rtpengine's; every other port after them.
    lo = int(ports.rtp_range(APP_RTP_PORTS + EDGE_RTP_PORTS).split("-")[0])
    provider_port = ports.allocate(1)
    numbers = dids(n_dids)
    overrides = pbx_overrides(provider_port)
    overrides["pbx"]["flood_density"] = 10000  # the most allowed: this bench floods on purpose
    trunk = overrides["trunks"][0]
    trunk["registration"] = False
    trunk["dids"] = [*trunk["dids"], *numbers]
    overrides["dids"] |= {d: {"ivr": "entry"} for d in numbers}
    overrides["database"] = database
    overrides["rooms"] = handoff_rooms(extra)
    limits = callrate.admission_limits()
    overrides["sip"] = {
        "listen": f"127.0.0.1:{ports.allocate(nodes)}",  # node i on port + i
        "rtp_ports": f"{lo}-{lo + APP_RTP_PORTS - 1}",
    }
    edge_lo = lo + APP_RTP_PORTS
    overrides["pbx"]["media_ports"] = f"{edge_lo}-{edge_lo + EDGE_RTP_PORTS - 1}"
    if "allowed_max" in limits:
        # Raised to the schema's maximum, so the ramp finds what the nodes take
        # (bench/pbx.py does the same).
        overrides["sip"]["max_new_calls_per_second"] = limits["allowed_max"]
    args = ["--nodes", str(nodes)] if nodes > 1 else []
    srv = start_server(tmp, cache, log_level="info", extra_args=args, **overrides)
    wait_nodes(srv, 30)
    return srv, provider_port


class SplitSampler(threading.Thread):
    """Calls up on each node, sampled while the ramp runs: how the
    dispatcher spread the calls."""

    def __init__(self, srv: Server) -> None:
        super().__init__(daemon=True)
        self.srv = srv
        self.totals: dict[str, int] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            try:
                nodes = self.srv.status().get("nodes") or {}
            except OSError:
                continue
            for name, n in nodes.items():
                self.totals[name] = self.totals.get(name, 0) + int(n.get("calls") or 0)

    def shares(self) -> dict[str, float]:
        """Each node's share of the calls seen, in %."""
        self.stopping.set()
        self.join(5)
        total = sum(self.totals.values())
        return {k: round(100 * v / total, 1) for k, v in self.totals.items()} if total else {}


def setup(
    srv: Server,
    tmp: Path,
    rates: list[int],
    seconds: int,
    provider_port: int,
    n_dids: int,
    hold_ms: int,
) -> dict[str, Any]:
    """The set-up ramp through Kamailio to the DIDs, the calls spread by them."""
    inf = tmp / "dids.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"{d}\n" for d in dids(n_dids)))
    sampler = SplitSampler(srv)
    sampler.start()
    label = f"{len(node_pids(srv))} node(s) uac"
    out = callrate.ramp(
        srv,
        tmp,
        rates,
        seconds,
        label=label,
        target=srv.config["pbx"]["listen"],
        scenario=["-sf", str(SCENARIO), "-inf", str(inf)],
        local_port=provider_port,
        pids=node_pids(srv),
        hold_ms=hold_ms,
        edge=Relay.of(srv).pids(),
    )
    out["split_pct"] = sampler.shares()
    return out


def handoffs(srv: Server, tmp: Path, n: int) -> dict[str, Any]:
    """n rooms at once: moderator and a participant on node-1, a participant
    on node-2 (handed off to node-1). Gaps from node-2's log; the hop's added
    one-way delay from the moderator's tone onset at both participants."""
    from tests.test_nodes_rooms import onset  # numpy and the tests' audio helpers

    rooms = handoff_rooms(n)
    base = srv.sip_port
    before = len(HANDOFF_LINE.findall(srv.log()))

    def phones(port: int, pins: list[str], script: str, name: str) -> subprocess.Popen[str]:
        options = {
            "target": f"sip:conf@127.0.0.1:{port}",
            "script": script,
            "calls": n,
            "rate": 4,
            "pins": ",".join(pins),
            "codecs": "PCMU/8000",
            "record": tmp / f"{name}-{{i}}.wav",
            "rtp": ports.rtp_range(4 * n + 10),
            "max-seconds": 60,
        }
        argv = [str(x) for k, v in options.items() for x in (f"--{k}", v)]
        return subprocess.Popen(
            [PY, "-m", "pbx.softphone", *argv],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    quiet = "wait_media 5; wait 2; dtmf {pin}#; wait 12; hangup"
    procs = {
        "mod": phones(
            base,
            [r["moderator_pin"] for r in rooms],
            f"wait_media 5; dtmf {{pin}}#; wait 8; tone {TONE_HZ}; wait 5; hangup",
            "mod",
        ),
        "local": phones(base, [r["participant_pin"] for r in rooms], quiet, "local"),
        "remote": phones(base + 1, [r["participant_pin"] for r in rooms], quiet, "remote"),
    }
    reports: dict[str, list[dict[str, Any]]] = {}
    for name, p in procs.items():
        try:
            out, _ = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        lines = out.strip().splitlines()
        got = json.loads(lines[-1]) if lines else []
        reports[name] = got if isinstance(got, list) else [got]
    found = HANDOFF_LINE.findall(srv.log())[before:]
    gaps = [float(ms) for _node, ms in found]
    hops: list[float] = []
    errors: list[str] = []
    for i in range(n):
        try:
            rm, rl, rr = (reports[k][i] for k in ("mod", "local", "remote"))
            (t_tone,) = [t for hz, t in rm["tones"] if hz == TONE_HZ]
            local = onset(SimpleNamespace(record=tmp / f"local-{i}.wav"), rl, t_tone - 0.2, TONE_HZ)
            remote = onset(
                SimpleNamespace(record=tmp / f"remote-{i}.wav"), rr, t_tone - 0.2, TONE_HZ
            )
            hops.append((remote - local) * 1000)
        except (IndexError, KeyError, ValueError, OSError) as exc:
            errors.append(f"room {i}: {type(exc).__name__}: {exc}")
    return {
        "rooms": n,
        "handed_off": len(found),
        "gap_ms": common.summary(gaps),
        "hop_ms": common.summary(hops),
        "gaps": gaps,
        "hops": [round(h, 1) for h in hops],
        "errors": errors,
    }


def one_set(nodes: int, pg: PgCluster, cache: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Everything measured on one server of `nodes` nodes."""
    out: dict[str, Any] = {"nodes": nodes}
    with tempfile.TemporaryDirectory(prefix=f"ponte-bench-nodes{nodes}-") as tmpdir:
        tmp = Path(tmpdir)
        srv, provider = start(tmp, cache, pg.create_database(), nodes, args.dids, args.handoffs)
        try:
            out["pids"] = node_pids(srv)
            out |= setup(srv, tmp, args.rates_list, args.seconds, provider, args.dids, args.hold_ms)
            if nodes > 1 and args.handoffs:
                callrate.drained(srv, 15)
                out["handoff"] = handoffs(srv, tmp, args.handoffs)
        finally:
            srv.stop()
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                kamailio = Path(srv.config["state_dir"]) / "kamailio" / "kamailio.log"
                for src, name in ((srv.log_path, "server"), (kamailio, "kamailio")):
                    if src.exists():
                        (args.keep_logs / f"nodes{nodes}.{name}.log").write_text(
                            src.read_text(errors="replace")
                        )
        out["errors_logged"] = sum(1 for ln in srv.log().splitlines() if " ERROR " in ln)
    if args.legs_steps:
        # bench/legs.py's G.711 series, rooms of 10, on the same kind of server
        # (PostgreSQL, the edge idle beside it), each room on one node.
        out["legs"] = legs.series(
            "g711",
            LEGS_ROOM,
            [int(x) for x in args.legs_steps.split(",")],
            args.legs_window,
            args.legs_budget,
            cache,
            nodes=nodes,
            server={"database": pg.create_database(), **pbx_overrides()},
        )
    return out


def main() -> int:
    """Tables, then the `BENCH-RESULT` line."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rates", default="50,100,200,300,400,500,700,1000")
    ap.add_argument("--seconds", type=int, default=5, help="seconds of calls at each rate")
    ap.add_argument("--hold-ms", type=int, default=200, help="each call's time in the IVR")
    ap.add_argument("--dids", type=int, default=32, help="DIDs the calls are spread over")
    ap.add_argument("--handoffs", type=int, default=5, help="hand-off samples (rooms at once)")
    ap.add_argument(
        "--legs-steps", default="40,80,160,240", help="G.711 legs at each step ('': none)"
    )
    ap.add_argument("--legs-window", type=float, default=8.0, help="steady seconds measured")
    ap.add_argument("--legs-budget", type=float, default=120.0, help="seconds per legs series")
    ap.add_argument("--keep-logs", type=Path, help="copy the servers' and Kamailio's logs here")
    ap.add_argument("--node-sets", default="1,2", help="the node counts compared")
    args = ap.parse_args()
    args.rates_list = [int(x) for x in args.rates.split(",")]
    common.graceful_sigterm()
    load0, t0 = common.loadavg(), time.monotonic()
    cache = common.prompt_cache()
    route = (
        f"SIPp as the trunk's provider calls {args.dids} DIDs to the entry IVR in turn "
        "(spread round-robin by Kamailio's dispatcher)"
    )
    result: dict[str, Any] = {
        "route": route,
        "seconds": args.seconds,
        "dids": args.dids,
        "hold_ms": args.hold_ms,
    }
    result["goal"] = {"success_pct": callrate.SUCCESS_GOAL, "p99_ms": callrate.P99_GOAL_MS}
    with PgCluster() as pg:
        result["sets"] = [one_set(int(n), pg, cache, args) for n in args.node_sets.split(",")]
    for s in result["sets"]:
        if "legs" in s:
            print(f"\n{s['nodes']} node(s), G.711 legs (bench/legs.py's series):", end="")
            legs.print_table(s["legs"])
    print("\n" + "\n".join(nodes_tables(result)))
    common.emit("nodes", result, load0, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
