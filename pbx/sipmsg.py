"""Reading SIP text without a SIP stack: what the pjsua2 adapter parses itself.

A From/To/Contact value split the RFC 3261 way (`parse_name_addr`), a URI's
user part (`uri_user`), the Request-URI's user and Kamailio's X-Ponte-Line
header of an INVITE, a few headers of a response, and any of it made safe
for a log line. Pure functions on strings: no pjsua2 here (pbx/sipua.py is
the adapter; tests/test_layers.py keeps pjsua2 out of this module).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

REQUEST_USER = re.compile(r"^[A-Z]+ sips?:(?:([^@;>\s]+)@)?")
LINE_HEADER = re.compile(r"^X-Ponte-Line:[ \t]*([0-9]{1,16})[ \t]*$", re.IGNORECASE | re.MULTILINE)

# RFC 3261 25.1: the characters of a token (an unquoted display name is
# tokens separated by LWS).
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_LWS = " \t\r\n"


@dataclass(frozen=True)
class NameAddr:
    """A From/To/Contact value split the RFC 3261 way (20.10, 25.1).

    `display` is the display name with its quoting undone (None when there
    is none) and `uri` the addr-spec alone: whatever the display name says
    (a URI, `<`, quotes), it is never taken for the address.
    """

    display: str | None
    uri: str


def parse_name_addr(text: str) -> NameAddr | None:
    """Split `name-addr / addr-spec` followed by header parameters.

    Grammar (RFC 3261 25.1)::

        name-addr    = [ display-name ] LAQUOT addr-spec RAQUOT
        display-name = *(token LWS) / quoted-string
        quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE
        quoted-pair  = "\\" (%x00-09 / %x0B-0C / %x0E-7F)

    An addr-spec outside < > ends at the first `;`: what follows are the
    header's parameters (20.10), e.g. the tag. None when the text is not a
    name-addr or addr-spec (an unterminated quote, a display name with
    characters a token may not hold, no closing `>`).
    """
    s = text.strip(_LWS)
    display: str | None = None
    if s.startswith('"'):
        chars: list[str] = []
        i = 1
        while True:
            if i >= len(s):
                return None  # unterminated quoted-string
            c = s[i]
            if c == "\\":
                if i + 1 >= len(s) or s[i + 1] in "\r\n":
                    return None  # a quoted-pair never escapes CR or LF
                chars.append(s[i + 1])
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                chars.append(c)
                i += 1
        display = "".join(chars)
        rest = s[i:].lstrip(_LWS)
        if not rest.startswith("<"):
            return None  # a quoted display name is always followed by <addr-spec>
    else:
        lt = s.find("<")
        if lt < 0:
            uri = s.split(";", 1)[0].strip(_LWS)  # a bare addr-spec, then header params
            return NameAddr(None, uri) if uri and "<" not in uri and ">" not in uri else None
        words = s[:lt].strip(_LWS)
        if any(c not in _TOKEN_CHARS and c not in _LWS for c in words):
            return None  # e.g. `sip:1001@host <sip:1002@host>`: not a display name
        display = " ".join(words.split()) or None
        rest = s[lt:]
    gt = rest.find(">")
    if gt < 0:
        return None
    uri = rest[1:gt]
    if not uri or uri != uri.strip(_LWS) or "<" in uri:
        return None
    return NameAddr(display, uri)


def uri_user(uri: str) -> str:
    """The user part of a sip:, sips: or tel: URI ("" when it has none).

    RFC 3261 19.1.1: `sip:user:password@host;params?headers`. '@' may appear
    nowhere after the userinfo, so the user is what precedes the only '@'
    (up to a ':' password). %-escapes are undone unless that would yield a
    control character (which would then end up in a log line).
    """
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep:
        return ""
    if scheme == "tel":  # telephone-subscriber, then ;parameters
        user = rest.split(";", 1)[0]
    elif scheme in ("sip", "sips"):
        userinfo, at, _host = rest.partition("@")
        if not at:
            return ""
        user = userinfo.split(":", 1)[0]
    else:
        return ""
    if "%" not in user:
        return user
    try:
        plain = urllib.parse.unquote(user, errors="strict")
    except UnicodeDecodeError:  # escapes that are not UTF-8: keep them escaped
        return user
    return plain if plain.isprintable() else user


def printable(text: str, limit: int = 200) -> str:
    """`text` for a log line: control characters escaped, length bounded."""
    return repr(text[:limit])[1:-1]


def message_headers(
    msg: str, names: Sequence[str] = ("Retry-After", "Warning", "Reason")
) -> dict[str, str]:
    """A few headers of a SIP message, by name (case-insensitive)."""
    found: dict[str, str] = {}
    head = msg.split("\r\n\r\n", 1)[0]
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        for wanted in names:
            if sep and name.strip().lower() == wanted.lower():
                found[wanted] = value.strip()
    return found
