"""Kamailio as ponte's registrar and proxy: config, database, process.

pjsua2 cannot answer REGISTER, so extensions register to Kamailio. ponte
generates `kamailio.cfg` from `kamailio.cfg.tmpl` and the YAML, writes the
`subscriber` table from the extensions (a reload rewrites it: Kamailio reads
it per request, so no restart), and runs Kamailio as a child process.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from string import Template

from pbx.child import die_with_parent, stop_group
from provisioning.files import create_private, private
from provisioning.schema import Config, Extension

log = logging.getLogger("ponte.kamailio")

TEMPLATE = Path(__file__).with_name("kamailio.cfg.tmpl")
SCHEMA_DIR = Path("/usr/share/kamailio/db_sqlite")
SCHEMA_FILES = ("standard-create.sql", "auth_db-create.sql", "usrloc-create.sql")
# acc's table, with the extra columns kamailio.cfg's db_extra fills: the
# history of calls between extensions, which only Kamailio sees.
ACC_SQL = (
    "CREATE TABLE IF NOT EXISTS acc (id INTEGER PRIMARY KEY NOT NULL, "
    "method VARCHAR(16) DEFAULT '' NOT NULL, from_tag VARCHAR(128) DEFAULT '' NOT NULL, "
    "to_tag VARCHAR(128) DEFAULT '' NOT NULL, callid VARCHAR(255) DEFAULT '' NOT NULL, "
    "sip_code VARCHAR(3) DEFAULT '' NOT NULL, sip_reason VARCHAR(128) DEFAULT '' NOT NULL, "
    "time TIMESTAMP WITHOUT TIME ZONE NOT NULL, ts VARCHAR(32) DEFAULT '' NOT NULL, "
    "src_user VARCHAR(64) DEFAULT '' NOT NULL, dst_user VARCHAR(64) DEFAULT '' NOT NULL, "
    "src_ip VARCHAR(64) DEFAULT '' NOT NULL)",
    "CREATE INDEX IF NOT EXISTS acc_callid_idx ON acc (callid)",
    "INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('acc', '5')",
)
# Extensions are numbers of 3 to 6 digits not starting with 0 (0 is the
# outbound prefix); the proxy answers 480 for any of them not registered.
EXT_PATTERN = "^[1-9][0-9]{2,5}$"


class KamailioError(Exception):
    """Kamailio is missing, misconfigured or died."""


def module_path() -> str:
    """Where Debian put Kamailio's modules."""
    found = glob.glob("/usr/lib/*/kamailio/modules") + glob.glob("/usr/lib/kamailio/modules")
    if not found:
        raise KamailioError("Kamailio modules not found: install kamailio (scripts/setup)")
    return found[0]


CTL_PATH_MAX = 100  # Kamailio's ctl module refuses UNIX socket paths over 104 bytes


def ctl_path(runtime: Path) -> Path:
    """Kamailio's control socket: in its runtime folder, or, when that path is
    too long for a UNIX socket, a short name in /tmp derived from it."""
    path = Path(runtime) / "kamailio.ctl"
    if len(str(path)) <= CTL_PATH_MAX:
        return path
    digest = hashlib.sha256(str(Path(runtime).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ponte-kamailio-{digest}.ctl"


def rr_secret(runtime: Path) -> str:
    """The secret that binds our Record-Route token to each dialog.

    Every dialog's Record-Route carries `ponte=` a hash of this secret, its
    Call-ID and the caller's tag (kamailio.cfg, route DLG_TOKEN): a request
    that names another dialog, or a token seen elsewhere, is refused. Kept
    in the runtime folder, mode 0600, so calls survive a restart.
    """
    path = Path(runtime) / "rr.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    os.chmod(path, 0o600)
    with contextlib.suppress(FileNotFoundError):
        (Path(runtime) / "rr.token").unlink()  # the old, dialog-blind token
    return path.read_text().strip()


def render_config(config: Config, runtime: Path, debug: int = 1) -> str:
    """kamailio.cfg for this provisioning."""
    pbx = config.pbx
    ng_host, _, ng_port = pbx.rtpengine_control.rpartition(":")
    return Template(TEMPLATE.read_text()).substitute(
        app_host=config.sip.host,
        app_port=config.sip.port,
        listen_host=pbx.host,
        listen_port=pbx.port,
        int_host=pbx.internal_host,
        # Facing the network, Kamailio also listens on loopback: the app
        # server talks to that socket, and double Record-Route gives each
        # side of a dialog the address it can reach.
        internal_listen=f"listen=udp:{pbx.internal}" if pbx.faces_network else "",
        advertise=f" advertise {pbx.public_address}:{pbx.port}" if pbx.public_address else "",
        advertised=pbx.advertised,
        public_alias=f"alias={pbx.public_address}:{pbx.port}" if pbx.public_address else "",
        ng_host=ng_host,
        ng_port=ng_port,
        rtp_in="direction=external direction=internal",
        rtp_out="direction=internal direction=external",
        rtp_ext="direction=external direction=external",
        user_failures=3 * pbx.auth_failures,
        source_failures=5 * pbx.auth_failures,
        db_path=runtime / "kamailio.db",
        acc_db_path=runtime / "acc.db",
        ext_pattern=EXT_PATTERN,
        debug=debug,
        module_path=module_path(),
        ctl_socket=ctl_path(runtime),
        rr_secret=rr_secret(runtime),
        auth_failures=config.pbx.auth_failures,
        pike_density=config.pbx.flood_density,
        ban_seconds=config.pbx.ban_seconds,
        max_message=config.pbx.max_message,
    )


def init_acc_db(path: Path) -> None:
    """acc's own SQLite file (WAL, so ponte's reads never block its writes)."""
    db = sqlite3.connect(path, timeout=5)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        with db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS version (id INTEGER PRIMARY KEY NOT NULL, "
                "table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL, "
                "CONSTRAINT version_t_name_idx UNIQUE (table_name))"
            )
            for statement in ACC_SQL:
                db.execute(statement)
    finally:
        db.close()


def init_db(path: Path) -> None:
    """Create Kamailio's SQLite schema (version, subscriber, location) once."""
    if path.exists():
        return
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE version (id INTEGER PRIMARY KEY NOT NULL, "
            "table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL, "
            "CONSTRAINT version_t_name_idx UNIQUE (table_name))"
        )
        for name in SCHEMA_FILES[1:]:
            db.executescript((SCHEMA_DIR / name).read_text())
        db.commit()
    finally:
        db.close()


TRUNK_PEERS_SQL = (
    "CREATE TABLE IF NOT EXISTS trunk_peers (id INTEGER PRIMARY KEY NOT NULL, "
    "key_name VARCHAR(64) DEFAULT '' NOT NULL, key_type INTEGER DEFAULT 0 NOT NULL, "
    "value_type INTEGER DEFAULT 0 NOT NULL, key_value VARCHAR(128) DEFAULT '' NOT NULL, "
    "expires INTEGER DEFAULT 0 NOT NULL)"
)


def trunk_peers(config: Config) -> set[str]:
    """`IP:port` of every trunk provider, resolved from their DNS names now."""
    peers: set[str] = set()
    for trunk in config.trunks:
        port = trunk.port or 5060
        try:
            infos = socket.getaddrinfo(trunk.host, port, socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("trunk %s: cannot resolve %s (%s)", trunk.name, trunk.host, exc)
            continue
        # IP:port for calls from the provider's signalling address, and the IP
        # alone for its calls that follow our Path (they may use another port).
        for info in infos:
            peers.update((f"{info[4][0]}:{port}", info[4][0]))
    return peers


def sync_trunk_peers(path: Path, peers: set[str]) -> None:
    """Make Kamailio's trunk_peers table hold exactly these addresses."""
    db = sqlite3.connect(path, timeout=5)
    try:
        with db:
            db.execute(TRUNK_PEERS_SQL)
            db.execute("DELETE FROM trunk_peers")
            db.executemany(
                "INSERT INTO trunk_peers (key_name, key_type, value_type, key_value) "
                "VALUES (?, 0, 0, '1')",
                [(p,) for p in sorted(peers)],
            )
    finally:
        db.close()


def sync_subscribers(path: Path, extensions: list[Extension]) -> None:
    """Make the subscriber table hold exactly these extensions (one transaction)."""
    db = sqlite3.connect(path, timeout=5)
    try:
        with db:
            db.execute("DELETE FROM subscriber")
            db.executemany(
                "INSERT INTO subscriber (username, domain, password) VALUES (?, '', ?)",
                [(e.number, e.password) for e in extensions],
            )
    finally:
        db.close()


class Kamailio:
    """One Kamailio child process serving this provisioning."""

    def __init__(self, config: Config, runtime: Path, debug: int = 1) -> None:
        self.config = config
        self.runtime = Path(runtime)
        self.debug = debug
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.runtime / "kamailio.log"

    @property
    def db_path(self) -> Path:
        return self.runtime / "kamailio.db"

    @property
    def acc_db_path(self) -> Path:
        """acc's history of calls between extensions (see ponte.extcalls)."""
        return self.runtime / "acc.db"

    def prepare(self) -> Path:
        """Write the config and database; check the config with `kamailio -c`."""
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        if not Path(binary).exists():
            raise KamailioError("kamailio is not installed (scripts/setup installs it)")
        self.runtime.mkdir(parents=True, exist_ok=True)
        cfg = self.runtime / "kamailio.cfg"
        # The config holds the Record-Route secret, the database plaintext
        # SIP passwords (auth_db's calculate_ha1): both 0600.
        with os.fdopen(create_private(cfg), "w") as f:
            f.write(render_config(self.config, self.runtime, self.debug))
        private(cfg)
        init_db(self.db_path)
        init_acc_db(self.acc_db_path)
        private(self.db_path)
        private(self.acc_db_path)
        sync_subscribers(self.db_path, self.config.extensions)
        sync_trunk_peers(self.db_path, trunk_peers(self.config))
        check = subprocess.run(
            [binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise KamailioError(f"generated kamailio.cfg is invalid:\n{check.stderr[-2000:]}")
        return cfg

    def command(self, cfg: Path) -> list[str]:
        """Kamailio's command line for this config (foreground, log to stderr)."""
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        return [
            binary,
            "-DD",  # the creator stays in the foreground as our child
            "-E",
            "-f",
            str(cfg),
            "-Y",
            str(self.runtime),
            "-P",
            str(self.runtime / "kamailio.pid"),
            "-m",
            "64",
            "-M",
            "8",
        ]

    def reap_stale(self) -> None:
        """Stop a Kamailio left running from our config by a ponte that died.

        PR_SET_PDEATHSIG normally takes it down with us, but not every kernel
        (or sandbox) honours it, and the old proxy would hold the SIP port.
        """
        pid_file = self.runtime / "kamailio.pid"
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.runtime / "kamailio.cfg").encode() not in cmdline:
            return
        log.warning("stopping a stale kamailio (pid %d) left by a previous run", pid)
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def start(self) -> None:
        """Start Kamailio in the foreground as our child, logging to a file."""
        self.reap_stale()
        cfg = self.prepare()
        logf = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(cfg),
            stdout=logf,
            stderr=logf,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            # Its own process group, so creator, main and workers stop as one.
            start_new_session=True,
        )
        # Ready means listening: wait for the pid file Kamailio writes once it is up.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.running_elsewhere():
                break
            time.sleep(0.02)
        log.info(
            "kamailio started (pid %d) on %s, %d extensions",
            self.proc.pid,
            self.config.pbx.listen,
            len(self.config.extensions),
        )

    def running_elsewhere(self) -> bool:
        """Whether a Kamailio from our config runs (started by its own unit)."""
        try:
            pid = int((self.runtime / "kamailio.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return False
        return str(self.runtime / "kamailio.cfg").encode() in cmdline

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.proc is not None and self.proc.poll() is None

    def reload_subscribers(self, config: Config) -> None:
        """New passwords, extensions and trunk providers, live (Kamailio reads
        the subscriber table per request; the trunk table is reloaded by RPC)."""
        old = trunk_peers(self.config)
        self.config = config
        sync_subscribers(self.db_path, config.extensions)
        new = trunk_peers(config)
        if new != old:
            sync_trunk_peers(self.db_path, new)
            rpc = subprocess.run(
                ["kamcmd", "-s", f"unix:{ctl_path(self.runtime)}", "htable.reload", "trunkpeer"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if rpc.returncode != 0:
                log.warning("kamailio did not reload the trunk table: %s", rpc.stderr.strip())

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to its process group (creator, main and workers), then SIGKILL."""
        if self.proc is None:
            return
        stop_group(self.proc, "kamailio", log, timeout)
        self.proc = None
