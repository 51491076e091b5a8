"""Access profiles ("perfis de acesso"), without a running server: the YAML,
the one check (provisioning.admins.permit) and its callers on the CLI and the
console (fake backend). A profile only ever narrows what the role allows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioning.admins import FUNCTIONS, PermissionDenied, authorize_reload, permit
from provisioning.diff import diff_configs
from provisioning.loader import ConfigError, parse_config
from provisioning.schema import Config
from tests.harness import ROOT
from tests.web_helpers import Console, aio

BASE: dict[str, Any] = {
    "rooms": [
        {"name": "a", "participant_pin": "1111", "moderator_pin": "2222", "department": "ops"},
    ],
    "profiles": {"p": {"limits": {"local": 10.0}}},
    "departments": {"ops": {"profile": "p"}, "sales": {"profile": "p"}},
    "lines": {"2001": {"area_code": "21", "department": "ops"}},
    "access_profiles": {
        "operator": ["reports", "room_actions"],
        "maintainer": ["reload", "backup"],
        "nothing": [],
    },
    "admins": [
        {"name": "ana", "role": "administrator"},
        {"name": "olga", "role": "administrator", "profile": "operator"},
        {"name": "mario", "role": "administrator", "profile": "maintainer"},
        {"name": "nina", "role": "administrator", "profile": "nothing"},
        {"name": "rita", "role": "read_only", "profile": "maintainer"},
        {
            "name": "sol",
            "role": "sub_administrator",
            "departments": ["ops"],
            "profile": "maintainer",
        },
    ],
}


def config(**changes: Any) -> Config:
    return parse_config(yaml.safe_dump({**BASE, **changes}), "test.yaml")


def test_functions_are_the_named_ones() -> None:
    assert set(FUNCTIONS) == {
        "reports",
        "room_actions",
        "reload",
        "backup",
        "schedules",
        "recordings",
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"access_profiles": {"x": ["reports", "relaod"]}}, "access_profiles.x.1"),
        ({"access_profiles": {"x": "reports"}}, "access_profiles.x"),
        ({"access_profiles": {"bad name": ["reports"]}}, "access_profiles"),
        (
            {"admins": [{"name": "z", "role": "administrator", "profile": "ghost"}]},
            "admin z has unknown access profile 'ghost'",
        ),
    ],
)
def test_an_unknown_function_or_profile_is_a_clear_yaml_error(changes, message) -> None:
    with pytest.raises(ConfigError) as err:
        config(**changes)
    assert message in str(err.value)


def test_permit_narrows_only_admins_with_a_profile() -> None:
    cfg = config()
    for function in FUNCTIONS:
        permit(cfg, "ana", function)  # no profile: today's behaviour
        permit(cfg, None, function)  # no name (admin-less appliance, root's SIGHUP)
    permit(cfg, "olga", "reports")
    permit(cfg, "olga", "room_actions")
    for function in ("reload", "backup", "schedules", "recordings"):
        with pytest.raises(PermissionDenied, match=f"operator does not include {function}"):
            permit(cfg, "olga", function)
    with pytest.raises(PermissionDenied, match="grants: nothing"):
        permit(cfg, "nina", "reports")
    with pytest.raises(PermissionDenied, match="not an admin"):
        permit(cfg, "ghost", "reports")
    with pytest.raises(ValueError, match="unknown admin function"):
        permit(cfg, "ana", "everything")


def test_a_profile_never_goes_beyond_the_role() -> None:
    cfg = config()
    changed = config(lines={"2001": {"area_code": "31", "department": "ops"}})
    changes = diff_configs(cfg, changed)
    authorize_reload(cfg, changed, "mario", changes)
    with pytest.raises(PermissionDenied, match="does not include reload"):
        authorize_reload(cfg, changed, "olga", changes)
    # A profile that grants reload does not lift read-only, nor a department.
    with pytest.raises(PermissionDenied, match="read-only"):
        authorize_reload(cfg, changed, "rita", changes)
    authorize_reload(cfg, changed, "sol", changes)  # ops is sol's
    other = config(departments={**BASE["departments"], "new": {"profile": "p"}})
    with pytest.raises(PermissionDenied, match="sub-administrator"):
        authorize_reload(cfg, other, "sol", diff_configs(cfg, other))
    # A restore's reload is the backup function's.
    nobackup = config(access_profiles={**BASE["access_profiles"], "maintainer": ["reload"]})
    authorize_reload(nobackup, changed, "mario", changes)
    with pytest.raises(PermissionDenied, match="does not include backup"):
        authorize_reload(nobackup, changed, "mario", changes, source="restore")


def _cli(cfg_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ponte.cli", *args, "--config", str(cfg_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_reports_and_backup_check_the_profile_and_change_nothing(tmp_path) -> None:
    data = {
        **BASE,
        "database": str(tmp_path / "ponte.db"),
        "state_dir": str(tmp_path),
        "control": {"socket": str(tmp_path / "control.sock")},
    }
    cfg_path = tmp_path / "ponte.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    backups = tmp_path / "backups"

    denied = _cli(cfg_path, "backup", "--as", "olga")
    assert denied.returncode == 3 and "does not include backup" in denied.stderr
    assert not backups.exists(), "nothing written"
    assert _cli(cfg_path, "backup", "list", "--as", "olga").returncode == 3
    made = _cli(cfg_path, "backup", "--as", "mario", "--parts", "rooms")
    assert made.returncode == 0, made.stderr
    archive = made.stdout.strip()
    assert Path(archive).exists()

    before = cfg_path.read_text()
    refused = _cli(cfg_path, "restore", archive, "--as", "olga")
    assert refused.returncode == 3 and "does not include backup" in refused.stderr
    assert cfg_path.read_text() == before

    no = _cli(cfg_path, "report", "audit", "--json", "--as", "mario")
    assert no.returncode == 3 and "does not include reports" in no.stderr
    assert no.stdout == ""
    yes = _cli(cfg_path, "report", "audit", "--json", "--as", "olga")
    assert yes.returncode in (0, 1), yes.stderr  # 1: no records yet, past the check
    assert "does not include" not in yes.stderr
    ghost = _cli(cfg_path, "report", "audit", "--as", "ghost")
    assert ghost.returncode == 3 and "not an admin" in ghost.stderr


def _profiled(con: Console) -> None:
    """The fake backend's config, with access profiles given to two admins."""
    data = con.backend.config.model_dump(mode="json")
    data["access_profiles"] = {"operator": ["room_actions"], "viewer": ["reports"]}
    for admin in data["admins"]:
        if admin["name"] == "boss":
            admin["profile"] = "viewer"
        if admin["name"] == "sub":
            admin["profile"] = "operator"
    con.backend.config = Config.model_validate(data)


@aio
async def test_console_checks_the_profile_for_reports_and_room_actions() -> None:
    async with Console() as con:
        _profiled(con)
        viewer, viewer_csrf = await con.login("boss")
        operator, operator_csrf = await con.login("sub")

        # Reports: the usage page and chart are the reports function's.
        assert (await viewer.get("/usage")).status == 200
        assert (await viewer.get("/usage/chart.svg")).status == 200
        for path in ("/usage", "/usage/chart.svg"):
            resp = await operator.get(path, allow_redirects=False)
            assert resp.status == 403, path
            assert "does not include reports" in (await resp.json())["error"]

        # Room actions: the viewer (an administrator) may not act, the
        # operator may in its department only (the role still applies).
        rooms = await (await viewer.get("/api/rooms")).json()
        assert not any(r["can_act"] for r in rooms["rooms"].values())
        resp = await viewer.post(
            "/api/rooms/demo/lock", json={}, headers={"X-CSRF-Token": viewer_csrf}
        )
        assert resp.status == 403
        resp = await operator.post(
            "/api/rooms/demo/lock", json={}, headers={"X-CSRF-Token": operator_csrf}
        )
        assert resp.status == 200
        resp = await operator.post(
            "/api/rooms/other/lock", json={}, headers={"X-CSRF-Token": operator_csrf}
        )
        assert resp.status == 403
        acts = [c[:3] for c in con.backend.calls if len(c) == 5]
        assert acts == [("sub", "demo", "lock")], "only the permitted action reached it"
        assert ("minutes_per_day", 30, None) in con.backend.calls, "the viewer's chart"
        assert len([c for c in con.backend.calls if c[0] == "minutes_per_day"]) == 1


@aio
async def test_console_reload_is_asked_of_the_backend_with_csrf() -> None:
    async with Console() as con:
        c, csrf = await con.login("boss")
        assert (await c.post("/api/reload", json={})).status == 403, "no CSRF token"
        resp = await c.post("/api/reload", json={}, headers={"X-CSRF-Token": csrf})
        assert resp.status == 200 and (await resp.json())["by"] == "boss"
        con.backend.deny_next = True
        resp = await c.post("/api/reload", json={}, headers={"X-CSRF-Token": csrf})
        assert resp.status == 403 and (await resp.json())["denied"] is True
        assert con.backend.calls == [("boss", "reload"), ("boss", "reload")]
        anon = await con.client()
        assert (await anon.post("/api/reload", json={})).status == 401
