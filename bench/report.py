"""Turn the benches' results into bench/results/RESULTS.md and cpu_latency.png.

`bench/run` calls `write(results, meta, out_dir)`; it can also be run on its
own to redraw from a saved run:

    .venv/bin/python bench/report.py bench/results/results.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from report_codec import opus_cost_section
from report_format import Result, _err, f, table
from report_media import (
    edge_capacity_section,
    quality_section,
    recording_section,
    relay_section,
    webrtc_section,
)
from report_nodes import nodes_section
from report_store import store_section

# Measurements kept beside the runs (the browsers' series before the edge).
BENCH_RESULTS = Path(__file__).resolve().parent / "results"

# -- sections ---------------------------------------------------------------------


def capacity_section(series: list[Result]) -> list[str]:
    """Conference capacity: one table per codec and room size."""
    done = [s for s in series if s.get("steps")]
    window = f(done[0]["window_s"], 0) if done else "10"
    rate = f(done[0].get("rate", 50), 0) if done else "50"
    probes = done[0].get("probes", 3) if done else 3
    out = [
        "## Conference capacity (legs vs app-server CPU and media health)",
        "",
        "How measured: one app server per series; legs rise in steps, each step a new "
        f"`pbx/softphone.py` process placing calls at {rate}/s into "
        "`conf`; each leg keys its room's PIN (first of each room the moderator's) and sends a "
        f"440 Hz tone. After all legs joined + 1 s, a steady window of {window} s: server CPU = "
        "utime+stime of the server process from `/proc/PID/stat` over the window (100 % = one "
        "core); per thread from `/proc/PID/task/*/stat`, threads named by the syscall they wait "
        "in; phones = the load generators' CPU (run at nice 5); machine = all cores busy from "
        f"`/proc/stat` (100 % = both cores). Media health on {probes} raw probe legs "
        "(`bench/rawleg.py`, PCMU, sending a tone) in the first rooms: packets received vs "
        "expected (one per 20 ms over the span of arrivals, kernel `SO_TIMESTAMPNS` stamps) "
        "and inter-arrival gaps > 40 ms. **Degraded** = a probe lost > 1 %, any gap > 40 ms, "
        "server CPU > 90 % of a core, or not every leg joined; a degraded window is measured "
        "again once at the same legs and only a second bad window counts. A series stops at "
        "the first degraded step, at its last step (max 300 legs) or at its time budget. "
        "*Bridge ceiling*: legs at which the conference bridge's clock thread (pjmedia mixes, "
        "encodes and sends every leg on that one thread) would reach 90 % of a core, linear "
        "from the largest step measured: an extrapolation, not a measurement.",
        "",
    ]
    if not series:
        return [*out, "_Not run._", ""]
    summary_rows = []
    for s in series:
        name = f"{s.get('label', s.get('codec'))}, rooms of {s.get('room')}"
        if s.get("failed"):
            summary_rows.append([name, "n/a", "n/a", "n/a", f"did not finish: {s['failed']}"])
            continue
        if s.get("unavailable"):
            summary_rows.append([name, "n/a", "n/a", "n/a", s["unavailable"]])
            continue
        first = s.get("first_degraded_legs")
        why = "; ".join(s.get("first_degraded_why") or [])
        last = s["steps"][-1] if s.get("steps") else None
        top = last["server_threads"][0] if last and last.get("server_threads") else None
        note = why or s.get("stopped") or "no degradation up to the last step"
        if last and top:
            note += (
                f" (at {last['legs']} legs the busiest thread: {top['what']} {top['cpu']:.0f} %)"
            )
        ceiling = s.get("bridge_ceiling_legs")
        summary_rows.append(
            [
                name,
                f(s.get("max_healthy_legs")),
                f(first),
                f"~{ceiling}" if ceiling else "n/a",
                note,
            ]
        )
    out += table(
        ["series", "max healthy legs", "first degraded at", "bridge ceiling", "why / limit"],
        summary_rows,
        "lrrrl",
    )
    out.append("")
    for s in series:
        out.append(f"### {s.get('label', s.get('codec'))}, rooms of {s.get('room')}")
        out.append("")
        if s.get("failed") or s.get("unavailable"):
            out += [f"_{s.get('failed') or s.get('unavailable')}_", ""]
            continue
        rows = []
        for st in s.get("steps", []):
            top = st["server_threads"][0] if st.get("server_threads") else {"what": "?", "cpu": 0}
            verdict = "; ".join(st["degraded"]) or "ok"
            if st.get("first_window") and not st["degraded"]:
                verdict = "ok (first window: " + "; ".join(st["first_window"]["degraded"]) + ")"
            if st["degraded"] and st["machine_busy"] >= 90:
                # The load generators run on the same two cores: say so.
                verdict += " (machine ≥ 90 % busy)"
            rows.append(
                [
                    st["legs"],
                    st["joined"],
                    f(st["server_cpu"]),
                    f"{top['cpu']:.1f} ({top['what'].split(' (')[0]})",
                    f(st["generator_cpu"]),
                    f(st["machine_busy"], 0),
                    f"{st['probe_received']}/{st['probe_expected']}",
                    f(st["probe_loss_pct"], 2),
                    st["probe_gaps_over_40ms"],
                    f(st["probe_max_gap_ms"]),
                    verdict,
                ]
            )
        out += table(
            [
                "legs",
                "joined",
                "server CPU %",
                "busiest thread %",
                "phones CPU %",
                "machine %",
                "probe rx/expected",
                "loss %",
                "gaps > 40 ms",
                "max gap ms",
                "verdict",
            ],
            rows,
            "rrrlrrrrrrl",
        )
        if s.get("steps"):
            last = s["steps"][-1]
            parts = ", ".join(
                f"{t['what']} {t['cpu']:.1f} %" for t in last["server_threads"] if t["cpu"] >= 0.5
            )
            out += ["", f"Where the server's CPU went at {last['legs']} legs: {parts}."]
            loop = [t for t in last["server_threads"] if t["what"].startswith("loop")]
            if loop and loop[0].get("waits"):
                where = ", ".join(f"{k} {v:.0%}" for k, v in loop[0]["waits"].items())
                why = (
                    " (`futex`: waiting for a lock, e.g. the conference bridge's mutex, which "
                    "the bridge clock holds while it mixes)"
                    if "futex" in loop[0]["waits"]
                    else ""
                )
                out += [
                    "",
                    f"The loop thread (SIP, DTMF, all the Python) when sampled at 5 Hz: "
                    f"{where}{why}.",
                ]
        if s.get("errors"):
            out += ["", "Notes: " + "; ".join(s["errors"])]
        if s.get("server_log"):
            said = "; ".join(f"{n} × `{msg.strip()}`" for n, msg in s["server_log"])
            out += ["", f"The server's log, most frequent warnings and errors: {said}"]
        out += ["", f"loadavg {s.get('loadavg_start')} → {s.get('loadavg_end')}", ""]
    return out


def setup_section(r: Result | None) -> list[str]:
    """Call set-up: SIPp uac at rising rates."""
    out = ["## Call set-up (SIPp `uac` against the access number)", ""]
    if _err(r):
        return out + _err(r)
    assert r is not None
    adm = r.get("admission", {})
    out += [
        "How measured: SIPp's built-in `uac` scenario (`-sn uac -d 2000`: INVITE, 200, ACK, "
        "2 s in the IVR hearing the PIN prompt, BYE) straight to the app server's `conf`, "
        f"{r.get('seconds', 5)} s of calls at each rate, `-recv_timeout 10 s` (a call "
        "without an answer by then failed). Success = successful calls / offered (SIPp "
        "`-trace_stat`). INVITE → 200 = "
        "SIPp's response time of the 200 (`rtd`), every call (`-trace_rtt -rtt_freq 1`); SIPp "
        "counts in whole milliseconds (coarse: a 0 is under a millisecond). Server CPU over the "
        "seconds the calls arrive. The ramp "
        "stops at the first rate that misses a goal.",
        "",
    ]
    if adm:
        out += [
            f"The server sheds new calls above `sip.max_new_calls_per_second` (shipped default "
            f"{f(adm.get('max_new_calls_per_second'), 0)}) and `sip.max_calls` (default "
            f"{adm.get('max_calls')}) with 503: for this ramp the first was raised to "
            f"{adm.get('allowed_max')}, so the ramp measures the server, not its guard.",
            "",
        ]
    rows = [
        [
            u["rate"],
            u["offered"],
            u["ok"],
            u["failed"],
            f(u["success_pct"], 2),
            f(u["invite_200_ms"]["p50"]),
            f(u["invite_200_ms"]["p99"]),
            f(u["server_cpu"]),
            f"{f(u['busiest_thread_cpu'])} ({u.get('busiest_thread', '?').split(' (')[0]})",
            f(u["machine_busy"], 0),
            "pass" if u["passed"] else "FAIL",
        ]
        for u in r.get("uac", [])
    ]
    out += table(
        [
            "calls/s",
            "offered",
            "ok",
            "failed",
            "success %",
            "INVITE→200 p50 ms",
            "p99 ms",
            "server CPU %",
            "busiest thread %",
            "machine %",
            "goal",
        ],
        rows,
        "rrrrrrrrlrl",
    )
    g = r.get("goal", {})
    out += [
        "",
        f"**Set-up capacity: {r.get('setup_capacity_cps')} calls/s** (highest rate with ≥ "
        f"{g.get('success_pct')} % success and INVITE→200 p99 ≤ {f(g.get('p99_ms'), 0)} ms).",
        "",
    ]
    regs = r.get("registrations", [])
    if regs:
        out += [
            "Registrations through Kamailio (SIPp `bench/sipp/register_auth.xml`: REGISTER, "
            "401, REGISTER with digest, 200; 3 s at each offered rate):",
            "",
        ]
        out += table(
            ["offered /s", "REGISTERs", "ok", "failed", "achieved /s"],
            [[g["offered"], g["count"], g["ok"], g["failed"], f(g["per_s"], 0)] for g in regs],
        )
        out.append("")
    e = r.get("ext_to_ext")
    if e:
        out += [
            f"Extension → extension set-up through Kamailio (softphone 1001 calls 1002, both "
            f"registered; INVITE sent → 200 received in the caller, {e['ms']['n']} calls at "
            f"5/s): p50 {f(e['ms']['p50'])} ms, p99 {f(e['ms']['p99'])} ms.",
            "",
        ]
        if e.get("unanswered_codes"):
            codes = ", ".join(f"{k}: {v}" for k, v in e["unanswered_codes"].items())
            out += [f"Calls not answered, by final code (0 = none): {codes}.", ""]
    return [*out, f"loadavg {r.get('loadavg_start')} → {r.get('loadavg_end')}", ""]


def dtmf_section(r: Result | None) -> list[str]:
    """DTMF to action."""
    legs = r.get("legs", 100) if r else 100
    out = [f"## DTMF to action (`*6`, mute toggle, {legs} softphone legs + 1 probe live)", ""]
    if _err(r):
        return out + _err(r)
    assert r is not None
    d = r["dtmf_to_action_ms"]
    rows = [
        [
            "DTMF → action (server)",
            d["n"],
            f(d["p50"], 2),
            f(d["p99"], 2),
            f(d["max"], 2),
            "`status.action_latencies` (action `mute`): from the digit's arrival in the app "
            "server's loop (pjsua2 `onDtmfDigit`) to the mute applied to the room's links; "
            f"{legs} softphone legs in rooms of {r.get('room')} + 1 probe, each softphone "
            "keys `*6`, 1.5 s, `*6` (RFC 2833), all legs live",
        ]
    ]
    c = r.get("cross_check")
    if c:
        rows += [
            [
                "RFC 2833 first packet → muted seen",
                c["from_first_packet_ms"]["n"],
                f(c["from_first_packet_ms"]["p50"]),
                f(c["from_first_packet_ms"]["p99"]),
                f(c["from_first_packet_ms"]["max"]),
                "outside view: the probe sends `*6` as RFC 2833 events it builds; the bench polls "
                f"`status` every {f(c['poll_ms'], 0)} ms until the probe's `muted` flips; "
                f"includes a status round trip (p50 {f(c['status_rtt_ms']['p50'])} ms)",
            ],
            [
                "RFC 2833 end-of-event → muted seen",
                c["from_end_packet_ms"]["n"],
                f(c["from_end_packet_ms"]["p50"]),
                f(c["from_end_packet_ms"]["p99"]),
                f(c["from_end_packet_ms"]["max"]),
                "same presses, from the first end-of-event packet (E bit) of the `6`: negative = "
                "the server acted on the event's first packet, before its end",
            ],
            [
                "same presses, server's own number",
                c["server_ms"]["n"],
                f(c["server_ms"]["p50"], 2),
                f(c["server_ms"]["p99"], 2),
                f(c["server_ms"]["max"], 2),
                "`action_latencies` of the probe's presses",
            ],
        ]
    out += table(["measure", "n", "p50 ms", "p99 ms", "max ms", "how measured"], rows, "lrrrrl")
    notes = [f"legs joined: {r.get('joined')}", f"members muted at the end: {r.get('muted_after')}"]
    if r.get("errors"):
        notes.append("; ".join(r["errors"]))
    out += ["", ", ".join(notes) + f". loadavg {r.get('loadavg_start')} → {r.get('loadavg_end')}"]
    return [*out, ""]


def pin_section(dtmf: Result | None, series: list[Result]) -> list[str]:
    """PIN to room, from every run that joined legs."""
    out = [
        "## PIN to room (`#` → joined)",
        "",
        "How measured: the server's `status.join_latencies`: from the arrival of the PIN's `#` "
        "in the app server's loop to the leg joined to its room (links made, billing row "
        "queued), for every leg of a run.",
        "",
    ]
    rows = []
    if dtmf and not dtmf.get("failed"):
        j = dtmf["join_ms"]
        rows.append(
            [
                f"DTMF run: {dtmf.get('legs')} legs + 1 probe at 50 calls/s, rooms of "
                f"{dtmf.get('room')}",
                j["n"],
                f(j["p50"], 2),
                f(j["p99"], 2),
                f(j["max"], 2),
            ]
        )
    for s in series:
        lat = s.get("join_latencies_ms")
        if not lat:
            continue
        srt = sorted(lat)
        p99 = srt[min(len(srt) - 1, math.ceil(0.99 * len(srt)) - 1)]
        rows.append(
            [
                f"capacity: {s.get('label')}, rooms of {s.get('room')} (legs added 50/s)",
                len(lat),
                f(srt[len(srt) // 2], 2),
                f(p99, 2),
                f(srt[-1], 2),
            ]
        )
    if not rows:
        return [*out, "_Not run._", ""]
    return out + table(["run", "joins", "p50 ms", "p99 ms", "max ms"], rows) + [""]


def trunk_section(r: Result | None) -> list[str]:
    """Trunk pacing."""
    offered = r.get("offered", 30) if r else 30
    cps = r.get("trunk_cps", 2) if r else 2
    out = [f"## Trunk pacing ({offered} attempts at once, trunk `cps: {cps}`)", ""]
    if _err(r):
        return out + _err(r)
    assert r is not None
    rows = [
        [
            "most INVITEs in any 1-s window at the provider",
            r["max_in_1s_window"],
            f"goal ≤ {cps} (and every call answered or refused with 503): "
            f"{'met' if r['passed'] else 'NOT met'}; SIPp UAS "
            "`tests/sipp/provider_uas.xml` logs each INVITE with its clock (ms); sliding "
            "1-s window over those stamps",
        ],
        [
            "INVITEs the provider received",
            r["provider_invites"],
            "same log",
        ],
        [
            "calls answered",
            r["answered"],
            f"softphone registered as 1001 through Kamailio, {offered} calls to "
            "`0011999990000` started within milliseconds (`--rate 1000`)",
        ],
        [
            "final SIP codes the caller got",
            ", ".join(f"{k}: {v}" for k, v in r.get("codes", {}).items()),
            "softphone reports (0 = no final answer)",
        ],
        [
            "calls refused with 503",
            r["got_503"],
            f"final code in the softphone's report; Retry-After {', '.join(r['retry_after'])}",
        ],
        [
            "INVITE → 503, p50 / p99 ms",
            f"{f(r['ms_to_503']['p50'])} / {f(r['ms_to_503']['p99'])}",
            "softphone: call started → disconnected with 503",
        ],
    ]
    out += table(["measure", "value", "how measured"], rows, "lrl")
    return [*out, "", f"loadavg {r.get('loadavg_start')} → {r.get('loadavg_end')}", ""]


def dialcheck_section(r: Result | None) -> list[str]:
    """Profile decisions."""
    out = ["## Profile decisions (10,000 lines)", ""]
    if _err(r):
        return out + _err(r)
    assert r is not None
    d, c = r["decide_us"], r["cli_s"]
    rows = [
        [
            "`decide()` in process, p50 / p99 µs",
            f"{f(d['p50'], 0)} / {f(d['p99'], 0)}",
            f"{d['n']} decisions, random line × 12 numbers of every class, on a "
            f"{r['yaml_kib']} KiB file of {r['lines']} lines and {r['profiles']} profiles; "
            "SQLite usage lookups included; `time.perf_counter` around each call",
        ],
        [
            "`ponte dial-check` command, p50 / max s",
            f"{f(c['p50'], 2)} / {f(c['max'], 2)}",
            f"{c['n']} runs of the whole CLI (start Python, load and validate the YAML, decide, "
            "print)",
        ],
        ["YAML load + validation, s", f(r["load_s"], 2), "`load_config` once, in process"],
    ]
    out += table(["measure", "value", "how measured"], rows, "lrl")
    return [*out, "", f"loadavg {r.get('loadavg_start')} → {r.get('loadavg_end')}", ""]


def reload_section(r: Result | None) -> list[str]:
    """Reload time and RTP continuity."""
    out = ["## Reload of a 10,000-line file during a call", ""]
    if _err(r):
        return out + _err(r)
    assert r is not None
    rows = [
        [
            "`ponte reload` (CLI) p50 / max ms",
            f"{f(r['cli_wall_ms']['p50'], 0)} / {f(r['cli_wall_ms']['max'], 0)}",
            "the whole CLI, request → answer",
        ],
        [
            "control socket reload p50 / max ms",
            f"{f(r['socket_wall_ms']['p50'], 0)} / {f(r['socket_wall_ms']['max'], 0)}",
            "`reload` request → answer",
        ],
        [
            "largest RTP gap during reloads, ms",
            f(r["during_max_gap_ms"]),
            f"raw leg in a 2-member room, kernel stamps; baseline max "
            f"{f(r['baseline_max_gap_ms'])} ms; goal ≤ 40 ms",
        ],
        ["RTP packets lost during reloads", r["during_lost"], "sequence numbers"],
        [
            "slowest SIP OPTIONS answer during reloads, ms",
            f(r["slowest_sip_ms"], 0),
            "OPTIONS back to back: how long the loop thread was busy",
        ],
    ]
    out += table(["measure", "value", "how measured"], rows, "lrl")
    return [
        *out,
        "",
        f"{r['config_lines']} YAML lines, {r['reloads']} reloads. "
        f"loadavg {r.get('loadavg_start')} → {r.get('loadavg_end')}",
        "",
    ]


def load_section(results: list[Result], meta: dict[str, Any]) -> list[str]:
    """Load averages at the start and end of each bench: the machine was shared."""
    rows = [
        [
            r.get("name", r.get("bench")),
            r.get("loadavg_start", "?"),
            r.get("loadavg_end", "?"),
            f(r.get("wall_s")),
        ]
        for r in results
    ]
    return [
        "## Machine load during the run",
        "",
        f"The machine ({meta.get('cpus')} CPUs, {meta.get('cpu_model')}) was shared with test "
        "runs; numbers are noisy where the load was high. `/proc/loadavg` (1/5/15 min) at "
        "each bench's start and end:",
        "",
        *table(["bench", "loadavg start", "loadavg end", "wall s"], rows, "lllr"),
        "",
    ]


# -- the plot --------------------------------------------------------------------------


def plot(results: list[Result], path: Path) -> None:
    """CPU % vs legs per codec/room size; latency percentiles p50/p99."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write a file
    import matplotlib.pyplot as plt

    series = [r for r in results if r.get("bench") == "legs" and r.get("steps")]
    by = {r.get("bench"): r for r in results if r.get("bench") != "legs"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6))
    for s in series:
        xs = [st["legs"] for st in s["steps"]]
        ys = [st["server_cpu"] for st in s["steps"]]
        (line,) = ax1.plot(xs, ys, marker="o", label=f"{s['label']}, rooms of {s['room']}")
        bad = [(st["legs"], st["server_cpu"]) for st in s["steps"] if st["degraded"]]
        if bad:
            ax1.plot(*zip(*bad, strict=True), "x", color="red", markersize=12, mew=3)
        top = [st["busiest_thread_cpu"] for st in s["steps"]]
        ax1.plot(xs, top, ls=":", color=line.get_color(), alpha=0.7)
    ax1.axhline(90, color="grey", ls="--", lw=1)
    ax1.text(5, 92, "90 % of a core (degraded above)", color="grey", fontsize=8)
    ax1.set_xlabel("legs in rooms (each sending a 440 Hz tone)")
    ax1.set_ylabel("app-server CPU % (100 = one core)")
    ax1.set_title("CPU vs legs (solid: whole server, dotted: busiest thread, x: degraded)")
    ax1.grid(alpha=0.3)
    if series:
        ax1.legend(fontsize=8)

    labels: list[str] = []
    p50: list[float] = []
    p99: list[float] = []
    floor = 0.1  # SIPp measures whole ms: a 0 is drawn at the floor of the log axis
    d = by.get("dtmf")
    if d and not d.get("failed"):
        labels += ["PIN # →\nroom", "DTMF →\naction"]
        p50 += [d["join_ms"]["p50"], d["dtmf_to_action_ms"]["p50"]]
        p99 += [d["join_ms"]["p99"], d["dtmf_to_action_ms"]["p99"]]
    p = by.get("pbx")
    if p and not p.get("failed"):
        for u in p.get("uac", []):
            labels.append(f"INVITE→200\n@{u['rate']}/s")
            p50.append(u["invite_200_ms"]["p50"])
            p99.append(u["invite_200_ms"]["p99"])
    xs = list(range(len(labels)))
    clean50 = [max(floor, v) if v == v else floor for v in p50]
    clean99 = [max(floor, v) if v == v else floor for v in p99]
    ax2.bar([x - 0.2 for x in xs], clean50, width=0.4, label="p50")
    ax2.bar([x + 0.2 for x in xs], clean99, width=0.4, label="p99")
    ax2.axhline(50, color="grey", ls="--", lw=1)
    ax2.text(-0.4, 55, "INVITE→200 p99 goal 50 ms", color="grey", fontsize=8)
    ax2.set_yscale("log")
    ax2.set_xticks(xs, labels, fontsize=8)
    ax2.set_ylabel("ms (log scale; SIPp's whole-ms 0 drawn at 0.1)")
    ax2.set_title("Latency percentiles")
    ax2.grid(alpha=0.3, axis="y")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the whole file --------------------------------------------------------------------


def write(results: list[Result], meta: dict[str, Any], out_dir: Path) -> Path:
    """Write RESULTS.md and cpu_latency.png into `out_dir`; return the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    series = [r for r in results if r.get("bench") == "legs"]
    by = {r.get("bench"): r for r in results if r.get("bench") != "legs"}
    # Benches run again with `bench/run --only` and merged into this run's
    # results: one merge (a dict) or several, oldest first.
    again = meta.get("remeasured") or []
    if isinstance(again, dict):
        again = [again]
    lines = [
        "# ponte benchmarks",
        "",
        f"Run {meta.get('started')} by `bench/run` ({meta.get('mode')}), commit "
        f"{meta.get('commit')}{' + uncommitted changes' if meta.get('dirty') else ''}; "
        f"**wall time {meta.get('wall_s', 0):.0f} s**; loadavg {meta.get('loadavg_start')} → "
        f"{meta.get('loadavg_end')}. pjsua2 {meta.get('pjsua2', '?')} codecs: "
        f"{meta.get('codecs', '?')}. Plot: `cpu_latency.png`. Raw numbers: `results.json`, "
        "each bench's own output: `logs/`.",
        *(
            [
                "",
                "Measured again since, with `bench/run --only` and merged here: "
                + "; ".join(
                    f"{', '.join(m['benches'])} at {m['at']}, commit {m.get('commit', '?')}"
                    for m in again
                )
                + ".",
            ]
            if again
            else []
        ),
        "",
        "![CPU vs legs, latency percentiles](cpu_latency.png)",
        "",
    ]
    # Series through the edge with bench/loadgen.py (bench/capacity.py), and
    # any of bench/legs.py's own (softphones straight to the server).
    edge = [s for s in series if s.get("load") == "bench/loadgen.py"]
    if edge:
        lines += edge_capacity_section(edge)
    if len(edge) < len(series) or not series:
        lines += capacity_section([s for s in series if s.get("load") != "bench/loadgen.py"])
    lines += setup_section(by.get("pbx"))
    lines += dtmf_section(by.get("dtmf"))
    lines += pin_section(by.get("dtmf"), series)
    lines += trunk_section(by.get("trunk"))
    lines += dialcheck_section(by.get("dialcheck"))
    lines += store_section(by.get("store"))
    lines += reload_section(by.get("reload"))
    # The browsers' series before the edge took them (measured once; that path is gone).
    before = BENCH_RESULTS / "webrtc_before.json"
    lines += webrtc_section(
        by.get("webrtc"), json.loads(before.read_text()) if before.exists() else None
    )
    lines += relay_section(by.get("relay"))
    lines += opus_cost_section(by.get("opus_cost"))
    if "nodes" in by:  # on demand only (bench/run --only nodes)
        lines += nodes_section(by["nodes"])
    if "recording" in by:  # on demand only (bench/run --only recording)
        lines += recording_section(by["recording"])
    if "quality" in by:  # on demand only (bench/run --only quality)
        lines += quality_section(by["quality"])
    lines += load_section(results, meta)
    md = out_dir / "RESULTS.md"
    md.write_text("\n".join(lines))
    plot(results, out_dir / "cpu_latency.png")
    return md


def main(argv: list[str]) -> int:
    """Redraw from a saved results.json."""
    path = Path(argv[0]) if argv else Path(__file__).parent / "results" / "results.json"
    saved = json.loads(path.read_text())
    print(write(saved["results"], saved["meta"], path.parent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
