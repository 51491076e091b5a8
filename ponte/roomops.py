"""Admin actions on a live room from outside the call (the CLI, the web console):
mute, kick, lock, lecture, end, and ringing the operators for a member. Each is
checked against the admin's role, carried out by the same room function a
member's key uses, and audited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bridge.controls import ControlCommand, call_operator, lecture, lock, mute
from bridge.room import Room
from ponte.services import Services
from provisioning.admins import PermissionDenied, authorize
from provisioning.diff import Change

log = logging.getLogger("ponte.admin")

# What an action does: (services, room, member) -> the room's commands and
# the audit's {field: (old, new)}.
Outcome = tuple[list[ControlCommand], dict[str, Any]]
Effect = Callable[[Services, Room, int | None], Outcome]


def _lock(on: bool) -> Effect:
    def run(svc: Services, room: Room, _m: int | None) -> Outcome:
        old = room.locked
        return lock(room, on), {"locked": (old, on)}

    return run


def _lecture(on: bool) -> Effect:
    def run(svc: Services, room: Room, _m: int | None) -> Outcome:
        old = room.lecture
        return lecture(room, on), {"lecture": (old, on)}

    return run


def _mute(on: bool) -> Effect:
    def run(svc: Services, room: Room, member: int | None) -> Outcome:
        assert member is not None
        old = room.members[member].muted
        return mute(room, member, on), {f"member.{_caller(svc, member)}.muted": (old, on)}

    return run


def _operator(join: bool) -> Effect:
    """Ring the operators for a member: into a private talk (as the member's
    own *90), or (`join`) straight into the room."""

    def run(svc: Services, room: Room, member: int | None) -> Outcome:
        assert member is not None
        how = "join" if join else "talk"
        return call_operator(room, member, join), {
            f"member.{_caller(svc, member)}.operator": (None, how)
        }

    return run


def _kick(svc: Services, room: Room, member: int | None) -> Outcome:
    assert member is not None
    caller = _caller(svc, member)
    svc.rooms.end_leg(member, "admin")
    return [], {"member": (caller, None)}


def _end(svc: Services, room: Room, _m: int | None) -> Outcome:
    members = list(room.members)
    for leg in members:
        svc.rooms.end_leg(leg, "admin")
    return [], {"members": (len(members), 0)}


# action -> (needs a member, what it does)
ACTIONS: dict[str, tuple[bool, Effect]] = {
    "lock": (False, _lock(True)),
    "unlock": (False, _lock(False)),
    "lecture-on": (False, _lecture(True)),
    "lecture-off": (False, _lecture(False)),
    "mute": (True, _mute(True)),
    "unmute": (True, _mute(False)),
    "kick": (True, _kick),
    "end": (False, _end),
    "operator": (True, _operator(False)),
    "operator-join": (True, _operator(True)),
}


def _caller(svc: Services, leg_id: int) -> str:
    leg = svc.legs.get(leg_id)
    return leg.caller if leg is not None else str(leg_id)


def _member(svc: Services, room: Room, ref: Any) -> int:
    """A member by call id, or by caller (user part) when unambiguous."""
    if ref is None or ref == "":
        raise ValueError("this action needs a member (call id or caller)")
    text = str(ref)
    if text.isdigit() and int(text) in room.members:
        return int(text)
    found = [leg for leg in room.members if isinstance(leg, int) and _caller(svc, leg) == text]
    if len(found) != 1:
        raise ValueError(
            f"no member {text!r} in room {room.name}"
            if not found
            else f"{len(found)} members are {text!r}: give the call id"
        )
    return found[0]


def room_command(svc: Services, request: dict[str, Any], source: str = "command") -> dict[str, Any]:
    """Run one admin action on a live room: {action, room, member?, as?}.

    `source` names where it came from in the audit (the CLI's "command", "web").
    """
    action, name = request.get("action"), request.get("room")
    if action not in ACTIONS:
        return {"ok": False, "error": f"unknown action {action!r} (one of {', '.join(ACTIONS)})"}
    room = svc.rooms.live.rooms.get(str(name))
    if room is None:
        return {"ok": False, "error": f"room {name!r} has nobody in it"}
    config = svc.rooms.configs.get(room.name)
    as_name = request.get("as")
    try:
        by = svc.acting_admin(as_name, request.get("by"), request.get("unix_user"))
        authorize(svc.config, as_name, {config.department if config else None})
    except PermissionDenied as exc:
        log.warning("room %s %s refused: %s", room.name, action, exc)
        return {"ok": False, "error": str(exc), "denied": True}
    needs_member, effect = ACTIONS[action]
    try:
        member = _member(svc, room, request.get("member")) if needs_member else None
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    if action.startswith("operator"):
        if not svc.config.operators(room.name):
            return {"ok": False, "error": f"room {room.name} has no operator: set `operator:`"}
        if member is not None and member in svc.helpdesk.calls:
            return {"ok": False, "error": "an operator is already called for this member"}
    cmds, fields = effect(svc, room, member)
    svc.rooms.apply(cmds)
    log.info("room %s %s by %s%s", room.name, action, by, f" member={member}" if member else "")
    if svc.stores.opened:
        change = Change("room", room.name, action, dict(fields))
        svc.stores.writer.write(
            svc.stores.calls.audit, [change], by, source, request.get("unix_user")
        )
    return {"ok": True, "by": by}
