"""Kamailio and rtpengine, the network edge, as the app server keeps them up.

Run by ponte itself, a dead one is restarted with back-off; under systemd
they are their own units and ponte only notices and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from lines.classify import EMERGENCY
from pbx.kamailio import Kamailio
from pbx.rtpengine import RtpEngine
from ponte.loop import Loop
from provisioning.schema import Config

log = logging.getLogger("ponte.call")


class Edge:
    """The proxy and the media relay in front of this app server."""

    def __init__(
        self,
        config: Config,
        loop: Loop,
        run_children: bool,
        nodes: Sequence[str] | None = None,
        state: Path | None = None,
        owner: bool = True,
        remote: bool = False,
    ) -> None:
        """`nodes`: the app-server nodes' SIP URIs Kamailio dispatches to
        (default: this config's own); `state`: the edge's folder (default:
        the config's state_dir); `owner`: False for a node of `ponte serve
        --nodes`, whose parent writes the edge's tables at a reload;
        `remote`: this node is on another machine than the edge (`nodes:`),
        so nothing of the edge is here to start, watch or read."""
        self.loop = loop
        self.owner = owner
        # False under systemd, where ponte-kamailio.service runs the proxy.
        self.run_children = run_children
        state = Path(state or config.state_dir)
        self.remote = remote
        # In front of several nodes the edge always runs: it spreads the calls.
        # Browsers (pbx.websocket) come in through it too.
        behind = bool(config.extensions or config.trunks or nodes or config.pbx.websocket.listen)
        self.kamailio = (
            Kamailio(config, state / "kamailio", nodes=nodes, emergency=sorted(EMERGENCY))
            if behind and not remote
            else None
        )
        # rtpengine relays every call's media wherever Kamailio runs.
        self.rtpengine = RtpEngine(config, state / "rtpengine") if self.kamailio else None
        self._restarts = {"kamailio": 0, "rtpengine": 0}
        self._proxy_up: bool | None = None

    @property
    def runs(self) -> bool:
        """Whether calls pass Kamailio (extensions or trunks configured, or
        the edge on another machine)."""
        return self.remote or self.kamailio is not None

    def start(self) -> None:
        """Start (or, under systemd, start watching) the edge."""
        if self.kamailio is None:
            return
        if not self.run_children:
            self.loop.call_later(1.0, self._watch_unit)
            return
        if self.rtpengine is not None:
            # First: Kamailio's rtpengine module asks it for every call.
            self.rtpengine.start()
            self.loop.call_later(1.0, lambda: self._watch("rtpengine"))
        self.kamailio.start()
        self.loop.call_later(1.0, lambda: self._watch("kamailio"))

    def reload_subscribers(self, config: Config) -> None:
        """New extension passwords reach Kamailio."""
        if not self.owner:
            return
        if self.kamailio is not None:
            self.kamailio.reload_subscribers(config)
        elif config.extensions:
            log.warning("extensions added: Kamailio starts with the next restart")

    def stop(self) -> None:
        """Stop the children (nothing under systemd: the units stay)."""
        if self.kamailio is not None:
            self.kamailio.stop()
        if self.rtpengine is not None:
            self.rtpengine.stop()

    def _watch(self, name: str) -> None:
        child = self.kamailio if name == "kamailio" else self.rtpengine
        if child is None or self.loop.stopping:
            return
        if not child.alive():
            self._restarts[name] += 1
            log.error("%s died; restarting it (restart %d)", name, self._restarts[name])
            try:
                child.start()
            except Exception:  # keep serving what works without it
                log.exception("%s restart failed", name)
        n = min(self._restarts[name], 5)
        delay = min(30.0, 1.0 * 2**n) if not child.alive() else 1.0
        self.loop.call_later(delay, lambda: self._watch(name))

    def _watch_unit(self) -> None:
        """Under systemd the proxy is its own unit (which restarts it): we only
        notice and say so, once per change."""
        kam = self.kamailio
        if kam is None or self.loop.stopping:
            return
        up = kam.running_elsewhere()
        if up != self._proxy_up:
            if up:
                log.info("kamailio is up (ponte-kamailio.service)")
            else:
                log.error("kamailio is down: extensions cannot register or call")
            self._proxy_up = up
        self.loop.call_later(2.0, self._watch_unit)
