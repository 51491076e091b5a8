"""A throwaway PostgreSQL cluster for tests: Debian's ``initdb`` and ``pg_ctl``
in a temporary folder, on a port of this xdist worker's block, no system service.

    with PgCluster() as pg:
        url = pg.create_database()   # postgresql://postgres@127.0.0.1:PORT/t_…
        pg.stop()                    # "the database went away" …
        pg.start()                   # … "and came back" (same data, same port)

Tests run as root and initdb refuses root, so the server runs as the
``postgres`` system user (``runuser``); its folder is chowned to that user.
fsync is off (and full_page_writes): a test cluster is thrown away, and
that makes initdb plus start well under a second. synchronous_commit stays
on: a commit is in the kernel's page cache when it returns, so it survives
``stop("immediate")`` (a crash of the server, not of the machine), which the
"database away and back" tests rely on.
Authentication is ``trust`` on 127.0.0.1 and the socket, which only this
machine reaches.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from tests import ports

USER = "postgres"  # the superuser initdb makes, and the system user it runs as
DATABASE = "ponte"  # the database a fresh cluster has besides `postgres`
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "100",
    "log_min_messages": "warning",
}


def find_bindir() -> Path:
    """The newest Debian PostgreSQL server's bin folder (PONTE_PG_BINDIR overrides)."""
    if env := os.environ.get("PONTE_PG_BINDIR"):
        return Path(env)
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found.sort(key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)] or [0])
    if not found:
        raise RuntimeError(
            "PostgreSQL server not installed: no /usr/lib/postgresql/*/bin/initdb "
            "(scripts/setup installs Debian's `postgresql`; or set PONTE_PG_BINDIR)"
        )
    return found[-1]


def _tcp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def reserve_port() -> tuple[int, socket.socket]:
    """A port of this worker's block (tests/ports.py) free for TCP too, and a
    UDP socket bound to it: held for the cluster's life, it keeps the port
    out of any other process's ports.allocate (which tries UDP), even while
    the server is stopped ("away") and its TCP port is open to anyone."""
    skipped: list[socket.socket] = []  # UDP-free but TCP-taken: held until one fits
    try:
        for _ in range(ports.HELD):
            port = ports.allocate(1, held=True)
            hold = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                hold.bind(("127.0.0.1", port))
            except OSError:
                hold.close()
                continue
            if _tcp_free(port):
                return port, hold
            skipped.append(hold)
    finally:
        for s in skipped:
            s.close()
    raise RuntimeError("no free TCP port in this worker's block")


def remove_stale() -> list[Path]:
    """Stop and remove the clusters of earlier runs whose creator died (a
    killed pytest leaves its server running): ``ponte-pg-<pid>-…`` folders."""
    removed = []
    for root in Path(tempfile.gettempdir()).glob("ponte-pg-*-*"):
        pid = root.name.split("-")[2]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(OSError, ValueError):
            # The postmaster's pid is the first line of postmaster.pid.
            os.kill(int((root / "data" / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        # postgresql-common makes it; a machine without it gets a plain system user.
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
        )
        return pwd.getpwnam(USER)


class PgCluster:
    """One PostgreSQL server of its own: ``url`` is its ``ponte`` database."""

    def __init__(
        self, port: int | None = None, database: str = DATABASE, netns: str | None = None
    ) -> None:
        """`netns`: run the server in that network namespace (listening on its
        127.0.0.1); `create_database` and `local_url` still reach it, by the
        Unix socket in its folder, which no network namespace hides."""
        self.bindir = find_bindir()
        self.netns = netns
        self._hold: socket.socket | None = None
        if port is None:
            port, self._hold = reserve_port()
        self.port = port
        self.database = database
        remove_stale()
        self.root = Path(tempfile.mkdtemp(prefix=f"ponte-pg-{os.getpid()}-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = _ensure_user()
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", USER, "--"]
        self._closed = False
        atexit.register(self.close)  # no orphan server if a run ends abruptly
        try:
            self._initdb()
            self.start()
            self.create_database(database)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/ponte``."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """The TCP URL of `database` (from the server's network namespace)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def local_url(self, database: str | None = None) -> str:
        """The URL of `database` (default: `ponte`) by the Unix socket."""
        return f"postgresql://{USER}@/{database or self.database}?host={self.root}&port={self.port}"

    def _run(self, tool: str, *args: str, timeout: float = 60, netns: bool = False) -> str:
        in_ns = ["ip", "netns", "exec", self.netns] if netns and self.netns else []
        proc = subprocess.run(
            [*in_ns, *self._as_user, str(self.bindir / tool), *args],
            cwd=self.root,  # a folder the postgres user may enter
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}\n{log}"
            )
        return proc.stdout

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D", str(self.data),
            "-U", USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )  # fmt: skip
        settings = {
            **SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/pgcluster.py\n")
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def start(self, timeout: float = 30) -> None:
        """Start the server (again) on the same data and port; back when it accepts."""
        self._run(
            "pg_ctl", "start", "-w", "-t", str(int(timeout)),
            "-D", str(self.data), "-l", str(self.logfile), netns=True,
        )  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: like a crash; ``fast``: clean)."""
        if self.running():
            self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data))

    def running(self) -> bool:
        """Whether the server is up (``pg_ctl status``)."""
        proc = subprocess.run(
            [*self._as_user, str(self.bindir / "pg_ctl"), "status", "-D", str(self.data)],
            cwd=self.root,
            capture_output=True,
        )
        return proc.returncode == 0

    def wait_ready(self, timeout: float = 10) -> None:
        """Wait until it accepts connections (``pg_isready``, by the socket)."""
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", str(self.root), "-p", str(self.port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL on port {self.port} not ready")
            time.sleep(0.05)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (``t_<random>`` unless named); its URL."""
        import psycopg
        from psycopg import sql

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.local_url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def close(self) -> None:
        """Stop the server and remove its folder."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            if self.data.exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            if self._hold is not None:
                self._hold.close()

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
