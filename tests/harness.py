"""Start the real app server as a subprocess (shared by tests and bench/)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests import ports

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

DEFAULT_ROOMS = [
    {"name": "demo", "participant_pin": "1111", "moderator_pin": "9999"},
    {"name": "other", "participant_pin": "2222", "moderator_pin": "8888"},
]


@dataclass
class Server:
    """A running `ponte serve` subprocess."""

    proc: subprocess.Popen
    config_path: Path
    config: dict[str, Any]
    sip_port: int
    control: Path
    log_path: Path
    netns: str | None = None  # the network namespace it runs in (None: this host)

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
        self._reap_kamailio()
        self._reap_rtpengine()
        return self.proc.returncode

    def restart(self, timeout: float = 15, extra_args: list[str] | None = None) -> int:
        """Start the server again on the same file (after a stop or a kill),
        with `extra_args` after serve's own (e.g. --no-kamailio)."""
        self.proc = subprocess.Popen(
            serve_command(self.config_path, self.netns, extra_args=extra_args),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("a"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self.proc.returncode
            try:
                self.status()
                return 0
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not come back")

    def _reap_kamailio(self) -> None:
        """A test that kill -9s the server must not leave its proxy behind."""
        pid_file = Path(self.config.get("state_dir", "")) / "kamailio" / "kamailio.pid"
        try:
            pid = int(pid_file.read_text().strip())
            os.killpg(pid, signal.SIGKILL)  # Kamailio runs in its own process group
        except (OSError, ValueError):
            pass

    def _reap_rtpengine(self) -> None:
        """Nor its media relay (which would otherwise wait out its linger for
        a ponte to adopt it, pbx/child.py)."""
        pid_file = Path(self.config.get("state_dir", "")) / "rtpengine" / "rtpengine.pid"
        try:
            pid = int(pid_file.read_text().strip())
            if b"rtpengine" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.killpg(pid, signal.SIGKILL)  # rtpengine runs in its own process group
        except (OSError, ValueError):
            pass


def serve_command(
    config_path: Path,
    netns: str | None = None,
    log_level: str = "debug",
    extra_args: list[str] | None = None,
) -> list[str]:
    """`ponte serve` on `config_path` (this tree's code), in `netns`."""
    return [
        *in_netns(netns),
        PY,
        "-m",
        "ponte.cli",
        "--log-level",
        log_level,
        "serve",
        "--config",
        str(config_path),
        *(extra_args or []),
    ]


def in_netns(netns: str | None) -> list[str]:
    """The command prefix that runs a program in a network namespace."""
    return ["ip", "netns", "exec", netns] if netns else []


def with_media_ports(pbx: dict[str, Any], size: int = 400) -> dict[str, Any]:
    """A pbx section with free rtpengine control and media ports filled in."""
    pbx = dict(pbx)
    pbx.setdefault("media_ports", ports.rtp_range(size))
    pbx.setdefault("rtpengine_control", f"127.0.0.1:{ports.allocate(1)}")
    return pbx


def start_server(
    tmp: Path,
    prompt_cache: Path,
    env: dict[str, str] | None = None,
    log_level: str = "debug",
    extra_args: list[str] | None = None,
    netns: str | None = None,
    **overrides: Any,
) -> Server:
    """Write a config with free ports and start `ponte serve` on it."""
    config: dict[str, Any] = {
        "access_numbers": [
            {"user": "conf", "language": "pt-BR"},
            {"user": "conf-en", "language": "en"},
        ],
        "rooms": overrides.pop("rooms", DEFAULT_ROOMS),
        "prompts": {"cache_dir": str(prompt_cache)},
        "control": {"socket": str(tmp / "control.sock")},
        "database": str(tmp / "ponte.db"),
        "state_dir": str(tmp / "state"),
    }
    if "sip" not in overrides:
        config["sip"] = {
            "listen": f"127.0.0.1:{ports.allocate(1)}",
            "rtp_ports": ports.rtp_range(200),
        }
    for key, value in overrides.items():
        config[key] = value
    if "pbx" in config:
        # rtpengine (beside Kamailio) needs its own control port and media
        # ports per server, so parallel workers never collide.
        config["pbx"] = with_media_ports(config["pbx"])
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "ponte.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp / "server.log"
    proc = subprocess.Popen(
        serve_command(path, netns, log_level, extra_args),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("w"),
    )
    listen_port = int(config["sip"]["listen"].rpartition(":")[2])
    server = Server(proc, path, config, listen_port, tmp / "control.sock", log_path, netns)
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


def cli(server: Server, *args: str) -> subprocess.CompletedProcess:
    """Run `ponte ARGS --config <the server's file>` and return the result."""
    return subprocess.run(
        [PY, "-m", "ponte.cli", *args, "--config", str(server.config_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def report(server: Server, what: str, *args: str) -> list[dict[str, Any]]:
    """`ponte report WHAT --json` rows."""
    done = cli(server, "report", what, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
