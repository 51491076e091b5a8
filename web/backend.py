"""What the web console needs from the app server, as a Protocol.

The app server implements it; the tests use a fake. Every method is called
on the web server's asyncio loop, so an implementation that touches the SIP
side hands the work over to that side's own thread and awaits the answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from provisioning.schema import Config
    from web.hub import Subscription

# The room actions an admin may take from the console.
ROOM_ACTIONS = (
    "mute",
    "unmute",
    "kick",
    "lock",
    "unlock",
    "lecture-on",
    "lecture-off",
    "end",
    "dial",
    "next-hand",
    "lower-hand",
    "record-start",
    "record-stop",
    "operator",
    "operator-join",
)
MEMBER_ACTIONS = frozenset({"mute", "unmute", "kick", "lower-hand", "operator", "operator-join"})
# Keys a browser participant may press.
WEB_KEYS = ("mute", "unmute", "hand", "help")


class Backend(Protocol):
    """The app server as the web console sees it."""

    def running_config(self) -> Config:
        """The live provisioning Config (admins, rooms and lines with .department)."""
        ...

    async def snapshot(self) -> dict[str, Any]:
        """Every live room:
        {"rooms": {name: {"locked": bool, "lecture": bool, "started": epoch | None,
        "members": [{"id": int, "caller": str, "role": "moderator" | "participant",
        "name": bool, "muted": bool, "talking": bool, "hand": bool, "held": bool,
        "via": "sip" | "web", "quality": {"loss_in", "loss_out", "jitter_in",
        "jitter_out", "rtt_ms", "mos"} | None}]}}}.

        `quality` is the member's call as rtpengine measured it (loss %,
        jitter ms, round trip ms, MOS 1-5; any may be None): "in" is what
        reached the appliance from the phone, "out" what reached the phone.
        None for a browser, a call rtpengine does not relay, or before its
        first RTCP reports."""
        ...

    async def room_action(
        self, admin: str, room: str, action: str, member: int | None, number: str | None
    ) -> dict[str, Any]:
        """Run one of ROOM_ACTIONS as `admin` (re-checking the role with
        provisioning.admins.authorize and writing the audit). `number` is for
        "dial" (through the line-profile check and trunk pacing). Answers
        {"ok": True, ...} or {"ok": False, "error": str, "denied": bool}."""
        ...

    async def reload(self, admin: str) -> dict[str, Any]:
        """Re-read the provisioning file as `admin`, checked and audited as
        `ponte reload --as admin` (access profile, role): {"ok": True,
        "changes": n, "by": str} or {"ok": False, "error": str, "denied": bool}."""

    async def schedule(self, admin: str, request: dict[str, Any]) -> dict[str, Any]:
        """A scheduled dial-out action as `admin`, the CLI's path
        (ponte.scheduleops.schedule_command): {"action": "list"}, {"action":
        "add", "room", "at", "numbers", "moderator"?, "moderator_first"?},
        {"action": "cancel", "id"}. Answers {"ok": True, "schedules": [...]}
        (list), {"ok": True, "id": n} or {"ok": False, "error": str, "denied": bool}."""
        ...

    async def name_wav(self, room: str, member: int) -> bytes | None:
        """A member's recorded name as a WAV file, or None."""
        ...

    async def recordings(self) -> list[dict[str, Any]]:
        """Every recording's record, oldest first: {id, room, department,
        started_at, ended_at, seconds, started_by, stopped_by, files: [{name,
        bytes, seconds, caller?}], bytes, dropped_frames, folder}."""
        ...

    async def recording(self, rec_id: int) -> dict[str, Any] | None:
        """One recording's record (as in `recordings`), or None."""
        ...

    async def recording_file(self, rec_id: int, name: str) -> Path | None:
        """The file `name` of a recording, when its record lists it and it
        lies inside the recordings folder; else None."""
        ...

    async def usage(self) -> list[dict[str, Any]]:
        """The usage-vs-limit report: rows with the keys of
        ponte.reports.USAGE_COLUMNS plus "department" and "line" (str | None)."""
        ...

    async def minutes_per_day(
        self, days: int, departments: frozenset[str] | None = None
    ) -> list[tuple[str, float]]:
        """Minutes per day for the last `days` days, oldest first:
        [("2026-11-20", 42.5), ...]. With `departments`, only the minutes of
        those departments' lines (a sub-administrator's chart); None: all."""
        ...

    async def cluster(self) -> dict[str, Any]:
        """Every app-server node, as `ponte status` shows it under "cluster":
        {"shared": bool, "stale_after": s, "alive": n, "nodes": {name:
        {"address", "started", "heartbeat", "age", "alive", "calls", "legs",
        "rooms", "cpu", "homes": {room: {"lease_left": s | None}}}}} and
        "error" when the records database did not answer."""
        ...

    def subscribe(self) -> Subscription:
        """A new subscription to the room events (EventHub.subscribe)."""
        ...

    async def web_join(self, pin: str, peer: str) -> dict[str, Any]:
        """A browser keys a PIN: {"ok": True, "ws": WebSocket URL, "uri": the
        SIP URI to call over it, "token": its one-time token (also its
        buttons' key)} or {"ok": False, "error": str}."""
        ...

    async def web_key(self, token: str, key: str) -> dict[str, Any]:
        """A browser participant presses one of WEB_KEYS."""
        ...

    async def web_leave(self, token: str) -> None:
        """A browser participant hangs up."""
        ...
