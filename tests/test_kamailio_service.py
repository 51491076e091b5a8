"""`ponte kamailio`, the command ponte-kamailio.service runs: it writes the
proxy's config and subscribers from the YAML and becomes Kamailio."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests import ports
from tests.harness import ROOT
from tests.pbx_helpers import EXTENSIONS


def test_ponte_kamailio_becomes_the_proxy(tmp_path, phone):
    pbx_port = ports.allocate(1)
    cfg = {
        "sip": {"listen": f"127.0.0.1:{ports.allocate(1)}", "rtp_ports": ports.rtp_range(20)},
        "pbx": {"listen": f"127.0.0.1:{pbx_port}"},
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
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
