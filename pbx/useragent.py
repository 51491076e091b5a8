"""What the app server asks of its SIP user agent, as a Protocol.

`pbx.sipua.SipUA` (pjsua2) is the one implementation that talks SIP; the
in-process tests use a fake with the same methods (tests/fakeua.py). Legs are
plain ints; events go back through `events` (`pbx.sipua.SipEvents`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pbx.recorder import Result
    from pbx.sipua import SipEvents


class UserAgent(Protocol):
    """Calls, their media on the conference bridge, and trunk accounts."""

    bound_port: int
    events: SipEvents  # where the agent reports what happens

    # -- life -------------------------------------------------------------
    def start(self) -> None:
        """Create the endpoint and bind SIP."""

    @property
    def started(self) -> bool:
        """Between start and shutdown."""

    def poll(self, timeout_ms: int) -> None:
        """Handle SIP and media events for at most `timeout_ms`."""

    def shutdown(self, timeout: float = 2.0) -> None:
        """Hang up everything and release the endpoint."""

    # -- accounts and messages ----------------------------------------------
    def add_account(
        self,
        key: str,
        id_uri: str,
        *,
        registrar: str = "",
        username: str = "",
        password: str = "",
        retry_seconds: int = 30,
        expires: int = 300,
        proxy: str = "",
    ) -> None:
        """A trunk's account (registering when `registrar` is set)."""

    def remove_account(self, key: str) -> None:
        """Drop an account."""

    def send_message(self, uri: str, text: str) -> None:
        """A SIP MESSAGE."""

    # -- calls ----------------------------------------------------------------
    def answer(
        self, leg: int, code: int = 200, reason: str = "", headers: dict[str, str] | None = None
    ) -> None:
        """Answer an incoming leg (1xx, 2xx or a final refusal)."""

    def hangup(self, leg: int, code: int = 0, reason: str = "") -> None:
        """End a leg (BYE, CANCEL or a final response)."""

    def make_call(
        self, uri: str, account: str | None = None, headers: dict[str, str] | None = None
    ) -> int:
        """Place an outbound leg."""

    def send_dtmf(self, leg: int, digits: str, method: str = "rfc2833") -> None:
        """Send digits on a leg (RFC 2833 or SIP INFO)."""

    def has_leg(self, leg: int) -> bool:
        """Whether the leg is live."""

    def has_media(self, leg: int) -> bool:
        """Whether the leg's audio is on the conference bridge."""

    def rx_packets(self, leg: int) -> int | None:
        """RTP packets received on the leg so far."""

    def call_count(self) -> int:
        """Live legs."""

    def conf_ports(self) -> int:
        """Conference bridge ports in use."""

    def levels(self, leg: int) -> tuple[int, int] | None:
        """(heard, said) signal levels, 0-255."""

    def screened(self) -> dict[str, int]:
        """Requests the SIP screen refused, by rule."""

    # -- media ------------------------------------------------------------------
    def play(
        self, leg: int, files: Sequence[Path], *, loop: bool = False, slot: str = "prompt"
    ) -> None:
        """Play files in turn to a leg, replacing what plays in `slot`."""

    def play_to(
        self,
        legs: Sequence[int],
        files: Sequence[Path],
        *,
        loop: bool = False,
        slot: str = "prompt",
    ) -> None:
        """Play files in turn to several legs from one player, replacing what
        plays in each one's `slot`; `stop_play` then stops it for one leg."""

    def join_play(self, leg: int, with_legs: Sequence[int], slot: str) -> bool:
        """Let a leg hear the player the first of `with_legs` has in `slot`
        (replacing its own); False when none of them has one."""

    def drop_play(self, legs: Sequence[int], slot: str) -> None:
        """`stop_play` for several legs at once: a player they share leaves
        every one of them in the same instant."""

    def stop_play(self, leg: int, slot: str = "prompt") -> None:
        """Stop what plays in `slot`."""

    def record(self, leg: int, path: Path) -> None:
        """Record what the leg says into a WAV file."""

    def stop_record(self, leg: int) -> None:
        """Stop recording."""

    def add_recorder(self, path: Path) -> int:
        """A bridge port recording what is connected to it into a WAV file
        (from a queue, off the media clock); connect legs to its id."""

    def end_recorder(self, rec: int, on_done: Callable[[Result], None] | None = None) -> None:
        """Take a recorder off the bridge; `on_done` (another thread) once
        the file is complete."""

    def set_listen_level(self, leg: int, level: float) -> None:
        """How loud the leg hears the bridge."""

    def connect(self, src: int, dst: int) -> None:
        """Send `src`'s audio to `dst`."""

    def disconnect(self, src: int, dst: int) -> None:
        """Stop sending `src`'s audio to `dst`."""
