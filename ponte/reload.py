"""A live reload of the provisioning file: read and diff it off the loop,
then check who asks and apply it on the loop, or refuse and change nothing."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lines.policy import load_calendar
from ponte.edge import Edge
from ponte.services import Services
from provisioning.admins import PermissionDenied, authorize_reload
from provisioning.advice import refusals
from provisioning.diff import Change, diff_configs
from provisioning.schema import Config

if TYPE_CHECKING:
    from ponte.console import Console

log = logging.getLogger("ponte.call")

# Settings read once at start: a reload that changes them is refused.
RESTART_ONLY = ("sip", "pbx", "control", "database", "state_dir", "prompts")


@dataclass
class PreparedReload:
    """A provisioning file read and compared off the loop, waiting to be applied."""

    old: Config
    new: Config | None
    error: str | None
    changes: list[Change] = field(default_factory=list)


class Reloader:
    """Reloads the file the server was started from into its running parts."""

    def __init__(
        self,
        svc: Services,
        edge: Edge,
        config_path: Path | None,
        adjust: Callable[[Config], Config] = lambda c: c,
    ) -> None:
        """`adjust`: this node's command-line settings laid over the file
        (ponte/nodeconf.py), at every reload as at start."""
        self.adjust = adjust
        self.audits = True  # False on a secondary node: another writes the audit
        self.svc = svc
        self.edge = edge
        self.config_path = config_path
        self.console: Console | None = None  # told too, once it runs
        # A node on another machine reads the edge's published provisioning
        # instead of a file (ponte/follow.py).
        self.source: Callable[[], Config] | None = None

    def prepare(self) -> PreparedReload:
        """Read, validate and diff the file: the slow part of a reload, safe on
        any thread (no pjsua2 here), so the loop keeps polling meanwhile."""
        from provisioning.loader import ConfigError, load_config

        old = self.svc.config
        if self.config_path is None and self.source is None:
            return PreparedReload(old, None, "this server was not started from a file")
        try:
            new = self.adjust(self.source() if self.source else load_config(self.config_path))
        except ConfigError as exc:
            return PreparedReload(old, None, str(exc))
        refused = refusals(new)
        if refused:
            return PreparedReload(old, None, f"{self.config_path}: {'; '.join(refused)}")
        # A new country's or subdivision's holidays load here, off the loop.
        load_calendar(new.holidays, dt.date.today())
        return PreparedReload(old, new, None, diff_configs(old, new))

    def in_background(self, by: str) -> None:
        """SIGHUP: read the file on a thread, apply it on the loop."""

        def work() -> None:
            prepared = self.prepare()

            def apply() -> None:
                self.reload(by=by, prepared=prepared)

            self.svc.loop.call_soon_threadsafe(apply)

        threading.Thread(target=work, name="reload", daemon=True).start()

    def reload(
        self,
        as_name: str | None = None,
        by: str | None = None,
        unix_user: str | None = None,
        source: str = "reload",
        prepared: PreparedReload | None = None,
    ) -> dict[str, Any]:
        """Apply the file (loop thread); on any error keep running as before.

        New calls use the new configuration; calls in progress carry on (a
        removed room lives until its last member leaves). Each changed object
        gets an audit row; an admin's role is checked against the running
        configuration before anything changes.
        """
        svc = self.svc
        if prepared is None or prepared.old is not svc.config:
            prepared = self.prepare()  # another reload got in first
        if prepared.new is None:
            log.error("reload refused, configuration unchanged: %s", prepared.error)
            return {"ok": False, "error": prepared.error}
        old, new, changes = svc.config, prepared.new, prepared.changes
        try:
            name = svc.acting_admin(as_name, by, unix_user)
            authorize_reload(old, new, as_name, changes, source)
        except PermissionDenied as exc:
            log.error("reload refused, configuration unchanged: %s", exc)
            return {"ok": False, "error": str(exc), "denied": True}
        fixed = [key for key in RESTART_ONLY if getattr(new, key) != getattr(old, key)]
        if new.web.listen != old.web.listen:
            fixed.append("web.listen")
        if fixed:
            msg = f"{', '.join(fixed)} changed: these take effect only on restart"
            log.error("reload refused, configuration unchanged: %s", msg)
            return {"ok": False, "error": f"{self.config_path}: {msg}"}
        svc.config = new
        for part in (svc.calllog, svc.dialout, svc.scheduler, svc.helpdesk):
            part.config = new
        svc.rooms.reloaded(new)
        svc.entry.reloaded(new)
        svc.router.reloaded(old, new, self.edge.runs)
        if self.console is not None:
            self.console.reloaded(new)
        self.edge.reload_subscribers(new)
        if svc.stores.opened and changes and self.audits:
            svc.stores.writer.write(svc.stores.calls.audit, changes, name, source, unix_user)
        log.info(
            "reloaded %s by %s: %d objects changed; %d rooms, %d extensions, %d trunks",
            self.config_path,
            name,
            len(changes),
            len(new.rooms),
            len(new.extensions),
            len(new.trunks),
        )
        return {"ok": True, "changes": len(changes), "by": name}
