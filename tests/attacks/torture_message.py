"""One torture message and how the catalogue writes one down, shared by the
families of messages (tests/attacks/torture_*.py) that make_torture.py writes out."""

from __future__ import annotations

from dataclasses import dataclass

SDP = (
    "v=0\r\n"
    "o=torture 29739 7272939 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)


@dataclass(frozen=True)
class Torture:
    """One message: its RFC 4475 name, section, validity and bytes."""

    name: str
    section: str
    valid: bool
    what: str
    data: bytes

    @property
    def kind(self) -> str:
        return "response" if self.data.startswith(b"SIP/") else "request"

    @property
    def method(self) -> str | None:
        if self.kind == "response":
            return None
        return self.data.split(b" ", 1)[0].decode("utf-8", "replace")


def sip(head: str, body: str | bytes = b"") -> bytes:
    """Header block (lines separated by \\n here, CRLF on the wire) + blank line + body.

    `%CLEN%` in the head becomes the body's real length in octets.
    """
    raw = body.encode() if isinstance(body, str) else body
    lines = head.strip("\n").split("\n")
    text = "\r\n".join(lines).replace("%CLEN%", str(len(raw)))
    return text.encode("utf-8") + b"\r\n\r\n" + raw


MESSAGES: list[Torture] = []


class Catalogue(list[Torture]):
    """A family's messages, in the order they are added: index.json keeps it,
    and the attack suite sends them in that order."""

    def add(self, name: str, section: str, valid: bool, what: str, data: bytes) -> None:
        self.append(Torture(name, section, valid, what, data))
