"""Who may change what: administrator, sub-administrator of departments, read-only.

Roles always come from the configuration that is running, never from the
file being loaded, so nobody can promote themselves by editing it.
"""

from __future__ import annotations

from provisioning.diff import Change
from provisioning.schema import ADMIN_FUNCTIONS, Config

# The functions an access profile grants (`access_profiles: {NAME: [...]}`):
# reports, room_actions, reload, backup (and restore), schedules, recordings.
FUNCTIONS = ADMIN_FUNCTIONS


class PermissionDenied(Exception):
    """The named admin may not do this; nothing was changed."""


def permit(config: Config, name: str | None, function: str) -> None:
    """Refuse (PermissionDenied) unless admin `name`'s access profile includes
    `function`, one of FUNCTIONS.

    The one check of access profiles, called wherever a function is
    triggered (CLI, control socket, web console). It only ever narrows:
    the role's rules (authorize) still apply on top. No name (an admin-less
    appliance, root's SIGHUP) and an admin without a profile pass as before.
    """
    if function not in FUNCTIONS:
        raise ValueError(f"unknown admin function {function!r} (one of {', '.join(FUNCTIONS)})")
    if name is None:
        return
    admin = config.admin(name)
    if admin is None:
        raise PermissionDenied(f"{name!r} is not an admin of this appliance")
    if admin.profile is None:
        return
    granted = config.access_profiles.get(admin.profile, [])
    if function not in granted:
        raise PermissionDenied(
            f"{name}'s access profile {admin.profile} does not include {function} "
            f"(it grants: {', '.join(granted) or 'nothing'})"
        )


def departments_of(change: Change, old: Config, new: Config) -> set[str | None]:
    """The departments an object belongs to, before and after (None: global)."""
    kind, name = change.kind, change.name
    found: set[str | None] = set()
    for cfg in (old, new):
        if kind == "line" or kind == "extension":
            line = cfg.lines.get(name)
            if line is not None:
                found.add(line.department)
            elif kind == "extension" and any(e.number == name for e in cfg.extensions):
                found.add(None)
        elif kind == "room":
            room = next((r for r in cfg.rooms if r.name == name), None)
            if room is not None:
                found.add(room.department)
        elif kind == "department":
            found.add(name)
        else:
            found.add(None)
    return found or {None}


def who(config: Config, name: str | None, unix_user: str) -> str:
    """The name the audit records; refuse an unknown admin name.

    With admins listed, a change must name one of them (`--as NAME`).
    """
    if name is None:
        if config.admins:
            raise PermissionDenied("this appliance lists admins: say who you are with --as NAME")
        return unix_user
    if config.admin(name) is None:
        raise PermissionDenied(f"{name!r} is not an admin of this appliance")
    return name


def may_act_as(config: Config, name: str | None, unix_user: str, uid: int | None) -> None:
    """Refuse unless the local Unix user (`uid`, as the kernel tells the control
    socket) may act as admin `name`: `--as` is a claim, this checks it.

    root (uid 0) may act as anyone. Anyone else only as an admin whose
    `unix_users` lists them; an admin without `unix_users` is root's alone, so
    adding the mapping is a deliberate grant and a file without it stays as
    safe as it can be. `uid` None (the kernel did not say) is nobody's.
    Without `--as` there is no claim to check: who() decides alone.
    """
    if name is None or uid == 0:
        return
    admin = config.admin(name)
    if admin is None:
        raise PermissionDenied(f"{name!r} is not an admin of this appliance")
    if uid is not None and unix_user in admin.unix_users:
        return
    if not admin.unix_users:
        raise PermissionDenied(
            f"Unix user {unix_user} may not act as {name}: "
            f"{name} lists no unix_users, so only root may"
        )
    raise PermissionDenied(
        f"Unix user {unix_user} may not act as {name}: not among {name}'s unix_users"
    )


def authorize(config: Config, name: str | None, scopes: set[str | None]) -> None:
    """Refuse unless admin `name` (or an admin-less appliance) may change
    objects of these departments (None: the appliance as a whole)."""
    if name is None:
        return  # who() already refused a nameless change where admins exist
    admin = config.admin(name)
    if admin is None:
        raise PermissionDenied(f"{name!r} is not an admin of this appliance")
    if admin.role == "administrator" or not scopes:
        return
    if admin.role == "read_only":
        raise PermissionDenied(f"{name} is read-only")
    outside = sorted(
        str(s) if s else "(the whole appliance)" for s in scopes - set(admin.departments)
    )
    if outside:
        raise PermissionDenied(
            f"{name} is a sub-administrator of {', '.join(admin.departments)}, "
            f"not of {', '.join(outside)}"
        )


def authorize_changes(
    running: Config, new: Config, name: str | None, changes: list[Change]
) -> None:
    """Refuse a reload or restore that reaches outside the admin's scope."""
    scopes: set[str | None] = set()
    for change in changes:
        scopes |= departments_of(change, running, new)
    admin = running.admin(name) if name else None
    if admin is not None and admin.role == "read_only":
        raise PermissionDenied(f"{name} is read-only")  # even a change of nothing
    authorize(running, name, scopes)


def authorize_reload(
    running: Config, new: Config, name: str | None, changes: list[Change], source: str = "reload"
) -> None:
    """The one check of a reload, wherever it runs (the app server's Reloader,
    the edge of nodes on other machines): the access profile grants `reload`
    (a restore's reload: `backup`, which `ponte restore` checked before
    writing the files), and the role covers every change."""
    permit(running, name, "backup" if source == "restore" else "reload")
    authorize_changes(running, new, name, changes)
