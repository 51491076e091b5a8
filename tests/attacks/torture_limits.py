"""Not in RFC 4475: messages past the size limits, and binary junk (part of the
catalogue tests/attacks/make_torture.py writes out).
"""

# Wire data: a torture message's lines are as long as the RFC makes them.
# ruff: noqa: E501

from __future__ import annotations

from tests.attacks.torture_message import SDP, Catalogue, sip

MESSAGES = Catalogue()
add = MESSAGES.add

# -- not in RFC 4475: the size limits ------------------------------------------
add(
    "oversize",
    "extra",
    False,
    "a 20 kB INVITE (one 19 kB header): over Kamailio's 8 kB max_message",
    sip(
        f"""
INVITE sip:conf@{{{{target}}}} SIP/2.0
Via: SIP/2.0/UDP {{{{local}}}};rport;branch=z9hG4bKov{{{{id}}}}
Max-Forwards: 70
From: sip:caller@example.net;tag={{{{id}}}}
To: sip:conf@{{{{target}}}}
Call-ID: oversize.{{{{id}}}}
CSeq: 1 INVITE
X-Padding: {"A" * 19000}
Contact: <sip:caller@{{{{local}}}}>
Content-Type: application/sdp
Content-Length: %CLEN%
""",
        SDP,
    ),
)
add(
    "binary",
    "extra",
    False,
    "a datagram of binary junk shaped like a Request-Line",
    b"INVITE \x00\xff\xfe\x01sip:\x80\x81@\r\n\x00\x00" + bytes(range(256)) * 4 + b"\r\n\r\n",
)
