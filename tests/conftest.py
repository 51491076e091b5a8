"""Fixtures that start the real app server and real softphones on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import ports

ROOT = Path(__file__).resolve().parent.parent
PROMPT_CACHE = Path(os.environ.get("PONTE_TEST_PROMPTS", "/tmp/ponte-test-prompts"))
PY = sys.executable

DEFAULT_ROOMS = [
    {"name": "demo", "participant_pin": "1111", "moderator_pin": "9999"},
    {"name": "other", "participant_pin": "2222", "moderator_pin": "8888"},
]


@pytest.fixture(scope="session")
def prompt_cache() -> Path:
    """Prompts rendered once for the whole run (shared by xdist workers)."""
    from ivr.prompts import PromptLibrary

    PromptLibrary(PROMPT_CACHE).render_all()
    return PROMPT_CACHE


@dataclass
class Server:
    """A running `ponte serve` subprocess."""

    proc: subprocess.Popen
    config_path: Path
    config: dict[str, Any]
    sip_port: int
    control: Path
    log_path: Path

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def uri(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.sip_port}"

    def status(self) -> dict[str, Any]:
        from ponte.control import request

        return request(self.control, "status")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(tmp: Path, prompt_cache: Path, **overrides: Any) -> Server:
    """Write a config with free ports and start `ponte serve` on it."""
    sip_port = ports.allocate(1)
    config: dict[str, Any] = {
        "sip": {"listen": f"127.0.0.1:{sip_port}", "rtp_ports": ports.rtp_range(200)},
        "access_numbers": [
            {"user": "conf", "language": "pt-BR"},
            {"user": "conf-en", "language": "en"},
        ],
        "rooms": DEFAULT_ROOMS,
        "prompts": {"cache_dir": str(prompt_cache)},
        "control": {"socket": str(tmp / "control.sock")},
    }
    for key, value in overrides.items():
        config[key] = value
    path = tmp / "ponte.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp / "server.log"
    proc = subprocess.Popen(
        [PY, "-m", "ponte.cli", "--log-level", "debug", "serve", "--config", str(path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("w"),
    )
    server = Server(proc, path, config, sip_port, tmp / "control.sock", log_path)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{server.log()}")
        try:
            server.status()
            return server
        except OSError:
            time.sleep(0.05)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not come up:\n{server.log()}")


@pytest.fixture
def server_factory(tmp_path: Path, prompt_cache: Path) -> Iterator:
    """Start servers with given config overrides; all are stopped afterwards."""
    started: list[Server] = []

    def make(**overrides: Any) -> Server:
        sub = tmp_path / f"srv{len(started)}"
        sub.mkdir()
        s = start_server(sub, prompt_cache, **overrides)
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
    ) -> Phone:
        n = len(procs)
        rec = tmp_path / (f"phone{n}-{{i}}.wav" if calls > 1 else f"phone{n}.wav")
        err = tmp_path / f"phone{n}.err"
        cmd = [
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
