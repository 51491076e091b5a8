"""Audit diffs, admin roles, and backup archives, without a server."""

from __future__ import annotations

import json
import sqlite3
import tarfile
from pathlib import Path

import pytest
import yaml

from ponte import backup
from ponte.records import RecordStore
from provisioning.admins import PermissionDenied, authorize_changes, may_act_as, who
from provisioning.diff import diff_configs
from provisioning.loader import ConfigError, load_tree, parse_config

BASE = {
    "rooms": [
        {"name": "a", "participant_pin": "1111", "moderator_pin": "2222", "department": "ops"},
        {"name": "b", "participant_pin": "3333", "moderator_pin": "4444"},
    ],
    "extensions": [{"number": "1001", "password": "s3cret-Password-1"}],
    "profiles": {"p": {"limits": {"local": 10.0}}},
    "departments": {"sales": {"profile": "p"}, "ops": {"profile": "p"}},
    "lines": {
        "1001": {"area_code": "11", "department": "sales"},
        "2001": {"area_code": "21", "department": "ops"},
    },
    "admins": [
        {"name": "ana", "role": "administrator"},
        {"name": "bruno", "role": "sub_administrator", "departments": ["sales"]},
        {"name": "carla", "role": "read_only"},
    ],
}


def config(**changes):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in changes.items():
        data[key] = value
    return parse_config(yaml.safe_dump(data), "t.yaml")


def test_diff_names_objects_and_masks_secrets():
    old = config()
    rooms = [dict(r) for r in BASE["rooms"]]
    rooms[0]["participant_pin"] = "5555"
    rooms[0]["max_members"] = 10
    new = config(
        rooms=rooms,
        extensions=[
            {"number": "1001", "password": "another-Password-2"},
            {"number": "1002", "password": "brand-New-pass-3"},
        ],
        billing_cycle_day=5,
    )
    changes = {c.object: c for c in diff_configs(old, new)}
    assert set(changes) == {
        "room:a",
        "extension:1001",
        "extension:1002",
        "settings:billing_cycle_day",
    }
    room = changes["room:a"]
    assert room.action == "changed"
    assert room.fields == {"participant_pin": ("(secret)", "(changed)"), "max_members": (None, 10)}
    assert changes["extension:1002"].action == "added"
    assert changes["extension:1002"].fields["password"] == (None, "(set)")
    assert changes["settings:billing_cycle_day"].fields == {"billing_cycle_day": (1, 5)}
    text = " ".join(c.as_json() + c.describe() for c in changes.values())
    for secret in ("5555", "1111", "another-Password-2", "brand-New-pass-3", "s3cret"):
        assert secret not in text


def _lines(**area):
    lines = yaml.safe_load(yaml.safe_dump(BASE["lines"]))
    for line, code in area.items():
        lines[line.removeprefix("l")]["area_code"] = code
    return config(lines=lines)


def test_a_sub_administrator_changes_only_their_departments_lines():
    old = config()
    own, other = _lines(l1001="31"), _lines(l2001="31")
    authorize_changes(old, own, "bruno", diff_configs(old, own))
    with pytest.raises(PermissionDenied, match="not of ops"):
        authorize_changes(old, other, "bruno", diff_configs(old, other))
    authorize_changes(old, other, "ana", diff_configs(old, other))
    with pytest.raises(PermissionDenied, match="read-only"):
        authorize_changes(old, own, "carla", diff_configs(old, own))
    # Moving a line into their department from another is a change to both.
    moved = yaml.safe_load(yaml.safe_dump(BASE["lines"]))
    moved["2001"]["department"] = "sales"
    new = config(lines=moved)
    with pytest.raises(PermissionDenied):
        authorize_changes(old, new, "bruno", diff_configs(old, new))
    # Settings of the whole appliance are an administrator's.
    glob = config(billing_cycle_day=9)
    with pytest.raises(PermissionDenied, match="whole appliance"):
        authorize_changes(old, glob, "bruno", diff_configs(old, glob))


def test_roles_come_from_the_running_config_and_names_are_required():
    old = config()
    with pytest.raises(PermissionDenied, match="--as NAME"):
        who(old, None, "root")
    with pytest.raises(PermissionDenied, match="not an admin"):
        who(old, "mallory", "root")
    # Promoting oneself in the new file does not help: the old roles decide.
    admins = [dict(a) for a in BASE["admins"]]
    admins[1] = {"name": "bruno", "role": "administrator"}
    new = config(admins=admins)
    with pytest.raises(PermissionDenied):
        authorize_changes(old, new, "bruno", diff_configs(old, new))


def _mapped(**unix_users: list[str]):
    admins = [dict(a) for a in BASE["admins"]]
    for admin in admins:
        if admin["name"] in unix_users:
            admin["unix_users"] = unix_users[admin["name"]]
    return config(admins=admins)


def test_as_is_checked_against_the_unix_user():
    cfg = _mapped(ana=["alice"], bruno=["bob", "alice"])
    may_act_as(cfg, "ana", "alice", 1000)
    may_act_as(cfg, "bruno", "alice", 1000)  # one person, two admin names
    may_act_as(cfg, "bruno", "bob", 1001)
    with pytest.raises(PermissionDenied, match="Unix user bob may not act as ana: not among"):
        may_act_as(cfg, "ana", "bob", 1001)
    # An admin without unix_users is root's alone.
    with pytest.raises(PermissionDenied, match="carla lists no unix_users, so only root may"):
        may_act_as(cfg, "carla", "alice", 1000)
    for name in ("ana", "bruno", "carla"):
        may_act_as(cfg, name, "root", 0)
    # The kernel's word or nothing: no uid, no claim.
    with pytest.raises(PermissionDenied):
        may_act_as(cfg, "ana", "alice", None)
    with pytest.raises(PermissionDenied, match="not an admin"):
        may_act_as(cfg, "mallory", "alice", 1000)
    may_act_as(cfg, None, "eve", 1002)  # no claim: who() decides (and asks for --as)


def test_unix_users_must_be_user_names_listed_once():
    assert _mapped(ana=["alice", "svc_1", "Bob.x", "host$"]).admin("ana").unix_users == [
        "alice",
        "svc_1",
        "Bob.x",
        "host$",
    ]
    for bad in (["al ice"], ["-x"], ["a" * 40], ["alice", "alice"], ["root:0"]):
        with pytest.raises(ConfigError, match="unix_users"):
            _mapped(ana=bad)


def test_restore_checks_the_claim_before_writing(tmp_path, monkeypatch, capsys):
    from ponte.cli import main

    path = _tree(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["admins"] = [{"name": "ana", "role": "administrator", "unix_users": ["someone"]}]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    archive = backup.make_backup(
        load_tree(path), path, tmp_path / "p.db", tmp_path / "b", ["rooms"], "t"
    )
    data["rooms"][0]["participant_pin"] = "5555"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    before = path.read_text()
    # The CLI takes the user from the kernel (euid), not from $USER.
    monkeypatch.setenv("USER", "someone")
    monkeypatch.setenv("LOGNAME", "someone")
    monkeypatch.setattr("os.geteuid", lambda: 65534)
    code = main(["restore", str(archive), "--as", "ana", "--config", str(path)])
    assert code == 3
    assert "may not act as ana" in capsys.readouterr().err
    assert path.read_text() == before, "nothing was written"


def _tree(tmp_path: Path) -> Path:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data.pop("admins")
    data["database"] = str(tmp_path / "p.db")
    data["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "ponte.yaml"
    path.write_text("# my comment stays\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def test_backup_keeps_five_per_part_and_detects_damage(tmp_path):
    path = _tree(tmp_path)
    RecordStore(tmp_path / "p.db")
    dest = tmp_path / "backups"
    loaded = load_tree(path)
    made = [backup.make_backup(loaded, path, tmp_path / "p.db", dest, ["rooms", "usage"], "t")]
    for _ in range(6):
        made.append(backup.make_backup(loaded, path, tmp_path / "p.db", dest, ["rooms"], "t"))
    kept = sorted(dest.glob("*.tar.gz"))
    # Seven rooms backups: the five newest stay, and the oldest stays too as
    # one of the last five usage backups; only the second one goes.
    assert kept == sorted([made[0], *made[2:]])
    rows = list(backup.list_rows(dest))
    assert [r["parts"] for r in rows] == ["rooms"] * 5 + ["rooms,usage"]
    # Damage one member: the checksum refuses it.
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(kept[-1]) as src, tarfile.open(bad, "w:gz") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read()
            if info.name == "parts/rooms.yaml":
                data = data.replace(b"1111", b"1112")
            info.size = len(data)
            import io

            dst.addfile(info, io.BytesIO(data))
    with pytest.raises(backup.BackupError, match="checksum mismatch"):
        backup.open_archive(bad)


def test_restore_plan_rejects_a_conflicting_room_and_keeps_the_rest(tmp_path):
    path = _tree(tmp_path)
    archive = backup.open_archive(
        backup.make_backup(load_tree(path), path, tmp_path / "p.db", tmp_path / "b", ["rooms"], "t")
    )
    # Since the backup, department ops was removed, and room a left it: the
    # archived room a names a department that no longer exists.
    data = yaml.safe_load(path.read_text())
    data["departments"].pop("ops")
    data["lines"].pop("2001")
    data["rooms"][0].pop("department")
    data["rooms"][1]["participant_pin"] = "7777"
    path.write_text("# my comment stays\n" + yaml.safe_dump(data, sort_keys=False))
    plan = backup.plan_restore(archive, ["rooms"], path)
    assert [r["item"] for r in plan.rejected] == ["rooms:a"]
    assert "unknown department" in plan.rejected[0]["error"]
    rooms = {r.name: (r.participant_pin, r.department) for r in plan.loaded.config.rooms}
    assert rooms == {"a": ("1111", None), "b": ("3333", None)}, "a stays as it is now"
    backup.write_files(plan.texts)
    assert path.read_text().startswith("# my comment stays\n")
    restored = {r.name: r.participant_pin for r in load_tree(path).config.rooms}
    assert restored == {"a": "1111", "b": "3333"}


def test_usage_restore_replaces_the_counters_in_one_transaction(tmp_path):
    path = _tree(tmp_path)
    db = tmp_path / "p.db"
    import datetime as dt

    from lines.usage import UsageStore

    usage = UsageStore(db)
    usage.add("line:1001", dt.date(2026, 11, 1), "local", 60)
    archive_path = backup.make_backup(load_tree(path), path, db, tmp_path / "b", ["usage"], "t")
    usage.add("line:1001", dt.date(2026, 11, 1), "local", 540)
    usage.add("line:2001", dt.date(2026, 11, 1), "local", 30)
    counts = backup.restore_records(backup.open_archive(archive_path), ["usage"], db)
    assert counts["usage"]["usage"] == (2, 1)
    rows = sqlite3.connect(db).execute("SELECT key, seconds FROM usage").fetchall()
    assert rows == [("line:1001", 60.0)]


def test_audit_keeps_180_days(tmp_path):
    from provisioning.diff import Change

    store = RecordStore(tmp_path / "r.db")
    old = "2020-01-01T00:00:00.000+00:00"
    import sqlalchemy as sa

    from store.schema import audit

    with store.db.begin() as conn:
        conn.execute(
            sa.insert(audit).values(
                at=old, by="ana", source="reload", object="room:a", action="changed"
            )
        )
    assert [r["at"] for r in store.audit_rows()] == [old]
    store.audit([Change("room", "a", "changed", {"max_members": (2, 3)})], "ana", "reload")
    rows = list(store.audit_rows())
    assert len(rows) == 1 and rows[0]["at"] > old, "rows past 180 days are dropped"


def test_long_reports_stream_with_a_progress_bar_on_a_terminal(monkeypatch, capsys):
    import datetime as dt
    import io

    from ponte import reports

    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    rows = (
        {"at": dt.datetime.fromtimestamp(start + i * 86400, dt.UTC).isoformat(), "n": i}
        for i in range(30)
    )
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    out = io.StringIO()
    n = reports.emit(
        reports.with_progress(rows, "at", start, start + 30 * 86400), ("at", "n"), "json", out
    )
    assert n == 30 and len(json.loads(out.getvalue())) == 30
    assert "reading" in capsys.readouterr().err, "tqdm drew its bar on stderr"
    # A short window, or no terminal: no bar.
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    reports.emit(reports.with_progress(iter([]), "at", start, None), ("at",), "csv", io.StringIO())
    assert capsys.readouterr().err == ""
