"""Who may see and do what, from the running configuration at every request
(as for the CLI): an administrator sees and may do everything, a
sub-administrator only their departments' rooms and lines, a read-only admin
sees everything and changes nothing."""

from __future__ import annotations

from provisioning.admins import PermissionDenied, authorize, permit
from provisioning.schema import Admin, Config


def room_department(config: Config, room: str) -> str | None:
    """The department of a provisioned room (None: global or not provisioned)."""
    found = next((r for r in config.rooms if r.name == room), None)
    return found.department if found else None


def sees_room(config: Config, admin: Admin, room: str) -> bool:
    """Whether `admin` may see `room` (its members, its events)."""
    if admin.role != "sub_administrator":
        return True
    dep = room_department(config, room)
    return dep is not None and dep in admin.departments


def may_act(config: Config, admin: Admin, room: str) -> bool:
    """Whether `admin` may act on `room` (the rules of provisioning.admins:
    role and access profile; ponte.roomops.admit checks them again)."""
    try:
        authorize(config, admin.name, {room_department(config, room)})
        permit(config, admin.name, "room_actions")
    except PermissionDenied:
        return False
    return True


def sees_line(admin: Admin, department: str | None) -> bool:
    """Whether `admin` may see a usage row of a line in `department`."""
    return admin.role != "sub_administrator" or (
        department is not None and department in admin.departments
    )


def _dept_filter(admin: Admin) -> frozenset[str] | None:
    return frozenset(admin.departments) if admin.role == "sub_administrator" else None
