"""The app server's parts, wired together, as the modules above them see them.

`AppServer` builds one `Services` at start; the console, the room commands
of the CLI and the status report take it instead of the server, so nothing
below the entry points imports ponte.server.
"""

from __future__ import annotations

from dataclasses import dataclass

from pbx.useragent import UserAgent
from ponte.calllog import CallLog
from ponte.clock import WallClock
from ponte.dialout import DialOut
from ponte.entry import EntryIvr
from ponte.helpdesk import HelpDesk
from ponte.legs import LegTable
from ponte.loop import Loop
from ponte.media import Media
from ponte.rooms import RoomService
from ponte.routing import Router
from ponte.scheduler import Scheduler
from ponte.stores import Stores
from provisioning.admins import who
from provisioning.schema import Config


@dataclass
class Services:
    """Everything a call touches, in the order the layers stack."""

    config: Config  # the running configuration (replaced whole on reload)
    clock: WallClock
    loop: Loop
    ua: UserAgent
    stores: Stores
    legs: LegTable
    media: Media
    calllog: CallLog
    rooms: RoomService
    entry: EntryIvr
    router: Router
    dialout: DialOut
    scheduler: Scheduler  # scheduled dial-out (ponte schedule)
    helpdesk: HelpDesk

    def acting_admin(self, as_name: str | None, by: str | None, unix_user: str | None) -> str:
        """The name an admin change is recorded under (PermissionDenied if unknown)."""
        if as_name is None and by in ("SIGHUP", "edge"):
            # systemctl reload: root's signal, the service itself; or the
            # edge's published provisioning, whose admin the edge checked.
            return by
        if as_name is None and by and not self.config.admins:
            return by
        return who(self.config, as_name, unix_user or "?")
