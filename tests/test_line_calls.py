"""Line profiles on real outbound calls through Kamailio, the app server and
a SIPp provider: refusals as early media, shared quotas cut on time, alerts,
and counters that survive kill -9."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests import audio, ports
from tests.harness import cli, report
from tests.pbx_helpers import EXTENSIONS, pbx_overrides, proxy, register, wait_registered


@pytest.fixture
def webhook():
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", ports.allocate(1)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", got
    server.shutdown()


def lines_config(provider_port: int, national_minutes: float, hook: str | None = None):
    cfg = pbx_overrides(provider_port)
    cfg.update(pool_config(national_minutes, hook))
    return cfg


def pool_config(national_minutes: float, hook: str | None = None) -> dict:
    """Lines 1001 and 1002 drawing on the department vendas's shared pool of
    national minutes, cut at its limit, CSP 21 forced; alerts at 60/80/100 %."""
    return {
        "lines": {
            "1001": {"area_code": "11", "department": "vendas"},
            "1002": {"area_code": "11", "department": "vendas"},
        },
        "departments": {"vendas": {"profile": "equipe"}},
        "profiles": {
            "equipe": {
                "quota": "shared",
                "cut_at_limit": True,
                "limits": {
                    "national": national_minutes,
                    "local": "unlimited",
                    "international": "blocked",
                },
            }
        },
        "carrier": {"csp": "21", "force": True},
        "alerts": {"thresholds": [60, 80, 100], "webhook": hook, "message_to": ["1002"]},
    }


def test_refusal_is_spoken_as_early_media_then_403(server_factory, phone, provider):
    srv = server_factory(**lines_config(provider.port, 1))
    p = phone(
        f"sip:0015442079460000@{proxy(srv)}",
        "wait_end 15",
        bind=ports.loopback_ip(),
        extra=register("1001", srv),
    )
    r = p.result()
    assert r["code"] == 403, r
    samples, rate = audio.load(p.record)
    assert audio.speech_like(samples, rate), "the reason was heard before the 403"
    assert not [e for _, e in provider.events() if e.startswith("INVITE")]
    assert "rule=type" in srv.log()
    (call,) = report(srv, "calls")
    assert call["origin"] == "1001" and call["destination"] == "0015442079460000"
    assert (call["disposition"], call["sip_code"], call["call_type"]) == (
        "refused",
        403,
        "international",
    )
    assert call["profile_rule"] == "type" and call["duration"] == 0


def test_shared_quota_cuts_two_live_calls_on_time(server_factory, phone, provider):
    srv = server_factory(**lines_config(provider.port, 0.2))  # 12 s for the department
    a = phone(
        f"sip:02133334444@{proxy(srv)}",
        "wait_media 8; wait 25; hangup",
        record=False,
        bind=ports.loopback_ip(),
        extra=register("1001", srv),
    )
    b = phone(
        f"sip:0412133335555@{proxy(srv)}",
        "wait_media 8; wait 25; hangup",
        record=False,
        bind=ports.loopback_ip(),
        extra=register("1002", srv),
    )
    ra, rb = a.result(), b.result()
    for r in (ra, rb):
        assert r["hung_up_by"] == "remote", r
    # Two calls burn the 12 s pool together: it runs dry when the sum reaches 12.
    t_dry = (12 + ra["confirmed_at"] + rb["confirmed_at"]) / 2
    for r in (ra, rb):
        assert abs(r["ended_at"] - t_dry) <= 1.0, r["ended_at"] - t_dry
    # The carrier rewrite reached the trunk: CSP 21 forced on both.
    sent = sorted(e.split("to=")[1] for _, e in provider.events() if e.startswith("INVITE"))
    assert sent == ["0212133334444", "0212133335555"]
    # The pool is empty: the next national call is refused.
    again = phone(
        f"sip:02133334444@{proxy(srv)}",
        "wait_end 15",
        record=False,
        bind=ports.loopback_ip(),
        extra=register("1001", srv),
    ).result()
    assert again["code"] == 403
    assert "rule=quota" in srv.log()
    # The call history: two calls cut at the limit through the trunk, one refused.
    calls = report(srv, "calls")
    assert [c["disposition"] for c in calls] == ["cut_at_limit", "cut_at_limit", "refused"]
    for c in calls[:2]:
        assert c["cut_at_limit"] == 1 and c["trunk"] == "provider1" and 4 < c["duration"] < 9
    assert calls[2]["profile_rule"] == "quota"
    by_line = report(srv, "calls", "--line", "1002")
    assert [c["destination"] for c in by_line] == ["0412133335555"]


def test_alerts_at_60_80_100_by_webhook_and_sip_message(server_factory, phone, provider, webhook):
    url, got = webhook
    cfg = lines_config(provider.port, 0.2, url)
    # The alerts are worded in the language of the call that crossed the mark.
    cfg["extensions"] = [
        {**e, "language": "en"} if e["number"] == "1001" else e for e in EXTENSIONS
    ]
    srv = server_factory(**cfg)
    watcher = phone(
        "",
        "",
        record=False,
        bind=ports.loopback_ip(),
        extra=[*register("1002", srv), "--linger", "22"],
    )
    wait_registered(srv, "1002")
    caller = phone(
        f"sip:02133334444@{proxy(srv)}",
        "wait_media 8; wait 25; hangup",
        record=False,
        bind=ports.loopback_ip(),
        extra=register("1001", srv),
    )
    rc = caller.result()
    rw = watcher.result()
    assert rc["hung_up_by"] == "remote"  # cut at 100 %
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(got) < 3:
        time.sleep(0.1)
    assert sorted(a["threshold"] for a in got) == [60, 80, 100]
    assert {a["key"] for a in got} == {"dept:vendas"}
    assert {a["language"] for a in got} == {"en"}
    assert all(f"used {a['threshold']}% of national" in a["text"] for a in got), got
    bodies = [m["body"] for m in rw["messages"]]
    for pct in (60, 80, 100):
        assert any(f"{pct}% of national" in b for b in bodies), bodies
    # The calling line's own extension is told too.
    assert any("100% of national" in m["body"] for m in rc["messages"])
    db = sqlite3.connect(srv.config["database"])
    assert db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 3
    usage = cli(srv, "report", "usage", "--department", "vendas", "--csv").stdout
    row = next(r for r in csv.DictReader(io.StringIO(usage)) if r["limit"] == "national")
    assert float(row["used_min"]) == pytest.approx(0.2, abs=0.02)
    assert row["alerts"] == "60%,80%,100%"
    # The alerts history, with the line that crossed each mark.
    history = report(srv, "alerts", "--line", "1001")
    assert [(a["threshold"], a["key"], a["limit_name"]) for a in history] == [
        (60, "dept:vendas", "national"),
        (80, "dept:vendas", "national"),
        (100, "dept:vendas", "national"),
    ]
    assert history[-1]["limit_min"] == pytest.approx(0.2)
    assert {a["webhook"] for a in history} == {"delivered after 1 try"}


def test_counters_survive_kill_9_mid_call(server_factory, phone, provider):
    srv = server_factory(**lines_config(provider.port, 5))
    p = phone(
        f"sip:02133334444@{proxy(srv)}",
        "wait_media 8; wait_end 60",
        record=False,
        bind=ports.loopback_ip(),
        extra=register("1001", srv),
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "answered by" not in srv.log():
        time.sleep(0.1)
    answered = time.monotonic()
    time.sleep(14)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    elapsed = time.monotonic() - answered
    p.proc.kill()
    db = sqlite3.connect(srv.config["database"])
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    (counted,) = db.execute(
        "SELECT seconds FROM usage WHERE key = 'dept:vendas' AND call_type = 'national_fixed'"
    ).fetchone()
    assert elapsed - 10.5 <= counted <= elapsed + 0.5, (counted, elapsed)
