"""`ponte install`: systemd units, /etc/ponte/ponte.yaml and the state directory.

The units are rendered with the absolute path of this virtual environment's
`ponte`, so the service runs exactly the code that set-up installed.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from provisioning.loader import EXAMPLE

UNITS_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNITS = (
    "ponte.service",
    "ponte-kamailio.service",
    "ponte-rtpengine.service",
    # Several nodes (README "More than one node"): every core of this
    # machine, and one node on a machine of its own.
    "ponte-nodes.service",
    "ponte@.service",
)


def ponte_binary() -> Path:
    """The `ponte` console script next to this interpreter."""
    return Path(sys.executable).parent / "ponte"


def render_unit(name: str, ponte: Path) -> str:
    """A unit file with @PONTE@ replaced."""
    return (UNITS_DIR / f"{name}.in").read_text().replace("@PONTE@", str(ponte))


def install(root: Path, create_user: bool = False) -> Iterator[str]:
    """Install under `root` ("/" for the real thing); yields what it did."""
    ponte = ponte_binary()
    units = root / "etc/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    for name in UNITS:
        (units / name).write_text(render_unit(name, ponte))
        yield f"unit      {units / name}"
    if create_user:
        try:
            pwd.getpwnam("ponte")
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--home-dir",
                    "/var/lib/ponte",
                    "--shell",
                    "/usr/sbin/nologin",
                    "ponte",
                ],
                check=True,
            )
            yield "user      ponte (system)"
    etc = root / "etc/ponte"
    etc.mkdir(parents=True, exist_ok=True)
    config = etc / "ponte.yaml"
    if config.exists():
        yield f"config    {config} (kept: it exists)"
    else:
        # The example's paths are already the units' directories (/var/lib/ponte,
        # /var/cache/ponte, /run/ponte, /etc/ponte).
        config.write_text(EXAMPLE.read_text())
        yield f"config    {config}"
    # Passwords live in it: root writes it, the service's group reads it.
    os.chmod(config, 0o640)
    with contextlib.suppress(KeyError):
        os.chown(config, 0, grp.getgrnam("ponte").gr_gid)
    for d in ("var/lib/ponte", "var/cache/ponte"):
        (root / d).mkdir(parents=True, exist_ok=True)
        yield f"directory {root / d}"
    if create_user and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        yield "systemd   daemon-reload (enable with: systemctl enable --now ponte)"
