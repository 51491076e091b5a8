"""`ponte kamailio`, the command ponte-kamailio.service runs: it writes the
proxy's config and subscribers from the YAML and becomes Kamailio."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from pbx.kamailio import answers_sip
from tests import ports
from tests.harness import ROOT, start_server, with_media_ports
from tests.pbx_helpers import EXTENSIONS


def test_ponte_kamailio_becomes_the_proxy(tmp_path, phone, prompt_cache):
    pbx_port = ports.allocate(1)
    cfg = {
        "sip": {"listen": f"127.0.0.1:{ports.allocate(1)}", "rtp_ports": ports.rtp_range(20)},
        # Free rtpengine ports too: the default media range may overlap this
        # worker's RTP ports, which validation refuses.
        "pbx": with_media_ports({"listen": f"127.0.0.1:{pbx_port}"}),
        "extensions": EXTENSIONS,
        "state_dir": str(tmp_path / "state"),
        "database": str(tmp_path / "ponte.db"),
    }
    path = tmp_path / "ponte.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ponte.cli", "kamailio", "--config", str(path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(1.5)
        assert proc.poll() is None
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert "kamailio" in cmdline  # exec'd: the unit's main process is the proxy
        # With the SQLite busy timeout preloaded (pbx/sqlite_busy.c), as under `ponte serve`.
        assert "sqlite_busy.so" in Path(f"/proc/{proc.pid}/maps").read_text()
        pw = EXTENSIONS[1]["password"]
        r = phone(
            "",
            "",
            record=False,
            bind=ports.loopback_ip(),
            extra=["--register", f"1002:{pw}@127.0.0.1:{pbx_port}"],
        ).result()
        assert r["registration"]["code"] == 200
        # The app server started without its own proxy sees this one, and its loss.
        srv = start_server(
            tmp_path / "app",
            prompt_cache,
            **{
                **cfg,
                "control": {"socket": str(tmp_path / "app" / "control.sock")},
            },
            extra_args=["--no-kamailio"],
        )
        try:
            time.sleep(2.5)
            assert "kamailio is up (ponte-kamailio.service)" in srv.log()
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline and "kamailio is down" not in srv.log():
                time.sleep(0.2)
            assert "kamailio is down" in srv.log()
        finally:
            srv.stop()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)


def test_ready_means_answering_sip_not_a_pid_file() -> None:
    """`answers_sip`, which Kamailio's start waits on: a socket that takes
    requests and answers none is not ready; one that lets the first two
    probes go unanswered (a worker still starting) is, once it answers the
    third. Kamailio itself is asked at every server start in this suite."""
    host = ports.loopback_ip()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind((host, 0))
        assert not answers_sip(f"{host}:{mute.getsockname()[1]}", 1.0)
        # Each probe is a whole OPTIONS, asked again while nothing answers.
        mute.settimeout(0)
        first = mute.recv(4096)
        assert first.startswith(b"OPTIONS sip:") and b"CSeq: 1 OPTIONS" in first
        assert b"CSeq: 2 OPTIONS" in mute.recv(4096)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as late:
        late.bind((host, 0))
        probes: list[bytes] = []

        def answer_the_third() -> None:
            late.settimeout(10)
            while len(probes) < 3:
                data, source = late.recvfrom(4096)
                probes.append(data)
            late.sendto(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", source)

        worker = threading.Thread(target=answer_the_third)
        worker.start()
        assert answers_sip(f"{host}:{late.getsockname()[1]}", 10.0)
        worker.join()
        assert [b"CSeq: %d OPTIONS" % n in p for n, p in enumerate(probes, 1)] == [True] * 3
