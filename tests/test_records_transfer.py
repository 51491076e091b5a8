"""Backup, restore and `ponte db copy` on both backends (issue 18).

An archive's records are rows as JSON lines with their schema revision, so
one made on SQLite restores on PostgreSQL and the other way round; archives
of format /1 (a SQLite snapshot) still restore; `ponte db copy` moves a
release's own SQLite file into an empty PostgreSQL. Bad input changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import sqlite3
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from bridge.billing import BillingStore, LegRecord
from lines.usage import UsageStore
from ponte import backup
from ponte.cli import main
from ponte.records import CallRecord, RecordStore
from ponte.stores import Stores
from provisioning.diff import Change
from provisioning.loader import load_tree
from store.migrate import head, open_database
from store.schema import metadata
from store.transfer import copy, reading, rows_of

LEGACY = Path(__file__).parent / "data" / "records-c25aba6.sql"
T0 = 1_795_000_000.0
CYCLE = dt.date(2026, 11, 1)
USAGE = backup.RECORD_PARTS["usage"]
HISTORY = backup.RECORD_PARTS["records"]
EVERY = tuple(t.name for t in metadata.sorted_tables)


def legacy_file(path: Path) -> Path:
    """The records file release c25aba6 wrote (tests/data/records-c25aba6.sql)."""
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY.read_text())
    conn.close()
    return path


def tree(tmp_path: Path, database: str | Path) -> Path:
    path = tmp_path / "ponte.yaml"
    data = {
        "database": str(database),
        "state_dir": str(tmp_path / "state"),
        "control": {"socket": str(tmp_path / "control.sock")},
        "rooms": [{"name": "demo", "participant_pin": "1111", "moderator_pin": "2222"}],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fill(spec: str) -> None:
    """Records as a running server writes them, through the stores."""
    usage = UsageStore(spec)
    usage.add("line:1001", CYCLE, "mobile", 90.5)
    usage.add("dept:sales", CYCLE, "mobile", 90.5)
    at = dt.datetime(2026, 11, 18, 12, tzinfo=dt.UTC)
    usage.record_alert("line:1001", CYCLE, "mobile", 60, "1001", 90.5, 120.0, at)
    records = RecordStore(spec)
    for i in range(3):
        call = CallRecord(100 + i, "1001", f"1199988777{i}", T0 + 60 * i, call_type="mobile")
        call.answered, call.disposition, call.mos = T0 + 60 * i + 4, "answered", 4.3
        records.call_ended(call.row(T0 + 60 * i + 34))
    records.audit([Change("room", "demo", "changed", {"max_members": (10, 12)})], "ana", "reload")
    billing = BillingStore(spec)
    for s in range(2):
        sid = billing.open_session("demo", T0 + 1000 * s)
        for leg in range(2):
            start = T0 + 1000 * s + leg
            billing.leg_ended(
                LegRecord(
                    sid, 10 * s + leg, f"100{leg}", "participant", None, start, start + 95, "x"
                )
            )
        billing.close_session(sid, T0 + 1000 * s + 95)


def dump(spec: str | Path, names: tuple[str, ...]) -> dict[str, list[Any]]:
    """Every row of these tables, in primary-key order."""
    found: dict[str, list[Any]] = {name: [] for name in names}
    with reading(spec) as conn:
        for name, values in rows_of(conn, [metadata.tables[n] for n in names]):
            found[name].append(values)
    return found


def max_id(spec: str, table: str) -> int:
    db = open_database(spec)
    try:
        t = metadata.tables[table]
        return int(db.scalar(sa.select(sa.func.coalesce(sa.func.max(t.c.id), 0))))
    finally:
        db.close()


def new_ids_follow(spec: str) -> None:
    """New rows after a restore or a copy get ids past the loaded ones (on
    PostgreSQL a sequence left behind would clash with a loaded id)."""
    calls, alerts, sessions = (max_id(spec, t) for t in ("calls", "alerts", "conference_sessions"))
    call = CallRecord(999, "1001", "1002", T0 + 9000)
    RecordStore(spec).call_ended(call.row(T0 + 9001))
    assert max_id(spec, "calls") == calls + 1
    at = dt.datetime(2026, 11, 19, tzinfo=dt.UTC)
    UsageStore(spec).record_alert("line:7", CYCLE, "local", 80, "7", 1.0, 2.0, at)
    assert max_id(spec, "alerts") == alerts + 1
    assert BillingStore(spec).new_session_id() > sessions


@pytest.fixture
def other_spec(records_spec: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh records database on the other backend than `records_spec`."""
    if "://" in records_spec:
        return str(tmp_path / "other.db")
    return str(request.getfixturevalue("pg_url"))


def test_an_archive_restores_on_the_other_backend(
    records_spec: str, other_spec: str, tmp_path: Path
) -> None:
    fill(records_spec)
    path = tree(tmp_path, records_spec)
    assert backup.parse_parts(None) == ["config", "profiles", "extensions", "rooms", "usage"]
    made = backup.make_backup(
        load_tree(path), path, records_spec, tmp_path / "b", ["usage", "records"], "t"
    )
    archive = backup.open_archive(made)
    assert archive.manifest["format"] == backup.FORMAT
    assert sorted(archive.members) == ["parts/records.jsonl", "parts/usage.jsonl"]
    header = json.loads(archive.members["parts/usage.jsonl"].splitlines()[0])
    assert header["revision"] == head() and header["rows"] == {"usage": 2, "alerts": 1}
    # The target has rows of its own: replaced, but for the running nodes' live rows.
    UsageStore(other_spec).add("line:9", CYCLE, "local", 5.0)
    RecordStore(other_spec).call_answered("node-b", CallRecord(7, "1", "2", T0, answered=T0))
    assert backup.parse_parts(None, tuple(archive.parts)) == ["usage"], "records: when named"

    done = backup.restore_records(archive, ["usage", "records"], other_spec)

    assert done["usage"] == {"usage": (1, 2), "alerts": (0, 1)}
    assert done["records"]["calls"] == (0, 3) and done["records"]["conference_legs"] == (0, 4)
    assert dump(other_spec, USAGE + HISTORY) == dump(records_spec, USAGE + HISTORY)
    assert len(dump(other_spec, ("live_calls",))["live_calls"]) == 1, "live rows stay"
    new_ids_follow(other_spec)


def old_archive(tmp_path: Path, snapshot: Path) -> Path:
    """An archive as format /1 made them: the whole records file as the usage part."""
    members = {"parts/usage.sqlite": snapshot.read_bytes()}
    manifest = {
        "format": "ponte-backup/1",
        "created": "2026-11-20T10:00:00.000+00:00",
        "by": "t",
        "host": "old",
        "config": "/etc/ponte/ponte.yaml",
        "parts": ["usage"],
        "sections": {},
        "files": {n: hashlib.sha256(d).hexdigest() for n, d in members.items()},
    }
    path = tmp_path / "ponte-20261120-100000-000000-usage.tar.gz"
    write_tar(path, {"manifest.json": json.dumps(manifest).encode(), **members})
    return path


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_an_old_archive_with_a_sqlite_snapshot_restores(
    records_spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = legacy_file(tmp_path / "old.db")
    archive = old_archive(tmp_path, legacy)
    UsageStore(records_spec).add("line:9", CYCLE, "local", 5.0)
    path = tree(tmp_path, records_spec)

    code = main(["restore", str(archive), "--config", str(path), "--by", "bob"])

    assert code == 0, capsys.readouterr()
    assert "restore success: usage" in capsys.readouterr().out
    assert dump(records_spec, USAGE) == dump(legacy, USAGE)
    assert [r["object"] for r in RecordStore(records_spec).audit_rows()] == ["usage:counters"]
    new_ids_follow(records_spec)


def rewrite(src: Path, dest: Path, member: str, change: Callable[[bytes], bytes]) -> Path:
    """A copy of the archive with one member changed and its checksum made to match."""
    with tarfile.open(src) as tar:
        members = {}
        for info in tar.getmembers():
            f = tar.extractfile(info)
            assert f is not None
            members[info.name] = f.read()
    manifest = json.loads(members.pop("manifest.json"))
    members[member] = change(members[member])
    manifest["files"][member] = hashlib.sha256(members[member]).hexdigest()
    write_tar(dest, {"manifest.json": json.dumps(manifest).encode(), **members})
    return dest


def _header(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        first, rest = data.split(b"\n", 1)
        header = json.loads(first)
        change(header)
        return json.dumps(header).encode() + b"\n" + rest

    return edit


BAD_PARTS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "newer revision": (
        _header(lambda h: h.update(revision="9999_from_a_newer_ponte")),
        "newer than this ponte's",
    ),
    "a row missing": (lambda d: d.rstrip(b"\n").rsplit(b"\n", 1)[0] + b"\n", "incomplete"),
    "a row that does not fit": (
        lambda d: d.replace(b'["usage",["dept:sales"', b'["usage",[null'),
        "do not fit the schema",
    ),
    "an unknown column": (
        _header(lambda h: h["columns"]["usage"].__setitem__(3, "minutes")),
        "has no column minutes",
    ),
    "not an export": (lambda d: b"PK\x03\x04" + d, "no valid header"),
}


def test_bad_archives_are_refused_and_change_nothing(
    records_spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(records_spec)
    path = tree(tmp_path, records_spec)
    good = backup.make_backup(load_tree(path), path, records_spec, tmp_path / "b", ["usage"], "t")
    UsageStore(records_spec).add("line:1001", CYCLE, "mobile", 30.0)
    UsageStore(records_spec).add("line:9", CYCLE, "local", 5.0)
    before = dump(records_spec, USAGE)

    for case, (change, error) in BAD_PARTS.items():
        bad = rewrite(good, tmp_path / "bad.tar.gz", "parts/usage.jsonl", change)
        with pytest.raises(backup.BackupError, match=error):
            backup.restore_records(backup.open_archive(bad), ["usage"], records_spec)
        assert dump(records_spec, USAGE) == before, case
    # Through the CLI: refused, recorded, nothing changed.
    code = main(["restore", str(bad), "--config", str(path), "--by", "bob"])
    assert code == 1
    assert "restore failed, nothing changed" in capsys.readouterr().err
    (row,) = RecordStore(records_spec).restore_rows()
    assert row["status"] == "error" and "no valid header" in row["detail"]
    # A damaged archive is refused before anything is read from it.
    tampered = tmp_path / "tampered.tar.gz"
    rewrite(good, tampered, "parts/usage.jsonl", lambda d: d)
    with tarfile.open(tampered) as tar:
        members = {i.name: tar.extractfile(i).read() for i in tar.getmembers()}  # type: ignore[union-attr]
    members["parts/usage.jsonl"] = members["parts/usage.jsonl"].replace(b"90.5", b"0.5")
    write_tar(tampered, members)
    with pytest.raises(backup.BackupError, match="checksum mismatch"):
        backup.open_archive(tampered)
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(backup.BackupError, match="not a readable backup archive"):
        backup.open_archive(corrupt)
    assert dump(records_spec, USAGE) == before


def test_db_copy_moves_a_legacy_file_to_postgresql(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = legacy_file(tmp_path / "ponte.db")
    untouched = legacy.read_bytes()
    path = tree(tmp_path, legacy)

    assert main(["db", "copy", "--to", pg_url, "--config", str(path)]) == 0

    out = capsys.readouterr().out
    assert "conference_legs" in out and "set `database:`" in out
    copied = dump(pg_url, EVERY)
    assert copied == dump(legacy, EVERY)
    assert len(copied["calls"]) == 3 and len(copied["conference_sessions"]) == 3
    assert copied["id_blocks"] == [["conference_sessions", 59]], "above session 58"
    assert legacy.read_bytes() == untouched, "the source file is only read"
    # The node that was carrying calls starts on PostgreSQL and closes them.
    node = Stores(pg_url, tmp_path / "state", node="node-a")
    node.open()
    assert node.close_crashed() == (1, 1, 1)
    new_ids_follow(pg_url)

    # Copying again: the target holds records now; refused, nothing changed.
    before = dump(pg_url, EVERY)
    assert main(["db", "copy", "--to", pg_url, "--config", str(path)]) == 2
    assert "already holds records: alerts (2 rows), audit (1 rows)" in capsys.readouterr().err
    assert dump(pg_url, EVERY) == before

    # And back from PostgreSQL to a file of its own (one machine again).
    back = tmp_path / "back.db"
    counts = copy(pg_url, back)
    assert counts["calls"] == 5 and dump(back, EVERY) == dump(pg_url, EVERY)


def test_a_copy_that_fails_leaves_the_target_empty(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = legacy_file(tmp_path / "ponte.db")
    # SQLite never enforced the foreign key: a leg of a session that is gone.
    with sqlite3.connect(legacy) as conn:
        conn.execute("UPDATE conference_legs SET session_id = 4242 WHERE id = 4")
    path = tree(tmp_path, legacy)

    assert main(["db", "copy", "--to", pg_url, "--config", str(path)]) == 2

    err = capsys.readouterr().err
    assert "copy refused, nothing changed" in err and "conference_legs" in err
    left = dump(pg_url, EVERY)
    assert left.pop("id_blocks") == [["conference_sessions", 1]], "as a new database has it"
    assert not any(left.values())


def test_db_copy_waits_for_the_server_to_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket
    import threading

    legacy = legacy_file(tmp_path / "ponte.db")
    path = tree(tmp_path, legacy)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "control.sock"))
    server.listen()

    def answer() -> None:
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b'{"calls": 1}\n')
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    target = tmp_path / "new.db"
    assert main(["db", "copy", "--to", str(target), "--config", str(path)]) == 2
    server.close()
    assert "the app server is running: stop it first" in capsys.readouterr().err
    assert not target.exists()
