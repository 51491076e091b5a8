"""Admin actions on a live room from outside the call (CLI now, web later):
mute, kick, lock, lecture, end. Each is checked against the admin's role and
written to the audit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bridge.controls import Say
from bridge.room import Room, RoomCommand
from provisioning.admins import PermissionDenied, authorize
from provisioning.diff import Change

if TYPE_CHECKING:
    from ponte.server import AppServer

log = logging.getLogger("ponte.admin")

# action -> (needs a member, what it does); each returns the room's commands
# and the audit's {field: (old, new)}.
Effect = Callable[["AppServer", Room, int | None], tuple[list[RoomCommand], dict[str, Any]]]


def _lock(on: bool) -> Effect:
    def run(srv: AppServer, room: Room, _m: int | None) -> tuple[list, dict]:
        old, room.locked = room.locked, on
        word = "locked" if on else "unlocked"
        return [Say(leg, (word,)) for leg in room.members], {"locked": (old, on)}

    return run


def _lecture(on: bool) -> Effect:
    def run(srv: AppServer, room: Room, _m: int | None) -> tuple[list, dict]:
        old = room.lecture
        return room.set_lecture(on), {"lecture": (old, on)}

    return run


def _mute(on: bool) -> Effect:
    def run(srv: AppServer, room: Room, member: int | None) -> tuple[list, dict]:
        assert member is not None
        m = room.members[member]
        old = m.muted
        return room.set_muted(member, on), {f"member.{_caller(srv, member)}.muted": (old, on)}

    return run


def _kick(srv: AppServer, room: Room, member: int | None) -> tuple[list, dict]:
    assert member is not None
    caller = _caller(srv, member)
    _end_leg(srv, member)
    return [], {"member": (caller, None)}


def _end(srv: AppServer, room: Room, _m: int | None) -> tuple[list, dict]:
    members = list(room.members)
    for leg in members:
        _end_leg(srv, leg)
    return [], {"members": (len(members), 0)}


ACTIONS: dict[str, tuple[bool, Effect]] = {
    "lock": (False, _lock(True)),
    "unlock": (False, _lock(False)),
    "lecture-on": (False, _lecture(True)),
    "lecture-off": (False, _lecture(False)),
    "mute": (True, _mute(True)),
    "unmute": (True, _mute(False)),
    "kick": (True, _kick),
    "end": (False, _end),
}


def _caller(srv: AppServer, leg: int) -> str:
    live = srv.legs.get(leg)
    return live.caller if live is not None else str(leg)


def _end_leg(srv: AppServer, leg_id: int) -> None:
    leg = srv.legs.get(leg_id)
    if leg is not None:
        leg.ended_by = "admin"
    srv.ua.hangup(leg_id)


def _member(srv: AppServer, room: Room, ref: Any) -> int:
    """A member by call id, or by caller (user part) when unambiguous."""
    if ref is None or ref == "":
        raise ValueError("this action needs a member (call id or caller)")
    text = str(ref)
    if text.isdigit() and int(text) in room.members:
        return int(text)
    found = [leg for leg in room.members if _caller(srv, leg) == text]
    if len(found) != 1:
        raise ValueError(
            f"no member {text!r} in room {room.name}"
            if not found
            else f"{len(found)} members are {text!r}: give the call id"
        )
    return found[0]


def room_command(
    srv: AppServer, request: dict[str, Any], source: str = "command"
) -> dict[str, Any]:
    """Run one admin action on a live room: {action, room, member?, as?}.

    `source` names where it came from in the audit (the CLI's "command", "web").
    """
    action, name = request.get("action"), request.get("room")
    if action not in ACTIONS:
        return {"ok": False, "error": f"unknown action {action!r} (one of {', '.join(ACTIONS)})"}
    room = srv.bridge.rooms.get(str(name))
    if room is None:
        return {"ok": False, "error": f"room {name!r} has nobody in it"}
    config = srv._rooms.get(room.name)
    as_name = request.get("as")
    try:
        by = srv._who(as_name, request.get("by"), request.get("unix_user"))
        authorize(srv.config, as_name, {config.department if config else None})
    except PermissionDenied as exc:
        log.warning("room %s %s refused: %s", room.name, action, exc)
        return {"ok": False, "error": str(exc), "denied": True}
    needs_member, effect = ACTIONS[action]
    try:
        member = _member(srv, room, request.get("member")) if needs_member else None
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    cmds, fields = effect(srv, room, member)
    srv._room_cmds(cmds)
    log.info("room %s %s by %s%s", room.name, action, by, f" member={member}" if member else "")
    if srv.store is not None:
        change = Change("room", room.name, action, dict(fields))
        srv.records.write(srv.store.audit, [change], by, source, request.get("unix_user"))
    return {"ok": True, "by": by}
