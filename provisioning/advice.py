"""What a valid configuration means for phones on the network, in words.

`ponte check` prints these lines and `ponte serve` logs them: a loopback
`pbx.listen` is legal (tests, a demo on one machine) but no phone elsewhere
can then reach the appliance, and an admin should hear that plainly.
"""

from __future__ import annotations

import re

from provisioning.schema import Config


def network_notes(cfg: Config) -> list[tuple[str, str]]:
    """(level, message) pairs: "warning" for what will surprise, else "info"."""
    if not (cfg.extensions or cfg.trunks or cfg.pbx.websocket.listen):
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
    notes += browser_notes(cfg)
    if pbx.public_address:
        notes.append(
            (
                "info",
                f"advertising {pbx.public_address} (1:1 NAT): forward UDP {pbx.port} and "
                f"{pbx.media_ports} from it to {pbx.host}",
            )
        )
    return notes


# The example file's own placeholders: fine on a laptop, never on a LAN.
PLACEHOLDER = re.compile(r"^troque-esta-senha(-\d+)?$")
MIN_PASSWORD = 12
# A few of the passwords every guessing list starts with (svcrack's and
# SecLists' first lines, and their Portuguese cousins).
COMMON = frozenset(
    {
        "123456",
        "1234567",
        "12345678",
        "123456789",
        "1234567890",
        "111111",
        "000000",
        "123123",
        "654321",
        "password",
        "passw0rd",
        "password1",
        "senha",
        "senha123",
        "mudar123",
        "admin",
        "admin123",
        "root",
        "secret",
        "changeme",
        "voip",
        "sip",
        "asterisk",
        "qwerty",
        "abc123",
        "iloveyou",
        "letmein",
        "welcome",
        "default",
    }
)


def _secrets(cfg: Config) -> list[tuple[str, str]]:
    """(who, password) for every SIP credential in the configuration."""
    out = [(f"extension {e.number}", e.password) for e in cfg.extensions]
    out += [(f"trunk {t.name}", t.password) for t in cfg.trunks]
    return out


def password_warnings(cfg: Config) -> list[str]:
    """Passwords a guesser would find early: the example's, common or short
    (the schema already refuses under 10 characters or containing the number)."""
    warnings = []
    for who, password in _secrets(cfg):
        lowered = password.lower()
        if PLACEHOLDER.match(password):
            warnings.append(f"{who}: the example's placeholder password; set a real one")
        elif lowered in COMMON or lowered.rstrip("0123456789") in COMMON:
            warnings.append(f"{who}: a common password, on every guessing list")
        elif len(password) < MIN_PASSWORD:
            warnings.append(f"{who}: password under {MIN_PASSWORD} characters")
    return warnings


def refusals(cfg: Config) -> list[str]:
    """Why this configuration must not run: the example's placeholder
    passwords on an appliance that phones elsewhere can reach."""
    if not cfg.pbx.faces_network:
        return []
    return [
        f"{who} still has the example's placeholder password, and pbx.listen "
        f"{cfg.pbx.listen} faces the network: set a real password"
        for who, password in _secrets(cfg)
        if PLACEHOLDER.match(password)
    ]


def browser_notes(cfg: Config) -> list[tuple[str, str]]:
    """What the browsers' WebSocket (pbx.websocket) needs besides itself."""
    ws = cfg.pbx.websocket
    if ws.listen is None:
        return []
    lo, hi = cfg.pbx.media_range
    notes = [
        (
            "info",
            f"browsers join at the console's /join page and call over ws://{ws.listen}; "
            f"open TCP {ws.port} (WebSocket) and UDP {lo}-{hi} (DTLS-SRTP via rtpengine) "
            f"on {ws.host} in the firewall",
        )
    ]
    if not cfg.web.listen:
        notes.append(
            (
                "warning",
                "pbx.websocket is set but web.listen is not: no join page, and Kamailio "
                "refuses every WebSocket (it accepts only the console's origin)",
            )
        )
    if not any(c.lower().startswith("opus/") for c in cfg.sip.codecs):
        notes.append(
            (
                "info",
                "sip.codecs has no opus/48000: browsers fall back to G.722 or PCMU; add "
                "opus/48000 for their Opus",
            )
        )
    return notes
