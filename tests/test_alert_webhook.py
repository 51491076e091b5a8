"""Alert webhooks (ponte.alertwebhook): delivered from a worker, retried with
backoff, and a delivery that still fails is recorded and shown in `ponte
report alerts`. Against local aiohttp servers: one that fails twice then
succeeds, one that always fails."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from ivr.prompts import load_texts, text
from lines.usage import UsageStore
from ponte.alertwebhook import AlertWebhook
from tests.harness import ROOT

CYCLE = dt.date(2026, 12, 1)


class Hooks:
    """An aiohttp server on loopback: /flaky fails its first two POSTs,
    /down always fails, /slow takes 2 s; every POST is timed."""

    def __init__(self) -> None:
        self.hits: dict[str, list[float]] = {"flaky": [], "down": [], "slow": []}
        self.bodies: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def hook(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            self.hits[name].append(time.monotonic())
            self.bodies.append(await request.json())
            if name == "slow":
                await asyncio.sleep(2)
            if name == "down" or (name == "flaky" and len(self.hits[name]) <= 2):
                return web.Response(status=503)
            return web.Response(status=204)

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/{name}", hook)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    yield h
    h.close()


def _payload(threshold: int) -> dict[str, Any]:
    return {
        "key": "dept:vendas",
        "line": "1001",
        "limit": "national",
        "threshold": threshold,
        "cycle": CYCLE.isoformat(),
    }


def _wait(worker: AlertWebhook, outcomes: list[Any], n: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (len(outcomes) < n or not worker.idle()):
        time.sleep(0.02)


def test_retries_with_backoff_then_records_what_became_of_each(hooks, tmp_path) -> None:
    db = tmp_path / "ponte.db"
    usage = UsageStore(str(db))
    at = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
    for threshold in (60, 80):
        assert usage.record_alert("dept:vendas", CYCLE, "national", threshold, "1001", 9, 12, at)
    outcomes: list[tuple[int, str]] = []

    def record(payload: dict[str, Any], outcome: str) -> None:
        outcomes.append((payload["threshold"], outcome))
        usage.webhook_outcome(
            payload["key"], payload["cycle"], payload["limit"], payload["threshold"], outcome
        )

    worker = AlertWebhook(record)
    worker.send(hooks.url("flaky"), _payload(60), retries=3, backoff=0.2, timeout=2)
    worker.send(hooks.url("down"), _payload(80), retries=2, backoff=0.2, timeout=2)
    _wait(worker, outcomes, 2)
    worker.stop()

    assert sorted(outcomes) == [
        (60, "delivered after 3 tries"),
        (80, "failed after 3 tries: HTTP 503"),
    ]
    # Backoff: 0.2 s, then 0.4 s between tries.
    for name in ("flaky", "down"):
        hits = hooks.hits[name]
        assert len(hits) == 3, name
        gaps = [b - a for a, b in zip(hits, hits[1:], strict=False)]
        # Backoff doubles: the second wait is the longer (how long, bench territory).
        assert 0 < gaps[0] < gaps[1], gaps
    assert all(b["key"] == "dept:vendas" for b in hooks.bodies)

    # The alerts report shows each delivery's outcome.
    cfg = tmp_path / "ponte.yaml"
    cfg.write_text(yaml.safe_dump({"database": str(db), "state_dir": str(tmp_path)}))
    done = subprocess.run(
        [sys.executable, "-m", "ponte.cli", "report", "alerts", "--json", "--config", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["threshold"], r["webhook"]) for r in rows] == [
        (60, "delivered after 3 tries"),
        (80, "failed after 3 tries: HTTP 503"),
    ]


def test_send_only_queues_and_the_worker_delivers() -> None:
    """The caller (a call's usage check) never waits for a hook: send()
    returns while the delivery it queued is still held on the worker."""
    held, posting = threading.Event(), threading.Event()
    posted_on: list[int] = []
    outcomes: list[str] = []

    def post(url: str, payload: dict[str, Any], timeout: float) -> None:
        posted_on.append(threading.get_ident())
        posting.set()
        assert held.wait(10)

    worker = AlertWebhook(lambda p, o: outcomes.append(o), post=post)
    worker.send("http://hook.example/", _payload(60), retries=0)
    assert posting.wait(5), "the worker posts"
    assert outcomes == [], "send() returned while the post is still under way"
    assert posted_on != [threading.get_ident()], "posted on the worker, not the caller"
    held.set()
    _wait(worker, outcomes, 1)
    worker.stop()
    assert outcomes == ["delivered after 1 try"]


def test_a_slow_or_unreachable_hook_holds_up_neither_the_caller_nor_others(hooks) -> None:
    outcomes: list[tuple[int, str]] = []
    worker = AlertWebhook(lambda p, o: outcomes.append((p["threshold"], o)))
    worker.send(hooks.url("slow"), _payload(60), retries=0, timeout=0.3)
    worker.send("http://127.0.0.1:9/nothing-listens", _payload(80), retries=1, backoff=0.1)
    worker.send("not a url", _payload(100), retries=0)
    _wait(worker, outcomes, 3)
    worker.stop()
    got = dict(outcomes)
    assert got[60].startswith("failed after 1 try:") and "timed out" in got[60]
    assert got[80].startswith("failed after 2 tries:")
    assert got[100].startswith("failed after 1 try:")


def test_alert_texts_are_data_in_every_language() -> None:
    assert set(load_texts()["alert_threshold"]) == {"pt-BR", "en"}
    values = {
        "key": "dept:vendas",
        "threshold": 80,
        "limit": "national",
        "used_min": 9.6,
        "limit_min": 12.0,
    }
    assert text("alert_threshold", "en", **values) == (
        "ponte: dept:vendas used 80% of national (9.6 of 12 min) this cycle"
    )
    assert "usou 80%" in text("alert_threshold", "pt-BR", **values)
    assert text("alert_threshold", "xx", **values) == text("alert_threshold", "pt-BR", **values)


def test_webhook_settings_are_checked(tmp_path: Path) -> None:
    from provisioning.loader import ConfigError, parse_config

    for bad in (
        "alerts: {webhook_retries: -1}",
        "alerts: {webhook_retries: 11}",
        "alerts: {webhook_backoff: 0}",
        "alerts: {language: fr}",
        "extensions: [{number: '1001', password: 'long-Password-9', language: es}]",
    ):
        with pytest.raises(ConfigError):
            parse_config(bad, "x.yaml")
    cfg = parse_config("alerts: {webhook_retries: 0, language: en}", "x.yaml")
    assert cfg.alerts.webhook_retries == 0 and cfg.alerts.language == "en"
