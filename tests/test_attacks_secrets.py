"""Secrets are never world-readable, and the example's placeholder passwords
never face a network (issue 16, item 7; the attack suite: tests/attack_helpers.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.pbx_helpers import pbx_overrides


def test_secrets_are_not_readable_by_other_users(server_factory, tmp_path: Path) -> None:
    """Started from a shell whose umask is 022, ponte still writes nothing
    world-readable: the records, Kamailio's database (plaintext SIP
    passwords), its config and the Record-Route secret are 0600, a backup
    archive too; `ponte install`'s ponte.yaml is 0640."""
    import os
    import stat

    from tests.harness import cli

    old = os.umask(0o022)
    try:
        srv = server_factory(**pbx_overrides())
        done = cli(srv, "backup", "--parts", "rooms,usage", "--by", "tester")
        assert done.returncode == 0, done.stderr
    finally:
        os.umask(old)
    state = Path(srv.config["state_dir"])
    kam = state / "kamailio"

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    for secret in (
        Path(srv.config["database"]),
        kam / "kamailio.db",
        kam / "acc.db",
        kam / "kamailio.cfg",
        kam / "rr.secret",
        *sorted((state / "backups").glob("ponte-*.tar.gz")),
    ):
        assert mode(secret) == 0o600, (secret, oct(mode(secret)))
    assert list((state / "backups").glob("ponte-*.tar.gz")), "a backup was made"
    readable = [str(p) for p in state.rglob("*") if p.is_file() and mode(p) & stat.S_IROTH]
    assert readable == [], readable
    root = tmp_path / "root"
    done = subprocess.run(
        [sys.executable, "-m", "ponte.cli", "install", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert mode(root / "etc/ponte/ponte.yaml") == 0o640


def test_the_examples_passwords_never_face_a_network(tmp_path: Path) -> None:
    """The shipped placeholder passwords (`troque-esta-senha-N`) are refused
    by `ponte serve` once pbx.listen is a LAN address (exit 2, nothing
    started), and `ponte check` says so; on loopback they only warn."""
    import yaml

    example = yaml.safe_load(
        (Path(__file__).parent.parent / "provisioning" / "example.yaml").read_text()
    )
    example["pbx"]["listen"] = "198.51.100.1:5060"
    example["database"] = str(tmp_path / "ponte.db")
    example["state_dir"] = str(tmp_path / "state")
    example["control"] = {"socket": str(tmp_path / "control.sock")}
    path = tmp_path / "lan.yaml"
    path.write_text(yaml.safe_dump(example))
    run = [sys.executable, "-m", "ponte.cli"]
    serve = subprocess.run(
        [*run, "serve", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert serve.returncode == 2, serve.stderr
    assert "placeholder password" in serve.stderr and "faces the network" in serve.stderr
    assert not (tmp_path / "state").exists(), "nothing was started"
    check = subprocess.run(
        [*run, "check", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert "ponte serve will not start" in check.stdout, check.stdout
