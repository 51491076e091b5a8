"""A node on another machine follows the edge's provisioning.

The YAML stays one file, on the edge's machine. The edge publishes it (its
includes merged) into the shared database at start and at every reload
(`HomeStore.publish_config`). A node of `nodes:` polls the published hash
every FOLLOW_EVERY seconds on a thread of its own, and when it changes
reloads from the published text by the same path as a local reload
(ponte/reload.py): a bad file is refused and changes nothing; calls in
progress carry on. Settings read only at start (RESTART_ONLY) stay this
node's own: they name its SIP address, control socket and folders.
"""

from __future__ import annotations

import logging
import threading
from functools import partial

from ponte.homes import HomeStore
from ponte.loop import Loop
from ponte.reload import RESTART_ONLY, PreparedReload, Reloader
from provisioning.loader import ConfigError, parse_config
from provisioning.schema import Config
from store.engine import UNAVAILABLE

log = logging.getLogger("ponte.follow")

FOLLOW_EVERY = 2.0
PUBLISHED = "the edge's provisioning (database)"


class ConfigFollower:
    """Reloads this node whenever the edge publishes a new provisioning."""

    def __init__(self, loop: Loop, reloader: Reloader, store: HomeStore) -> None:
        self.loop = loop
        self.reloader = reloader
        self.store = store
        self.seen: str | None = None  # the last published hash acted on
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Every reload of this node now reads the published provisioning."""
        self.reloader.source = self.published
        self._thread = threading.Thread(target=self._run, name="follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (the thread ends within FOLLOW_EVERY)."""
        self._stop.set()

    def published(self) -> Config:
        """The edge's last published provisioning, with this node's
        start-only settings kept (ConfigError when there is none to read)."""
        try:
            text = self.store.published_config()
        except UNAVAILABLE as exc:
            raise ConfigError(PUBLISHED, 0, "", f"the database does not answer: {exc}") from None
        if text is None:
            raise ConfigError(PUBLISHED, 0, "", "the edge has published none yet")
        running = self.reloader.svc.config
        new = parse_config(text, PUBLISHED)
        return new.model_copy(update={key: getattr(running, key) for key in RESTART_ONLY})

    def _run(self) -> None:
        while not self._stop.wait(FOLLOW_EVERY):
            try:
                sha = self.store.published_sha()
            except UNAVAILABLE:
                continue  # the heartbeat's writer says so; try again next round
            if sha is None or sha == self.seen:
                continue
            first = self.seen is None
            self.seen = sha
            prepared = self.reloader.prepare()
            if first and not prepared.changes and prepared.new is not None:
                continue  # started on the same provisioning
            self.loop.call_soon_threadsafe(partial(self._apply, prepared))

    def _apply(self, prepared: PreparedReload) -> None:
        """On the loop: apply what was read (or log why it was refused)."""
        self.reloader.reload(by="edge", source="edge", prepared=prepared)
