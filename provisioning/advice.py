"""What a valid configuration means for phones on the network, in words.

`ponte check` prints these lines and `ponte serve` logs them: a loopback
`pbx.listen` is legal (tests, a demo on one machine) but no phone elsewhere
can then reach the appliance, and an admin should hear that plainly.
"""

from __future__ import annotations

from provisioning.schema import Config


def network_notes(cfg: Config) -> list[tuple[str, str]]:
    """(level, message) pairs: "warning" for what will surprise, else "info"."""
    if not (cfg.extensions or cfg.trunks):
        return [
            (
                "warning",
                f"no extensions or trunks: Kamailio and rtpengine do not run, and only "
                f"programs on this host can call sip:{cfg.sip.listen}",
            )
        ]
    pbx = cfg.pbx
    notes: list[tuple[str, str]] = []
    if not pbx.faces_network:
        notes.append(
            (
                "warning",
                f"pbx.listen {pbx.listen} is a loopback address: only phones on this host "
                "can register and call. Set it to this machine's LAN address for phones "
                "on your network.",
            )
        )
    else:
        lo, hi = pbx.media_range
        notes.append(
            (
                "info",
                f"phones register at {pbx.advertised}:{pbx.port}; open UDP {pbx.port} (SIP) "
                f"and UDP {lo}-{hi} (RTP via rtpengine) on {pbx.host} in the firewall",
            )
        )
    if pbx.public_address:
        notes.append(
            (
                "info",
                f"advertising {pbx.public_address} (1:1 NAT): forward UDP {pbx.port} and "
                f"{pbx.media_ports} from it to {pbx.host}",
            )
        )
    return notes
