"""What Kamailio and rtpengine share as children of `ponte serve`: the edge.

Each runs in its own process group (creator, main and workers stop as one)
and is stopped with SIGTERM, then SIGKILL.

The edge outlives a `ponte serve` that dies (kill -9, a crash): Kamailio
holds the dialogs of the calls the app server had, and only it can tell
those phones and providers with a BYE. So the edge does not die with its
parent. Instead:

- `ponte serve` holds an owner lock (`owner.lock` in the edge process's
  runtime folder, a POSIX write lock) for as long as it runs; the kernel
  drops it the instant the process dies, however it dies, and no child of
  ponte inherits it.
- A small guard process (`python -m pbx.child guard …`, started beside each
  edge process, in a session of its own) watches that lock. When the owner
  is gone it runs the edge's orphan command at once (for Kamailio: end every
  dialog with the app server, see pbx.kamailio.release_app_dialogs), then
  waits `linger` seconds for a new `ponte serve` to adopt the edge.
- A `ponte serve` started on the same state folder takes the lock and adopts
  the edge processes still running from the same configuration (see
  `EdgeProcess.adopt`), and starts its own guard; the old guard leaves.
- Nobody adopted it within `linger` seconds: the guard stops the edge process
  (SIGTERM to its group, then SIGKILL), so a dead appliance leaves no orphan
  holding ports for long. Neither does a stopped edge: its guard leaves too.

Under systemd none of this runs: Kamailio and rtpengine are units of their
own, which outlive ponte.service, and ponte.service's ExecStopPost ends the
app server's dialogs (systemd/ponte.service.in).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# How long an orphaned edge waits for a new `ponte serve` before it stops.
# Long enough for a supervisor's restart (and far longer than the BYEs take),
# short enough that a dead appliance frees its ports soon. PONTE_EDGE_LINGER
# overrides it (tests).
LINGER = 60.0
GUARD_POLL = 0.2  # seconds between the guard's looks at the lock
ROOT = Path(__file__).resolve().parent.parent


def stop_group(
    proc: subprocess.Popen[bytes], name: str, log: logging.Logger, timeout: float = 5.0
) -> None:
    """SIGTERM to the child's process group, then SIGKILL after `timeout`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.info("%s stopped (exit %s)", name, proc.returncode)


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie nobody reaped yet does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) S ...": the state follows the last ')'.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def is_child(pid: int) -> bool:
    """Whether `pid` is a child of this process (not an orphan to adopt)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return int(stat.rpartition(")")[2].split()[1]) == os.getpid()


def cmdline_has(pid: int, marker: bytes) -> bool:
    """Whether process `pid` runs with `marker` in its command line."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def linger_seconds() -> float:
    """LINGER, or PONTE_EDGE_LINGER's value."""
    try:
        return float(os.environ.get("PONTE_EDGE_LINGER", LINGER))
    except ValueError:
        return LINGER


class EdgeBusy(Exception):
    """Another `ponte serve` that is alive owns this edge process."""


class EdgeProcess:
    """The process side of one edge program (Kamailio or rtpengine) that
    `ponte serve` runs: started here or adopted from a `ponte serve` that
    died, guarded, stopped. The program's own class says how to run it.

    `pid_file` is where the program writes its pid; `marker` is what its
    command line holds (its config file's path), so a recycled pid or another
    configuration's process is never taken for it.
    """

    def __init__(
        self, name: str, runtime: Path, pid_file: Path, marker: str, log: logging.Logger
    ) -> None:
        self.name = name
        self.runtime = Path(runtime)
        self.pid_file = Path(pid_file)
        self.marker = marker.encode()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None  # started by us
        self.pid: int | None = None  # started by us, or adopted
        self.adopted = False
        self._lock_fd: int | None = None
        self._guard: subprocess.Popen[bytes] | None = None

    @property
    def lock_path(self) -> Path:
        return self.runtime / "owner.lock"

    def own(self, timeout: float = 3.0) -> None:
        """Take the owner lock (kept until stop() or this process's death).

        Raises EdgeBusy when a live `ponte serve` holds it. A guard looking
        at the lock holds it shared for an instant: retried until `timeout`.
        The lock is this process's (POSIX record lock), so a second object
        for the same program in one process shares it.
        """
        if self._lock_fd is not None:
            return
        self.runtime.mkdir(parents=True, exist_ok=True)
        # Not inherited by any child (O_CLOEXEC): only this process owns it.
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    os.close(fd)
                    raise
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise EdgeBusy(
                        f"another ponte serve runs {self.name} from {self.runtime}"
                    ) from None
                time.sleep(0.05)
        # Who owns it now: a guard that sees another pid here knows its
        # edge process was adopted.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def disown(self) -> None:
        """Let go of the owner lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def found(self) -> int | None:
        """The pid of this program running from our config, if it runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if running(pid) and cmdline_has(pid, self.marker) else None

    def adoptable(self, config_file: Path, rendered: str) -> int | None:
        """The pid of the program left running from this very configuration
        by a `ponte serve` that died (`config_file`, which it was started on,
        still reads `rendered`), or None: not running, our own child (another
        object of this process started it), or started on another config."""
        pid = self.found()
        if pid is None or is_child(pid):
            return None
        try:
            same = Path(config_file).read_text() == rendered
        except OSError:
            return None
        return pid if same else None

    def spawn(
        self,
        argv: Sequence[str],
        log_path: Path,
        orphan: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start the program as our child, logging to `log_path`, in its own
        session and process group (a terminal's ^C to ponte's group does not
        reach it; stop() ends it), not dying with us; then its guard. `env`
        adds to (or overrides) our environment for it."""
        self.own()
        with Path(log_path).open("ab") as logf:
            self.proc = subprocess.Popen(
                list(argv),
                stdout=logf,
                stderr=logf,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **env} if env else None,
            )
        self.pid = self.proc.pid
        self.adopted = False
        self._start_guard(log_path, orphan)
        return self.proc

    def adopt(self, pid: int, log_path: Path, orphan: Sequence[str] = ()) -> None:
        """Take over `pid`, left running by a `ponte serve` that died, and
        guard it from now on (the old guard sees the lock taken and leaves)."""
        self.own()
        self.proc = None
        self.pid = pid
        self.adopted = True
        self._start_guard(log_path, orphan)
        self.log.warning("%s (pid %d), left by a ponte that died, adopted", self.name, pid)

    def _start_guard(self, log_path: Path, orphan: Sequence[str]) -> None:
        self._reap_guard()
        assert self.pid is not None
        argv = [
            sys.executable,
            "-m",
            "pbx.child",
            "guard",
            "--name",
            self.name,
            "--lock",
            str(self.lock_path),
            "--pgid",
            str(self.pid),
            "--linger",
            f"{linger_seconds():g}",
        ]
        if orphan:
            argv += ["--", *orphan]
        with Path(log_path).open("ab") as logf:
            self._guard = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdout=logf,
                stderr=logf,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _reap_guard(self, timeout: float = 2.0) -> None:
        """Wait for our guard to leave (it does once its edge process is gone
        or another ponte owns it), or stop it."""
        guard, self._guard = self._guard, None
        if guard is None:
            return
        try:
            guard.wait(timeout)
        except subprocess.TimeoutExpired:
            guard.kill()
            guard.wait()

    def alive(self) -> bool:
        """Whether the program still runs (ours or adopted)."""
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and running(self.pid) and cmdline_has(self.pid, self.marker)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the program's process group, then SIGKILL; its guard
        leaves with it, and we let go of the lock."""
        if self.proc is not None:
            stop_group(self.proc, self.name, self.log, timeout)
        elif self.pid is not None:
            kill_group(self.pid, timeout)
            self.log.info("%s stopped (adopted pid %d)", self.name, self.pid)
        self.proc = None
        self.pid = None
        self._reap_guard()
        self.disown()


def kill_group(pgid: int, timeout: float = 5.0) -> None:
    """SIGTERM to a process group that is not our child's, then SIGKILL once
    its leader outlived `timeout`."""
    try:
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if running(pgid):
            os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- the guard ---------------------------------------------------------------


def owner_alive(fd: int) -> bool:
    """Whether someone holds the owner lock (a live `ponte serve`)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return True
        raise
    fcntl.lockf(fd, fcntl.LOCK_UN)
    return False


def owner_pid(fd: int) -> str:
    """The pid the owner wrote into the lock file."""
    return os.pread(fd, 32, 0).decode(errors="replace").strip()


def guard(name: str, lock: Path, pgid: int, linger: float, orphan: Sequence[str]) -> int:
    """Watch one owner's lock for edge process `pgid` (see the module doc)."""

    def say(msg: str) -> None:
        print(f"ponte edge guard ({name}, pid {pgid}): {msg}", file=sys.stderr, flush=True)

    fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    owner = owner_pid(fd)  # our owner took the lock before starting us
    while running(pgid):
        if owner_alive(fd):
            if owner_pid(fd) != owner:
                return 0  # another ponte serve adopted it, with a guard of its own
            time.sleep(GUARD_POLL)
            continue
        say("ponte serve is gone")
        if orphan:
            t0 = time.monotonic()
            done = subprocess.run(list(orphan), cwd=ROOT, check=False)
            say(f"{' '.join(orphan[-2:])}: exit {done.returncode} in {time.monotonic() - t0:.2f} s")
        end = time.monotonic() + linger
        while time.monotonic() < end and running(pgid):
            if owner_alive(fd):
                say("adopted by a new ponte serve")
                return 0
            time.sleep(GUARD_POLL)
        if running(pgid):
            say(f"not adopted within {linger:g} s: stopping it")
            kill_group(pgid)
        return 0
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pbx.child")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("guard", help="watch an edge process's owner (see the module doc)")
    g.add_argument("--name", required=True)
    g.add_argument("--lock", type=Path, required=True)
    g.add_argument("--pgid", type=int, required=True)
    g.add_argument("--linger", type=float, default=LINGER)
    g.add_argument("orphan", nargs="*", help="command to run when the owner dies")
    args = p.parse_args(argv)
    # The owner's SIGTERM to our session never comes (we have our own), but
    # a terminal's hang-up must not take the guard before its edge.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return guard(args.name, args.lock, args.pgid, args.linger, args.orphan)


if __name__ == "__main__":
    raise SystemExit(main())
