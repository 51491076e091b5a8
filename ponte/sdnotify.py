"""systemd's notify protocol (Type=notify, WatchdogSec) without a dependency.

READY=1 once SIP listens, WATCHDOG=1 from the event loop itself (a stuck loop
stops the pings and systemd restarts us), STOPPING=1 on the way out.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("ponte.systemd")


class Notifier:
    """Sends notify messages when run under systemd (NOTIFY_SOCKET set)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_usec = int(usec) if usec.isdigit() and mine else 0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    @property
    def watchdog_interval(self) -> float | None:
        """How often to ping: half the watchdog timeout (None: no watchdog)."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, message: str) -> None:
        """One datagram to systemd; failures are logged, never raised."""
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(self.address)
                s.sendall(message.encode())
        except OSError as exc:
            log.warning("sd_notify %r failed: %s", message.split("\n")[0], exc)

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self.send(f"STOPPING=1\nSTATUS={status}")
