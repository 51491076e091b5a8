"""Fixtures that start the real app server and real softphones on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import ports
from tests.harness import ROOT, Server, in_netns, start_server
from tests.pgcluster import PgCluster

PROMPT_CACHE = Path(os.environ.get("PONTE_TEST_PROMPTS", "/tmp/ponte-test-prompts"))
PY = sys.executable


@pytest.fixture(autouse=True)
def _ports_of_this_test() -> None:
    """Each test's ports are told apart from the last one's (tests/ports.py)."""
    ports.new_test()


@pytest.fixture(scope="session")
def prompt_cache() -> Path:
    """Prompts rendered once for the whole run (shared by xdist workers)."""
    from ivr.prompts import PromptLibrary

    PromptLibrary(PROMPT_CACHE).render_all()
    return PROMPT_CACHE


@pytest.fixture
def server_factory(tmp_path: Path, prompt_cache: Path) -> Iterator:
    """Start servers with given config overrides; all are stopped afterwards."""
    started: list[Server] = []

    def make(env: dict[str, str] | None = None, **overrides: Any) -> Server:
        sub = tmp_path / f"srv{len(started)}"
        sub.mkdir()
        s = start_server(sub, prompt_cache, env=env, **overrides)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop(signal.SIGKILL if s.proc.poll() is None and False else signal.SIGTERM)


@pytest.fixture
def server(server_factory) -> Server:
    """One app server with the default rooms."""
    return server_factory()


@dataclass
class Phone:
    """A softphone subprocess; `result()` waits for its JSON report."""

    proc: subprocess.Popen
    record: Path | None
    stderr_path: Path
    _result: Any = field(default=None)

    def result(self, timeout: float = 60) -> Any:
        if self._result is None:
            out, _ = self.proc.communicate(timeout=timeout)
            if self.proc.returncode != 0:
                raise RuntimeError(
                    f"softphone failed ({self.proc.returncode}):\n{self.stderr_path.read_text()}"
                )
            self._result = json.loads(out.strip().splitlines()[-1])
        return self._result


@pytest.fixture
def phone(tmp_path: Path) -> Iterator:
    """Start softphones: phone(target, script, record=True, **opts)."""
    procs: list[Phone] = []

    def make(
        target: str,
        script: str,
        record: bool = True,
        calls: int = 1,
        rate: float = 10.0,
        bind: str = "127.0.0.1",
        extra: list[str] | None = None,
        netns: str | None = None,
    ) -> Phone:
        """`netns`: run the phone in that network namespace (a phone off the
        appliance's host), bound to `bind`, its address there."""
        n = len(procs)
        rec = tmp_path / (f"phone{n}-{{i}}.wav" if calls > 1 else f"phone{n}.wav")
        err = tmp_path / f"phone{n}.err"
        cmd = [
            *in_netns(netns),
            PY,
            "-m",
            "pbx.softphone",
            "--target",
            target,
            "--script",
            script,
            "--bind",
            bind,
            "--rtp",
            ports.rtp_range(max(8, 4 * calls + 4)),
            "--calls",
            str(calls),
            "--rate",
            str(rate),
        ]
        if record:
            cmd += ["--record", str(rec)]
        cmd += extra or []
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err.open("w"), text=True
        )
        p = Phone(proc, rec if record else None, err)
        procs.append(p)
        return p

    yield make
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


@pytest.fixture
def provider(tmp_path: Path):
    """A SIPp UAS playing the trunk provider (stopped afterwards)."""
    from tests.pbx_helpers import start_provider

    p = start_provider(tmp_path)
    yield p
    p.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL server for this xdist worker, removed at the end.

    Fails (never skips) where Debian's `postgresql` is missing: CI installs it.
    A test may `stop()` and `start()` it to play "database away and back"."""
    with PgCluster() as pg:
        yield pg


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A fresh empty database on the worker's cluster: postgresql://postgres@127.0.0.1:PORT/t_…"""
    if not pg_cluster.running():  # an earlier test stopped it and did not start it again
        pg_cluster.start()
    return pg_cluster.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def records_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The `database` setting of a fresh records database, once per backend:
    a SQLite file, then a fresh database on the worker's PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "ponte.db")
    return str(request.getfixturevalue("pg_url"))
