#!/usr/bin/env python3
"""The records store on both backends (issue 18): records written per second,
and profile decisions with their usage lookup at 10,000 lines, from one
process and from two at once.

    .venv/bin/python bench/storage.py [--lines 10000] [--seconds 3] [--backends sqlite,postgresql]
    .venv/bin/python bench/run --only store

Each backend gets an empty records database at the newest schema
(`store.migrate.open_database`): SQLite in a temporary file, PostgreSQL in a
throwaway cluster this bench starts (`tests/pgcluster.py`, on the benches'
port block) and removes at the end. The cluster runs with fsync and
full_page_writes on, as Debian's server does (the tests' cluster turns them
off); its writes are also measured once with fsync off, to show what the
flush costs. Then, for up to `--seconds` each:

- call history rows: `RecordStore.call_ended` with a whole `CallRecord` row,
  one commit each, as the app server writes them; then usage adds
  (`UsageStore.add`, the atomic upsert increment), one commit each;
- `decide()` for a random line of 10,000 (bench/dialcheck.py's generator)
  dialing a mobile number, which always reads the line's (or its department
  pool's) usage from the store (`UsageStore.used`); usage rows exist for
  every key in this cycle and the last;
- the same decisions, each followed by a usage add for what it decided, in 1
  and then 2 processes at once on the same database, `--pool-share` of them on
  lines of one shared department pool. The pool's total and the sum of all
  counters afterwards must equal what was there plus every add: no lost
  increment.

The last line is the `BENCH-RESULT` JSON that `bench/run` collects (as `store`:
a module named `store` would shadow the `store` package).
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import pickle
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
# The repository first (bench/pbx.py must not shadow the `pbx` package), then
# bench/ for the benches' shared modules.
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from common import emit, graceful_sigterm, loadavg, pct, use_bench_ports  # noqa: E402
from dialcheck import make_config  # noqa: E402
from report_store import store_tables  # noqa: E402

from lines.policy import cycle_start, decide, resolve  # noqa: E402
from lines.usage import UsageStore  # noqa: E402
from ponte.records import CallRecord, RecordStore  # noqa: E402
from provisioning.loader import load_config  # noqa: E402
from provisioning.schema import Config  # noqa: E402
from store.engine import Database  # noqa: E402
from store.migrate import open_database  # noqa: E402
from store.schema import usage  # noqa: E402

# A Monday at 10:00 in São Paulo: every profile's calendar is open.
AT = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
CYCLE_DAY = 16  # make_config's billing_cycle_day
# Mobile numbers: every profile limits them, so every decision reads usage.
MOBILE = ["988887777", "021988887777", "019988887777"]
# What the mobile numbers classify as from the lines' area codes, and a fixed type.
CALL_TYPES = ("local_mobile", "regional_mobile", "national_mobile", "national_fixed")
POOL = "dept:d1"  # a shared department pool (make_config's p1 is shared)
NODE = "bench"
WARMUP = 200  # decisions before timing: pooled connections, holiday tables


def latency(values: list[float]) -> dict[str, float]:
    """n, p50, p99, p99.9 and max of some measurements."""
    return {
        "n": len(values),
        "p50": statistics.median(values) if values else float("nan"),
        "p99": pct(values, 99),
        "p999": pct(values, 99.9),
        "max": max(values) if values else float("nan"),
    }


def timed(
    op: Callable[[int], None], seconds: float, max_n: int, unit: float = 1e3
) -> dict[str, Any]:
    """Run `op(i)` until `seconds` or `max_n` ran out: rate and latency (ms)."""
    times: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    i = 0
    while i < max_n:
        t = time.perf_counter()
        if t >= deadline:
            break
        op(i)
        times.append((time.perf_counter() - t) * unit)
        i += 1
    wall = time.perf_counter() - start
    return {"per_s": i / wall, "seconds": round(wall, 2), "ms": latency(times)}


def call_row(i: int, rng: random.Random, lines: list[str]) -> dict[str, Any]:
    """A whole history row of an answered outbound call, as the server writes it."""
    ended = time.time()
    line = rng.choice(lines)
    record = CallRecord(
        leg=i,
        origin=line,
        destination="02198888" + f"{i % 10000:04d}",
        started=ended - 95.0,
        call_type="national_mobile",
        answered=ended - rng.uniform(10, 90),
        disposition="answered",
        sip_code=200,
        trunk="main",
        line=line,
        profile_rule="quota",
        sip_call_id=f"{uuid.uuid4()}@127.0.0.1",
        loss_in=0.0,
        loss_out=round(rng.uniform(0, 1), 2),
        jitter_in=round(rng.uniform(0.5, 5), 1),
        jitter_out=round(rng.uniform(0.5, 5), 1),
        rtt_ms=round(rng.uniform(5, 40), 1),
        mos=4.3,
        ended_by="caller",
    )
    return record.row(ended)


def usage_keys(cfg: Config, day: dt.date) -> dict[str, str]:
    """Each line's usage key (its own, or its department pool's) on `day`."""
    keys = {}
    for line in cfg.lines:
        resolved = resolve(cfg, line, day)
        assert resolved is not None
        keys[line] = resolved[2]
    return keys


def seed_usage(db: Database, keys: Iterable[str], cycles: list[dt.date], rng: random.Random) -> int:
    """Usage rows for every key, call type and cycle (whole seconds: sums stay exact)."""
    rows = [
        {"key": k, "cycle": c.isoformat(), "call_type": t, "seconds": rng.randint(0, 1200)}
        for k in sorted(set(keys))
        for c in cycles
        for t in CALL_TYPES
    ]
    with db.begin() as conn:
        conn.execute(sa.insert(usage), rows)
    return len(rows)


def total_seconds(db: Database, cycle: dt.date, key: str | None = None) -> float:
    """The sum of a cycle's usage counters: every call type of `key`, or all."""
    stmt = sa.select(sa.func.coalesce(sa.func.sum(usage.c.seconds), 0))
    stmt = stmt.where(usage.c.cycle == cycle.isoformat())
    if key is not None:
        stmt = stmt.where(usage.c.key == key)
    return float(db.scalar(stmt))


# -- one deciding process --------------------------------------------------------


def decider(
    index: int,
    spec: str,
    cfg_blob: bytes,
    pool_lines: list[str],
    seconds: float,
    max_n: int,
    share: float,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """Decide for random lines (`share` of them in the pool), adding usage
    for each decision; put what it measured and added on `results`."""
    cfg: Config = pickle.loads(cfg_blob)
    store = UsageStore(spec)
    rng = random.Random(1000 + index)
    lines = list(cfg.lines)
    cycle = cycle_start(AT.date(), CYCLE_DAY)
    for _ in range(WARMUP):
        decide(cfg, rng.choice(lines), rng.choice(MOBILE), AT, store.used)
    ready.put(index)
    go.wait()
    decisions: list[float] = []
    adds: list[float] = []
    added = {"pool": 0, "all": 0}
    start, cpu0 = time.perf_counter(), time.process_time()
    deadline = start + seconds
    while len(decisions) < max_n and time.perf_counter() < deadline:
        line = rng.choice(pool_lines if rng.random() < share else lines)
        t = time.perf_counter()
        d = decide(cfg, line, rng.choice(MOBILE), AT, store.used)
        t1 = time.perf_counter()
        decisions.append((t1 - t) * 1e6)
        assert d.usage_key and d.call_type, d
        secs = rng.randint(1, 30)
        store.add(d.usage_key, cycle, d.call_type, secs)
        adds.append((time.perf_counter() - t1) * 1e3)
        added["all"] += secs
        added["pool"] += secs if d.usage_key == POOL else 0
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    store.db.close()
    results.put(
        {
            "process": index,
            "seconds": round(wall, 2),
            # Under 100 with the store in-process (SQLite): the machine's other
            # load, or waits for the other process's write lock.
            "cpu_pct": 100 * cpu / wall,
            "decisions_per_s": len(decisions) / wall,
            "decide_us": latency(decisions),
            "add_ms": latency(adds),
            "added": added,
        }
    )


def concurrent(
    spec: str,
    cfg: Config,
    pool_lines: list[str],
    processes: int,
    seconds: float,
    max_n: int,
    share: float,
) -> dict[str, Any]:
    """`processes` deciders started together on one database; the counters checked after."""
    ctx = mp.get_context("spawn")  # no engine or pooled connection crosses a fork
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    blob = pickle.dumps(cfg)
    db = Database(spec)
    cycle = cycle_start(AT.date(), CYCLE_DAY)
    pool0, all0 = total_seconds(db, cycle, POOL), total_seconds(db, cycle)
    procs = [
        ctx.Process(
            target=decider,
            args=(i, spec, blob, pool_lines, seconds, max_n, share, ready, go, results),
            daemon=True,
        )
        for i in range(processes)
    ]
    try:
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=60)
        go.set()
        per = sorted((results.get(timeout=seconds + 60) for _ in procs), key=lambda r: r["process"])
        for p in procs:
            p.join(timeout=10)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    pool1, all1 = total_seconds(db, cycle, POOL), total_seconds(db, cycle)
    db.close()
    added_pool = sum(r["added"]["pool"] for r in per)
    added_all = sum(r["added"]["all"] for r in per)
    return {
        "processes": processes,
        "per_process": per,
        "decisions_per_s": sum(r["decisions_per_s"] for r in per),
        "decide_us_p99_worst": max(r["decide_us"]["p99"] for r in per),
        "pool": {"key": POOL, "added": added_pool, "grew_by": pool1 - pool0},
        "all": {"added": added_all, "grew_by": all1 - all0},
        "lost": (added_pool - (pool1 - pool0)) + (added_all - (all1 - all0)),
    }


# -- one backend -------------------------------------------------------------------


def set_fsync(cluster: Any, on: bool) -> None:
    """Turn the cluster's flushing on (as a production server) or off (as the tests')."""
    import psycopg

    value = "on" if on else "off"
    with psycopg.connect(cluster.url_for("postgres"), autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET fsync = {value}")
        conn.execute(f"ALTER SYSTEM SET full_page_writes = {value}")
        conn.execute("SELECT pg_reload_conf()")
    for _ in range(50):  # the reload is signalled: wait until new sessions see it
        with psycopg.connect(cluster.url_for("postgres")) as conn:
            row = conn.execute("SHOW fsync").fetchone()
        if row and row[0] == value:
            return
        time.sleep(0.05)
    raise RuntimeError(f"fsync did not become {value}")


def writes(
    spec: str, lines: list[str], seconds: float, max_n: int, rng: random.Random
) -> dict[str, Any]:
    """History rows then usage adds, one commit each."""
    db = Database(spec)
    calls, counters = RecordStore(db), UsageStore(db)
    cycle = cycle_start(AT.date(), CYCLE_DAY)
    base = int(time.time() * 1000) % 10**9  # legs unique across passes
    out = {
        "records": timed(
            lambda i: calls.call_ended(call_row(base + i, rng, lines), NODE), seconds, max_n
        ),
        "adds": timed(
            lambda i: counters.add(f"line:{rng.choice(lines)}", cycle, "local_mobile", 7),
            seconds,
            max_n,
        ),
    }
    db.close()
    return out


def decisions(
    cfg: Config, used: Callable[..., float], seconds: float, max_n: int, rng: random.Random
) -> dict[str, Any]:
    """`decide()` for random lines dialing mobiles; how many read usage."""
    lines = list(cfg.lines)
    lookups = 0

    def counted(*args: Any) -> float:
        nonlocal lookups
        lookups += 1
        return used(*args)

    for _ in range(WARMUP):
        decide(cfg, rng.choice(lines), rng.choice(MOBILE), AT, used)

    def one(_i: int) -> None:
        decide(cfg, rng.choice(lines), rng.choice(MOBILE), AT, counted)

    r = timed(one, seconds, max_n, unit=1e6)
    r["us"] = r.pop("ms")
    r["lookups"] = lookups
    return r


def backend(
    name: str, spec: str, cfg: Config, cluster: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """Every measurement on one backend."""
    rng = random.Random(7)
    t0 = time.perf_counter()
    db = open_database(spec)
    migrate_s = time.perf_counter() - t0
    cycle = cycle_start(AT.date(), CYCLE_DAY)
    last = cycle_start(cycle - dt.timedelta(days=1), CYCLE_DAY)
    keys = usage_keys(cfg, AT.date())
    seeded = seed_usage(db, keys.values(), [cycle, last], rng)
    version = str(
        db.scalar(sa.text("SELECT sqlite_version()" if name == "sqlite" else "SHOW server_version"))
    )
    db.close()
    lines = list(cfg.lines)
    out: dict[str, Any] = {
        "backend": name,
        "version": version,
        "migrate_s": migrate_s,
        "usage_rows": seeded,
    }
    print(f"{name} {version}: schema in {migrate_s:.2f} s, {seeded} usage rows", flush=True)
    out["writes"] = writes(spec, lines, args.seconds, args.max_n, rng)
    if cluster is not None:
        set_fsync(cluster, False)
        out["writes_fsync_off"] = writes(spec, lines, args.seconds, args.max_n, rng)
        set_fsync(cluster, True)
    store = UsageStore(spec)
    out["decide"] = decisions(cfg, store.used, args.seconds, args.max_n, rng)
    store.db.close()
    pool_lines = [line for line, key in keys.items() if key == POOL]
    out["pool_lines"] = len(pool_lines)
    out["mixed"] = [
        concurrent(spec, cfg, pool_lines, n, args.seconds, args.max_n, args.pool_share)
        for n in (1, 2)
    ]
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Both backends on one 10,000-line configuration."""
    random.seed(7)  # make_config draws area codes from the module's generator
    result: dict[str, Any] = {"lines": args.lines, "seconds": args.seconds, "backends": []}
    with tempfile.TemporaryDirectory(prefix="ponte-bench-store-") as tmp:
        cfg_path, db_path = Path(tmp) / "lines.yaml", Path(tmp) / "records.db"
        make_config(cfg_path, args.lines, args.profiles, db_path)
        cfg = load_config(cfg_path)
        result["profiles"] = args.profiles
        free = lambda *_a: 0.0  # noqa: E731
        result["decide_no_store"] = decisions(
            cfg, free, min(args.seconds, 2), args.max_n, random.Random(7)
        )
        for name in args.backends.split(","):
            if name == "sqlite":
                result["backends"].append(backend(name, str(db_path), cfg, None, args))
                continue
            from tests.pgcluster import PgCluster

            use_bench_ports()
            t0 = time.perf_counter()
            with PgCluster() as cluster:
                started = time.perf_counter() - t0
                set_fsync(cluster, True)
                r = backend(name, cluster.url, cfg, cluster, args)
                r["cluster_start_s"] = started
                result["backends"].append(r)
    return result


def main() -> int:
    """Print the numbers, then the `BENCH-RESULT` line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=10000)
    ap.add_argument("--profiles", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--max-n", type=int, default=50000, help="operations per measurement, at most")
    ap.add_argument("--pool-share", type=float, default=0.5, help="decisions on the shared pool")
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    graceful_sigterm()
    load0, t0 = loadavg(), time.monotonic()
    print(f"loadavg {load0}", flush=True)
    r = measure(args)
    print(f"\n{r['lines']} lines, {r['profiles']} profiles, up to {r['seconds']} s per measure\n")
    print("\n".join(store_tables(r)))
    print(f"\nloadavg {load0} → {loadavg()}")
    emit("store", r, load0, t0)
    return 0 if all(m["lost"] == 0 for b in r["backends"] for m in b["mixed"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
