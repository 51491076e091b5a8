"""`ponte backup` and `ponte restore`: self-describing archives of the
provisioning tree and the records, the last 5 kept per part.

An archive is a .tar.gz holding manifest.json (format, time, who, parts and a
SHA-256 per member), one YAML file per configuration part, the source files
verbatim, and for `usage` (and `records`, when asked for) the rows of its
tables as JSON lines with their schema revision (store/transfer.py): one
format whichever backend wrote it, so an archive made on SQLite restores on
PostgreSQL and the other way round. A restore checks the checksums, validates
the result before writing anything, replaces the records' tables in one
transaction, writes every file atomically, then reloads the running server.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import socket
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioning.admins import may_act_as, permit, who
from provisioning.files import create_private
from provisioning.loader import ConfigError, Loaded, load_tree
from provisioning.schema import Config
from store import transfer
from store.engine import UNAVAILABLE, describe
from store.migrate import open_database

# /2: the usage part is an export of rows (parts/usage.jsonl); /1 archives
# held a SQLite snapshot (parts/usage.sqlite), and still restore.
FORMAT = "ponte-backup/2"
READABLE = ("ponte-backup/1", FORMAT)
KEEP = 5  # archives kept per part, as the portal keeps the last five
# Configuration parts and the top-level keys they hold; `config` is the rest.
SECTIONS: dict[str, tuple[str, ...]] = {
    "profiles": ("profiles", "departments", "lines"),
    "extensions": ("extensions",),
    "rooms": ("rooms",),
}
# Parts held as records, and their tables.
RECORD_PARTS: dict[str, tuple[str, ...]] = {
    "usage": ("usage", "alerts"),
    # The history. Not the rows of the running nodes (calls and legs in
    # progress, PIN-guard counters, id blocks, the acc watermark): a restore
    # leaves those as they are.
    "records": (
        "calls",
        "conference_sessions",
        "conference_legs",
        "audit",
        "restores",
        "pin_known_callers",
    ),
}
# What the audit row of a restored records part names.
RECORD_OBJECTS = {"usage": "counters", "records": "history"}
# Backed up and restored only when named: the history grows with every call,
# and restoring it takes back every record written since the backup.
BY_NAME = ("records",)
PARTS = ("config", *SECTIONS, *RECORD_PARTS)


class BackupError(Exception):
    """The archive cannot be made or used; nothing was changed."""


def parse_parts(text: str | None, allowed: tuple[str, ...] = PARTS) -> list[str]:
    """`config,rooms` -> ['config', 'rooms'], refusing unknown names; none
    named: every allowed part but those taken only by name (`records`)."""
    if not text:
        return [p for p in allowed if p not in BY_NAME]
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in allowed]
    if unknown or not parts:
        raise BackupError(
            f"unknown part {', '.join(unknown) or text!r}: choose from {', '.join(allowed)}"
        )
    return list(dict.fromkeys(parts))


def keys_of(part: str, data: dict[str, Any]) -> list[str]:
    """The top-level keys a configuration part holds."""
    if part in SECTIONS:
        return list(SECTIONS[part])
    others = {k for keys in SECTIONS.values() for k in keys}
    return [k for k in data if k not in others]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dump(value: dict[str, Any]) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)


def export_records(database: str | Path, parts: list[str]) -> dict[str, bytes]:
    """The records parts' members, read from one consistent view of the database."""
    members: dict[str, bytes] = {}
    try:
        with transfer.reading(database) as conn:
            for part in parts:
                out = io.BytesIO()
                transfer.export(conn, RECORD_PARTS[part], out)
                members[f"parts/{part}.jsonl"] = out.getvalue()
    except transfer.TransferError as exc:
        raise BackupError(str(exc)) from None
    except UNAVAILABLE as exc:
        raise BackupError(f"cannot read the records at {describe(database)}: {exc}") from None
    return members


def make_backup(
    loaded: Loaded,
    config_path: Path,
    database: str | Path,
    dest: Path,
    parts: list[str],
    by: str,
) -> Path:
    """Write one archive holding `parts`; then keep only the last 5 per part."""
    records = [p for p in parts if p in RECORD_PARTS]
    members = export_records(database, records) if records else {}
    for part in parts:
        if part in RECORD_PARTS:
            continue
        keys = keys_of(part, loaded.data)
        section = {k: loaded.data[k] for k in keys if k in loaded.data}
        members[f"parts/{part}.yaml"] = _dump(section).encode()
        if part == "config":
            base = Path(config_path).parent
            for f in loaded.files:
                rel = os.path.relpath(f, base)
                members[f"files/{rel}"] = Path(f).read_bytes()
    created = dt.datetime.now(dt.UTC)
    manifest = {
        "format": FORMAT,
        "created": created.isoformat(timespec="milliseconds"),
        "by": by,
        "host": socket.gethostname(),
        "config": str(config_path),
        "parts": parts,
        "sections": {p: keys_of(p, loaded.data) for p in parts if p not in RECORD_PARTS},
        "files": {name: _sha(data) for name, data in members.items()},
    }
    dest.mkdir(parents=True, exist_ok=True)
    name = f"ponte-{created:%Y%m%d-%H%M%S-%f}-{'+'.join(parts)}.tar.gz"
    tmp = dest / f".{name}.tmp"
    # Created 0600: an archive holds SIP and trunk passwords and admin hashes.
    with os.fdopen(create_private(tmp), "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for member, data in {
            "manifest.json": json.dumps(manifest, indent=2).encode(),
            **members,
        }.items():
            info = tarfile.TarInfo(member)
            info.size, info.mtime, info.mode = len(data), int(created.timestamp()), 0o600
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, dest / name)
    prune(dest)
    return dest / name


@dataclass
class Archive:
    """An opened, checked archive."""

    path: Path
    manifest: dict[str, Any]
    members: dict[str, bytes] = field(default_factory=dict)

    @property
    def parts(self) -> list[str]:
        return list(self.manifest.get("parts", []))

    def section(self, part: str) -> dict[str, Any]:
        """The top-level keys a configuration part saved."""
        return yaml.safe_load(self.members[f"parts/{part}.yaml"]) or {}


def open_archive(path: Path) -> Archive:
    """Read an archive and verify its manifest and checksums."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {}
            for info in tar.getmembers():
                if not info.isfile() or info.name.startswith("/") or ".." in info.name.split("/"):
                    raise BackupError(f"{path}: unexpected member {info.name!r}")
                f = tar.extractfile(info)
                assert f is not None
                members[info.name] = f.read()
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise BackupError(f"{path}: not a readable backup archive ({exc})") from None
    try:
        manifest = json.loads(members.pop("manifest.json"))
    except (KeyError, ValueError):
        raise BackupError(f"{path}: no valid manifest.json") from None
    if manifest.get("format") not in READABLE:
        raise BackupError(f"{path}: format {manifest.get('format')!r} is not {FORMAT}")
    sums = manifest.get("files", {})
    if set(sums) != set(members):
        raise BackupError(f"{path}: members do not match the manifest")
    for name, data in members.items():
        if _sha(data) != sums[name]:
            raise BackupError(f"{path}: checksum mismatch for {name}: the archive is damaged")
    return Archive(path, manifest, members)


def archives(dest: Path) -> Iterator[Archive]:
    """Every readable archive in the folder, newest first."""
    found = []
    for path in sorted(Path(dest).glob("ponte-*.tar.gz")):
        try:
            found.append(open_archive(path))
        except BackupError:
            continue
    yield from sorted(found, key=lambda a: a.manifest["created"], reverse=True)


def prune(dest: Path) -> list[Path]:
    """Delete archives that are not among the last 5 of any of their parts."""
    keep: set[Path] = set()
    counts: dict[str, int] = {}
    every = list(archives(dest))
    for a in every:
        for part in a.parts:
            counts[part] = counts.get(part, 0) + 1
            if counts[part] <= KEEP:
                keep.add(a.path)
    gone = [a.path for a in every if a.path not in keep]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def list_rows(dest: Path) -> Iterator[dict[str, Any]]:
    """`ponte backup list`: one row per archive."""
    for a in archives(dest):
        yield {
            "archive": a.path.name,
            "created": a.manifest["created"],
            "by": a.manifest.get("by", ""),
            "parts": ",".join(a.parts),
            "size_kib": round(a.path.stat().st_size / 1024, 1),
            "status": "OK",
        }


# -- restore ---------------------------------------------------------------


@dataclass
class Plan:
    """What a restore would write: new text per file, and what was rejected."""

    texts: dict[Path, str]
    loaded: Loaded
    rejected: list[dict[str, str]] = field(default_factory=list)


def _splice(current: Loaded, config_path: Path, values: dict[str, Any]) -> dict[Path, str]:
    """New file texts with each top-level key's text replaced by `values`.

    Only the restored keys' text changes; comments elsewhere stay. A key kept
    in a file of its own (`key: !include f.yaml`) rewrites that file.
    """
    main = Path(config_path)
    texts: dict[Path, str] = {}
    edits: dict[Path, list[tuple[int, int, str]]] = {}

    def text_of(path: Path) -> str:
        if path not in texts:
            texts[path] = path.read_text(encoding="utf-8")
        return texts[path]

    appended = ""
    for key, value in values.items():
        span = current.sections.get(key)
        if span is not None and span.merged:
            raise BackupError(
                f"{key} is merged from several !include files; restore it into one file by hand"
            )
        if span is not None and span.whole_file:
            body = (
                _dump(value)
                if value is not None
                else ("[]\n" if key in ("rooms", "extensions") else "{}\n")
            )
            texts[Path(span.file)] = body
            continue
        if span is not None:
            new = _dump({key: value}).rstrip("\n") if value is not None else ""
            edits.setdefault(Path(span.file), []).append((span.start, span.end, new))
        elif value is not None:
            appended += _dump({key: value})
    for path, spans in edits.items():
        text = text_of(path)
        for start, end, new in sorted(spans, reverse=True):
            text = text[:start] + new + text[end:]
        texts[path] = text
    if appended:
        text = text_of(main)
        texts[main] = text + ("" if text.endswith("\n") or not text else "\n") + appended
    return texts


def _key_field(item: Any) -> str | None:
    """The field that names a list item (rooms by name, extensions by number)."""
    if not isinstance(item, dict):
        return None
    return next((k for k in ("name", "number", "user") if k in item), None)


def _item_name(section: str, item: Any, index: int | str) -> str:
    if isinstance(item, dict):
        for key in ("name", "number", "user"):
            if key in item:
                return f"{section}:{item[key]}"
    return f"{section}:{index}"


def plan_restore(archive: Archive, parts: list[str], config_path: Path) -> Plan:
    """Validate what the restore would write; reject single bad items (partial).

    An item is rejected when validation points at it (e.g. a room whose PIN is
    now another room's); the current version of that item, if any, stays.
    """
    try:
        current = load_tree(config_path)
    except ConfigError as exc:
        raise BackupError(f"the current configuration is invalid, fix it first: {exc}") from None
    values: dict[str, Any] = {}
    for part in parts:
        if part in RECORD_PARTS:
            continue
        saved = archive.section(part)
        for key in archive.manifest["sections"][part]:
            values[key] = saved.get(key)
    rejected: list[dict[str, str]] = []
    for _ in range(200):
        texts = _splice(current, config_path, values)
        try:
            return Plan(texts, load_tree(config_path, texts), rejected)
        except ConfigError as exc:
            bad = _reject(exc, values, current.data) or _reject_by_trial(
                values, current, config_path
            )
            if bad is None:
                raise BackupError(f"the restored configuration is invalid: {exc}") from None
            rejected.append({"item": bad, "error": str(exc)})
    raise BackupError("too many rejected items")


def _reject(exc: ConfigError, values: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Drop the restored item the error points at; keep the current one."""
    section, _, rest = exc.key.partition(".")
    if section not in values or not rest:
        return None
    ref: Any = rest.split(".")[0]
    if isinstance(values[section], list):
        if not ref.isdigit():
            return None
        ref = int(ref)
    return _without(values, current, section, ref)


def _without(values: dict[str, Any], current: dict[str, Any], section: str, ref: Any) -> str | None:
    """Drop one restored item (list index or mapping key) in favour of the
    current version of it; return its name, or None if there is no such item."""
    saved = values[section]
    if isinstance(saved, list) and isinstance(ref, int) and ref < len(saved):
        item = saved.pop(ref)
        key = next(
            (k for k in ("name", "number", "user") if isinstance(item, dict) and k in item), None
        )
        if key is not None:
            saved.extend(c for c in current.get(section) or [] if c.get(key) == item[key])
        return _item_name(section, item, ref)
    if isinstance(saved, dict) and ref in saved:
        saved.pop(ref)
        if ref in (current.get(section) or {}):
            saved[ref] = current[section][ref]
        return f"{section}:{ref}"
    return None


def _reject_by_trial(values: dict[str, Any], current: Loaded, config_path: Path) -> str | None:
    """A rule across objects failed (no item named): find the one restored
    item whose removal makes the whole valid, trying each in turn."""
    import copy

    for section, saved in values.items():
        refs = list(range(len(saved))) if isinstance(saved, list) else list(saved or {})
        for ref in refs:
            trial = copy.deepcopy(values)
            name = _without(trial, current.data, section, ref)
            try:
                load_tree(config_path, _splice(current, config_path, trial))
            except ConfigError:
                continue
            values.clear()
            values.update(trial)
            return name
    return None


def write_files(texts: dict[Path, str]) -> None:
    """Write every file through a temporary and rename, so none is half-written;
    if a rename fails, the files already replaced are put back."""
    temps: dict[Path, Path] = {}
    try:
        for path, text in texts.items():
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            if path.exists():
                os.chmod(name, path.stat().st_mode & 0o777)
            temps[path] = Path(name)
        old = {p: p.read_bytes() for p in texts if p.exists()}
        done: list[Path] = []
        try:
            for path, tmp in temps.items():
                os.replace(tmp, path)
                done.append(path)
        except OSError:
            for path in done:
                if path in old:
                    path.write_bytes(old[path])
            raise
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def records_of(archive: Archive, part: str) -> tuple[transfer.Header, Iterable[transfer.Row]]:
    """A records part's rows, checked: its export, or the SQLite snapshot
    that archives of format /1 held for `usage`."""
    tables = RECORD_PARTS[part]
    try:
        if f"parts/{part}.jsonl" in archive.members:
            return transfer.parse(archive.members[f"parts/{part}.jsonl"], tables)
        if f"parts/{part}.sqlite" in archive.members:
            with tempfile.TemporaryDirectory() as tmp:
                snap = Path(tmp) / f"{part}.sqlite"
                snap.write_bytes(archive.members[f"parts/{part}.sqlite"])
                return transfer.read_sqlite(snap, tables)
    except transfer.TransferError as exc:
        raise BackupError(f"{archive.path.name}: the {part} part: {exc}") from None
    raise BackupError(f"{archive.path.name} holds no {part} part")


def restore_records(
    archive: Archive, parts: list[str], database: str | Path
) -> dict[str, dict[str, tuple[int, int]]]:
    """Replace the tables of these records parts from the archive, all in one
    transaction; rows (before, after) per table, per part."""
    checked = {part: records_of(archive, part) for part in parts}
    done: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        db = open_database(database)
        try:
            with db.begin() as conn:
                for part, (header, rows) in checked.items():
                    done[part] = transfer.replace(db, conn, header, rows)
        finally:
            db.close()
    except transfer.TransferError as exc:
        raise BackupError(f"cannot restore the {', '.join(parts)} part: {exc}") from None
    except UNAVAILABLE as exc:
        raise BackupError(f"cannot reach the records at {describe(database)}: {exc}") from None
    return done


def admit(config: Config, as_name: str | None, unix_user: str, uid: int | None) -> None:
    """The one check of the `backup` function (`ponte backup`, `backup list`,
    `ponte restore`): `--as` must be an admin this Unix user (the kernel's
    word) may act as, whose access profile grants `backup`. PermissionDenied
    otherwise, before anything is read or written. Without `--as`, as before."""
    may_act_as(config, as_name, unix_user, uid)
    if as_name is not None:
        who(config, as_name, unix_user)
        permit(config, as_name, "backup")
