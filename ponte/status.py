"""`ponte status`: what the server holds right now, as the control socket answers it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ponte import clusterview
from ponte.services import Services
from store.engine import describe

if TYPE_CHECKING:  # aiohttp loads only when the console is on
    from ponte.console import Console


def status(
    svc: Services,
    console: Console | None,
    quality: dict[int, dict[str, Any]],
    cluster: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Calls, rooms and their members, latencies and the overload counters,
    and every node of the cluster (ponte/clusterview.py).

    `quality`: rtpengine's live figures per leg, asked off the loop thread;
    `cluster`: the registry's view, read off it too (None: this node alone)."""
    ua = svc.ua

    def members(room: Any) -> list[dict[str, Any]]:
        out = []
        for m in room.members.values():
            leg = svc.legs.get(m.leg)
            if leg is None:
                continue
            out.append(
                {
                    "leg": m.leg,
                    "role": m.role,
                    "muted": m.muted,
                    "on_hold": m.held,
                    "caller": leg.caller,
                    # (heard, said), 0-255: what talk detection reads
                    "levels": ua.levels(m.leg),
                    "hand": m.leg in room.hands,
                    "help": svc.helpdesk.wants_help(m.leg),
                    # rtpengine's live figures for the member's call
                    "quality": quality.get(m.leg, {}),
                }
            )
        return out

    live = svc.rooms.live
    return {
        "calls": ua.call_count(),
        "legs": len(svc.legs),
        "conf_ports": ua.conf_ports(),
        "links": live.link_count(),
        "rooms": {
            name: {
                "locked": room.locked,
                "lecture": room.lecture,
                "started": room.started,
                "members": members(room),
                # Raised hands in raise order: the next one given the floor first.
                "hands": list(room.hands),
            }
            for name, room in live.rooms.items()
        },
        # Callers who asked for an operator: ringing, talking, or unanswered.
        "help_requests": svc.helpdesk.pending(),
        "join_latencies": list(svc.entry.join_latencies),
        "action_latencies": [list(a) for a in svc.rooms.action_latencies],
        "accepting": svc.router.accepting,
        "shed": svc.router.shed,
        "screened": ua.screened(),
        # Where this node's records go, and how many writes wait for the
        # database (a full disk, or a PostgreSQL away): they land on return.
        "records": {
            "database": describe(svc.stores.database),
            "node": svc.stores.node,
            "waiting_writes": len(svc.stores.writer.pending),
        },
        "cluster": cluster if cluster is not None else clusterview.local(svc),
    }
