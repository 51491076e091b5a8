"""Running as a service: units, sd_notify, graceful stop, drain."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests import audio
from tests.harness import ROOT


def test_units_verify_and_are_hardened(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    out = subprocess.run(
        [sys.executable, "-m", "ponte.cli", "install", "--root", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ponte.service" in out and (tmp_path / "etc/ponte/ponte.yaml").exists()
    units = sorted((tmp_path / "etc/systemd/system").glob("*.service"))
    verify = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stderr
    # The several-node units too (a template is scored as one of its instances).
    system = tmp_path / "etc/systemd/system"
    shutil.copy(system / "ponte@.service", system / "ponte@a.service")
    for unit in ("ponte.service", "ponte-nodes.service", "ponte@a.service"):
        sec = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", str(system / unit)],
            capture_output=True,
            text=True,
        )
        found = re.search(rf"exposure level for {re.escape(unit)}: ([\d.]+)", sec.stdout)
        assert found and float(found.group(1)) < 4.0, sec.stdout[-500:]


def test_sd_notify_ready_watchdog_and_stopping(server_factory, tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    srv = server_factory(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    got: list[str] = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in got) < 3:
        got.append(sock.recv(4096).decode())
    assert got[0].startswith("READY=1")
    assert sum("WATCHDOG=1" in m for m in got) >= 3
    srv.stop()
    sock.settimeout(0.5)
    rest = []
    while True:
        try:
            rest.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    assert any(m.startswith("STOPPING=1") for m in rest)


def test_sigterm_tells_callers_refuses_new_calls_and_exits_0(server, phone):
    talking = phone(server.uri("conf-en"), "wait_media 5; dtmf 9999#; wait_end 30")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "join room=demo" not in server.log():
        time.sleep(0.1)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    late = phone(server.uri("conf"), "wait_media 3; hangup", record=False).result()
    assert late["code"] == 503 and late["headers"].get("Retry-After") == "5"
    assert server.proc.wait(10) == 0
    r = talking.result()
    assert r["hung_up_by"] == "remote" and r["code"] == 200
    samples, rate = audio.load(talking.record)
    tail = audio.segment(samples, rate, len(samples) / rate - 3.0, len(samples) / rate)
    assert audio.speech_like(tail, rate), "'the service is restarting' was heard"


def test_drain_refuses_new_calls_and_waits_for_the_rest(server, phone):
    up = phone(server.uri("conf"), "wait_media 5; dtmf 9999#; wait 4; hangup", record=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "join room=demo" not in server.log():
        time.sleep(0.1)
    drain = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ponte.cli",
            "drain",
            "--timeout",
            "20",
            "--config",
            str(server.config_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    # Once the server says it drains (the CLI's own start-up is not the server's).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "draining:" not in server.log():
        time.sleep(0.05)
    late = phone(server.uri("conf"), "wait_media 3; hangup", record=False).result()
    assert late["code"] == 503
    assert up.result()["hung_up_by"] == "local"
    out, _ = drain.communicate(timeout=30)
    assert drain.returncode == 0 and "drained" in out


def test_supervised_service_restarts_after_a_crash_and_a_stuck_loop(server_factory, phone):
    from tests.supervisor import Supervisor

    srv = server_factory()
    srv.stop()  # the supervisor runs it from here on, on the same file
    sup = Supervisor(
        [sys.executable, "-m", "ponte.cli", "serve", "--config", str(srv.config_path)],
        srv.config_path.parent,
        srv.log_path,
    )
    sup.start()
    try:
        assert sup.ready.wait(15)
        sup.proc.send_signal(signal.SIGKILL)  # a crash: Restart=on-failure
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sup.starts < 2:
            time.sleep(0.1)
        assert sup.ready.wait(15) and sup.starts == 2
        sup.proc.send_signal(signal.SIGSTOP)  # a stuck loop: no more WATCHDOG=1
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sup.starts < 3:
            time.sleep(0.1)
        assert "watchdog-kill" in sup.events
        assert sup.ready.wait(15) and sup.starts == 3
        r = phone(
            srv.uri("conf"), "wait_media 5; dtmf 9999#; wait 1; hangup", record=False
        ).result()
        assert r["hung_up_by"] == "local" and "confirmed_at" in r
    finally:
        sup.stop()
    assert sup.proc.returncode == 0  # SIGTERM: a clean stop


def test_journal_records_carry_call_room_and_line_fields(server_factory, phone, tmp_path):
    path = tmp_path / "journal.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    srv = server_factory(env={"JOURNAL_STREAM": "8:1", "PONTE_JOURNAL_SOCKET": str(path)})
    phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; wait 1; hangup", record=False).result()
    records = []
    while True:
        try:
            records.append(sock.recv(65536).decode())
        except TimeoutError:
            break
    joins = [r for r in records if "join room=demo" in r]
    assert joins, records[:5]
    fields = dict(line.split("=", 1) for line in joins[0].splitlines() if "=" in line)
    assert fields["ROOM"] == "demo" and fields["CALL_LEG"].isdigit()
    assert fields["PRIORITY"] == "6" and fields["SYSLOG_IDENTIFIER"] == "ponte"
