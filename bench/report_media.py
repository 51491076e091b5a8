"""RESULTS.md sections for the media paths: browsers (WebRTC through the edge) and
rtpengine's relay."""

from __future__ import annotations

from typing import Any

from report_format import Result, _err, f, table


def webrtc_section(r: Result | None, before: Result | None = None) -> list[str]:
    """Browser (WebRTC) legs through the edge against the CPU of the app server,
    rtpengine and Kamailio (the browsers' own apart), and what they heard;
    `before`: the same bench when the server ran aiortc itself (measured once
    before that path was removed: bench/results/webrtc_before.json)."""
    out = ["## Browser legs (WebRTC: SIP over WebSocket, DTLS-SRTP in rtpengine, Opus)", ""]
    if before is not None:
        out += _webrtc_before(before)
    out += ["### Through the edge (Kamailio's WebSocket, rtpengine, Opus to the app server)", ""]
    if _err(r):
        return out + _err(r)
    assert r is not None
    rows = [
        [
            s["browsers"],
            s.get("joined", s["browsers"]),
            f(s["server_cpu"], 0),
            f(s["rtpengine_cpu"], 0),
            f(s["kamailio_cpu"], 1),
            f(s["appliance_cpu"], 0),
            f(s["browsers_cpu"], 0),
            *_heard_cells(s),
        ]
        for s in r["steps"]
    ]
    out += table(
        [
            "browsers",
            "joined",
            "server CPU %",
            "rtpengine CPU %",
            "Kamailio CPU %",
            "appliance CPU %",
            "browsers' own CPU %",
            "machine busy %",
            "received min %",
            "max gap ms",
            "1000 Hz share min",
            "",
        ],
        rows,
        "rrrrrrrrrrrl",
    )
    idle = r.get("idle") or {}
    stopped = f" Stopped early: {r['stopped']}." if r.get("stopped") else ""
    return [
        *out,
        "",
        "How measured (`bench/webrtc.py`): one app server with its Kamailio "
        "(`pbx.websocket.listen`) and rtpengine, the console on; a SIP moderator (PCMU, "
        "straight to the app server) sends 1000 Hz into the room. Each browser joins as the "
        "join page does: POST the PIN to `/join/token` (from its own 127.x address), open the "
        "WebSocket the reply names, INVITE `sip:web-<token>@…` with an aiortc offer (ICE, "
        "DTLS-SRTP, Opus; `tests/wsbrowser.py`); rtpengine gives the app server plain RTP with "
        "Opus. The simulated browsers send Opus silence (encoded once, looped) and run in "
        f"{r.get('workers', '?')} processes of their own at nice 5: **their CPU is the "
        "'browsers' own' column, not the appliance's**, though on this 2-core box they share "
        "the cores. Appliance = server + rtpengine + Kamailio (its whole process group). "
        f"Window {f(r.get('window_s'), 0)} s after every browser joined + 1.5 s; idle before "
        f"the first browser: server {f(idle.get('server_cpu'))} %, rtpengine "
        f"{f(idle.get('rtpengine_cpu'))} %, Kamailio {f(idle.get('kamailio_cpu'))} %. Degraded: "
        "a browser failed to join, or got under 99 % of the window's packets, a gap over "
        "100 ms, or under 80 % 1000 Hz; a degraded window is measured again once and only "
        f"the second counts ('2nd window').{stopped}",
        "",
        f"- **Largest healthy step: {r.get('largest_healthy', 0)} browsers**; browser legs per "
        f"core of the appliance at that step: {r.get('legs_per_core')}.",
        *_webrtc_compare(before, r),
        *_webrtc_limit(r),
        *([f"- Errors: {'; '.join(str(e) for e in r['errors'][:3])}"] if r.get("errors") else []),
        f"- loadavg {r.get('loadavg_start')} → {r.get('loadavg_end')}",
        "",
    ]


def _webrtc_compare(before: Result | None, after: Result) -> list[str]:
    """Before against after: healthy browsers and the appliance's CPU per browser."""
    if not before or not before.get("steps") or not after.get("steps"):
        return []
    ok_b = [s for s in before["steps"] if not s["degraded"]]
    ok_a = [s for s in after["steps"] if not s["degraded"]]
    if not ok_b or not ok_a:
        return []
    b, a = ok_b[-1], ok_a[-1]
    ceiling = "" if len(ok_b) < len(before["steps"]) else " (its last step: no ceiling reached)"
    return [
        f"- Before → after: {b['browsers']} healthy browsers{ceiling} at "
        f"{f(b['server_cpu'] / b['browsers'], 2)} % of a core each on the server → "
        f"{a['browsers']} at {f(a['appliance_cpu'] / a['browsers'], 2)} % each on the "
        f"appliance (server {f(a['server_cpu'] / a['browsers'], 2)}, rtpengine "
        f"{f(a['rtpengine_cpu'] / a['browsers'], 2)}, Kamailio "
        f"{f(a['kamailio_cpu'] / a['browsers'], 2)}); the simulated browsers "
        f"{f(a['browsers_cpu'] / a['browsers'], 2)} % each on top.",
    ]


def _webrtc_limit(r: Result) -> list[str]:
    """What the first degraded step ran into: the machine, or the appliance."""
    bad = next((s for s in r["steps"] if s["degraded"]), None)
    if bad is None:
        return []
    what = (
        "the whole machine was busy: on these 2 cores the simulated browsers compete with "
        "the appliance they measure"
        if bad["machine_busy"] >= 95
        else "the machine had room left: the appliance's limit"
    )
    return [
        f"- First degraded at {bad['browsers']} browsers ({bad.get('joined')} joined, "
        f"{bad.get('gaps_over', '?')} with a gap > 100 ms): appliance "
        f"{f(bad['appliance_cpu'], 0)} %, browsers' own {f(bad['browsers_cpu'], 0)} %, "
        f"machine {f(bad['machine_busy'], 0)} % busy; {what}.",
    ]


def _heard_cells(s: Result) -> list[str]:
    """A browsers' step's last cells: the machine, what they heard, the verdict."""
    return [
        f(s["machine_busy"], 0),
        f(s["received_min"]),
        f(s["max_gap_ms"], 0),
        f(s["tone_min"], 2),
        ("degraded" if s["degraded"] else "ok")
        + (" (2nd window)" if s.get("first_window") else ""),
    ]


def _webrtc_before(b: Result) -> list[str]:
    """The series from when the app server ran aiortc per browser (web/webrtc.py)."""
    out = ["### Before: aiortc on the app server (web/webrtc.py, before the edge)", ""]
    rows = [
        [
            s["browsers"],
            f(s["server_cpu"], 0),
            f(s["generator_cpu"], 0),
            *_heard_cells(s),
        ]
        for s in b["steps"]
    ]
    out += table(
        [
            "browsers",
            "server CPU %",
            "browsers' own CPU %",
            "machine busy %",
            "received min %",
            "max gap ms",
            "1000 Hz share min",
            "",
        ],
        rows,
        "rrrrrrrl",
    )
    top = b["steps"][-1] if b.get("steps") else None
    per = f(top["server_cpu"] / top["browsers"], 1) if top else "n/a"
    return [
        *out,
        "",
        f"Measured {b.get('measured', '?')} at commit {b.get('commit', '?')} "
        f"(`bench/webrtc.py --steps {b.get('steps_arg', '?')} --window {b.get('window_s', '?')}` "
        "of that commit): each browser an aiortc peer posting its offer to `/join/offer`, the "
        "server answering with aiortc on its web thread (Opus at 48 kHz, DTLS-SRTP and ICE in "
        "Python) and bridging 8 kHz frames through `pbx/_pjx.c`'s media port. The browsers "
        "(aiortc too, in the bench process) cost as much as the server's side. About "
        f"{per} % of a core per browser on the server; loadavg {b.get('loadavg_start')} → "
        f"{b.get('loadavg_end')}.",
        "",
    ]


def relay_section(r: Result | None) -> list[str]:
    """The relay's cost: legs vs the CPU of the app server, rtpengine and Kamailio,
    with the media straight to the app server and through rtpengine."""
    out = ["## The relay's cost (legs vs CPU of the app server, rtpengine and Kamailio)", ""]
    if _err(r):
        return out + _err(r)
    assert r is not None
    tones = "/".join(str(t) for t in r.get("sample_tones", [500, 700, 900]))
    out += [
        "How measured: one app server with Kamailio and rtpengine beside it (a trunk whose "
        "provider is this host: Kamailio takes 127.0.0.1's calls as the provider's DID calls). "
        f"Two series of the same G.711 calls, rooms of {r.get('room', 10)}, legs rising in "
        f"steps (each step a new `pbx/softphone.py` process placing calls at "
        f"{f(r.get('rate', 50), 0)}/s; each leg keys its room's PIN and sends 440 Hz): "
        "**direct** to the app server's `conf` on its loopback `sip.listen` (Kamailio and "
        "rtpengine idle beside it), then **relayed**: the provider's DID "
        "(+551130001000 → `conf`) at Kamailio with a Route to it, so rtpengine relays every "
        "RTP packet both ways. After all legs joined + 1 s, a steady window of "
        f"{f(r.get('window_s'), 0)} s: CPU = utime+stime from `/proc/PID/stat` over the window "
        "(100 % = one core) of the app server, of rtpengine (its pid file) and of Kamailio "
        "(its whole process group); phones = the load generators (nice 5); machine = both "
        "cores from `/proc/stat`. Calls up (`ponte status`, also timed: in relayed mode it "
        "asks rtpengine about every member) and rtpengine's calls (ng `list`) are read after "
        f"the window. Audio: three sample phones (counted among the legs) in a room of their "
        f"own send {tones} Hz and record; the part of each WAV written during the window "
        "must hold the other two tones (level > 0.01, share of the energy > 0.5) with no "
        "hole over 100 ms (`tests/audio.longest_gap`). Per-leg figures are least-squares "
        "slopes through an idle window (no calls) and the steps.",
        "",
    ]
    rows = []
    idle = r.get("idle")
    if idle:
        rows.append(
            ["idle", 0, "", "", "", f(idle["server_cpu"]), f(idle["rtpengine_cpu"])]
            + [f(idle["kamailio_cpu"]), f(idle["total_cpu"]), "", f(idle["machine_busy"], 0)]
            + ["", "", "", ""]
        )
    for s in r.get("steps", []):
        gaps = [h["max_gap_ms"] for h in s["samples"] if h.get("max_gap_ms") is not None]
        rows.append(
            [
                s["mode"],
                s["legs"],
                s["joined"],
                s["calls_up"],
                f(s["rtpengine_calls"]),
                f(s["server_cpu"]),
                f(s["rtpengine_cpu"]),
                f(s["kamailio_cpu"]),
                f(s["total_cpu"]),
                f(s["generator_cpu"]),
                f(s["machine_busy"], 0),
                f(min((h["tone_share"] for h in s["samples"]), default=None), 2),
                f(max(gaps, default=None), 0),
                f"{s['samples_ok']}/{len(s['samples'])} {'ok' if s['audio_ok'] else 'BAD'}",
                f(s["status_ms"]),
            ]
        )
    out += table(
        [
            "mode",
            "legs",
            "joined",
            "calls up",
            "rtpengine calls",
            "server CPU %",
            "rtpengine CPU %",
            "Kamailio CPU %",
            "all three %",
            "phones CPU %",
            "machine %",
            "tone share min",
            "max hole ms",
            "audio",
            "status ms",
        ],
        rows,
        "lrrrrrrrrrrrrlr",
    )
    d = r.get("derived") or {}
    if d:
        out += [
            "",
            f"- **rtpengine CPU per relayed leg: {f(d.get('rtpengine_per_relayed_leg'), 3)} % "
            "of one core**"
            + (
                f" (linearly, rtpengine alone would fill a core at ~{d['rtpengine_core_legs']} "
                "legs: an extrapolation)"
                if d.get("rtpengine_core_legs")
                else ""
            )
            + ".",
            f"- **App-server CPU per leg: direct {f(d.get('server_per_leg_direct'), 3)} %, "
            f"relayed {f(d.get('server_per_leg_relayed'), 3)} %** of one core.",
            f"- What relaying adds per leg, server + rtpengine + Kamailio together: "
            f"{f(d.get('relay_cost_per_leg'), 3)} % of one core.",
        ]
        a = d.get("at_largest")
        if a:
            out.append(
                f"- Check without the fit, at {a['legs']} legs (idle subtracted, divided by "
                f"the legs): rtpengine {f(a['rtpengine_per_leg'], 3)} %/leg; server "
                f"{f(a['server_per_leg_direct'], 3)} % direct vs "
                f"{f(a['server_per_leg_relayed'], 3)} % relayed per leg; all three processes "
                f"{f(a['total_direct'])} % direct vs {f(a['total_relayed'])} % relayed."
            )
    stopped = r.get("stopped") or {}
    notes = [f"{mode}: stopped at the {why}" for mode, why in stopped.items()]
    notes += r.get("errors", [])
    if notes:
        out += ["", "Notes: " + "; ".join(notes)]
    return [*out, "", f"loadavg {r.get('loadavg_start')} → {r.get('loadavg_end')}", ""]


def recording_section(r: Result | None) -> list[str]:
    """Recording's cost: G.711 legs without and with every room recording."""
    lines = [
        "## What recording costs (`bench/recording.py`)",
        "",
        "How measured (not in the default run: `bench/run --only recording`): bench/legs.py's "
        "G.711 series (rooms of 10, every leg sending a tone, raw probe legs timing each packet), "
        "twice on one server build: without recording, then with every room recording its mix "
        "and a track per member (1 + 10 WAV files a room), started through the control socket "
        "as soon as the room's members joined. Bridge clock: the thread that mixes, encodes and "
        "sends (the recorder ports only copy a frame into a ring on its tick); the files are "
        "written by the recorder's drain and writer threads, counted in the server's CPU.",
        "",
    ]
    lines += _err(r)
    if r is None or r.get("failed"):
        return lines
    runs = {s.get("record", "none"): s for s in r.get("series", [])}
    none, rec = runs.get("none", {}), runs.get("tracks", {})
    header = ["legs"]
    for label in ("off", "on"):
        header += [
            f"{label}: server CPU %",
            f"{label}: bridge clock %",
            f"{label}: probe loss %",
            f"{label}: max gap ms",
        ]
    rows = []
    by_legs = {
        name: {s["legs"]: s for s in run.get("steps", [])}
        for name, run in (("none", none), ("tracks", rec))
    }
    for n in sorted(set(by_legs["none"]) | set(by_legs["tracks"])):
        row: list[Any] = [n]
        for name in ("none", "tracks"):
            s = by_legs[name].get(n)
            if s is None:
                row += [""] * 4
                continue
            clock = max(
                (
                    t["cpu"]
                    for t in s.get("server_threads", [])
                    if t["what"].startswith("bridge clock")
                ),
                default=None,
            )
            row += [
                f(s.get("server_cpu")),
                f(clock),
                f(s.get("probe_loss_pct"), 2),
                f(s.get("probe_max_gap_ms")),
            ]
        rows.append(row)
    lines += table(header, rows, "r" * len(header))
    rooms = max((s.get("rooms_recording", 0) for s in rec.get("steps", [])), default=0)
    lines += [
        "",
        f"Rooms recording at the last step: {rooms} ({rooms * 11} files). "
        f"Errors: {'; '.join(none.get('errors', []) + rec.get('errors', [])) or 'none'}.",
        "",
    ]
    return lines


def edge_capacity_section(series: list[Result]) -> list[str]:
    """Capacity through the edge (bench/capacity.py): a summary per series and
    the steps, with the runs labelled before and after side by side."""
    out = [
        "## Conference capacity through the edge (bench/capacity.py, bench/loadgen.py as load)",
        "",
        "How measured: one app server per series with Kamailio and rtpengine in front; "
        "the legs call the trunk's DID through Kamailio, rtpengine relays their RTP. The load "
        "is `bench/loadgen.py` (raw SIP, PIN as RFC 2833, RTP from loops encoded once, one "
        "20 ms tick for all legs; one process per step, nice 5): per room the moderator "
        "sends 440 Hz and the next member 700 Hz, everyone else silence frames. G.722 and "
        "Opus rooms run `sip.clock_rate: 16000`. After all joined + 1 s a steady window: "
        "CPU (utime+stime, 100 % = one core) of the server, rtpengine and the generator "
        "apart; probes (3 PCMU listeners, kernel arrival stamps) give loss and gaps and the "
        "share of each talker's tone (*weaker tone*: ~0.5 when both are heard). Degraded as "
        "in bench/legs.py: probe loss > 1 %, a gap > 40 ms, server > 90 % of a core, or not "
        "all joined (a degraded window is measured once more). *before*: the same build "
        "with `--stock-mix` (no talker gate, no shared encode: pjmedia's own bridge, every "
        "member mixed and every leg encoding); *after*: the defaults. Series marked *direct* "
        "send the legs straight to the app server (no Kamailio, no rtpengine): the server's "
        "own capacity, which the relay's cost on the same two cores otherwise hides. "
        "*dtx* (Opus only, `--opus-dtx`): `sip.opus.dtx: true`, the generator's silent "
        "legs honouring the server's `usedtx=1` (a comfort-noise update every ~400 ms, "
        "as browsers send) and its talkers swelling and fading 4 times a second (DTX "
        "takes a steady tone for background noise). *c1*, *c3* (Opus only, "
        "`--opus-complexity`): the bridge's encoders at `sip.opus.complexity` 1 or 3 "
        "instead of 5 (the phones' unchanged): what a cheaper encoder buys, at the voice "
        "quality the quality section gives for it.",
        "",
    ]
    if not series:
        return [*out, "_Not run._", ""]
    # Before on the left of after; other labels after them, by name.
    order = {"before": 0, "after": 1}
    variants = sorted({s.get("variant") or "" for s in series}, key=lambda v: (order.get(v, 2), v))
    rows = []
    for s in series:
        ok = [st for st in s.get("steps", []) if not st["degraded"]]
        top = ok[-1] if ok else None
        rows.append(
            [
                f"{s.get('label', s.get('codec'))}, rooms of {s.get('room')}"
                + ("" if s.get("edge", True) else ", direct"),
                s.get("variant") or "",
                f(s.get("max_healthy_legs")),
                f(s.get("first_degraded_legs")),
                "; ".join(s.get("first_degraded_why") or [])
                or s.get("failed")
                or s.get("stopped")
                or "none up to the last step",
                f(top["server_cpu"]) if top else "",
                f(top["rtpengine_cpu"]) if top else "",
                f(top["generator_cpu"]) if top else "",
                f(top["machine_busy"], 0) if top else "",
            ]
        )
    out += table(
        [
            "series",
            "run",
            "max healthy legs",
            "first degraded at",
            "why",
            "server CPU % (at max healthy)",
            "rtpengine CPU %",
            "generator CPU %",
            "machine %",
        ],
        rows,
        "llrrlrrrr",
    )
    out.append("")
    keys = sorted({(s.get("codec"), s.get("room"), s.get("edge", True)) for s in series}, key=str)
    for codec, room, edge in keys:
        runs = {
            s.get("variant") or "": s
            for s in series
            if (s.get("codec"), s.get("room"), s.get("edge", True)) == (codec, room, edge)
        }
        first = next(iter(runs.values()))
        path = "" if edge else ", direct to the app server (no relay)"
        out += [f"### {first.get('label', codec)}, rooms of {room}{path}", ""]
        # The runs this series has, in the summary's order (no empty columns).
        here = [v for v in variants if v in runs]
        header = ["legs"]
        for v in here:
            name = f"{v}: " if v else ""
            header += [
                f"{name}server %",
                f"{name}bridge clock %",
                f"{name}rtpengine %",
                f"{name}generator %",
                f"{name}loss %",
                f"{name}max gap ms",
                f"{name}weaker tone",
                f"{name}verdict",
            ]
        by_legs = {v: {st["legs"]: st for st in runs[v].get("steps", [])} for v in here}
        body = []
        for n in sorted({x for d in by_legs.values() for x in d}):
            row: list[Any] = [n]
            for v in here:
                st = by_legs[v].get(n)
                if st is None:
                    row += [""] * 8
                    continue
                clock = max(
                    (t["cpu"] for t in st["server_threads"] if t["what"].startswith("bridge")),
                    default=None,
                )
                row += [
                    f(st["server_cpu"]),
                    f(clock),
                    f(st["rtpengine_cpu"]),
                    f(st["generator_cpu"]),
                    f(st["probe_loss_pct"], 2),
                    f(st["probe_max_gap_ms"], 0),
                    f(st.get("probe_tone_min"), 2),
                    "; ".join(st["degraded"]) or "ok",
                ]
            body.append(row)
        out += table(header, body, "r" * (len(header) - 1) + "l")
        for v, s in runs.items():
            gen = s.get("generators") or {}
            out += [
                "",
                f"{v or 'run'}: generator {gen.get('answered', '?')}/{gen.get('legs', '?')} "
                f"answered, {gen.get('late_ticks', '?')} late ticks of {gen.get('ticks', '?')} "
                f"(max {gen.get('max_late_ms', '?')} ms), server on "
                f"`{s.get('server_python', '?')}`; loadavg {s.get('loadavg_start')} → "
                f"{s.get('loadavg_end')}"
                + (f"; notes: {'; '.join(s['errors'])}" if s.get("errors") else ""),
            ]
        out.append("")
    return out


QUALITY_HOW = (
    "How measured (not in the default run: `bench/run --only quality`): a phone plays 4 "
    "prompts of real speech (4-8 s each: Debian's `asterisk-core-sounds-en-wav` for PCMU, "
    "the same prompts from `-g722`, decoded to 16 kHz with PyAV, for G.722 and for Opus at "
    "16 kHz and 24 kbit/s) to a listener, "
    "phones in network namespaces, both on the codec; through the bridge (talker -> room -> "
    "listener, via Kamailio and rtpengine; PCMU in the 8 kHz room, G.722 and Opus in a 16 kHz "
    "room, "
    "`sip.clock_rate: 16000`) with the talker gate on (the default `sip.talker_threshold_dbfs`, "
    "with the shared encode on) and off (`null`), and on a direct call "
    "between the two phones. Loss: tests/udprelay.py drops that share of the talker's "
    "packets each way, seeded and counted from the talker's first loud packet "
    "(`--from-voice`), so every path loses the same frames of the same speech. "
    "PESQ (the `pesq` package: narrowband P.862 at 8 kHz for PCMU, wideband P.862.2 at 16 kHz "
    "for G.722 and Opus, so the narrowband and wideband figures are on different scales) per "
    "prompt, each prompt "
    "found in the recording by cross-correlation, mean of the 4; delay (play -> recording, "
    "with the listener's jitter buffer capped at 200 ms) the median of the prompts'. A case "
    "whose recording has holes (digital silence where the prompt is loud: a jitter buffer "
    "run dry, CPU starvation) or slips (the delay moved 10 ms or more within a prompt: a "
    "jitter buffer that grew or shed a frame) is measured again; such a cell reads "
    "`again (first try *)`, both in the JSON. Goals (issue 22): PCMU >= 4.1 clean and "
    ">= 3.5 at 3 % loss; G.722 in a 16 kHz room >= 4.2 (wideband) through the bridge clean; "
    "the gate lowers neither. Opus has no goal: through the bridge it is encoded twice (the "
    "talker's phone, then the bridge at `sip.opus.complexity` 5), the direct call once."
)


def _pesq(row: dict[str, Any]) -> str:
    """A row's PESQ cell; measured again, the first try's after it and a *."""
    if not row:
        return "n/a"
    value = f(row.get("pesq", row.get("pesq_nb")), 2)
    first = row.get("first_try")
    return f"{value} ({f(first.get('pesq'), 2)} *)" if first else value


def quality_section(r: Result | None) -> list[str]:
    """Voice quality: PESQ of real speech through the bridge and on a direct call."""
    if r is None or r.get("failed"):
        return ["## Voice quality (`bench/quality.py`)", "", QUALITY_HOW, "", *_err(r)]
    lines = ["## Voice quality (`bench/quality.py`)", "", QUALITY_HOW, ""]
    cells: dict[tuple[str, float], dict[str, Any]] = {}
    for row in r.get("rows", []):
        gate = row.get("gate", True)
        key = "direct" if row["path"] == "direct" else "gate on" if gate else "gate off"
        cells.setdefault((row["codec"], row["loss_pct"]), {})[key] = row
    rows = []
    for (codec, loss), by in sorted(cells.items()):
        on, off, direct = by.get("gate on", {}), by.get("gate off", {}), by.get("direct", {})
        rows.append(
            [
                "clean" if not loss else f"{f(loss, 0)} % loss",
                f"{codec} ({(on or direct).get('mode', 'nb')})",
                _pesq(on),
                _pesq(off),
                _pesq(direct),
                f(on.get("delay_ms"), 0),
                f(off.get("delay_ms"), 0),
                f(direct.get("delay_ms"), 0),
            ]
        )
    header = ["condition", "codec (PESQ)", "bridge, gate on", "bridge, gate off", "direct"]
    header += ["delay on ms", "delay off ms", "delay direct ms"]
    lines += table(header, rows, "llrrrrrr")
    return [*lines, ""]
