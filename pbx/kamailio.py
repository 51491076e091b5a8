"""Kamailio as ponte's registrar and proxy: config, database, process.

pjsua2 cannot answer REGISTER, so extensions register to Kamailio. ponte
generates `kamailio.cfg` from `kamailio.cfg.tmpl` and the YAML, writes the
`subscriber` table from the extensions (a reload rewrites it: Kamailio reads
it per request, so no restart; in ponte's PostgreSQL when `database` is one,
pbx/kamailio_pg.py, else in Kamailio's SQLite file), and runs Kamailio as a
child process that outlives a `ponte serve` killed under it (pbx/child.py):
it then ends the dead app server's dialogs with a BYE to each phone and
provider (`release_app_dialogs`, also `python -m pbx.kamailio release`,
which ponte.service's ExecStopPost runs under systemd).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from pbx import kamailio_pg
from pbx.child import EdgeProcess
from pbx.ratelimit import GUARD, SlidingWindowLimiter

if TYPE_CHECKING:  # provisioning (pydantic) is loaded only where a Config is
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
# In-dialog OPTIONS towards the app server's side of each dialog with it:
# every KA_INTERVAL s (the dialog module refuses less than 30), checked every
# KA_TIMER s; KA_FAILED_LIMIT timeouts or 481s in a row end the dialog. The
# backstop for an app server that hangs or was restarted behind our back; a
# dead one is noticed at once by whoever supervises it (release_app_dialogs).
KA_TIMER = 5
KA_INTERVAL = 30
KA_FAILED_LIMIT = 2
# With several app-server nodes: tm's timer for non-INVITE transactions, and
# so for dispatcher's OPTIONS probes (probed every second, one unanswered
# takes a node out: out within 1 + this, under the 5 s promised). One node
# keeps Kamailio's 5 s of before.
FR_TIMER_ONE_NODE = 5000
FR_TIMER_NODES = 2000
# The dialog module's states: 1 unconfirmed, 2 early, 3-4 confirmed, 5 ended.
DLG_STATE_DELETED = 5


READY_S = 10.0  # how long start() waits for Kamailio's first answer to OPTIONS


def answers_sip(hostport: str, timeout: float) -> bool:
    """Whether Kamailio at `hostport` answers an OPTIONS (any status) within
    `timeout` s. Asked every 100 ms from an ephemeral port of this host: its
    pid file is written before its workers take requests, and under load
    (the test suite's four workers on two cores) a phone or attacker that
    came right after it got no answer for seconds."""
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    ip = ipaddress.ip_address(host)
    if ip.is_unspecified:
        host = "127.0.0.1" if ip.version == 4 else "::1"
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        local = (
            f"{host}:{sock.getsockname()[1]}"
            if ip.version == 4
            else f"[{host}]:{sock.getsockname()[1]}"
        )
        call_id = secrets.token_hex(8)
        end = time.monotonic() + timeout
        cseq = 0
        while (left := end - time.monotonic()) > 0:
            cseq += 1
            request = (
                f"OPTIONS sip:{hostport} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {local};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:ready@{local}>;tag={call_id[:8]}\r\n"
                f"To: <sip:{hostport}>\r\n"
                f"Call-ID: {call_id}\r\n"
                f"CSeq: {cseq} OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            sock.sendto(request.encode(), (host, int(port)))
            sock.settimeout(min(0.1, left))
            try:
                if sock.recv(4096).startswith(b"SIP/2.0 "):
                    return True
            except OSError:  # a time-out, or ICMP unreachable while it binds
                continue
    return False


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


def auth_db_url(config: Config, runtime: Path) -> str:
    """Where auth_db reads the subscribers: ponte's PostgreSQL when `database`
    is one (shared by every edge), else this edge's SQLite file."""
    pg = kamailio_pg.postgres_url(config.database)
    if pg is None:
        return f"sqlite://{runtime / 'kamailio.db'}"
    try:
        return kamailio_pg.kamailio_url(pg)
    except kamailio_pg.SubscriberStoreError as exc:
        raise KamailioError(str(exc)) from exc


def _shared_auth(pg_url: str, runtime: Path) -> str:
    """auth_db through db_cluster: the shared PostgreSQL first, this edge's
    own copy in its SQLite file when PostgreSQL does not answer (skipped
    then for 10 s), so extensions keep registering and calling through an
    outage with the passwords as this edge last wrote them."""
    return "\n".join(
        (
            'loadmodule "db_postgres.so"',
            # A PostgreSQL cut off (packets dropped) fails a query in 2 s,
            # not after the kernel's minutes of retransmissions, while the
            # worker holding the INVITE waits on it.
            'modparam("db_postgres", "timeout", 2)',
            'modparam("db_postgres", "con_param", "connect_timeout=2;tcp_user_timeout=2000;'
            'keepalives=1;keepalives_idle=10;keepalives_interval=2;keepalives_count=3")',
            'loadmodule "db_cluster.so"',
            f'modparam("db_cluster", "connection", "shared=>{pg_url}")',
            f'modparam("db_cluster", "connection", "local=>sqlite://{runtime / "kamailio.db"}")',
            'modparam("db_cluster", "cluster", "auth=>shared=9s9s;local=8s8s")',
            'modparam("db_cluster", "inactive_interval", 10)',
        )
    )


def node_uris(config: Config, nodes: Sequence[str] | None = None) -> list[str]:
    """The app-server nodes' SIP URIs: those given, or this config's own
    app server (sip.listen) alone."""
    return list(nodes) if nodes else [f"sip:{config.sip.host}:{config.sip.port}"]


def _alternatives(values: Sequence[str]) -> str:
    """A regex matching exactly these values (or nothing at all)."""
    if not values:
        return "^$"  # only an empty user, which never reaches the test
    # Backslashes doubled: Kamailio unescapes the string literal once.
    return "^(" + "|".join(re.escape(v).replace("\\", "\\\\") for v in sorted(values)) + ")$"


def room_numbers(config: Config) -> list[str]:
    """Numbers that lead to one room: the access numbers that name their
    room, and the DIDs to them. Kamailio hashes their callers to one node;
    a number many rooms share is spread, and its PINs handed off."""
    found = [a.user for a in config.access_numbers if a.room]
    found += [
        number
        for number, did in config.dids.items()
        if did.room_access and (a := config.access_number(did.room_access)) and a.room
    ]
    return found


def _tls_defines(config: Config) -> str:
    """The template's TLS switches (WITH_TLS, TLS_SOCK, MEDIA_REQUIRED)."""
    pbx = config.pbx
    if pbx.tls is None:
        return ""
    lines = ["#!define WITH_TLS", f"#!define TLS_SOCK tls:{pbx.tls_listen}"]
    if pbx.media_encryption == "required":
        lines.append("#!define MEDIA_REQUIRED")
    return "\n".join(lines)


def render_tls_config(config: Config) -> str:
    """tls.cfg for Kamailio's tls module: our certificate toward phones
    (which are not asked for one: they prove themselves by digest), and
    TLS trunks' providers checked against pbx.tls.ca_list."""
    tls = config.pbx.tls
    if tls is None:
        raise KamailioError("pbx.tls is not set")
    return (
        "# Generated by ponte from the provisioning YAML (pbx.tls). Do not edit.\n"
        "[server:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
        f"certificate = {tls.certificate}\n"
        f"private_key = {tls.key}\n"
        "\n"
        "[client:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = yes\n"
        "require_certificate = yes\n"
        f"ca_list = {tls.ca_list}\n"
    )


def render_config(
    config: Config,
    runtime: Path,
    debug: int = 1,
    nodes: Sequence[str] | None = None,
    emergency: Sequence[str] = (),
) -> str:
    """kamailio.cfg for this provisioning, in front of `nodes` (default: the
    config's own app server); `emergency` numbers are never paced out."""
    pbx = config.pbx
    uris = node_uris(config, nodes)
    auth_url = auth_db_url(config, runtime)
    ng_host, _, ng_port = pbx.rtpengine_control.rpartition(":")
    return Template(TEMPLATE.read_text()).substitute(
        first_node=uris[0],
        multi_node="#!define MULTI_NODE" if len(uris) > 1 else "",
        ds_ping_interval=1 if len(uris) > 1 else 0,
        fr_timer=FR_TIMER_NODES if len(uris) > 1 else FR_TIMER_ONE_NODE,
        dispatcher_list=runtime / "dispatcher.list",
        emergency_numbers=_alternatives(list(emergency)),
        pace_window_ms=round((1 + GUARD) * 1000),
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
        auth_db_url="cluster://auth" if auth_url.startswith("postgres:") else auth_url,
        load_db_postgres=_shared_auth(auth_url, runtime)
        if auth_url.startswith("postgres:")
        else "",
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
        ka_timer=KA_TIMER,
        ka_interval=KA_INTERVAL,
        ka_failed_limit=KA_FAILED_LIMIT,
        **_websocket(config),
        tls_defines=_tls_defines(config),
        tls_listen=pbx.tls_listen,
        tls_port=pbx.tls_port,
        tls_advertise=f" advertise {pbx.public_address}:{pbx.tls_port}"
        if pbx.public_address
        else "",
        tls_public_alias=f"alias={pbx.public_address}:{pbx.tls_port}"
        if pbx.public_address and pbx.tls is not None
        else "",
        tls_cfg=runtime / "tls.cfg",
        # A Route naming our TLS port is ours too (a TLS provider following
        # our Path); without TLS, only pbx.listen's port.
        route_tls_port=pbx.tls_port if pbx.tls is not None else pbx.port,
    )


def _websocket(config: Config) -> dict[str, str]:
    """The template's browser (SIP over WebSocket) values: its socket, and
    the test on the handshake's Origin (the web console's, where the join
    page is served; no console, no page: every Origin is refused)."""
    ws = config.pbx.websocket
    if ws.listen is None:
        return {
            "websocket_define": "",
            "ws_host": "",
            "ws_port": "0",
            "ws_listen": "",
            "ws_origin_test": "1 == 1",
            "wss_define": "",
            "wss_host": "",
            "wss_port": "0",
            "wss_listen": "",
        }
    web = config.web.listen
    origins = [f"{scheme}://{web}" for scheme in ("http", "https")] if web else []
    # Each matches provisioning.network.ORIGIN (no quote can reach the config);
    # browsers send the scheme and host in lower case.
    origins += [o.lower() for o in ws.origins]
    test = " && ".join(f'$hdr(Origin) != "{o}"' for o in origins) or "1 == 1"
    return {
        "websocket_define": "#!define WITH_WEBSOCKET",
        "ws_host": str(ws.host),
        "ws_port": str(ws.port),
        "ws_listen": ws.listen,
        "ws_origin_test": test,
        # wss:// on pbx.tls's certificate (the schema makes sure pbx.tls is set).
        "wss_define": "#!define WITH_WSS" if ws.tls_listen else "",
        "wss_host": ws.tls_listen.rsplit(":", 1)[0] if ws.tls_listen else "",
        "wss_port": ws.tls_listen.rsplit(":", 1)[1] if ws.tls_listen else "0",
        "wss_listen": ws.tls_listen or "",
    }


WEB_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def set_web_token(runtime: Path, token: str, room: str, peer: str) -> None:
    """Hand a browser's one-time token to Kamailio (htable `webtok`, 30 s):
    its INVITE to sip:web-<token>@... is let through once, and the app
    server told the room and the browser's address (X-Ponte-Web)."""
    if not WEB_TOKEN.match(token) or not re.match(r"^[A-Za-z0-9_.-]{1,64}$", room):
        raise KamailioError("bad web token or room name")
    if not re.match(r"^[0-9A-Fa-f.:]{2,45}$", peer):
        peer = "-"  # only an address goes into the header
    done = kamcmd(runtime, "htable.sets", "webtok", token, f"{room} {peer}", timeout=3)
    if done.returncode != 0:
        raise KamailioError(f"kamcmd htable.sets: {done.stderr.strip() or 'failed'}")


# Preloaded into Kamailio: a busy timeout for its SQLite connections (see
# pbx/sqlite_busy.c; built by scripts/build-preload).
SQLITE_BUSY_LIB = Path(__file__).resolve().parent / "sqlite_busy.so"


def sqlite_busy_env() -> dict[str, str]:
    """Kamailio's environment additions: LD_PRELOAD of pbx/sqlite_busy.so.

    Without it, Kamailio 5.6's SQLite writes fail at once on a lock another
    writer holds, and acc's rows (the extension calls' history) are lost.
    """
    if not SQLITE_BUSY_LIB.is_file():
        log.error(
            "%s is missing (run scripts/build-preload): Kamailio's SQLite writes "
            "that meet a lock will fail, and calls' history rows may be lost",
            SQLITE_BUSY_LIB,
        )
        return {}
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD", ""), str(SQLITE_BUSY_LIB)]))
    return {"LD_PRELOAD": preload}


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
        port = trunk.sip_port
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


def trunk_cps(config: Config) -> dict[str, int]:
    """Each trunk's INVITEs allowed in a 1-s window (pbx/ratelimit.py's
    limit), by the `host:port` its INVITEs' R-URI names (Kamailio's $rd:$rp)."""
    return {
        f"{t.host.lower()}:{t.sip_port}": SlidingWindowLimiter(t.cps).limit for t in config.trunks
    }


def sync_trunk_cps(path: Path, limits: dict[str, int]) -> None:
    """Make Kamailio's trunk_cps table hold exactly these limits."""
    _sync_htable(path, "trunk_cps", {k: str(v) for k, v in limits.items()}, value_type=1)


def write_dispatcher_list(path: Path, nodes: Sequence[str]) -> None:
    """dispatcher's set 1: the app-server nodes."""
    path.write_text("".join(f"1 {uri}\n" for uri in nodes))


def sync_trunk_peers(path: Path, peers: set[str]) -> None:
    """Make Kamailio's trunk_peers table hold exactly these addresses."""
    _sync_htable(path, "trunk_peers", {p: "1" for p in peers}, value_type=0)


def sync_room_numbers(path: Path, numbers: Sequence[str]) -> None:
    """Make Kamailio's room_numbers table hold exactly these numbers."""
    _sync_htable(path, "room_numbers", {n: "1" for n in numbers}, value_type=0)


def _sync_htable(path: Path, table: str, rows: dict[str, str], value_type: int) -> None:
    """An htable's SQLite table (TRUNK_PEERS_SQL's shape) holding exactly
    `rows` (key -> value; value_type 0: string, 1: integer)."""
    db = sqlite3.connect(path, timeout=5)
    try:
        with db:
            db.execute(TRUNK_PEERS_SQL.replace("trunk_peers", table))
            db.execute(f"DELETE FROM {table}")  # table: one of our own names, never input
            db.executemany(
                f"INSERT INTO {table} (key_name, key_type, value_type, key_value) "
                "VALUES (?, 0, ?, ?)",
                [(k, value_type, v) for k, v in sorted(rows.items())],
            )
    finally:
        db.close()


def sync_subscribers(path: Path, extensions: list[Extension]) -> None:
    """Make the SQLite subscriber table hold exactly these extensions (one transaction)."""
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


def kamcmd(
    runtime: Path, *args: str, stdin: str | None = None, timeout: float = 10
) -> subprocess.CompletedProcess[str]:
    """Run `kamcmd ARGS` on the control socket of the Kamailio in `runtime`."""
    return subprocess.run(
        ["kamcmd", "-s", f"unix:{ctl_path(runtime)}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def app_dialogs(runtime: Path, node: str | None = None) -> list[tuple[int, int]]:
    """(h_entry, h_id) of every dialog not yet ended that Kamailio holds with
    the app server on one side (the dialog profile `app`, see kamailio.cfg's
    APP_DIALOG), or with the node `node` (its SIP URI, profile `appnode`):
    early or confirmed, not those whose BYE already left."""
    profile = ("app",) if node is None else ("appnode", node)
    listed = kamcmd(runtime, "dlg.profile_list", *profile)
    if listed.returncode != 0:
        raise KamailioError(f"kamcmd dlg.profile_list: {listed.stderr.strip() or 'failed'}")
    found = re.findall(r"h_entry: (\d+)\s+h_id: (\d+)\s.*?\sstate: (\d+)", listed.stdout, re.S)
    return [(int(e), int(i)) for e, i, state in found if int(state) < DLG_STATE_DELETED]


def dispatcher_states(runtime: Path) -> dict[str, bool]:
    """Each app-server node's URI and whether dispatcher holds it active
    (its OPTIONS answered), from `dispatcher.list`."""
    listed = kamcmd(runtime, "dispatcher.list", timeout=2)
    if listed.returncode != 0:
        raise KamailioError(f"kamcmd dispatcher.list: {listed.stderr.strip() or 'failed'}")
    found = re.findall(r"URI: (\S+)\s+FLAGS: (\S+)", listed.stdout)
    return {uri: flags.startswith("A") for uri, flags in found}


def release_app_dialogs(runtime: Path, node: str | None = None) -> int:
    """End every dialog with the app server: Kamailio sends a BYE to both
    sides (the phone or provider hears it; the app server is gone) and drops
    the call's media (kamailio.cfg, tm:local-request). For when the app
    server died (or the node `node`, by its SIP URI): its calls are over.
    Returns how many dialogs were ended."""
    dialogs = app_dialogs(runtime, node)
    if not dialogs:
        return 0
    # One kamcmd reading the commands from stdin, not one process each.
    script = "".join(f"dlg.end_dlg {e} {i}\n" for e, i in dialogs)
    done = kamcmd(runtime, stdin=script, timeout=30 + len(dialogs) / 100)
    if done.returncode != 0:
        raise KamailioError(f"kamcmd dlg.end_dlg: {done.stderr.strip() or 'failed'}")
    return len(dialogs)


class Kamailio:
    """One Kamailio serving this provisioning: our child, or adopted from a
    `ponte serve` that died (pbx/child.py)."""

    def __init__(
        self,
        config: Config,
        runtime: Path,
        debug: int = 1,
        nodes: Sequence[str] | None = None,
        emergency: Sequence[str] = (),
    ) -> None:
        """`nodes`: the app-server nodes' SIP URIs (default: the config's own)."""
        self.config = config
        self.runtime = Path(runtime)
        self.debug = debug
        self.nodes = node_uris(config, nodes)
        self.emergency = tuple(emergency)
        self.log_path = self.runtime / "kamailio.log"
        self.edge = EdgeProcess(
            "kamailio",
            self.runtime,
            self.runtime / "kamailio.pid",
            str(self.runtime / "kamailio.cfg"),
            log,
        )

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The Kamailio we started (None when adopted or stopped)."""
        return self.edge.proc

    @property
    def cfg_path(self) -> Path:
        return self.runtime / "kamailio.cfg"

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
        from provisioning.files import create_private, private

        # The config holds the Record-Route secret, the database plaintext
        # SIP passwords (auth_db's calculate_ha1): both 0600.
        with os.fdopen(create_private(cfg), "w") as f:
            f.write(self.render())
        private(cfg)
        if self.config.pbx.tls is not None:
            tls_cfg = self.runtime / "tls.cfg"
            with os.fdopen(create_private(tls_cfg), "w") as f:
                f.write(render_tls_config(self.config))
            private(tls_cfg)
        init_db(self.db_path)
        init_acc_db(self.acc_db_path)
        private(self.db_path)
        private(self.acc_db_path)
        self.write_subscribers(self.config)
        sync_trunk_peers(self.db_path, trunk_peers(self.config))
        sync_trunk_cps(self.db_path, trunk_cps(self.config))
        sync_room_numbers(self.db_path, room_numbers(self.config))
        write_dispatcher_list(self.runtime / "dispatcher.list", self.nodes)
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
            # Shared memory: transactions and dialogs. 64 MB ran out ("tm: out
            # of mem") at 400 new calls/s through two nodes; unused pages of
            # the mapping cost nothing.
            "-m",
            "256",
            "-M",
            "8",
        ]

    def orphan_command(self) -> list[str]:
        """What this Kamailio's guard runs when its `ponte serve` dies."""
        return [sys.executable, "-m", "pbx.kamailio", "release", "--runtime", str(self.runtime)]

    def reap_stale(self) -> None:
        """Stop a Kamailio from our config that we will not adopt: one whose
        config changed, or our own child left by another object."""
        pid = self.edge.found()
        if pid is None:
            return
        log.warning("stopping a kamailio (pid %d) left by a previous run", pid)
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def adoptable(self) -> int | None:
        """The pid of a Kamailio a `ponte serve` that died left running from
        this very config (same rendered kamailio.cfg), or None."""
        return self.edge.adoptable(self.cfg_path, self.render())

    def render(self) -> str:
        """This Kamailio's kamailio.cfg."""
        return render_config(self.config, self.runtime, self.debug, self.nodes, self.emergency)

    def start(self) -> None:
        """Start Kamailio in the foreground as our child, logging to a file;
        or adopt the one a `ponte serve` that died left running (its calls
        between extensions go on), ending that app server's dialogs."""
        self.edge.own()
        pid = self.adoptable()
        if pid is not None:
            self.edge.adopt(pid, self.log_path, self.orphan_command())
            self.reload_subscribers(self.config, force=True)
            try:
                n = release_app_dialogs(self.runtime)
            except (KamailioError, OSError, subprocess.TimeoutExpired) as exc:
                log.warning("kamailio did not end the previous app server's dialogs: %s", exc)
            else:
                if n:
                    log.warning("ended %d dialogs of the previous app server (BYE sent)", n)
            return
        if self.edge.found() is not None:
            with contextlib.suppress(KamailioError, OSError, subprocess.TimeoutExpired):
                release_app_dialogs(self.runtime)  # they would end without a word
            self.reap_stale()
        cfg = self.prepare()
        proc = self.edge.spawn(
            self.command(cfg), self.log_path, self.orphan_command(), env=sqlite_busy_env()
        )
        # The pid file comes first (Kamailio writes it before its workers
        # start), then an answer to OPTIONS: ready means answering SIP.
        t0 = time.monotonic()
        deadline = t0 + 5
        while time.monotonic() < deadline and proc.poll() is None:
            if self.running_elsewhere():
                break
            time.sleep(0.02)
        answered = proc.poll() is None and answers_sip(self.config.pbx.internal, READY_S)
        log.info(
            "kamailio started (pid %d) on %s, %d extensions%s",
            proc.pid,
            self.config.pbx.listen,
            len(self.config.extensions),
            f", answering SIP after {1000 * (time.monotonic() - t0):.0f} ms" if answered else "",
        )
        if not answered:
            log.warning("kamailio does not answer SIP on %s yet", self.config.pbx.internal)

    def running_elsewhere(self) -> bool:
        """Whether a Kamailio from our config runs (started by its own unit)."""
        return self.edge.found() is not None

    def alive(self) -> bool:
        """Whether our Kamailio (started or adopted) still runs."""
        return self.edge.alive()

    def reload_subscribers(self, config: Config, force: bool = False) -> None:
        """New passwords, extensions and trunk providers, live (Kamailio reads
        the subscriber table per request; the trunk table is reloaded by RPC,
        when it changed or `force`)."""
        old = trunk_peers(self.config)
        old_cps = trunk_cps(self.config)
        old_numbers = room_numbers(self.config)
        self.config = config
        try:
            self.write_subscribers(config)
        except KamailioError as exc:  # the rest of the reload stands
            log.error("%s; the next reload writes them", exc)
        peers, cps, numbers = trunk_peers(config), trunk_cps(config), room_numbers(config)
        # Each live table: written, and reloaded by RPC, when it changed.
        tables: list[tuple[str, str, bool, Callable[[], None]]] = [
            (
                "trunkpeer",
                "trunk table",
                peers != old,
                lambda: sync_trunk_peers(self.db_path, peers),
            ),
            ("trunkcps", "trunk pacing", cps != old_cps, lambda: sync_trunk_cps(self.db_path, cps)),
            (
                "roomnum",
                "one-room numbers",
                numbers != old_numbers,
                lambda: sync_room_numbers(self.db_path, numbers),
            ),
        ]
        for name, what, changed, write in tables:
            if not (changed or force):
                continue
            write()
            rpc = kamcmd(self.runtime, "htable.reload", name, timeout=5)
            if rpc.returncode != 0:
                log.warning("kamailio did not reload the %s: %s", what, rpc.stderr.strip())

    def write_subscribers(self, config: Config) -> None:
        """The extensions where auth_db reads them (see auth_db_url)."""
        pg = kamailio_pg.postgres_url(config.database)
        if pg is None:
            sync_subscribers(self.db_path, config.extensions)
            return
        try:
            kamailio_pg.sync_subscribers(pg, config.extensions)
        except kamailio_pg.SubscriberStoreError as exc:
            raise KamailioError(str(exc)) from exc
        finally:
            # This edge's copy, even when PostgreSQL refused: what auth_db
            # falls back to while it is away (db_cluster), as private as the
            # SQLite set-up's (the file exists once the edge is prepared).
            if self.db_path.exists():
                sync_subscribers(self.db_path, config.extensions)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to its process group (creator, main and workers), then SIGKILL."""
        self.edge.stop(timeout)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pbx.kamailio release (--runtime DIR | --config FILE)`: end
    the app server's dialogs (its guard runs this when `ponte serve` dies,
    ponte.service's ExecStopPost under systemd)."""
    p = argparse.ArgumentParser(prog="python -m pbx.kamailio")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("release", help="end every dialog with the app server (BYE both sides)")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--runtime", type=Path, help="Kamailio's runtime folder")
    where.add_argument("--config", type=Path, help="the provisioning YAML")
    args = p.parse_args(argv)
    runtime = args.runtime
    if runtime is None:
        from provisioning.loader import load_config

        runtime = Path(load_config(args.config).state_dir) / "kamailio"
    try:
        n = release_app_dialogs(runtime)
    except (KamailioError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"ponte: {exc}", file=sys.stderr)
        return 1
    print(f"ponte: ended {n} dialogs with the app server", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
