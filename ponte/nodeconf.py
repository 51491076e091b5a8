"""What makes one app-server node of `ponte serve --nodes N` differ from the
others: its SIP port, RTP range, control socket and state folder.

The YAML stays one file for every node. The parent (ponte/nodes.py) passes
each child these settings on its command line, and the child lays them over
the file at start and at every reload, so no per-node copy of the YAML exists.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # provisioning (pydantic) is loaded only where a Config is
    from provisioning.network import NodeEntry
    from provisioning.schema import Config


@dataclass(frozen=True)
class NodeSettings:
    """Command-line overrides of one node (None: the file's value)."""

    sip_port: int | None = None
    # A whole SIP address (a `nodes:` entry's, on another machine).
    sip_listen: str | None = None
    rtp_ports: str | None = None
    control_socket: Path | None = None
    state_dir: Path | None = None
    # The edge's folder when another process (the parent) runs the edge:
    # where this node finds Kamailio's pid, control socket and acc file.
    edge_state: Path | None = None
    # Whether this node reads the extension calls' history from Kamailio's
    # acc and writes a reload's audit rows: one node does (all share the
    # records), so nothing is recorded twice.
    primary: bool = True
    # A node of `nodes:` on its own machine: the edge runs on another host,
    # and nothing of it (pid, control socket, acc file) is here.
    remote_edge: bool = False

    @property
    def edge_elsewhere(self) -> bool:
        """Whether the edge belongs to another process (a `--nodes` parent,
        or the edge's host)."""
        return self.edge_state is not None or self.remote_edge

    def apply(self, config: Config) -> Config:
        """`config` with this node's settings laid over it."""
        sip = config.sip
        if self.sip_listen is not None:
            sip = sip.model_copy(update={"listen": self.sip_listen})
        if self.sip_port is not None:
            sip = sip.model_copy(update={"listen": f"{sip.host}:{self.sip_port}"})
        if self.rtp_ports is not None:
            sip = sip.model_copy(update={"rtp_ports": self.rtp_ports})
        update: dict[str, object] = {"sip": sip}
        if self.control_socket is not None:
            update["control"] = config.control.model_copy(update={"socket": self.control_socket})
        if self.state_dir is not None:
            update["state_dir"] = self.state_dir
        return config.model_copy(update=update)


def for_entry(entry: NodeEntry, given: NodeSettings) -> NodeSettings:
    """The settings of the `nodes:` entry this process is (`--node NAME`):
    its SIP address and RTP ports from the YAML, the edge on another host.
    Its own records stay on the command line's or the file's state_dir."""
    return replace(
        given,
        sip_port=None,
        sip_listen=entry.listen,
        rtp_ports=entry.rtp_ports or given.rtp_ports,
        edge_state=None,
        remote_edge=True,
        primary=False,
    )


def split_range(ports: tuple[int, int], n: int) -> list[str]:
    """`lo-hi` cut into `n` ranges of whole RTP/RTCP pairs, one per node."""
    lo, hi = ports
    pairs = (hi - lo + 1) // 2 // n
    if pairs < 8:
        raise ValueError(f"sip.rtp_ports {lo}-{hi} is too small for {n} nodes")
    return [f"{lo + 2 * pairs * i}-{lo + 2 * pairs * (i + 1) - 1}" for i in range(n)]


def node_names(n: int) -> list[str]:
    """node-1 … node-N."""
    return [f"node-{i + 1}" for i in range(n)]


def child_settings(config: Config, n: int) -> list[NodeSettings]:
    """The N children's settings: SIP port sip.port + i, the RTP range split,
    a control socket beside the parent's and a state subfolder each."""
    state = Path(config.state_dir)
    ranges = split_range(config.sip.rtp_range, n)
    sock = Path(config.control.socket)
    return [
        NodeSettings(
            sip_port=config.sip.port + i,
            rtp_ports=ranges[i],
            control_socket=sock.with_name(f"{sock.stem}.{name}{sock.suffix}"),
            state_dir=state / "nodes" / name,
            edge_state=state,
            primary=i == 0,
        )
        for i, name in enumerate(node_names(n))
    ]


def node_uris(config: Config, n: int) -> list[str]:
    """The N children's SIP URIs, for Kamailio's dispatcher."""
    return [f"sip:{config.sip.host}:{config.sip.port + i}" for i in range(n)]


def node_count(text: str) -> int:
    """`--nodes`' value: a count, or `auto` for one node per core."""
    if text == "auto":
        return len(os.sched_getaffinity(0)) or 1
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of nodes or auto, not {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`ponte serve`'s node flags: --nodes for the parent, the rest are what
    the parent passes each child."""
    p.add_argument(
        "--nodes",
        type=node_count,
        default=None,
        metavar="N",
        help="run N app-server nodes on this machine behind one edge (Kamailio "
        "dispatching to them and to the YAML's `nodes:`, rtpengine); `auto`: one per "
        "core. N > 1 needs a PostgreSQL `database`. Default: 1, or 0 (the edge alone) "
        "when the YAML lists `nodes:` on other machines",
    )
    p.add_argument("--sip-port", type=int, help="this node's SIP port (instead of sip.listen's)")
    p.add_argument("--rtp-ports", metavar="LO-HI", help="this node's RTP ports (sip.rtp_ports)")
    p.add_argument("--control-socket", type=Path, help="this node's control socket")
    p.add_argument("--state-dir", type=Path, help="this node's state folder")
    p.add_argument(
        "--edge-state",
        type=Path,
        help="the state folder of the edge another process runs (a --nodes parent): "
        "this node starts no edge and leaves its tables to that process",
    )
    p.add_argument(
        "--secondary",
        action="store_true",
        help="leave Kamailio's acc and the reload's audit rows to another node",
    )


def from_arguments(args: argparse.Namespace) -> NodeSettings:
    """The node settings `ponte serve`'s flags name."""
    return NodeSettings(
        sip_port=args.sip_port,
        rtp_ports=args.rtp_ports,
        control_socket=args.control_socket,
        state_dir=args.state_dir,
        edge_state=args.edge_state,
        primary=not args.secondary,
    )


def arguments(settings: NodeSettings) -> list[str]:
    """The flags that give a child these settings (from_arguments' inverse)."""
    out: list[str] = []
    for flag, value in (
        ("--sip-port", settings.sip_port),
        ("--rtp-ports", settings.rtp_ports),
        ("--control-socket", settings.control_socket),
        ("--state-dir", settings.state_dir),
        ("--edge-state", settings.edge_state),
    ):
        if value is not None:
            out += [flag, str(value)]
    if not settings.primary:
        out.append("--secondary")
    return out
