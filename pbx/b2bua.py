"""Back-to-back calls: an inbound leg A bridged to an outbound leg B.

Used for extension -> trunk (outbound) and trunk DID -> extension calls. B's
progress rings A; B's answer answers A; media is linked once both legs have
audio; whichever side ends first ends the other, and an unanswered A gets B's
final response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pbx.sipua import SipError
from pbx.useragent import UserAgent

log = logging.getLogger("ponte.call")

# Final responses from B that A should not see as-is.
_HIDE = {401: 503, 407: 503, 408: 480}


@dataclass
class Pair:
    """One bridged call."""

    a: int
    b: int | None
    target: str
    trunk: str | None
    a_answered: bool = False
    a_ringing: bool = False
    a_media: bool = False
    b_media: bool = False
    linked: bool = False
    a_gone: bool = False
    b_gone: bool = False


class B2BUA:
    """Keeps A/B pairs and turns each leg's events into the other's actions."""

    def __init__(
        self,
        ua: UserAgent,
        on_end: Callable[[Pair, int, str], None] | None = None,
        on_answer: Callable[[Pair], None] | None = None,
    ) -> None:
        self.ua = ua
        self.on_end = on_end
        self.on_answer = on_answer
        self.by_leg: dict[int, Pair] = {}

    def owns(self, leg: int) -> bool:
        """Whether this leg belongs to a bridged call."""
        return leg in self.by_leg

    def place(self, a: int, uri: str, account: str | None = None, trunk: str | None = None) -> Pair:
        """Place B towards `uri` for the inbound leg A."""
        pair = Pair(a, None, uri, trunk)
        self.by_leg[a] = pair
        try:
            pair.b = self.ua.make_call(uri, account=account)
        except SipError as exc:
            log.info("call %d cannot reach %s: %s", a, uri, exc)
            pair.b_gone = True
            pair.a_gone = True
            self.by_leg.pop(a, None)
            self.ua.answer(a, 503)
            return pair
        self.by_leg[pair.b] = pair
        log.info(
            "call %d bridging to %s as call %d%s",
            a,
            uri,
            pair.b,
            f" via trunk {trunk}" if trunk else "",
        )
        return pair

    def on_progress(self, leg: int, code: int) -> None:
        """B rings: ring A (once)."""
        pair = self.by_leg.get(leg)
        if pair is None or leg != pair.b or pair.a_ringing or pair.a_answered or pair.a_gone:
            return
        pair.a_ringing = True
        self.ua.answer(pair.a, 180)

    def on_confirmed(self, leg: int) -> None:
        """B answered: answer A."""
        pair = self.by_leg.get(leg)
        if pair is None or leg != pair.b or pair.a_answered or pair.a_gone:
            return
        pair.a_answered = True
        self.ua.answer(pair.a, 200)
        log.info("call %d answered by %s", pair.a, pair.target)
        if self.on_answer is not None:
            self.on_answer(pair)

    def on_media_ready(self, leg: int) -> None:
        """Link A and B once both have audio."""
        pair = self.by_leg.get(leg)
        if pair is None:
            return
        if leg == pair.a:
            pair.a_media = True
        else:
            pair.b_media = True
        if pair.a_media and pair.b_media and not pair.linked and pair.b is not None:
            pair.linked = True
            self.ua.connect(pair.a, pair.b)
            self.ua.connect(pair.b, pair.a)

    def on_media_changed(self, leg: int) -> None:
        """A re-INVITE on either side (a phone's hold or resume): its audio
        port may be new, so link the pair again. A hold is the far phone's
        business, as on a plain call: its a=sendonly is not relayed."""
        pair = self.by_leg.get(leg)
        if pair is not None and pair.linked and pair.b is not None:
            self.ua.connect(pair.a, pair.b)
            self.ua.connect(pair.b, pair.a)

    def on_disconnected(self, leg: int, code: int, reason: str) -> None:
        """One side ended: end the other."""
        pair = self.by_leg.pop(leg, None)
        if pair is None:
            return
        if leg == pair.a:
            pair.a_gone = True
            if pair.b is not None and not pair.b_gone:
                self.ua.hangup(pair.b)
        else:
            pair.b_gone = True
            if not pair.a_gone:
                if pair.a_answered:
                    self.ua.hangup(pair.a)
                else:
                    final = code if 300 <= code < 700 else 480
                    self.ua.hangup(pair.a, _HIDE.get(final, final), reason)
        if pair.a_gone and pair.b_gone and self.on_end is not None:
            self.on_end(pair, code, reason)
