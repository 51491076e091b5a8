"""A fake SIP user agent (pbx.useragent.UserAgent) for in-process server tests.

No SIP, no media: it records what the server asked for (answers, prompts,
links, outbound calls, hang-ups) and lets a test play the caller's side.
Time is fake too: `poll(ms)` moves the shared `FakeTime` forward, so a 15 s
timeout passes in microseconds. Events the server caused (a hang-up's
DISCONNECTED) are delivered on the next poll, as pjsua2 does.

This never claims a call works: the real-call tests do that. It shows that
routing, the entry IVR, rooms and dial-out decide and steer as they should.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.tones import write_segments
from pbx.recorder import Result
from pbx.sipua import IncomingCall, SipEvents


class FakeTime:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class FakeLeg:
    """What the server did to one call."""

    id: int
    uri: str = ""  # an outbound leg's target
    answers: list[int] = field(default_factory=list)
    plays: list[tuple[str, list[str]]] = field(default_factory=list)  # (slot, file names)
    hangup_code: int | None = None
    media: bool = False
    gone: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # an outbound leg's INVITE headers
    dtmf: str = ""  # digits sent on the leg


class FakeUA:
    """Records the server's requests; `call`, `digits`, `answer_out` play the far ends."""

    time: FakeTime  # set by the test before the server is built

    def __init__(self, events: SipEvents, host: str, port: int, *_a: Any, **_k: Any) -> None:
        self.events = events
        self.made_with = dict(_k)  # the server's settings for its user agent
        self.bound_port = port or 5060
        self.legs: dict[int, FakeLeg] = {}
        self.links: set[tuple[int, int]] = set()
        self.shared_plays: list[tuple[str, tuple[int, ...]]] = []
        self.joined_plays: list[tuple[str, int, int]] = []
        self.accounts: set[str] = set()
        self._ids = itertools.count(1)
        self.recorders: dict[int, Path] = {}
        self._due: list[Callable[[], None]] = []
        self._started = False

    # -- life ---------------------------------------------------------------
    def start(self) -> None:
        self._started = True

    @property
    def started(self) -> bool:
        return self._started

    def poll(self, timeout_ms: int) -> None:
        self.time.t += timeout_ms / 1000
        due, self._due = self._due, []
        for fn in due:
            fn()

    def shutdown(self, timeout: float = 2.0) -> None:
        for leg in list(self.legs.values()):
            if not leg.gone:
                self.hangup(leg.id)
        self.poll(0)
        self._started = False

    # -- accounts -------------------------------------------------------------
    def add_account(self, key: str, id_uri: str, **_k: Any) -> None:
        self.accounts.add(key)

    def remove_account(self, key: str) -> None:
        self.accounts.discard(key)

    def send_message(self, uri: str, text: str) -> None:
        pass

    # -- calls ------------------------------------------------------------------
    def answer(
        self, leg: int, code: int = 200, reason: str = "", headers: dict[str, str] | None = None
    ) -> None:
        self.legs[leg].answers.append(code)
        if code >= 300:
            self._end(leg, code)

    def hangup(self, leg: int, code: int = 0, reason: str = "") -> None:
        fake = self.legs.get(leg)
        if fake is None or fake.gone:
            return
        fake.hangup_code = code
        self._end(leg, code or 200)

    def _end(self, leg: int, code: int) -> None:
        fake = self.legs[leg]
        if fake.gone:
            return
        fake.gone, fake.media = True, False
        self.links = {link for link in self.links if leg not in link}
        self._due.append(lambda: self.events.on_disconnected(leg, code, "fake", {}))

    def make_call(
        self, uri: str, account: str | None = None, headers: dict[str, str] | None = None
    ) -> int:
        leg = next(self._ids)
        self.legs[leg] = FakeLeg(leg, uri, headers=dict(headers or {}))
        return leg

    def send_dtmf(self, leg: int, digits: str, method: str = "rfc2833") -> None:
        self.legs[leg].dtmf += digits

    def has_leg(self, leg: int) -> bool:
        fake = self.legs.get(leg)
        return fake is not None and not fake.gone

    def has_media(self, leg: int) -> bool:
        fake = self.legs.get(leg)
        return fake is not None and fake.media

    def rx_packets(self, leg: int) -> int | None:
        return 1 if self.has_leg(leg) else None

    def call_count(self) -> int:
        return sum(not leg.gone for leg in self.legs.values())

    def conf_ports(self) -> int:
        return self.call_count()

    def levels(self, leg: int) -> tuple[int, int] | None:
        return (0, 0) if self.has_media(leg) else None

    def screened(self) -> dict[str, int]:
        return {}

    # -- media --------------------------------------------------------------------
    def play(
        self, leg: int, files: Sequence[Path], *, loop: bool = False, slot: str = "prompt"
    ) -> None:
        if self.has_leg(leg):
            # Prompts are "<id>-<hash of the text>.wav", tones "<name>-<rate>.wav": keep the id.
            names = [re.sub(r"-([0-9a-f]{12}|[0-9]{4,5})$", "", Path(f).stem) for f in files]
            self.legs[leg].plays.append((slot, names))

    def play_to(
        self,
        legs: Sequence[int],
        files: Sequence[Path],
        *,
        loop: bool = False,
        slot: str = "prompt",
    ) -> None:
        # One player for all (how many, tests read in `shared_plays`).
        self.shared_plays.append((slot, tuple(legs)))
        for leg in legs:
            self.play(leg, files, loop=loop, slot=slot)

    def stop_play(self, leg: int, slot: str = "prompt") -> None:
        pass

    def join_play(self, leg: int, with_legs: Sequence[int], slot: str) -> bool:
        for other in with_legs:
            played = [names for s, names in self.legs[other].plays if s == slot]
            if other != leg and self.has_leg(other) and self.has_leg(leg) and played:
                # What the other leg's player plays, heard from it (tests read
                # `joined_plays`).
                self.joined_plays.append((slot, leg, other))
                self.legs[leg].plays.append((slot, played[-1]))
                return True
        return False

    def drop_play(self, legs: Sequence[int], slot: str) -> None:
        pass

    def record(self, leg: int, path: Path) -> None:
        pass

    def stop_record(self, leg: int) -> None:
        pass

    def add_recorder(self, path: Path) -> int:
        rec = next(self._ids)
        self.recorders[rec] = path
        return rec

    def end_recorder(self, rec: int, on_done: Callable[[Result], None] | None = None) -> None:
        path = self.recorders.pop(rec, None)
        if path is None:
            return
        self.links = {link for link in self.links if rec not in link}
        write_segments(path, [])
        if on_done is not None:
            on_done(Result(path, 0, path.stat().st_size, 0, 0.0, None))

    def set_listen_level(self, leg: int, level: float) -> None:
        pass

    def connect(self, src: int, dst: int) -> None:
        self.links.add((src, dst))

    def disconnect(self, src: int, dst: int) -> None:
        self.links.discard((src, dst))

    # -- the far ends (the test's side) ---------------------------------------------
    def call(
        self,
        to: str,
        caller: str = "5511999990000",
        source: str = "192.0.2.7:5060",
        handoff: dict[str, str] | None = None,
    ) -> int:
        """A phone calls `to` (or another node hands a caller over, with its
        `handoff` headers); answered calls get their media at once."""
        leg = next(self._ids)
        self.legs[leg] = FakeLeg(leg)
        self.events.on_incoming(
            IncomingCall(
                leg,
                to,
                f"sip:{caller}@192.0.2.7",
                caller,
                f"call-{leg}",
                source,
                handoff=dict(handoff or {}),
            )
        )
        if 200 in self.legs[leg].answers or 183 in self.legs[leg].answers:
            self.legs[leg].media = True
            if 200 in self.legs[leg].answers:
                self.events.on_confirmed(leg)
            self.events.on_media_ready(leg)
        return leg

    def digits(self, leg: int, keys: str) -> None:
        """The phone keys digits (RFC 2833), 100 ms apart."""
        for key in keys:
            self.events.on_digit(leg, key, "rfc2833")
            self.time.t += 0.1

    def answer_out(self, leg: int) -> None:
        """The callee of an outbound leg answers."""
        self.legs[leg].media = True
        self.events.on_confirmed(leg)
        self.events.on_media_ready(leg)

    def reinvite(self, leg: int, held: bool = False) -> None:
        """The phone renegotiates its media (a re-INVITE; `held`: a=sendonly
        or a=inactive): as pjsua recreates the stream's conference port,
        every link to and from the leg is gone before the server is told."""
        self.links = {link for link in self.links if leg not in link}
        self.events.on_media_changed(leg, held)

    def hang_up(self, leg: int, code: int = 200) -> None:
        """The far end hangs up (or, unanswered, refuses with `code`)."""
        self._end(leg, code)

    def prompts(self, leg: int, slot: str = "prompt") -> list[str]:
        """Every file name played to a leg in a slot, in order."""
        return [name for s, names in self.legs[leg].plays if s == slot for name in names]
