"""The records store's tables (bench/storage.py prints them, RESULTS.md has them)."""

from __future__ import annotations

from report_format import Result, _err, f, table


def store_tables(r: Result) -> list[str]:
    """Writes per second, decisions with usage lookups (1 and 2 processes),
    and whether every increment landed."""
    rows = []
    for b in r.get("backends", []):
        for label, key in (
            (b["backend"], "writes"),
            (f"{b['backend']}, fsync off", "writes_fsync_off"),
        ):
            w = b.get(key)
            if w:
                rec, add = w["records"], w["adds"]
                rows.append(
                    [label, f(rec["per_s"], 0), f(rec["ms"]["p50"], 2), f(rec["ms"]["p99"], 2)]
                    + [f(add["per_s"], 0), f(add["ms"]["p50"], 2), f(add["ms"]["p99"], 2)]
                )
    out = [
        "Writes, one commit each:",
        "",
        *table(
            ["backend", "call records/s", "p50 ms", "p99 ms", "usage adds/s", "p50 ms", "p99 ms"],
            rows,
        ),
        "",
        f"Profile decisions at {r.get('lines', 0):,} lines, each reading usage from the store:",
        "",
    ]
    rows = []
    d = r.get("decide_no_store")
    if d:
        rows.append(_decide_row("no store (usage 0)", "1", d, d["per_s"]))
    for b in r.get("backends", []):
        d = b["decide"]
        rows.append(_decide_row(f"{b['backend']}, decide", "1", d, d["per_s"]))
        for m in b.get("mixed", []):
            for p in m["per_process"]:
                rows.append(
                    _decide_row(
                        f"{b['backend']}, decide + add",
                        f"{m['processes']} (#{p['process']})",
                        {"per_s": p["decisions_per_s"], "us": p["decide_us"]},
                        m["decisions_per_s"],
                        p,
                    )
                )
    out += table(
        ["backend", "processes", "decisions/s", "total/s", "CPU %", "p50 µs", "p99 µs"]
        + ["p99.9 µs", "add p50 ms", "add p99 ms"],
        rows,
    )
    out.append("")
    for b in r.get("backends", []):
        for m in b.get("mixed", []):
            pool, every = m["pool"], m["all"]
            verdict = "**no lost increment**" if m["lost"] == 0 else f"**LOST {f(m['lost'], 0)} s**"
            out.append(
                f"- {b['backend']}, {m['processes']} process{'es' if m['processes'] > 1 else ''}: "
                f"the pool `{pool['key']}` grew by {f(pool['grew_by'], 0)} s for "
                f"{pool['added']} s added to it; all counters grew by {f(every['grew_by'], 0)} s "
                f"for {every['added']} s added: {verdict}."
            )
    return out


def _decide_row(
    label: str, procs: str, d: Result, total: float, p: Result | None = None
) -> list[str]:
    u = d["us"]
    add = p["add_ms"] if p else None
    return [
        label,
        procs,
        f(d["per_s"], 0),
        f(total, 0),
        f(p["cpu_pct"], 0) if p else "",
        f(u["p50"], 0),
        f(u["p99"], 0),
        f(u["p999"], 0),
        f(add["p50"], 2) if add else "",
        f(add["p99"], 2) if add else "",
    ]


def store_section(r: Result | None) -> list[str]:
    """The records store on SQLite and on PostgreSQL (issue 18)."""
    out = ["## Records store (SQLite and PostgreSQL)", ""]
    if _err(r):
        return out + _err(r)
    assert r is not None
    versions = ", ".join(f"{b['backend']} {b['version']}" for b in r.get("backends", []))
    out += [
        "How measured (`bench/storage.py`): an empty records database at the newest schema on "
        "each backend: SQLite in a temporary file (WAL, `synchronous=NORMAL`, as the server "
        "opens it), PostgreSQL in a throwaway cluster the bench starts (`tests/pgcluster.py`, "
        "loopback TCP) with fsync and full_page_writes on, as Debian's server runs; its writes "
        f"once more with fsync off (the tests' setting). {versions}. For up to "
        f"{f(r.get('seconds'), 0)} s each: call history rows (`RecordStore.call_ended`, a whole "
        "`CallRecord` row, one commit each, as the app server writes them) and usage adds "
        "(`UsageStore.add`, the atomic upsert increment, one commit each); then `decide()` for "
        f"a random line of {r.get('lines', 0):,} ({r.get('profiles')} profiles, "
        "`bench/dialcheck.py`'s generator) dialing a mobile number, which every profile "
        "limits, so every decision reads the line's or its department pool's usage "
        "(`UsageStore.used`, usage rows for every key in this cycle and the last). *Decide + "
        "add*: the same, each decision followed by an add for what it decided, in 1 and then 2 "
        "processes started together on the same database, half of the decisions on lines of "
        "one shared department pool; CPU % = the process's CPU time over its wall time. After "
        "each run the pool's counter and the sum of all counters must have grown by exactly "
        "what was added. *No store*: `decide()` with usage 0 from a function, the policy's "
        "own cost on this machine at the time.",
        "",
    ]
    out += store_tables(r)
    return [*out, "", f"loadavg {r.get('loadavg_start')} → {r.get('loadavg_end')}", ""]
