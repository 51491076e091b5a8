"""Admin actions on scheduled dial-outs, one path for the CLI's control
socket and the web console: add, list, cancel (a pending one never runs, a
running one dials no further number). Each is checked against the
admin's role and the room's department and audited; bad input changes
nothing (ponte/scheduler.py validates).
"""

from __future__ import annotations

import logging
from typing import Any

from ponte.scheduler import ScheduleError, iso, validate
from ponte.services import Services
from provisioning.admins import PermissionDenied, authorize, permit
from provisioning.diff import Change
from store.engine import UNAVAILABLE

log = logging.getLogger("ponte.admin")

ACTIONS = ("add", "list", "cancel")


def _department(svc: Services, room: str) -> str | None:
    found = next((r for r in svc.config.rooms if r.name == room), None)
    return found.department if found else None


def _visible(svc: Services, as_name: str | None, room: str) -> bool:
    """Whether the admin may see a schedule of `room` (a sub-administrator:
    their departments' rooms only)."""
    admin = svc.config.admin(as_name) if as_name else None
    if admin is None or admin.role != "sub_administrator":
        return True
    dep = _department(svc, room)
    return dep is not None and dep in admin.departments


def view(row: dict[str, Any]) -> dict[str, Any]:
    """A schedule as the CLI and the console show it (times in ISO 8601 UTC)."""
    return {
        "id": row["id"],
        "room": row["room"],
        "at": iso(row["at"]),
        "status": row["status"],
        "moderator": row["moderator"],
        "moderator_first": row["moderator_first"],
        "numbers": row["numbers"],
        "node": row["node"],
        "created_by": row["created_by"],
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "detail": row["detail"],
        "calls": row["calls"],
    }


def schedule_command(
    svc: Services, request: dict[str, Any], source: str = "command"
) -> dict[str, Any]:
    """{action: add|list|cancel, as?, by?, ...}: add takes room, at, numbers,
    moderator?, moderator_first?; cancel takes id. `source` names where it
    came from in the audit (the CLI's "command", "web")."""
    action = request.get("action")
    if action not in ACTIONS:
        return {"ok": False, "error": f"unknown action {action!r} (one of {', '.join(ACTIONS)})"}
    if not svc.stores.opened:
        return {"ok": False, "error": "the records database is not open"}
    as_name = request.get("as")
    store = svc.scheduler.store
    try:
        by = svc.acting_admin(as_name, request.get("by"), request.get("unix_user"))
        permit(svc.config, as_name, "schedules")
        if action == "list":
            rows = [view(r) for r in store.rows() if _visible(svc, as_name, r["room"])]
            return {"ok": True, "by": by, "schedules": rows}
        if action == "add":
            room = request.get("room")
            authorize(svc.config, as_name, {_department(svc, str(room))})
            new = validate(svc.config, request, svc.clock.ts())
            schedule_id = store.add(new, by, svc.clock.ts())
            fields: dict[str, Any] = {
                "room": (None, new.room),
                "at": (None, iso(new.at)),
                "numbers": (None, ",".join(new.numbers)),
            }
            if new.moderator:
                fields["moderator"] = (None, new.moderator)
                fields["moderator_first"] = (None, new.moderator_first)
        else:
            schedule_id = _id(request.get("id"))
            row = store.get(schedule_id)
            if row is None or not _visible(svc, as_name, row["room"]):
                return {"ok": False, "error": f"no schedule {schedule_id}"}
            authorize(svc.config, as_name, {_department(svc, row["room"])})
            if not store.cancel(schedule_id, svc.clock.ts()):
                return {
                    "ok": False,
                    "error": f"schedule {schedule_id} is {row['status']}: only a pending or "
                    "running one may be cancelled",
                }
            # Running here: stopped now (on another node: at its next poll).
            svc.scheduler.stop(schedule_id)
            fields = {"status": (row["status"], "cancelled")}
    except PermissionDenied as exc:
        log.warning("schedule %s refused: %s", action, exc)
        return {"ok": False, "error": str(exc), "denied": True}
    except ScheduleError as exc:
        return {"ok": False, "error": str(exc)}
    except UNAVAILABLE as exc:
        text = str(exc).strip().splitlines()
        return {"ok": False, "error": f"the records database did not answer: {text[:1]}"}
    log.info("schedule %d %s by %s", schedule_id, action, by)
    change = Change("schedule", str(schedule_id), action, fields)
    svc.stores.writer.write(svc.stores.calls.audit, [change], by, source, request.get("unix_user"))
    return {"ok": True, "by": by, "id": schedule_id}


def _id(value: Any) -> int:
    text = str(value if value is not None else "").strip()
    if not text.isdigit() or len(text) > 18:
        raise ScheduleError(f"a schedule id is a number, not {value!r}")
    return int(text)
