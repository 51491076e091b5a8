"""One app-server node against two (bench/nodes.py prints these tables,
RESULTS.md has them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from report_format import Result, _err, f, table


def _by_nodes(r: Result) -> dict[int, Result]:
    return {s["nodes"]: s for s in r.get("sets", [])}


def _side_by_side(
    runs: dict[int, list[Result]],
    key: str,
    columns: list[str],
    cells: Callable[[Result], list[Any]],
) -> list[str]:
    """A table with a row per value of `key` and each node set's `columns`
    (its cells from `cells`) beside the others."""
    header = [key.replace("rate", "calls/s")]
    for n in runs:
        header += [f"{n}N {c}" for c in columns]
    rows = []
    for value in sorted({x[key] for steps in runs.values() for x in steps}):
        row: list[Any] = [value]
        for steps in runs.values():
            x = next((x for x in steps if x[key] == value), None)
            row += cells(x) if x is not None else [""] * len(columns)
        rows.append(row)
    align = "r" + "".join("l" if c == "verdict" else "r" for c in columns) * len(runs)
    return table(header, rows, align)


def _per_set(sets: dict[int, Result], line: Callable[[Result], str]) -> list[str]:
    """A bold verdict per node set (`line` closes the bold)."""
    out = []
    for n, s in sets.items():
        out += ["", f"**{n} node{'s' if n > 1 else ''}: {line(s)}"]
    return out


def _setup_cells(u: Result) -> list[Any]:
    lat = u["invite_200_ms"]
    mark = "" if u["passed"] else " ✗"
    return [
        f(u["success_pct"], 2) + mark,
        f(lat["p50"]),
        f(lat["p99"]) + mark,
        " + ".join(f(c, 0) for c in u.get("process_cpu", [])),
        f(u.get("edge_cpu"), 0),
    ]


def _legs_cells(st: Result) -> list[Any]:
    return [
        f(st["server_cpu"]),
        f(st["probe_loss_pct"], 2),
        f(st["probe_max_gap_ms"]),
        "; ".join(st["degraded"]) or "ok",
    ]


def setup_table(r: Result) -> list[str]:
    """The set-up ramps side by side, one row per rate."""
    sets = _by_nodes(r)
    out = _side_by_side(
        {n: s.get("uac", []) for n, s in sets.items()},
        "rate",
        ["success %", "p50 ms", "p99 ms", "CPU % (per node)", "edge CPU %"],
        _setup_cells,
    )
    out += ["", "1N, 2N: one node, two nodes. Edge: Kamailio (all its processes) and rtpengine."]

    def line(s: Result) -> str:
        split = ", ".join(f"{k} {f(v, 0)} %" for k, v in s.get("split_pct", {}).items())
        return f"{s.get('setup_capacity_cps')} calls/s**" + (
            f" (the calls up, sampled every 0.5 s: {split})" if split else ""
        )

    return out + _per_set(sets, line)


def legs_table(r: Result) -> list[str]:
    """bench/legs.py's G.711 series on each node set, side by side."""
    sets = {n: s["legs"] for n, s in _by_nodes(r).items() if "legs" in s}
    if not sets:
        return []
    out = _side_by_side(
        {n: s.get("steps", []) for n, s in sets.items()},
        "legs",
        ["CPU % (busiest node)", "probe loss %", "max gap ms", "verdict"],
        _legs_cells,
    )

    def line(s: Result) -> str:
        why = s.get("stopped") or "; ".join(s.get("first_degraded_why", []))
        return f"{s.get('max_healthy_legs')} G.711 legs healthy**" + (
            f" (then: {why})" if why else ""
        )

    return out + _per_set(sets, line)


def handoff_table(r: Result) -> list[str]:
    """The hand-off's gap and the extra hop's one-way delay."""
    h = next((s["handoff"] for s in r.get("sets", []) if s.get("handoff")), None)
    if not h:
        return []
    g, d = h["gap_ms"], h["hop_ms"]
    out = [f"{h['handed_off']} of {h['rooms']} callers handed off.", ""]
    out += table(
        ["measure", "samples", "p50 ms", "max ms"],
        [
            ["gap: PIN `#` → linked at the home", g["n"], f(g["p50"], 0), f(g["max"], 0)],
            ["one-way delay the hop adds", d["n"], f(d["p50"], 0), f(d["max"], 0)],
        ],
    )
    return out + [f"_{e}_" for e in h.get("errors", [])]


def nodes_tables(r: Result) -> list[str]:
    """The three tables, each under its own heading."""
    return [
        "### Call set-up through the edge",
        "",
        f"Route measured: {r.get('route')}.",
        "",
        *setup_table(r),
        "",
        "### G.711 legs with clean media",
        "",
        *(legs_table(r) or ["_Not measured (--legs-steps '')._"]),
        "",
        "### The hand-off",
        "",
        *(handoff_table(r) or ["_Not measured._"]),
        "",
    ]


def nodes_section(r: Result | None) -> list[str]:
    """RESULTS.md's section for bench/nodes.py."""
    out = ["## One app-server node against two (`ponte serve --nodes 2`)", ""]
    if _err(r):
        return out + _err(r)
    assert r is not None
    g = r.get("goal", {})
    out += [
        "How measured (`bench/nodes.py`, not in the default run: `bench/run --only nodes`): one "
        "throwaway PostgreSQL (`tests/pgcluster.py`); `ponte serve` with one node, then "
        "`ponte serve --nodes 2`, each with its Kamailio and rtpengine, all on loopback of the "
        "same two cores (the load generators too).",
        "",
        "- **Set-up**: bench/callrate.py's ramp (as bench/pbx.py's), but *through Kamailio*: "
        "SIPp (`bench/sipp/uac_edge.xml`) is the trunk's provider and calls "
        f"{r.get('dids')} DIDs to the entry IVR in turn, each call held "
        f"{r.get('hold_ms')} ms in the IVR, then BYE ({r.get('seconds')} s of calls per rate; "
        "the short hold keeps the calls up within the benches' port block), which Kamailio's "
        "dispatcher spreads round-robin (only one-room access numbers are hashed to a node). "
        "Capacity: the highest "
        f"rate with ≥ {g.get('success_pct')} % answered and INVITE→200 p99 ≤ "
        f"{f(g.get('p99_ms'), 0)} ms (✗: the rate that missed). CPU: each node's process, and "
        "the edge's (Kamailio's processes and rtpengine) while the calls arrive.",
        "- **Legs**: bench/legs.py's G.711 series (rooms of 10, every leg sending a tone, raw "
        "probe legs timing each packet), straight to the nodes' SIP ports; with 2 nodes room i's "
        "callers call node i % 2, so each room is homed where its callers are. A step is "
        "degraded as in the capacity series, with the busiest node's CPU against 90 %.",
        "- **Hand-off**: on the 2-node server, rooms at once, each with a moderator and a "
        "participant calling node-1 (the home) and a participant calling node-2, handed to "
        "node-1 over the internal SIP leg. Gap: node-2's log (`handed off … ms after the PIN`); "
        "added delay: the moderator's 700 Hz onset at the handed-off participant minus at the "
        "one on node-1 (its jitter buffer on the internal leg, node-2's bridge, and the two "
        "phones' adaptive buffers).",
        "",
        *nodes_tables(r),
        f"loadavg {r.get('loadavg_start')} → {r.get('loadavg_end')}, {r.get('wall_s')} s",
        "",
    ]
    return out
