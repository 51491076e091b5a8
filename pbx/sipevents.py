"""What the pjsua2 adapter (pbx/sipua.py) and its owner say to each other.

`IncomingCall` is a new inbound call as the adapter reports it, `SipEvents`
the callbacks its owner implements (ponte/routing.py's Router, or a test's
fake), `SipError` what a failed operation raises. No pjsua2 here: the app and
the in-process tests name these without the SIP stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class IncomingCall:
    """What the app needs to route a new inbound call."""

    leg: int
    request_user: str  # the Request-URI's user part: the number dialed
    from_uri: str  # the From addr-spec alone (no display name, no parameters)
    from_user: str  # its user part, by parse_name_addr/uri_user (never the display name)
    sip_call_id: str
    source: str  # "ip:port" the INVITE came from
    # The extension Kamailio authenticated (its X-Ponte-Line header); None for
    # anything else, e.g. a provider's call to a DID. Only the app knows
    # whether `source` is Kamailio, so it decides whether to believe it.
    line: str | None = None
    from_display: str | None = None  # the From display name, as the caller chose it
    # The hand-off headers another node sent (ponte/handoff.py), when present.
    handoff: dict[str, str] = field(default_factory=dict)
    # A browser the console admitted (Kamailio's X-Ponte-Web: "<token> <room>
    # <address>", added after it took the one-time token); believed, like
    # `line`, only from Kamailio.
    web: str | None = None


# A hand-off INVITE's headers, from the node the caller called to the room's
# home: room, role, caller, whether a name was recorded, expiry, HMAC token.
WEB_HEADER = "X-Ponte-Web"
HANDOFF_HEADERS = (
    "X-Ponte-Room",
    "X-Ponte-Role",
    "X-Ponte-Caller",
    "X-Ponte-Name",
    "X-Ponte-Expires",
    "X-Ponte-Token",
)


class SipEvents(Protocol):
    """Callbacks the adapter's owner implements (all on the polling thread).

    Owners may also define `on_progress(leg, code)` (180/183 on an outbound
    leg), `on_registration(account, code, reason, active)` and
    `on_transfer_status(leg, code, final)` (a REFER we sent).

    `on_media_changed(leg, held)` comes after every renegotiation of a leg's
    media once `on_media_ready` came (a re-INVITE: hold, resume, a new
    codec). The leg's conference port may be a new one with no links:
    the owner links it again. `held`: the far end holds the call
    (a=sendonly or a=inactive), so what it sends must not be mixed in.
    """

    def on_incoming(self, call: IncomingCall) -> None: ...
    def on_media_ready(self, leg: int) -> None: ...
    def on_media_changed(self, leg: int, held: bool) -> None: ...
    def on_confirmed(self, leg: int) -> None: ...
    def on_digit(self, leg: int, digit: str, method: str) -> None: ...
    def on_disconnected(
        self, leg: int, code: int, reason: str, headers: dict[str, str]
    ) -> None: ...


class SipError(Exception):
    """A pjsua2 operation failed."""
