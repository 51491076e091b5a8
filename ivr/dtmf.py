"""DTMF intake: one logical digit stream from RFC 2833 and SIP INFO.

Some phones send every key both ways. A digit that arrives by one method is
dropped when the same digit came by the other method within `window` seconds
and has not been matched yet, so "11" sent both ways still counts as "11".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

VALID_DIGITS = frozenset("0123456789*#ABCD")


@dataclass
class _Seen:
    digit: str
    method: str
    at: float
    matched: bool = False


class DtmfDeduper:
    """Merges the two DTMF methods into one stream of key presses."""

    def __init__(self, window: float = 0.5) -> None:
        self.window = window
        self._recent: deque[_Seen] = deque()

    def accept(self, digit: str, method: str, now: float) -> bool:
        """True if this digit is a new key press; False for a duplicate or junk."""
        digit = digit.upper()
        if digit not in VALID_DIGITS:
            return False
        while self._recent and now - self._recent[0].at > self.window:
            self._recent.popleft()
        for seen in self._recent:
            if not seen.matched and seen.method != method and seen.digit == digit:
                seen.matched = True
                return False
        self._recent.append(_Seen(digit, method, now))
        return True
