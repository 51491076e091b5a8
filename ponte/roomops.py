"""Admin actions on a live room from outside the call (the CLI, the web console):
mute, kick, lock, lecture, end, record-start/stop, the raised hands (next-hand,
lower-hand) and ringing the operators for a member. Each is checked against the
admin's role, carried out by the same room function a member's key uses, and audited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bridge.controls import (
    ControlCommand,
    call_operator,
    lecture,
    lock,
    mute,
    next_hand,
    record,
    set_hand,
)
from bridge.levels import permits
from bridge.room import Room
from ponte.rooms import policy
from ponte.services import Services
from provisioning.admins import PermissionDenied, authorize, permit
from provisioning.diff import Change

log = logging.getLogger("ponte.admin")

# What an action does: (services, room, member, acting admin) -> the room's commands and
# the audit's {field: (old, new)}.
Outcome = tuple[list[ControlCommand], dict[str, Any]]
Effect = Callable[[Services, Room, int | None, str], Outcome]


def _lock(on: bool) -> Effect:
    def run(svc: Services, room: Room, _m: int | None, _by: str) -> Outcome:
        old = room.locked
        return lock(room, on), {"locked": (old, on)}

    return run


def _lecture(on: bool) -> Effect:
    def run(svc: Services, room: Room, _m: int | None, _by: str) -> Outcome:
        old = room.lecture
        return lecture(room, on), {"lecture": (old, on)}

    return run


def _mute(on: bool) -> Effect:
    def run(svc: Services, room: Room, member: int | None, _by: str) -> Outcome:
        assert member is not None
        old = room.members[member].muted
        return mute(room, member, on), {f"member.{_caller(svc, member)}.muted": (old, on)}

    return run


def _next_hand(svc: Services, room: Room, _m: int | None, _by: str) -> Outcome:
    # The same function as a moderator's *96: the member is told, the
    # moderators' phones are not (the admin sees the hand go down).
    cmds, leg = next_hand(room)
    if leg is None:
        raise ValueError(f"no hand is raised in room {room.name}")
    return cmds, {"floor": (None, _caller(svc, leg))}


def _lower_hand(svc: Services, room: Room, member: int | None, _by: str) -> Outcome:
    assert member is not None
    if member not in room.hands:
        raise ValueError(f"member {_caller(svc, member)} has no hand raised")
    return set_hand(room, member, False), {f"member.{_caller(svc, member)}.hand": (True, False)}


def _record(on: bool) -> Effect:
    def run(svc: Services, room: Room, _m: int | None, by: str) -> Outcome:
        old = room.recording is not None
        return record(room, on, by), {"recording": (old, on)}

    return run


def _operator(join: bool) -> Effect:
    """Ring the operators for a member: into a private talk (as the member's
    own *90), or (`join`) straight into the room."""

    def run(svc: Services, room: Room, member: int | None, _by: str) -> Outcome:
        assert member is not None
        how = "join" if join else "talk"
        return call_operator(room, member, join), {
            f"member.{_caller(svc, member)}.operator": (None, how)
        }

    return run


def _kick(svc: Services, room: Room, member: int | None, _by: str) -> Outcome:
    assert member is not None
    caller = _caller(svc, member)
    svc.rooms.end_leg(member, "admin")
    return [], {"member": (caller, None)}


def _end(svc: Services, room: Room, _m: int | None, _by: str) -> Outcome:
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
    "next-hand": (False, _next_hand),
    "lower-hand": (True, _lower_hand),
    "record-start": (False, _record(True)),
    "record-stop": (False, _record(False)),
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


def admit(
    svc: Services, as_name: str | None, by: str | None, unix_user: str | None, room: str
) -> str:
    """The one check of every admin action on a live room, whatever triggers it
    (`ponte room`, the console's buttons and its dial): the admin is known,
    the role covers the room's department, and the access profile grants
    `room_actions`. Returns the name the audit records; PermissionDenied
    otherwise (nothing done)."""
    config = svc.rooms.configs.get(room)
    name = svc.acting_admin(as_name, by, unix_user)
    authorize(svc.config, as_name, {config.department if config else None})
    permit(svc.config, as_name, "room_actions")
    return name


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
    as_name = request.get("as")
    try:
        by = admit(svc, as_name, request.get("by"), request.get("unix_user"), room.name)
    except PermissionDenied as exc:
        log.warning("room %s %s refused: %s", room.name, action, exc)
        return {"ok": False, "error": str(exc), "denied": True}
    config = svc.rooms.configs.get(room.name)
    if action == "record-start" and not (config is not None and permits(policy(config), "record")):
        # The room's consent (allow_recording, level 2 or 3) binds admins too.
        return {
            "ok": False,
            "error": f"room {room.name} does not allow recording (allow_recording)",
        }
    needs_member, effect = ACTIONS[action]
    try:
        member = _member(svc, room, request.get("member")) if needs_member else None
        if action.startswith("operator"):
            if not svc.config.operators(room.name):
                raise ValueError(f"room {room.name} has no operator: set `operator:`")
            if member is not None and member in svc.helpdesk.calls:
                raise ValueError("an operator is already called for this member")
        # An effect refuses (ValueError) before it changes anything.
        cmds, fields = effect(svc, room, member, by)
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    svc.rooms.apply(cmds)
    log.info("room %s %s by %s%s", room.name, action, by, f" member={member}" if member else "")
    if svc.stores.opened:
        change = Change("room", room.name, action, dict(fields))
        svc.stores.writer.write(
            svc.stores.calls.audit, [change], by, source, request.get("unix_user")
        )
    return {"ok": True, "by": by}
