"""Attacks on the admin side: the web console's login and headers, and `--as`
on the control socket.

* Web login lockout by anyone: five wrong passwords for an admin, from five
  addresses, used to lock the real admin out for ten minutes. Failures now
  lock a (name, source address) pair; a name only gets a small delay per try
  (at most 3 s, never a refusal), so the real admin from a clean address gets
  in. The console binds loopback, so the "addresses" are distinct 127.x client
  sockets against a real aiohttp server; the throttle's clock and its sleep are
  injected, and the tests assert on the delay the server says it applied
  (its log line and the wait it asked for), never on the wall clock.
* `Server:` header: aiohttp named itself and its version on every answer; the
  real console server (web.server.WebServer) is asked for a page, a static
  file, an API refusal, an error page and a malformed request.
* `--as NAME` was only a claim: any local user who could reach the control
  socket could act as any admin. The server now checks the peer's Unix user
  (SO_PEERCRED) against `admins[].unix_users` (root may act as anyone). The
  CLI runs here as throwaway system users (useradd, removed afterwards)
  through setpriv, against a real `ponte serve`.
"""

from __future__ import annotations

import asyncio
import grp
import http.client
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from tests.harness import PY, ROOT, Server, cli, report, start_server
from tests.test_admin_calls import roles_config
from tests.web_helpers import PASSWORD, Clock, FakeBackend, _config, aio
from web.app import make_app
from web.hub import EventHub
from web.server import WebServer

# -- web login: no lockout by anyone -------------------------------------------


class Console:
    """make_app on a real aiohttp TestServer (127.0.0.1, port 0) whose login
    throttle waits on the injected clock: each wait is recorded and moves the
    clock on, as a real wait would, without the test waiting for it."""

    def __init__(self) -> None:
        self.hub = EventHub()
        self.clock = Clock()
        self.waits: list[float] = []
        self.app = make_app(
            FakeBackend(self.hub, _config()), self.hub, now=self.clock, sleep=self._sleep
        )
        self.server = TestServer(self.app, host="127.0.0.1", port=0)
        self.clients: list[TestClient] = []

    async def _sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.t += seconds

    async def __aenter__(self) -> Console:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self.clients:
            await c.close()
        await self.server.close()

    async def client(self, source: str) -> TestClient:
        """A client whose connections come from `source` (a 127.x address:
        Linux routes all of 127/8 to lo, so each is a distinct peer)."""
        c = TestClient(self.server, connector=aiohttp.TCPConnector(local_addr=(source, 0)))
        await c.start_server()
        self.clients.append(c)
        return c

    async def try_login(self, c: TestClient, name: str, password: str) -> aiohttp.ClientResponse:
        resp = await c.get("/login")
        m = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
        assert m, "no login form"
        return await c.post(
            "/login",
            data={"name": name, "password": password, "csrf": m.group(1)},
            allow_redirects=False,
        )


def _said_waits(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The waits the server logged, in order ("waiting 2.0 s")."""
    return [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"waiting ([\d.]+) s", r.getMessage()))
    ]


@aio
async def test_wrong_passwords_from_five_addresses_do_not_lock_out_the_real_admin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ponte.web")
    async with Console() as con:
        for i in range(5):
            guesser = await con.client(f"127.0.0.{11 + i}")
            resp = await con.try_login(guesser, "boss", f"guess-{i}")
            assert resp.status == 401, i
            assert resp.headers["X-Frame-Options"] == "DENY"
            con.clock.t += 30  # five failures in two minutes: the old lockout's trigger
        # The real admin, from an address that never failed, gets in...
        real = await con.client("127.0.0.16")
        resp = await con.try_login(real, "boss", PASSWORD)
        assert resp.status == 303, await resp.text()
        assert "ponte_session=" in " ".join(resp.headers.getall("Set-Cookie", []))
        # ...after the per-name delay (5 failures: 2 s), which the server applied and logged.
        assert con.waits == [0.5, 1.0, 2.0]  # the 4th and 5th guesses, then the real login
        assert _said_waits(caplog) == con.waits
        assert (
            "127.0.0.16"
            in [r for r in caplog.records if "waiting 2.0" in r.getMessage()][0].getMessage()
        )


@aio
async def test_the_guessing_address_is_locked_out_but_nobody_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ponte.web")
    async with Console() as con:
        guesser = await con.client("127.0.0.21")
        for i in range(5):
            assert (await con.try_login(guesser, "boss", f"guess-{i}")).status == 401
        # Locked from there, for that name: even the right password.
        resp = await con.try_login(guesser, "boss", PASSWORD)
        assert resp.status == 429
        assert "Too many failed logins" in await resp.text()
        assert int(resp.headers["Retry-After"]) == 600
        assert "ponte_session=" not in " ".join(resp.headers.getall("Set-Cookie", []))
        # Refused before any password check: no wait, no count, no extension.
        waits = list(con.waits)
        con.clock.t += 300
        resp = await con.try_login(guesser, "boss", "guess-again")
        assert resp.status == 429 and int(resp.headers["Retry-After"]) == 300
        assert con.waits == waits
        # Another name from the same address is not locked...
        same_address = await con.client("127.0.0.21")
        assert (await con.try_login(same_address, "sub", PASSWORD)).status == 303
        # ...nor the same name from another address.
        other = await con.client("127.0.0.22")
        assert (await con.try_login(other, "boss", PASSWORD)).status == 303
        # The lock lifts ten minutes after the address's last failure.
        con.clock.t += 300 - 1 - sum(con.waits[len(waits) :])
        assert (await con.try_login(guesser, "boss", PASSWORD)).status == 429
        con.clock.t += 1
        assert (await con.try_login(guesser, "boss", PASSWORD)).status == 303
        # Unknown names lock the same way (the answer never tells them apart).
        ghost = await con.client("127.0.0.23")
        for _ in range(5):
            assert (await con.try_login(ghost, "ghost", "x")).status == 401
        assert (await con.try_login(ghost, "ghost", "x")).status == 429


@aio
async def test_the_per_name_delay_grows_with_failures_from_anywhere_and_stays_small(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ponte.web")
    async with Console() as con:
        # 40 addresses, 4 guesses each (under the 5 that lock an address):
        # 160 guesses in a few minutes, more than any one address could make.
        sources = [await con.client(f"127.0.1.{n}") for n in range(1, 41)]
        for round_ in range(4):
            for n, c in enumerate(sources):
                resp = await con.try_login(c, "boss", f"guess-{round_}-{n}")
                assert resp.status == 401, (round_, n)
        assert len(con.waits) == 160 - 3  # every guess after the 3rd waited
        assert con.waits[:4] == [0.5, 1.0, 2.0, 3.0]
        assert max(con.waits) == 3.0, "at most 3 s a try, however many guess"
        assert sum(con.waits) > 450, "the guessing took the server over 7 minutes"
        assert _said_waits(caplog) == con.waits
        # Never a lockout: the real admin from a clean address waits 3 s at most.
        real = await con.client("127.0.0.99")
        assert (await con.try_login(real, "boss", PASSWORD)).status == 303
        assert con.waits[-1] == 3.0
        # A good login clears the name's count: the next try waits nothing.
        before = len(con.waits)
        assert (await con.try_login(await con.client("127.0.0.98"), "boss", PASSWORD)).status == 303
        assert len(con.waits) == before
        # Another name was never slowed by the guessing at boss.
        assert (await con.try_login(await con.client("127.0.0.97"), "sub", PASSWORD)).status == 303
        assert len(con.waits) == before


@aio
async def test_parallel_guesses_from_one_address_cannot_race_past_its_lockout() -> None:
    async with Console() as con:
        clients = [await con.client("127.0.0.31") for _ in range(12)]
        forms = []
        for c in clients:
            m = re.search(r'name="csrf" value="([^"]+)"', await (await c.get("/login")).text())
            assert m
            forms.append(m.group(1))

        async def guess(c: TestClient, csrf: str, i: int) -> int:
            resp = await c.post(
                "/login",
                data={"name": "boss", "password": f"guess-{i}", "csrf": csrf},
                allow_redirects=False,
            )
            return resp.status

        codes = await asyncio.gather(
            *(guess(c, f, i) for i, (c, f) in enumerate(zip(clients, forms, strict=True)))
        )
        assert set(codes) <= {401, 429}
        assert 1 <= codes.count(401) <= 5, codes  # one password check at a time per address
        # Then one at a time until the address is locked: 5 checked guesses in all.
        checked = codes.count(401)
        c = await con.client("127.0.0.31")
        for i in range(10):
            resp = await con.try_login(c, "boss", f"more-{i}")
            if resp.status == 429:
                break
            assert resp.status == 401
            checked += 1
        assert checked == 5
        assert (await con.try_login(c, "boss", PASSWORD)).status == 429


# -- no Server header ------------------------------------------------------------


def _raw(port: int, data: bytes) -> bytes:
    """Send raw bytes to the console and return the answer's head."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    return got.split(b"\r\n\r\n")[0]


def test_no_answer_of_the_web_console_names_its_server() -> None:
    hub = EventHub()
    srv = WebServer(FakeBackend(hub), hub, "127.0.0.1:0")
    srv.start()
    try:
        answers: dict[str, tuple[int, Any]] = {}
        for method, path in (
            ("GET", "/login"),  # a page
            ("GET", "/static/console.css"),  # a static file
            ("GET", "/"),  # the redirect to /login
            ("GET", "/api/rooms"),  # 401 from the guard
            ("GET", "/join/no/such/page"),  # the router's 404
            ("GET", "/static/..%2fapp.py"),  # the static handler's 404
            ("POST", "/login"),  # 403: no CSRF token
            ("DELETE", "/login"),  # 405
        ):
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
            try:
                conn.request(method, path)
                resp = conn.getresponse()
                resp.read()
                answers[f"{method} {path}"] = (resp.status, resp.headers)
            finally:
                conn.close()
        assert {p: code for p, (code, _) in answers.items()} == {
            "GET /login": 200,
            "GET /static/console.css": 200,
            "GET /": 302,
            "GET /api/rooms": 401,
            "GET /join/no/such/page": 404,
            "GET /static/..%2fapp.py": 404,
            "POST /login": 403,
            "DELETE /login": 405,
        }
        for path, (_, headers) in answers.items():
            assert "Server" not in headers, (path, headers["Server"])
            assert headers["X-Content-Type-Options"] == "nosniff", path
        # A request aiohttp cannot parse never reaches the app: its own 400.
        for bad in (
            b"GARBAGE\x00 / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n",
        ):
            head = _raw(srv.port, bad)
            assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0], head
            assert b"\r\nserver:" not in head.lower(), head
            assert b"aiohttp" not in head.lower(), head
    finally:
        srv.stop()


# -- --as is checked against the Unix user -----------------------------------------


@dataclass
class LocalUsers:
    """Throwaway system users in one group that may reach the control socket."""

    group: str
    mapped: str  # listed in ana's unix_users
    stranger: str  # listed nowhere
    setpriv_caps: list[str]


def _admin_cmd(*cmd: str) -> None:
    # useradd and friends lock /etc/passwd; another worker may hold it a moment.
    for _ in range(20):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0:
            return
        time.sleep(0.25)
    raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")


def _as_user(user: str, group: str, caps: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", *caps]


@pytest.fixture
def local_users() -> Iterator[LocalUsers]:
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("needs root, useradd and setpriv to run the CLI as other users")
    tag = secrets.token_hex(3)
    users = LocalUsers(f"pt-{tag}", f"pt-{tag}-ana", f"pt-{tag}-eve", [])
    _admin_cmd("groupadd", "--system", users.group)
    made: list[str] = []
    try:
        for name in (users.mapped, users.stranger):
            _admin_cmd("useradd", "--system", "--no-create-home", "--gid", users.group, name)
            made.append(name)
        # The interpreter may live under root's home (0700, as with pyenv): the
        # user then keeps the right to read and search directories, which
        # changes nothing the server sees (SO_PEERCRED gives the uid). Where
        # that capability is not ours to give (a container), try without.
        ambient = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
        for caps in (ambient, []):
            probe = subprocess.run(
                [
                    *_as_user(users.mapped, users.group, caps),
                    PY,
                    "-c",
                    "import ponte.cli, os; os.getuid() or exit(1)",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if probe.returncode == 0:
                users.setpriv_caps = caps
                break
        else:
            pytest.fail(f"the CLI does not start as {users.mapped}: {probe.stderr[-500:]}")
        yield users
    finally:
        for name in made:
            _admin_cmd("userdel", name)
        _admin_cmd("groupdel", users.group)


def cli_as(users: LocalUsers, user: str, srv: Server, *args: str) -> subprocess.CompletedProcess:
    """`ponte ARGS --config <the server's file>` run as Unix user `user`."""
    return subprocess.run(
        [
            *_as_user(user, users.group, users.setpriv_caps),
            PY,
            "-m",
            "ponte.cli",
            *args,
            "--config",
            str(srv.config_path),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def shared_server(prompt_cache: Path, local_users: LocalUsers) -> Iterator[Server]:
    """A real server whose directory and control socket the test group reaches
    (as `ponte` group members reach /run/ponte/control.sock under systemd)."""
    config = roles_config()
    for admin in config["admins"]:
        if admin["name"] == "ana":
            admin["unix_users"] = [local_users.mapped]
    home = Path(tempfile.mkdtemp(prefix="ponte-admin-", dir="/tmp"))
    gid = grp.getgrnam(local_users.group).gr_gid
    os.chown(home, 0, gid)
    home.chmod(0o750)
    try:
        srv = start_server(home, prompt_cache, **config)
        try:
            os.chown(srv.control, 0, gid)  # the server made it 0660 root:root
            yield srv
        finally:
            srv.stop(signal.SIGTERM)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _edit_line(srv: Server, line: str, area_code: str) -> None:
    cfg = yaml.safe_load(srv.config_path.read_text())
    cfg["lines"][line]["area_code"] = area_code
    srv.config_path.write_text(yaml.safe_dump(cfg))


def test_as_is_checked_against_the_unix_user_at_the_control_socket(
    shared_server: Server, local_users: LocalUsers
) -> None:
    srv, users = shared_server, local_users
    assert pwd.getpwnam(users.stranger).pw_uid != 0
    _edit_line(srv, "1001", "12")  # vendas: any admin but read-only may change it

    # A local user who is nobody's claims to be ana, then bruno: refused, nothing changes.
    for name in ("ana", "bruno"):
        refused = cli_as(users, users.stranger, srv, "reload", "--as", name)
        assert refused.returncode == 3, refused.stderr
        assert f"Unix user {users.stranger} may not act as {name}" in refused.stderr
    assert "only root may" in refused.stderr  # bruno lists no unix_users
    room = cli_as(users, users.stranger, srv, "room", "lock", "demo", "--as", "ana")
    assert room.returncode == 3 and "may not act as ana" in room.stderr, room.stderr
    # The names reserved for root's SIGHUP and for the edge's published
    # provisioning (ponte/follow.py) do not skip --as either.
    for reserved in ("SIGHUP", "edge"):
        hup = cli_as(users, users.stranger, srv, "reload", "--by", reserved)
        assert hup.returncode == 3 and "--as NAME" in hup.stderr, hup.stderr
    assert report(srv, "audit") == [], "a refused claim changed something"
    assert "1 objects changed" not in srv.log()

    # ana's own Unix user may act as ana, and as nobody else.
    other = cli_as(users, users.mapped, srv, "reload", "--as", "bruno")
    assert other.returncode == 3 and "only root may" in other.stderr, other.stderr
    done = cli_as(users, users.mapped, srv, "reload", "--as", "ana")
    assert done.returncode == 0 and "1 objects changed" in done.stdout, done.stderr

    # root may act as any admin (the role still applies).
    _edit_line(srv, "1001", "13")
    ro = cli(srv, "reload", "--as", "carla")
    assert ro.returncode == 3 and "read-only" in ro.stderr, ro.stderr
    root = cli(srv, "reload", "--as", "bruno")
    assert root.returncode == 0 and "1 objects changed" in root.stdout, root.stderr

    # The audit keeps both names: the admin claimed and the Unix user proven.
    audit = report(srv, "audit")
    assert [(a["object"], a["by"], a["unix_user"]) for a in audit] == [
        ("line:1001", "ana", users.mapped),
        ("line:1001", "bruno", "root"),
    ]
    assert f"Unix user {users.stranger} may not act as ana" in srv.log()
