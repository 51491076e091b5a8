"""`ponte serve --nodes N`: one edge in front of N app-server nodes on this
machine, so one box uses all its cores.

This parent process runs the edge (Kamailio, whose dispatcher spreads new
calls over the nodes and probes them, and rtpengine) and N children, each a
`ponte serve --node node-I` with its own SIP port, RTP range, control socket
and state folder given on its command line (ponte/nodeconf.py): the YAML
stays one file. The parent restarts a child that dies (Kamailio's probing
takes it out meanwhile, and its dialogs are ended at once), forwards SIGHUP
to every child and reloads its Kamailio, answers `ponte status` with every
node's figures, and on SIGTERM stops the children, then the edge.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pbx.kamailio import KamailioError, dispatcher_states, release_app_dialogs
from ponte import control
from ponte.control import ControlServer
from ponte.edge import Edge
from ponte.loop import Loop
from ponte.nodeconf import arguments, child_settings, node_names, node_uris
from provisioning.schema import Config

log = logging.getLogger("ponte.nodes")

# A child that dies again within this long of its start waits before the
# next try, doubling up to the cap (a crash loop must not spin a core).
QUICK_DEATH = 10.0
MAX_BACKOFF = 30.0
STOP_TIMEOUT = 10.0
# A node of `nodes:` (on another machine) that dispatcher has held inactive
# this long is taken for dead: the edge ends its dialogs, as it does at once
# for a child whose process it saw die. Several probes, so that one lost
# OPTIONS never drops a live node's calls.
REMOTE_DEAD = 2.0
# Figures summed over the nodes in the parent's status.
SUMMED = ("calls", "legs", "conf_ports", "links", "shed")


class Child:
    """One node process and what its restarts need."""

    def __init__(self, name: str, uri: str, argv: list[str], control_socket: Path) -> None:
        self.name = name
        self.uri = uri
        self.argv = argv
        self.control_socket = control_socket
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restarts = 0
        self.backoff = 0.0
        self.due = 0.0  # when a dead child is started again

    def spawn(self, now: float) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        self.started = now
        log.info("node %s started (pid %d) at %s", self.name, self.proc.pid, self.uri)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """The parent of `ponte serve --nodes N`."""

    def __init__(self, config: Config, config_path: Path, n: int, log_level: str) -> None:
        self.config = config
        self.config_path = config_path
        self.loop = Loop(lambda ms: time.sleep(ms / 1000))
        uris = node_uris(config, n) if n else []
        self.edge = Edge(config, self.loop, True, nodes=uris + [e.uri for e in config.nodes])
        self.children = [
            Child(
                name,
                uri,
                [
                    sys.executable,
                    "-m",
                    "ponte.cli",
                    "--log-level",
                    log_level,
                    "serve",
                    "--config",
                    str(config_path),
                    "--node",
                    name,
                    "--no-kamailio",
                    *arguments(settings),
                ],
                settings.control_socket or Path(),
            )
            for name, uri, settings in zip(
                node_names(n), uris, child_settings(config, n) if n else [], strict=True
            )
        ]
        taken = {c.name for c in self.children} & {e.name for e in config.nodes}
        if taken:
            raise ValueError(f"node name {sorted(taken)[0]} is both a local child and in `nodes:`")
        # `nodes:` on other machines: since when dispatcher holds each one
        # inactive (None: active), and whether its dialogs were ended.
        self.remote = {e.uri: e.name for e in config.nodes}
        self._down_since: dict[str, float | None] = dict.fromkeys(self.remote)
        self._released: set[str] = set()
        self.control = ControlServer(
            config.control.socket, self._control, self.loop, prepare=self._fan_out
        )
        self._stop_reason = ""

    # -- life ---------------------------------------------------------------
    def run(self) -> int:
        """Start the edge and the nodes; supervise until SIGTERM/SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, _f: self._request_stop(signal.Signals(s).name))
        signal.signal(signal.SIGHUP, lambda _s, _f: self._reload_in_background())
        try:
            self.edge.start()
            if self.config.nodes:
                from provisioning.loader import load_tree

                self._publish(load_tree(self.config_path).data)
            now = self.loop.now()
            for child in self.children:
                child.spawn(now)
            self.control.start()
            log.info(
                "edge on %s in front of %d nodes: %s",
                self.config.pbx.listen,
                len(self.children) + len(self.remote),
                ", ".join([c.uri for c in self.children] + list(self.remote)),
            )
            self.loop.call_later(0.2, self._watch)
            if self.remote:
                self.loop.call_later(1.0, self._watch_remote)
            self.loop.run()
        finally:
            self._shutdown()
        return 0

    def _request_stop(self, reason: str) -> None:
        self._stop_reason = reason
        self.loop.stopping = True

    def _watch(self) -> None:
        """Restart a dead child (after a back-off when it keeps dying), and
        have Kamailio end its calls the moment it is gone."""
        if self.loop.stopping:
            return
        now = self.loop.now()
        for child in self.children:
            if child.proc is None or child.alive():
                continue
            if child.due == 0.0:
                code = child.proc.returncode
                log.error("node %s died (exit %s): restarting it", child.name, code)
                self._release(child)
                quick = now - child.started < QUICK_DEATH
                child.backoff = min(MAX_BACKOFF, max(1.0, 2 * child.backoff)) if quick else 0.0
                child.due = now + child.backoff
            if now >= child.due:
                child.restarts += 1
                child.due = 0.0
                child.spawn(now)
        self.loop.call_later(0.2, self._watch)

    def _watch_remote(self) -> None:
        """End the dialogs of a `nodes:` node that stopped answering OPTIONS
        for REMOTE_DEAD s: the phones hear a BYE instead of silence."""
        if self.loop.stopping:
            return
        self.loop.call_later(1.0, self._watch_remote)
        kam = self.edge.kamailio
        if kam is None:
            return
        try:
            states = dispatcher_states(kam.runtime)
        except (KamailioError, OSError, subprocess.TimeoutExpired) as exc:
            log.warning("kamailio's dispatcher did not answer: %s", exc)
            return
        now = self.loop.now()
        for uri, name in self.remote.items():
            if states.get(uri, True):
                if uri in self._released:
                    log.info("node %s answers again", name)
                self._down_since[uri] = None
                self._released.discard(uri)
                continue
            since = self._down_since[uri]
            if since is None:
                self._down_since[uri] = now
                log.warning("node %s (%s) does not answer OPTIONS", name, uri)
            elif now - since >= REMOTE_DEAD and uri not in self._released:
                self._released.add(uri)
                self._release_uri(name, uri)

    def _release(self, child: Child) -> None:
        """BYE to both sides of every dialog the dead child held."""
        self._release_uri(child.name, child.uri)

    def _release_uri(self, name: str, uri: str) -> None:
        """BYE to both sides of every dialog the dead node `uri` held."""
        kam = self.edge.kamailio
        if kam is None:
            return
        try:
            n = release_app_dialogs(kam.runtime, uri)
        except (KamailioError, OSError, subprocess.TimeoutExpired) as exc:
            log.warning("kamailio did not end node %s's dialogs: %s", name, exc)
            return
        if n:
            log.warning("ended %d dialogs of node %s (BYE sent)", n, name)

    def _shutdown(self) -> None:
        """Children first (each hangs its calls up), then the edge."""
        log.info("stopping (%s): %d nodes", self._stop_reason or "requested", len(self.children))
        for child in self.children:
            if child.alive():
                assert child.proc is not None
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("node %s did not stop in %g s: killed", child.name, STOP_TIMEOUT)
                child.proc.kill()
                child.proc.wait()
        self.control.stop()
        self.edge.stop()

    # -- reload ---------------------------------------------------------------
    def _reload_in_background(self) -> None:
        """SIGHUP: every child reloads its file; Kamailio gets the new
        passwords and trunks (read off the loop: a big YAML takes a while)."""
        for child in self.children:
            if child.alive():
                assert child.proc is not None
                child.proc.send_signal(signal.SIGHUP)
        threading.Thread(target=self._reload_edge, name="reload", daemon=True).start()

    def _reload_edge(self, request: dict[str, Any] | None = None) -> str | None:
        """Read the file for the edge (off the loop); with nodes on other
        machines, check who asks (no child did) and publish it for them.
        Returns why it was refused, if it was."""
        from provisioning.admins import PermissionDenied, authorize_reload, may_act_as, who
        from provisioning.diff import diff_configs
        from provisioning.loader import ConfigError, load_tree

        try:
            loaded = load_tree(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, the edge keeps its configuration: %s", exc)
            return str(exc)
        new = loaded.config
        if request is not None and not self.children:
            as_name = request.get("as")
            unix_user = str(request.get("unix_user") or "?")
            try:
                may_act_as(self.config, as_name, unix_user, request.get("unix_uid"))
                who(self.config, as_name, unix_user)
                authorize_reload(
                    self.config,
                    new,
                    as_name,
                    diff_configs(self.config, new),
                    str(request.get("source") or "reload"),
                )
            except PermissionDenied as exc:
                log.error("reload refused, configuration unchanged: %s", exc)
                return str(exc)
        self._publish(loaded.data)
        self.loop.call_soon_threadsafe(lambda: self._edge_reloaded(new))
        return None

    def _publish(self, data: dict[str, Any]) -> None:
        """The provisioning, includes merged, for the nodes of `nodes:`
        (ponte/follow.py): they read it from the shared database."""
        if not self.config.nodes:
            return
        import yaml

        from ponte.homes import HomeStore
        from store.engine import UNAVAILABLE

        try:
            store = HomeStore(self.config.database)
            try:
                sha = store.publish_config(yaml.safe_dump(data, sort_keys=False))
            finally:
                store.db.close()
        except UNAVAILABLE as exc:
            log.error("the nodes on other machines keep their provisioning: %s", exc)
            return
        log.info("provisioning published for the nodes (sha256 %s)", sha[:12])

    def _edge_reloaded(self, new: Config) -> None:
        self.edge.reload_subscribers(new)
        self.config = new
        log.info("edge reloaded: %d extensions, %d trunks", len(new.extensions), len(new.trunks))

    # -- control socket ---------------------------------------------------------
    def _fan_out(self, request: dict[str, Any]) -> None:
        """On the socket's thread: ask every child (a child that does not
        answer costs its time-out here, never the loop's)."""
        cmd = str(request.get("cmd"))
        args = {
            k: v
            for k, v in request.items()
            if k not in ("cmd", "unix_uid", "unix_user") and not k.startswith("_")
        }
        answers: dict[str, dict[str, Any]] = {}
        for child in self.children:
            try:
                answers[child.name] = control.request(child.control_socket, cmd, **args)
            except OSError as exc:
                answers[child.name] = {"error": f"node {child.name} does not answer: {exc}"}
        request["_answers"] = answers
        if cmd == "reload" and all(a.get("ok") for a in answers.values()):
            refused = self._reload_edge(request)
            if refused is not None:
                request["_answers"] = {"edge": {"ok": False, "error": refused}}

    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        answers: dict[str, dict[str, Any]] = request.get("_answers") or {}
        cmd = request.get("cmd")
        if cmd == "status":
            return self._status(answers)
        if cmd == "room":
            done = [a for a in answers.values() if a.get("ok")]
            return done[0] if done else next(iter(answers.values()), {"error": "no nodes"})
        merged: dict[str, Any] = {"ok": all(a.get("ok") for a in answers.values())}
        for a in answers.values():
            for key, value in a.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    merged[key] = merged.get(key, 0) + value
                else:
                    merged.setdefault(key, value)
        merged["nodes"] = answers
        return merged

    def _status(self, answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Every node's status, with the sums, every room (by its node) and
        the cluster view (every node on the shared records, these and any on
        other machines: each child reads the same registry, the first
        answer's is kept)."""
        out: dict[str, Any] = {key: 0 for key in SUMMED}
        rooms: dict[str, Any] = {}
        nodes: dict[str, Any] = {}
        cluster: dict[str, Any] | None = None
        for child in self.children:
            answer = dict(answers.get(child.name, {}))
            seen = answer.pop("cluster", None)
            if cluster is None or (seen and "error" in cluster and "error" not in seen):
                cluster = seen
            for key in SUMMED:
                with contextlib.suppress(TypeError):
                    out[key] += answer.get(key, 0)
            for name, room in (answer.get("rooms") or {}).items():
                rooms.setdefault(name, {**room, "node": child.name})
            nodes[child.name] = {
                "uri": child.uri,
                "pid": child.proc.pid if child.proc else None,
                "alive": child.alive(),
                "restarts": child.restarts,
                **answer,
            }
        for uri, name in self.remote.items():
            # Their own figures are in the shared store's registry.
            nodes[name] = {"uri": uri, "remote": True, "answers": self._down_since[uri] is None}
        out["rooms"] = rooms
        out["nodes"] = nodes
        out["accepting"] = any(a.get("accepting") for a in answers.values())
        out["cluster"] = cluster or {"shared": True, "error": "no node answered", "nodes": {}}
        return out
