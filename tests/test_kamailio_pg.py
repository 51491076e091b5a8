"""Kamailio's subscribers in PostgreSQL: auth_db reads the shared table, a
reloaded password reaches it, and registrations stay on the edge's SQLite.

The appliance (Kamailio on 198.51.100.1) and its PostgreSQL run in the
appliance's network namespace, a phone on the LAN (tests/netns.py). The edge
is driven by this module's `main` (run in that namespace): Kamailio started
and reloaded through pbx/kamailio.py as `ponte serve` does, with `database`
set to the PostgreSQL URL on the loaded Config.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pbx.kamailio_pg import kamailio_url
from tests.harness import ROOT
from tests.netns import APPLIANCE_IP, Topology, topology
from tests.pbx_helpers import EXTENSIONS, register_once
from tests.pgcluster import PgCluster

PBX = f"{APPLIANCE_IP}:5060"
AUTH_FAILURES = 3  # pbx.auth_failures: wrong passwords from one source before a ban
OLD, NEW = EXTENSIONS[0]["password"], "a-brand-New-secret-7q"


@pytest.fixture
def lan() -> Iterator[Topology]:
    """One LAN phone, nothing else: what registering needs."""
    with topology(lan_phones=1, nat_phones=0, attacker=False) as net:
        yield net


@pytest.fixture
def pg(lan: Topology) -> Iterator[PgCluster]:
    """PostgreSQL in the appliance's namespace, on its loopback."""
    with PgCluster(netns=lan.appliance.name) as cluster:
        yield cluster


class Edge:
    """`main` below, running in the appliance's namespace."""

    def __init__(self, net: Topology, config: Path, database: str) -> None:
        argv = [sys.executable, "-m", "tests.test_kamailio_pg", str(config), database]
        self.proc = net.appliance.popen(
            argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
        )
        self.expect("ready")

    def expect(self, word: str, timeout: float = 20) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().strip()
            if line == word:
                return
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError(f"edge driver never said {word!r} (exit {self.proc.poll()})")

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)
        self.expect("reloaded")


def edge_yaml(tmp: Path, password: str) -> dict[str, Any]:
    return {
        "sip": {"listen": "127.0.0.1:5080", "rtp_ports": "40000-40199"},
        "pbx": {
            "listen": PBX,
            "media_ports": "30000-30399",
            "rtpengine_control": "127.0.0.1:2223",
            "auth_failures": AUTH_FAILURES,
        },
        "extensions": [{**EXTENSIONS[0], "password": password}, EXTENSIONS[1]],
        "state_dir": str(tmp / "state"),
        "database": str(tmp / "ponte.db"),
    }


def subscribers(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT username, password FROM subscriber").fetchall())


def test_passwords_live_in_postgresql_and_a_reload_changes_them(
    tmp_path: Path, lan: Topology, pg: PgCluster, phone
) -> None:
    config = tmp_path / "ponte.yaml"
    config.write_text(yaml.safe_dump(edge_yaml(tmp_path, OLD)))
    edge = Edge(lan, config, pg.url)
    runtime = tmp_path / "state" / "kamailio"
    try:
        cfg = (runtime / "kamailio.cfg").read_text()
        assert '#!define AUTHDBURL "cluster://auth"' in cfg
        assert f"shared=>postgres://postgres@127.0.0.1:{pg.port}/ponte" in cfg
        assert 'loadmodule "db_postgres.so"' in cfg
        wanted = {e["number"]: e["password"] for e in EXTENSIONS}
        assert subscribers(pg.local_url()) == wanted
        with sqlite3.connect(runtime / "kamailio.db") as local:
            # The edge's own copy, what it falls back to while PostgreSQL is away.
            rows = local.execute("SELECT username, password FROM subscriber").fetchall()
            assert dict(rows) == wanted

        host = lan.lan[0]
        r = phone(
            "",
            "",
            record=False,
            bind=host.ip,
            netns=host.name,
            extra=["--register", f"1001:{OLD}@{PBX}"],
        ).result()
        assert r["registration"]["code"] == 200, r
        with psycopg.connect(pg.local_url()) as conn:
            # Only the subscribers moved: registrations, the trunk table and acc
            # are this edge's own, in its SQLite files.
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            assert sorted(t for (t,) in tables) == ["subscriber", "version"]

        config.write_text(yaml.safe_dump(edge_yaml(tmp_path, NEW)))
        t0 = time.monotonic()
        edge.reload()
        print(f"reload wrote PostgreSQL's subscribers in {time.monotonic() - t0:.3f} s")
        assert subscribers(pg.local_url())["1001"] == NEW
        assert register_once(host, "1001", OLD) == 401  # challenged again: refused
        assert register_once(host, "1001", NEW) == 200
        assert register_once(host, "1002", EXTENSIONS[1]["password"]) == 200
    finally:
        edge.proc.terminate()
        edge.proc.wait(15)


def test_database_away_and_back(tmp_path: Path, lan: Topology, pg: PgCluster) -> None:
    """With PostgreSQL gone, Kamailio stays up and authenticates from the
    edge's own copy of the passwords (db_cluster falls back to its SQLite
    file): a phone keeps registering (and calling) through the outage, and a
    wrong password is still refused; once PostgreSQL is back, Kamailio reads
    it again by itself."""
    config = tmp_path / "ponte.yaml"
    config.write_text(yaml.safe_dump(edge_yaml(tmp_path, OLD)))
    edge = Edge(lan, config, pg.url)
    host = lan.lan[0]
    try:
        deadline = time.monotonic() + 10  # its workers first ping rtpengine, which is not there
        first = None
        while first is None and time.monotonic() < deadline:
            first = register_once(host, "1001", OLD)
        assert first == 200
        pg.stop()
        # More tries than the wrong passwords that refuse a user from a source.
        away = [register_once(host, "1001", OLD) for _ in range(AUTH_FAILURES + 2)]
        assert away == [200] * len(away), away
        assert register_once(host, "1002", "not-its-password") == 401
        assert edge.proc.poll() is None
        pg.start()
        t0 = time.monotonic()
        back = None
        while time.monotonic() - t0 < 10 and back != 200:
            back = register_once(host, "1001", OLD)
        print(f"away: {away[0]}; registered again {time.monotonic() - t0:.2f} s after restart")
        assert back == 200
    finally:
        edge.proc.terminate()
        edge.proc.wait(15)


@pytest.mark.parametrize(
    ("url", "kamailio"),
    [
        (
            "postgresql://ponte:s%40cr%3At@db.lan:5433/ponte",
            "postgres://ponte:s@cr:t@db.lan:5433/ponte",
        ),
        (
            "postgresql+psycopg://ponte@db.lan/ponte?sslmode=require",
            "postgres://ponte@db.lan/ponte",
        ),
        ("postgres://db.lan/ponte", "postgres://db.lan/ponte"),
    ],
)
def test_kamailio_url(url: str, kamailio: str) -> None:
    assert kamailio_url(url) == kamailio


@pytest.mark.parametrize(
    "url",
    ["postgresql:///ponte?host=/run/postgresql", "postgresql://u:a%2Fb@db/p", "postgresql://db/"],
)
def test_kamailio_url_refuses_what_kamailio_misreads(url: str) -> None:
    from pbx.kamailio_pg import SubscriberStoreError

    with pytest.raises(SubscriberStoreError):
        kamailio_url(url)


def test_unreachable_database_is_reported_without_its_password(tmp_path: Path) -> None:
    from pbx.kamailio import Kamailio, KamailioError
    from provisioning.loader import load_config

    config = tmp_path / "ponte.yaml"
    config.write_text(yaml.safe_dump(edge_yaml(tmp_path, OLD)))
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"postgresql://ponte:hush-hush@127.0.0.1:{closed.getsockname()[1]}/ponte"
        cfg = load_config(config).model_copy(update={"database": url})
        kam = Kamailio(cfg, tmp_path / "kamailio")
        with pytest.raises(KamailioError) as refused:
            kam.write_subscribers(cfg)
    assert "ponte:***@127.0.0.1" in str(refused.value) and "hush" not in str(refused.value)
    assert "Connection refused" in str(refused.value)


def main(argv: Sequence[str] | None = None) -> int:
    """CONFIG DATABASE: run Kamailio for CONFIG with `database` = DATABASE;
    SIGHUP rereads CONFIG and rewrites the subscribers, SIGTERM stops."""
    from pbx.kamailio import Kamailio
    from provisioning.loader import load_config

    p = argparse.ArgumentParser()
    p.add_argument("config", type=Path)
    p.add_argument("database")
    args = p.parse_args(argv)

    def load() -> Any:
        return load_config(args.config).model_copy(update={"database": args.database})

    cfg = load()
    kam = Kamailio(cfg, Path(cfg.state_dir) / "kamailio")
    kam.start()
    hup, term = [False], [False]
    signal.signal(signal.SIGHUP, lambda *_: hup.__setitem__(0, True))
    signal.signal(signal.SIGTERM, lambda *_: term.__setitem__(0, True))
    print("ready", flush=True)
    while not term[0]:
        if hup[0]:
            hup[0] = False
            kam.reload_subscribers(load())
            print("reloaded", flush=True)
        time.sleep(0.05)
    kam.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
