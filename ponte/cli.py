"""The `ponte` command: serve, check, prompts, status."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioning.files import set_umask
from provisioning.loader import EXAMPLE, ConfigError, load_config, load_tree
from store.engine import UNAVAILABLE, describe, exists

if TYPE_CHECKING:
    from provisioning.schema import Config

EXIT_CONFIG = 2
EXIT_DENIED = 3  # the admin named by --as may not do this


# Libraries that log every packet at DEBUG: kept at INFO even with
# --log-level debug (one line per RTP packet would swamp the log and the loop).
QUIET_LIBRARIES = ("aiortc", "aioice", "aiohttp.access", "asyncio")


def _setup_logging(level: str) -> None:
    from ponte.journal import JournalHandler, wanted

    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, getattr(logging, level.upper())))
    journal = wanted()
    if journal:
        # Under systemd: straight to the journal, with CALL_LEG/ROOM/LINE fields.
        logging.basicConfig(
            level=getattr(logging, level.upper()),
            handlers=[JournalHandler(journal)],
            format="%(name)s: %(message)s",
        )
        return
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _load(path: str | None):  # type: ignore[no-untyped-def]
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"ponte: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the file and print what would run."""
    cfg = _load(args.config)
    print(f"{args.config or EXAMPLE}: OK")
    print(f"SIP        {cfg.sip.listen} (RTP {cfg.sip.rtp_ports})")
    for a in cfg.access_numbers:
        print(f"access     sip:{a.user}@{cfg.sip.listen} -> conference entry ({a.language})")
    for r in cfg.rooms:
        pins = f"participant PIN {r.participant_pin}, moderator PIN {r.moderator_pin}"
        extra = f"level {r.security_level}, signal {r.entry_signal}"
        if r.counter_pin:
            extra += ", counter-PIN"
        if r.counter_pins:
            extra += f", {len(r.counter_pins)} individual counter-PINs"
        if r.issued:
            extra += f", issued {r.issued}"
        print(f"room       {r.name}: {pins} ({extra})")
    print(f"records    {describe(cfg.database)}")
    print(
        f"prompts    {cfg.prompts.cache_dir}"
        + (f" (overrides {cfg.prompts.override_dir})" if cfg.prompts.override_dir else "")
    )
    print(f"control    {cfg.control.socket}")
    from provisioning.advice import network_notes, password_warnings, refusals

    for level, note in network_notes(cfg):
        print(f"{level:<10} {note}")
    for warning in password_warnings(cfg):
        print(f"{'warning':<10} {warning}")
    for why in refusals(cfg):
        print(f"{'refused':<10} ponte serve will not start: {why}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the app server until SIGTERM/SIGINT."""
    cfg = _load(args.config)
    from provisioning.advice import refusals

    refused = refusals(cfg)
    if refused:
        for why in refused:
            logging.getLogger("ponte").error("refusing to start: %s", why)
        return EXIT_CONFIG
    from pbx.kamailio import KamailioError
    from pbx.sipua import SipError
    from ponte import nodeconf
    from ponte.database import DatabaseRefused
    from ponte.server import AppServer

    path = Path(args.config) if args.config else EXAMPLE
    settings = nodeconf.from_arguments(args)
    entry = cfg.node(args.node) if args.node else None
    if entry is not None:
        # A node of the YAML's `nodes:`, on its own machine.
        if args.nodes not in (None, 1):
            logging.getLogger("ponte").error(
                "refusing to start: --node %s is one node of `nodes:`; --nodes is the edge's",
                entry.name,
            )
            return EXIT_CONFIG
        settings = nodeconf.for_entry(entry, settings)
    elif settings.edge_state is None:
        n = args.nodes if args.nodes is not None else (0 if cfg.nodes else 1)
        if n != 1 or cfg.nodes:
            return _serve_nodes(cfg, path, args, n)
    server = AppServer(
        settings.apply(cfg),
        config_path=path,
        run_kamailio=not args.no_kamailio and not settings.edge_elsewhere,
        node=args.node,
        settings=settings,
    )
    server.install_signal_handlers()
    try:
        server.start()
    except DatabaseRefused as exc:
        # Exit 2: systemd must not restart into the same refusal (RestartPreventExitStatus).
        logging.getLogger("ponte").error("refusing to start: %s", exc)
        return EXIT_CONFIG
    except (SipError, KamailioError, OSError) as exc:
        logging.getLogger("ponte").error("cannot start: %s", exc)
        return 1
    server.serve_forever()
    return 0


def _serve_nodes(cfg: Config, path: Path, args: argparse.Namespace, n: int) -> int:
    """`ponte serve --nodes N`: the edge and N app-server children (ponte/nodes.py),
    in front of the YAML's `nodes:` too (N may be 0 then: the edge alone)."""
    from pbx.kamailio import KamailioError
    from ponte.nodes import Supervisor
    from store.engine import is_postgres

    fail = logging.getLogger("ponte").error
    if n < 0 or (n == 0 and not cfg.nodes):
        fail(
            "refusing to start: --nodes must be at least 1 (0 runs the edge alone, "
            "in front of the YAML's `nodes:`, and it lists none)"
        )
        return EXIT_CONFIG
    if not is_postgres(cfg.database):
        fail(
            "refusing to start: --nodes %d needs `database:` to be a PostgreSQL URL "
            "(the nodes share their records), not %s",
            n,
            describe(cfg.database),
        )
        return EXIT_CONFIG
    try:
        supervisor = Supervisor(cfg, path, n, args.log_level)
    except ValueError as exc:  # an RTP range too small to split, a name taken twice
        fail("refusing to start: %s", exc)
        return EXIT_CONFIG
    try:
        return supervisor.run()
    except (KamailioError, OSError) as exc:
        fail("cannot start: %s", exc)
        return 1


def cmd_prompts(args: argparse.Namespace) -> int:
    """Render every prompt of the catalogue into the cache."""
    cfg = _load(args.config)
    from ivr.prompts import PromptLibrary

    lib = PromptLibrary(cfg.prompts.cache_dir, cfg.prompts.override_dir, rate=cfg.sip.clock_rate)
    n = lib.render_all()
    print(f"rendered {n} prompts into {cfg.prompts.cache_dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Ask a running server for its calls, rooms and conference ports."""
    cfg = _load(args.config)
    from ponte.control import request

    try:
        print(json.dumps(request(Path(cfg.control.socket), "status"), indent=2))
    except OSError as exc:
        print(f"ponte: cannot reach the server at {cfg.control.socket}: {exc}", file=sys.stderr)
        return 1
    return 0


def _fmt(args: argparse.Namespace) -> str:
    chosen: str | None = getattr(args, "format", None)
    return chosen or ("json" if args.json else "csv" if args.csv else "table")


def cmd_report(args: argparse.Namespace) -> int:
    """Reports from the records: a table, or CSV / JSON, streamed."""
    cfg = _load(args.config)
    from ponte import reports
    from provisioning.admins import PermissionDenied, may_act_as, permit

    try:
        uid, unix_user = _unix_identity()
        may_act_as(cfg, args.as_name, unix_user, uid)
        permit(cfg, args.as_name, "reports")
        if args.what in ("recordings", "schedules"):
            permit(cfg, args.as_name, args.what)
    except PermissionDenied as exc:
        print(f"ponte: {exc}", file=sys.stderr)
        return EXIT_DENIED

    if not exists(cfg.database):
        print(f"ponte: no records yet at {describe(cfg.database)}", file=sys.stderr)
        return 1
    try:
        start = reports.parse_day(args.date_from, args.tz) if args.date_from else None
        end = reports.parse_day(args.date_to, args.tz, end=True) if args.date_to else None
    except ValueError as exc:
        print(f"ponte: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    fmt = _fmt(args)
    if fmt == "xlsx" and not args.output:
        print("ponte: --format xlsx writes a file: give --output FILE.xlsx", file=sys.stderr)
        return EXIT_CONFIG
    if args.output and not Path(args.output).parent.is_dir():
        print(f"ponte: --output: no folder {Path(args.output).parent}", file=sys.stderr)
        return EXIT_CONFIG

    def put(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
        """The rows in the asked format, to stdout or --output."""
        if fmt == "xlsx":
            reports.write_xlsx(rows, columns, Path(args.output), title=args.what)
        elif args.output:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                reports.emit(rows, columns, fmt, out)
        else:
            reports.emit(rows, columns, fmt)

    if args.what == "usage":
        put(reports.usage_rows(cfg, args.line, args.department), reports.USAGE_COLUMNS)
        return 0
    if args.what in ("conferences", "participants"):
        from bridge.billing import BillingStore

        store = BillingStore(cfg.database)
        if args.what == "conferences":
            rows = reports.with_progress(
                store.sessions(args.room, start, end), "started_at", start, end
            )
            put(rows, reports.SESSION_COLUMNS)
            return 0
        if args.session is None:
            print("ponte: report participants needs a SESSION id", file=sys.stderr)
            return EXIT_CONFIG
        put(store.legs(args.session), reports.LEG_COLUMNS)
        return 0
    if args.what == "recordings":
        from ponte.recordings import COLUMNS, RecordingStore, report_rows

        lo, hi = reports.iso_bound(start), reports.iso_bound(end)
        found = RecordingStore(cfg.database).rows(args.room, lo, hi)
        put(report_rows(found, fmt), COLUMNS)
        return 0
    if args.what == "schedules":
        from ponte.scheduler import REPORT_COLUMNS, ScheduleStore
        from ponte.scheduler import report_rows as schedule_rows

        schedules = [
            r
            for r in ScheduleStore(cfg.database).rows()
            if (not args.room or r["room"] == args.room)
            and (start is None or r["at"] >= start)
            and (end is None or r["at"] < end)
        ]
        put(schedule_rows(schedules), REPORT_COLUMNS)
        return 0
    if args.what == "alerts":
        put(_alert_rows(cfg, args.line, start, end), reports.ALERT_COLUMNS)
        return 0
    from ponte.records import RecordStore

    records = RecordStore(cfg.database)
    lo, hi = reports.iso_bound(start), reports.iso_bound(end)
    if args.what == "audit":
        rows = records.audit_rows(lo, hi, args.object, args.user)
        columns = reports.AUDIT_COLUMNS if fmt == "table" else (*reports.AUDIT_COLUMNS, "changes")
        put(reports.with_progress(rows, "at", start, end), columns)
    elif args.what == "restores":
        put(records.restore_rows(lo, hi), reports.RESTORE_COLUMNS)
    else:  # calls
        rows = records.call_rows(lo, hi, args.line)
        put(reports.with_progress(rows, "started_at", start, end), reports.CALL_COLUMNS)
    return 0


def _alert_rows(cfg, line: str | None, start: float | None, end: float | None):  # type: ignore[no-untyped-def]
    """The alerts history: every 60/80/100 % mark sent, oldest first."""

    from lines.usage import UsageStore

    for a in UsageStore(cfg.database).alerts():
        if line and a["line"] != line:
            continue
        at = dt.datetime.fromisoformat(a["at"]).timestamp()
        if (start is not None and at < start) or (end is not None and at >= end):
            continue
        yield {
            **a,
            "used_min": round((a["used"] or 0) / 60, 2),
            "limit_min": round((a["limit_seconds"] or 0) / 60, 2),
        }


def _unix_identity() -> tuple[int, str]:
    """This process's uid and Unix user, the kernel's word, as the control
    socket takes it (getpass reads $USER, which anyone sets)."""
    import os
    import pwd

    uid = os.geteuid()
    try:
        return uid, pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid, f"#{uid}"


def _identity(args: argparse.Namespace) -> dict[str, str]:
    """--as / --by for commands that change state (the server checks them)."""
    who: dict[str, str] = {}
    if getattr(args, "as_name", None):
        who["as"] = args.as_name
    if getattr(args, "by", None):
        who["by"] = args.by
    return who


def _change(cfg: Config, cmd: str, refused: str, **args: Any) -> tuple[int, dict[str, Any]]:
    """Send a state-changing command; exit 1 unreachable, 3 denied, 2 refused."""
    from ponte.control import request

    try:
        answer = request(Path(cfg.control.socket), cmd, **args)
    except OSError as exc:
        print(f"ponte: cannot reach the server at {cfg.control.socket}: {exc}", file=sys.stderr)
        return 1, {}
    if not answer.get("ok"):
        print(f"ponte: {refused}{answer.get('error')}", file=sys.stderr)
        return (EXIT_DENIED if answer.get("denied") else EXIT_CONFIG), answer
    return 0, answer


def cmd_room(args: argparse.Namespace) -> int:
    """An admin action on a live room: lock, mute, kick, end..."""
    cfg = _load(args.config)
    code, answer = _change(
        cfg, "room", "", action=args.action, room=args.room, member=args.member, **_identity(args)
    )
    if code == 0:
        print(f"room {args.room}: {args.action} done (by {answer.get('by')})")
    return code


def cmd_schedule(args: argparse.Namespace) -> int:
    """Scheduled dial-out: add, list, cancel (through the running server)."""
    cfg = _load(args.config)
    if args.action == "list":
        code, answer = _change(cfg, "schedule", "", action="list", **_identity(args))
        if code == 0:
            from ponte.reports import emit

            rows = [
                {
                    **s,
                    "numbers": ",".join(s["numbers"]),
                    "answered": sum(1 for c in s["calls"] if c.get("answered_at")),
                    "calls": len(s["calls"]),
                }
                for s in answer.get("schedules", [])
            ]
            emit(rows, SCHEDULE_LIST_COLUMNS, _fmt(args))
        return code
    if args.action == "cancel":
        if args.target is None:
            print("ponte: schedule cancel needs the schedule's ID", file=sys.stderr)
            return EXIT_CONFIG
        code, answer = _change(
            cfg, "schedule", "", action="cancel", id=args.target, **_identity(args)
        )
        if code == 0:
            print(f"schedule {answer.get('id')} cancelled (by {answer.get('by')})")
        return code
    if args.target is None or args.at is None or (args.numbers is None and not args.moderator):
        print("ponte: schedule add needs ROOM --at ISO-TIME --numbers N1,N2,...", file=sys.stderr)
        return EXIT_CONFIG
    request: dict[str, Any] = {
        "action": "add",
        "room": args.target,
        "at": args.at,
        "numbers": args.numbers or "",
        "moderator_first": args.moderator_first,
    }
    if args.moderator:
        request["moderator"] = args.moderator
    code, answer = _change(cfg, "schedule", "", **request, **_identity(args))
    if code == 0:
        print(f"schedule {answer.get('id')} added for room {args.target} (by {answer.get('by')})")
    return code


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the running server to re-read its file; exit 2 if it refused, 3 if denied."""
    cfg = _load(args.config)
    code, answer = _change(cfg, "reload", "reload refused: ", **_identity(args))
    if code == 0:
        print(f"reloaded: {answer.get('changes', 0)} objects changed (by {answer.get('by')})")
    return code


def _backups_dir(cfg, args: argparse.Namespace) -> Path:  # type: ignore[no-untyped-def]
    return Path(args.dir) if getattr(args, "dir", None) else Path(cfg.state_dir) / "backups"


def cmd_backup(args: argparse.Namespace) -> int:
    """Write a backup archive (or list them with `ponte backup list`)."""
    import getpass

    from ponte import backup
    from ponte.reports import emit

    path = Path(args.config) if args.config else EXAMPLE
    try:
        loaded = load_tree(path)
    except ConfigError as exc:
        print(f"ponte: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from provisioning.admins import PermissionDenied

    uid, unix_user = _unix_identity()
    try:
        backup.admit(loaded.config, args.as_name, unix_user, uid)
    except PermissionDenied as exc:
        print(f"ponte: {exc}", file=sys.stderr)
        return EXIT_DENIED
    dest = _backups_dir(loaded.config, args)
    if args.action == "list":
        columns = ("archive", "created", "by", "parts", "size_kib", "status")
        emit(backup.list_rows(dest), columns, _fmt(args))
        return 0
    try:
        parts = backup.parse_parts(args.parts)
        archive = backup.make_backup(
            loaded,
            path,
            loaded.config.database,
            dest,
            parts,
            args.as_name or args.by or getpass.getuser(),
        )
    except backup.BackupError as exc:
        print(f"ponte: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(archive)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore parts of an archive: validate, write atomically, reload, record."""
    from ponte import backup
    from ponte.control import request
    from ponte.records import RecordStore
    from provisioning.admins import (
        PermissionDenied,
        authorize,
        authorize_changes,
        who,
    )
    from provisioning.diff import Change, diff_configs

    path = Path(args.config) if args.config else EXAMPLE
    cfg = _load(str(path))
    # --as is checked against the kernel's word before a file is written.
    uid, unix_user = _unix_identity()
    records = RecordStore(cfg.database)
    archive_path = Path(args.archive)
    if not archive_path.exists() and not archive_path.is_absolute():
        archive_path = _backups_dir(cfg, args) / args.archive
    by = args.as_name or args.by or unix_user
    parts: list[str] = []

    def failed(message: str, code: int) -> int:
        print(f"ponte: restore failed, nothing changed: {message}", file=sys.stderr)
        records.restore_done(str(archive_path), parts, "error", by, message)
        return code

    try:
        backup.admit(cfg, args.as_name, unix_user, uid)
        by = (
            args.by
            if args.by and not cfg.admins and not args.as_name
            else who(cfg, args.as_name, unix_user)
        )
        archive = backup.open_archive(archive_path)
        parts = backup.parse_parts(args.parts, tuple(archive.parts))
        yaml_parts = [p for p in parts if p not in backup.RECORD_PARTS]
        record_parts = [p for p in parts if p in backup.RECORD_PARTS]
        plan = backup.plan_restore(archive, yaml_parts, path) if yaml_parts else None
        changes = diff_configs(cfg, plan.loaded.config) if plan else []
        authorize_changes(cfg, plan.loaded.config if plan else cfg, args.as_name, changes)
        if record_parts:
            authorize(cfg, args.as_name, {None})  # records belong to the whole appliance
    except backup.BackupError as exc:
        return failed(str(exc), EXIT_CONFIG)
    except PermissionDenied as exc:
        return failed(str(exc), EXIT_DENIED)
    detail: dict[str, Any] = {"rejected": plan.rejected if plan else []}
    # The records first: one transaction, so if it fails no file was written either.
    if record_parts:
        try:
            restored = backup.restore_records(archive, record_parts, cfg.database)
        except backup.BackupError as exc:
            return failed(str(exc), 1)
        records.audit(
            [
                Change(
                    part,
                    backup.RECORD_OBJECTS[part],
                    "restored",
                    {f"{t}.rows": v for t, v in counts.items()},
                )
                for part, counts in restored.items()
            ],
            by,
            "restore",
            unix_user,
        )
    if plan and plan.texts:
        backup.write_files(plan.texts)
    identity = {"as": args.as_name} if args.as_name else {"by": by}
    try:
        answer = request(Path(cfg.control.socket), "reload", source="restore", **identity)
        if not answer.get("ok"):
            detail["reload"] = answer.get("error")
    except OSError:
        # No server running: the audit rows come from here instead.
        records.audit(changes, by, "restore", unix_user)
        detail["reload"] = "no running server; the next start uses the restored files"
    status = (
        "partial" if detail["rejected"] or "error" in str(detail.get("reload", "")) else "success"
    )
    if detail.get("reload") and not detail["reload"].startswith("no running"):
        status = "partial"
    records.restore_done(str(archive_path), parts, status, by, detail)
    what = f"{', '.join(parts)} from {archive_path.name}"
    print(f"restore {status}: {what}, {len(changes)} objects changed")
    for item in detail["rejected"]:
        print(f"  rejected {item['item']}: {item['error']}")
    if detail.get("reload"):
        print(f"  {detail['reload']}")
    return 0 if status == "success" else 1


def cmd_db(args: argparse.Namespace) -> int:
    """`ponte db copy --to URL`: every ponte table from the configured database
    into an empty one (from one machine's SQLite file to a shared PostgreSQL)."""
    cfg = _load(args.config)
    from ponte.control import request
    from store.engine import UNAVAILABLE
    from store.transfer import TransferError, copy

    try:
        request(Path(cfg.control.socket), "status")
        print(
            "ponte: the app server is running: stop it first, or the records it "
            "writes during and after the copy stay behind",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    except OSError:
        pass  # no server on this configuration: nothing writes the records
    try:
        counts = copy(cfg.database, args.to)
    except TransferError as exc:
        print(f"ponte: copy refused, nothing changed: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except UNAVAILABLE as exc:
        print(f"ponte: copy failed, nothing changed: {exc}", file=sys.stderr)
        return 1
    for table, rows in counts.items():
        print(f"{table:<20} {rows:>9} rows")
    print(f"copied {describe(cfg.database)} into {describe(args.to)}")
    print("next: set `database:` to that URL in the YAML, then start ponte")
    return 0


def cmd_dial_check(args: argparse.Namespace) -> int:
    """Print the line-profile decision for one dialed number, as JSON."""
    cfg = _load(args.config)

    from lines.policy import decide

    try:
        at = dt.datetime.fromisoformat(args.at) if args.at else dt.datetime.now(dt.UTC)
        if at.tzinfo is None:
            raise ValueError("--at needs a UTC offset, e.g. 2026-11-23T10:00:00-03:00")
    except ValueError as exc:
        print(f"ponte: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    used = _usage_reader(cfg)
    print(json.dumps(decide(cfg, args.line, args.number, at, used).as_json()))
    return 0


def _usage_reader(cfg: Config) -> Callable[[str, dt.date, Iterable[str]], float]:
    """Usage from the configured database; nothing used if there is none yet."""
    if not exists(cfg.database):
        return lambda _k, _c, _t: 0.0
    from lines.usage import UsageStore

    return UsageStore(cfg.database).used


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the provisioning file (for editors)."""
    from provisioning.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    """Read a web console password and print its scrypt hash for admins[].password_hash."""
    import getpass

    from web.auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass(f"web console password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("ponte: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 10:
        print("ponte: the password needs at least 10 characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    print(f"paste it as password_hash of admin {args.name} in the YAML", file=sys.stderr)
    return 0


def cmd_kamailio(args: argparse.Namespace) -> int:
    """Write Kamailio's config and database from the YAML, then become Kamailio.

    ponte-kamailio.service runs this, so the proxy is its own unit.
    """
    cfg = _load(args.config)
    from pbx.kamailio import Kamailio, KamailioError, sqlite_busy_env

    kam = Kamailio(cfg, Path(cfg.state_dir) / "kamailio")
    try:
        argv = kam.command(kam.prepare())
    except KamailioError as exc:
        print(f"ponte: {exc}", file=sys.stderr)
        return 1
    # With its SQLite busy timeout, as when `ponte serve` starts it.
    os.execve(argv[0], argv, {**os.environ, **sqlite_busy_env()})
    return 1  # not reached


def cmd_rtpengine(args: argparse.Namespace) -> int:
    """Write rtpengine's config from the YAML, then become rtpengine.

    ponte-rtpengine.service runs this, so the media relay is its own unit.
    """
    cfg = _load(args.config)
    from pbx.rtpengine import RtpEngine, RtpEngineError

    rtp = RtpEngine(cfg, Path(cfg.state_dir) / "rtpengine")
    try:
        rtp.prepare()
        # journald stamps each line itself.
        argv = rtp.command(log_timestamps="JOURNAL_STREAM" not in os.environ)
    except RtpEngineError as exc:
        print(f"ponte: {exc}", file=sys.stderr)
        return 1
    os.execv(argv[0], argv)
    return 1  # not reached


def cmd_install(args: argparse.Namespace) -> int:
    """Put the units, /etc/ponte/ponte.yaml and the state directory in place."""
    from ponte.install import install

    for line in install(Path(args.root), create_user=args.root == "/"):
        print(line)
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    """Stop taking calls and wait for the ones in progress to end."""
    cfg = _load(args.config)
    import time

    from ponte.control import request

    sock = Path(cfg.control.socket)
    try:
        answer = request(sock, "drain")
        print(f"draining: {answer.get('calls', 0)} calls in progress")
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            calls = request(sock, "status")["calls"]
            if calls == 0:
                print("drained: no calls left; the service can be restarted")
                return 0
            time.sleep(1)
    except OSError as exc:
        print(f"ponte: cannot reach the server at {sock}: {exc}", file=sys.stderr)
        return 1
    print(f"ponte: {calls} calls still up after {args.timeout:g} s", file=sys.stderr)
    return 1


REPORTS = (
    "conferences",
    "participants",
    "usage",
    "calls",
    "alerts",
    "audit",
    "restores",
    "recordings",
    "schedules",
)
SCHEDULE_LIST_COLUMNS = (
    "id",
    "room",
    "at",
    "status",
    "moderator",
    "moderator_first",
    "numbers",
    "answered",
    "calls",
    "created_by",
)
ROOM_ACTIONS = (
    "lock",
    "unlock",
    "mute",
    "unmute",
    "kick",
    "lecture-on",
    "lecture-off",
    "end",
    "next-hand",
    "lower-hand",
    "record-start",
    "record-stop",
    "operator",
    "operator-join",
)


def _identity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--as", dest="as_name", metavar="NAME", help="act as this admin (role checked, audited)"
    )
    p.add_argument("--by", metavar="NAME", help="name recorded in the audit (no admins listed)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="ponte", description=__doc__)
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="stderr log level",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (
        ("serve", cmd_serve, "run the appliance"),
        ("check", cmd_check, "validate the provisioning file and show what would run"),
        ("prompts", cmd_prompts, "render the spoken prompts (set-up does this)"),
        ("status", cmd_status, "show a running server's calls and rooms"),
        ("reload", cmd_reload, "re-read the provisioning file without dropping calls"),
    ):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--config", help="provisioning YAML (default: the bundled example)")
        sp.set_defaults(fn=fn)
        if name == "reload":
            _identity_args(sp)
        if name == "serve":
            sp.add_argument(
                "--no-kamailio",
                action="store_true",
                help="do not run Kamailio nor rtpengine (systemd runs their units)",
            )
            sp.add_argument(
                "--node",
                help="this app server's name in a shared database (default: "
                "host:SIP port on PostgreSQL, 'local' on SQLite); keep it across restarts, "
                "since a restart closes what its crashed self left under that name",
            )
            from ponte.nodeconf import add_arguments

            add_arguments(sp)
    rp = sub.add_parser(
        "report",
        help="reports: conferences, participants, usage, calls, alerts, audit, restores, "
        "recordings, schedules",
    )
    rp.add_argument("what", choices=REPORTS)
    rp.add_argument("session", nargs="?", type=int, help="session id (participants)")
    rp.add_argument("--config", help="provisioning YAML (default: the bundled example)")
    rp.add_argument("--line", help="one line (usage, calls, alerts)")
    rp.add_argument("--department", help="usage of one department's lines")
    rp.add_argument("--room", help="one room (conferences, recordings, schedules)")
    rp.add_argument("--object", help="audit of one object (room:demo) or kind (room)")
    rp.add_argument("--user", help="audit rows by this admin")
    rp.add_argument("--from", dest="date_from", help="YYYY-MM-DD (inclusive)")
    rp.add_argument("--to", dest="date_to", help="YYYY-MM-DD (inclusive)")
    rp.add_argument("--tz", default="America/Sao_Paulo", help="time zone of --from/--to")
    rp.add_argument(
        "--as", dest="as_name", metavar="NAME", help="act as this admin (access profile checked)"
    )
    out = rp.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="CSV instead of a table")
    out.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    out.add_argument(
        "--format", choices=("table", "csv", "json", "xlsx"), help="xlsx needs --output"
    )
    rp.add_argument("--output", metavar="FILE", help="write the report here instead of stdout")
    rp.set_defaults(fn=cmd_report)
    ro = sub.add_parser("room", help="act on a live room: " + ", ".join(ROOM_ACTIONS))
    ro.add_argument("action", choices=ROOM_ACTIONS)
    ro.add_argument("room")
    ro.add_argument(
        "member",
        nargs="?",
        help="call id or caller (mute, unmute, kick, lower-hand, operator, operator-join)",
    )
    ro.add_argument("--config", help="provisioning YAML (default: the bundled example)")
    _identity_args(ro)
    ro.set_defaults(fn=cmd_room)
    sp = sub.add_parser("schedule", help="dial-out at a date and time: `schedule add|list|cancel`")
    sp.add_argument("action", choices=["add", "list", "cancel"])
    sp.add_argument("target", nargs="?", help="the room (add) or the schedule's ID (cancel)")
    sp.add_argument("--at", help="ISO time with offset, e.g. 2026-12-06T10:00:00-03:00")
    sp.add_argument("--numbers", help="the participants' numbers, comma-separated")
    sp.add_argument("--moderator", metavar="N", help="the moderator's number (joins as moderator)")
    sp.add_argument(
        "--moderator-first",
        action="store_true",
        help="call the moderator first, the participants once the moderator joined",
    )
    sp.add_argument("--config", help="provisioning YAML (default: the bundled example)")
    sp.add_argument("--csv", action="store_true", help="list as CSV")
    sp.add_argument("--json", action="store_true", help="list as JSON")
    _identity_args(sp)
    sp.set_defaults(fn=cmd_schedule)
    bp = sub.add_parser("backup", help="write a backup archive, or `backup list`")
    bp.add_argument("action", nargs="?", choices=["create", "list"], default="create")
    bp.add_argument(
        "--parts",
        help="comma-separated: config,profiles,extensions,rooms,usage,records "
        "(default: all but records, the history, taken only when named)",
    )
    bp.add_argument("--config", help="provisioning YAML (default: the bundled example)")
    bp.add_argument("--dir", help="where archives live (default: STATE_DIR/backups)")
    bp.add_argument("--by", metavar="NAME", help="name recorded in the manifest")
    bp.add_argument(
        "--as", dest="as_name", metavar="NAME", help="act as this admin (access profile checked)"
    )
    bp.add_argument("--csv", action="store_true", help="list as CSV")
    bp.add_argument("--json", action="store_true", help="list as JSON")
    bp.set_defaults(fn=cmd_backup)
    rs = sub.add_parser("restore", help="restore parts of a backup archive, then reload")
    rs.add_argument("archive", help="archive path, or its name in the backups folder")
    rs.add_argument(
        "--parts", help="comma-separated parts (default: all in the archive but records)"
    )
    rs.add_argument("--config", help="provisioning YAML (default: the bundled example)")
    rs.add_argument("--dir", help="where archives live (default: STATE_DIR/backups)")
    _identity_args(rs)
    rs.set_defaults(fn=cmd_restore)
    db = sub.add_parser("db", help="the records database: `db copy --to URL`")
    db.add_argument("action", choices=["copy"])
    db.add_argument(
        "--to", required=True, metavar="URL", help="an empty database (postgresql://…, or a file)"
    )
    db.add_argument("--config", help="provisioning YAML (default: the bundled example)")
    db.set_defaults(fn=cmd_db)
    sc = sub.add_parser("schema", help="print the provisioning file's JSON Schema")
    sc.set_defaults(fn=cmd_schema)
    pw = sub.add_parser("passwd", help="hash a web console password for admins[].password_hash")
    pw.add_argument("name", help="the admin's name (for the prompt)")
    pw.set_defaults(fn=cmd_passwd)
    kp = sub.add_parser("kamailio", help="generate Kamailio's config and run it (for systemd)")
    kp.add_argument("--config", help="provisioning YAML (default: the bundled example)")
    kp.set_defaults(fn=cmd_kamailio)
    rt = sub.add_parser("rtpengine", help="generate rtpengine's config and run it (for systemd)")
    rt.add_argument("--config", help="provisioning YAML (default: the bundled example)")
    rt.set_defaults(fn=cmd_rtpengine)
    ip = sub.add_parser("install", help="install the systemd units and /etc/ponte")
    ip.add_argument("--root", default="/", help="install under this root (default /)")
    ip.set_defaults(fn=cmd_install)
    dr = sub.add_parser("drain", help="refuse new calls and wait for the rest to end")
    dr.add_argument("--config", help="provisioning YAML (default: the bundled example)")
    dr.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    dr.set_defaults(fn=cmd_drain)
    dc = sub.add_parser("dial-check", help="the line-profile decision for a number (JSON)")
    dc.add_argument("--config", help="provisioning YAML (default: the bundled example)")
    dc.add_argument("--line", required=True, help="the calling line, e.g. 1001 or room:demo")
    dc.add_argument("--number", required=True, help="the number as dialed")
    dc.add_argument("--at", help="ISO time with offset (default: now)")
    dc.set_defaults(fn=cmd_dial_check)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ponte` console script."""
    # Before anything is written: whoever starts us, nothing is world-readable.
    set_umask()
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        code: int = args.fn(args)
    except UNAVAILABLE as exc:
        # A report, a restore or a copy on a database that is not there: say
        # why (the driver's first line names the server, never a password),
        # not a traceback.
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        print(f"ponte: cannot reach the records database: {first}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
