"""A systemd-free stand-in for the service manager, for tests.

It does what ponte.service asks of systemd: provides NOTIFY_SOCKET, waits for
READY=1, expects WATCHDOG=1 within WatchdogSec (else SIGABRT, as systemd
does), and restarts the process after RestartSec when it fails
(Restart=on-failure), except for exit status 2 (RestartPreventExitStatus).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tests.harness import ROOT


class Supervisor:
    """Runs one command under notify/watchdog/restart rules in a thread."""

    def __init__(
        self,
        argv: Sequence[str],
        workdir: Path,
        log_path: Path,
        watchdog_sec: float = 2.0,
        restart_sec: float = 0.5,
    ) -> None:
        self.argv = list(argv)
        self.workdir = workdir
        self.log_path = log_path
        self.watchdog_sec = watchdog_sec
        self.restart_sec = restart_sec
        self.sock_path = workdir / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_path))
        self.sock.settimeout(0.1)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.ready = threading.Event()
        self.events: list[str] = []  # "ready", "watchdog-kill", "exit N", "restart"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> None:
        env = {
            "NOTIFY_SOCKET": str(self.sock_path),
            "WATCHDOG_USEC": str(int(self.watchdog_sec * 1e6)),
        }
        self.ready.clear()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("a"),
        )
        self.starts += 1

    def _run(self) -> None:
        self._spawn()
        last_ping = time.monotonic()
        while not self._stop.is_set():
            try:
                msg = self.sock.recv(4096).decode()
                if "READY=1" in msg:
                    self.ready.set()
                    self.events.append("ready")
                    last_ping = time.monotonic()
                if "WATCHDOG=1" in msg:
                    last_ping = time.monotonic()
            except TimeoutError:
                pass
            assert self.proc is not None
            code = self.proc.poll()
            silent = time.monotonic() - last_ping > self.watchdog_sec
            if code is None and self.ready.is_set() and silent:
                self.events.append("watchdog-kill")
                self.proc.send_signal(signal.SIGKILL)  # systemd sends SIGABRT, then KILL
                self.proc.wait()
                code = self.proc.returncode
            if code is not None:
                self.events.append(f"exit {code}")
                if code in (0, 2) or self._stop.is_set():
                    return
                time.sleep(self.restart_sec)
                self.events.append("restart")
                self._spawn()
                last_ping = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._thread.join(5)
        self.sock.close()
