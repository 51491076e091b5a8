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
    requests and answers none is not ready; one whose first answer comes
    0.3 s after the first request (a worker still starting) is, once it
    answers. Kamailio itself is asked at every server start in this suite."""
    host = ports.loopback_ip()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind((host, 0))
        t0 = time.monotonic()
        assert not answers_sip(f"{host}:{mute.getsockname()[1]}", 0.4)
        assert time.monotonic() - t0 < 1.0
        # Each probe is a whole OPTIONS with its own branch.
        mute.settimeout(0)
        first = mute.recv(4096)
        assert first.startswith(b"OPTIONS sip:") and b"CSeq: 1 OPTIONS" in first

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as late:
        late.bind((host, 0))

        def answer_late() -> None:
            late.settimeout(2)
            _data, source = late.recvfrom(4096)
            time.sleep(0.3)
            late.sendto(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", source)

        worker = threading.Thread(target=answer_late)
        worker.start()
        t0 = time.monotonic()
        assert answers_sip(f"{host}:{late.getsockname()[1]}", 3.0)
        assert 0.25 < time.monotonic() - t0 < 1.5
        worker.join()
