"""Logging to systemd's journal with structured fields (no dependency).

Under systemd (JOURNAL_STREAM set) each record goes to the journal socket
with MESSAGE, PRIORITY and, when the line names them, CALL_LEG, ROOM and LINE,
so `journalctl -u ponte ROOM=demo` finds a room's story.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct

SOCKET = "/run/systemd/journal/socket"
_FIELDS = (
    ("CALL_LEG", re.compile(r"\bcall (\d+)\b")),
    ("ROOM", re.compile(r"\broom=([\w.-]+)")),
    ("LINE", re.compile(r"\bline=([\w:.-]+)")),
)
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def _field(name: str, value: str) -> bytes:
    data = value.encode()
    if b"\n" in data:  # the binary form: name, newline, 64-bit length, value
        return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


def fields_for(record: logging.LogRecord, message: str) -> dict[str, str]:
    """The journal fields of one log record."""
    out = {
        "MESSAGE": message,
        "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
        "SYSLOG_IDENTIFIER": "ponte",
        "PONTE_LOGGER": record.name,
    }
    for name, pattern in _FIELDS:
        m = pattern.search(message)
        if m:
            out[name] = m.group(1)
    return out


class JournalHandler(logging.Handler):
    """Sends each record as one datagram to the journal."""

    def __init__(self, path: str = SOCKET) -> None:
        super().__init__()
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            payload = b"".join(_field(k, v) for k, v in fields_for(record, message).items())
            self.sock.sendto(payload, self.path)
        except Exception:  # logging must never take the service down
            self.handleError(record)


def wanted() -> str | None:
    """The journal socket to use, if we run under systemd's journal."""
    if os.environ.get("JOURNAL_STREAM"):
        return os.environ.get("PONTE_JOURNAL_SOCKET", SOCKET)
    return None
