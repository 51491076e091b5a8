"""A local control socket (UNIX, JSON lines) for `ponte status` and tests.

Requests are handed to the loop thread, which alone may touch pjsua2, and the
answer is sent back when the loop has produced it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ponte.loop import Loop

log = logging.getLogger("ponte.control")

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """Accepts one JSON request per connection and replies with one JSON line."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        loop: Loop,
        prepare: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.handler = handler
        self.loop = loop
        # Slow work that needs no pjsua2 (reading a big YAML) runs here, on
        # the socket's thread, so the loop never stops polling for it.
        self.prepare = prepare
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the socket (replacing a stale one) and start serving."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o660)
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and remove the socket file."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=1)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self._one(conn)
                except (OSError, ValueError) as exc:
                    log.warning("control request failed: %s", exc)

    def _one(self, conn: socket.socket) -> None:
        data = b""
        while not data.endswith(b"\n") and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        try:
            request = json.loads(data or b"{}")
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
        except ValueError as exc:
            conn.sendall(json.dumps({"error": f"bad request: {exc}"}).encode() + b"\n")
            return
        # Who is asking, from the kernel: the audit's Unix user cannot be forged,
        # and the server checks `--as` against it (provisioning.admins.may_act_as).
        # Both keys are always overwritten, whatever the client put there.
        request["unix_uid"], request["unix_user"] = _peer(conn)
        request.pop("_prepared", None)  # only ever set here, never by a client
        if self.prepare is not None:
            self.prepare(request)
        done = threading.Event()
        reply: dict[str, Any] = {}

        def run() -> None:
            try:
                reply.update(self.handler(request))
            except Exception as exc:  # the loop must survive a bad request
                log.exception("control command failed")
                reply["error"] = str(exc)
            done.set()

        self.loop.call_soon_threadsafe(run)
        if not done.wait(5):
            reply = {"error": "the server loop did not answer"}
        conn.sendall(json.dumps(reply).encode() + b"\n")


def _peer(conn: socket.socket) -> tuple[int | None, str]:
    """The uid and Unix user name at the other end of a UNIX socket
    (SO_PEERCRED): (None, "?") if the kernel does not say, and "#UID" for a
    uid without a name (which no admin's unix_users can list)."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
    except OSError:
        return None, "?"
    try:
        return uid, pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid, f"#{uid}"


def request(path: Path, cmd: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """Send one command to a running server and return its JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer
