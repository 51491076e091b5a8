"""RFC 4475 section 3.1.2: invalid messages a parser must turn away
(part of the catalogue tests/attacks/make_torture.py writes out).
"""

# Wire data: a torture message's lines are as long as the RFC makes them.
# ruff: noqa: E501

from __future__ import annotations

from tests.attacks.torture_message import SDP, Catalogue, sip

MESSAGES = Catalogue()
add = MESSAGES.add

# -- 3.1.2 invalid messages ----------------------------------------------------
add(
    "badinv01",
    "3.1.2.1",
    False,
    "extraneous header field separators (;;,;,, in Via, ;;;; after Contact)",
    sip(
        """
INVITE sip:conf@{{target}} SIP/2.0
To: sip:conf@{{target}}
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 7
Call-ID: badinv01.{{id}}
CSeq: 8 INVITE
Via: SIP/2.0/UDP {{local}};;,;,,
Contact: "Joe" <sip:joe@{{local}}>;;;;
Content-Length: %CLEN%
Content-Type: application/sdp
""",
        SDP,
    ),
)
add(
    "clerr",
    "3.1.2.2",
    False,
    "Content-Length (9999) larger than the datagram",
    sip(
        """
INVITE sip:conf@{{target}} SIP/2.0
Max-Forwards: 80
To: sip:conf@{{target}}
From: sip:caller@example.net;tag={{id}}
Call-ID: clerr.{{id}}
CSeq: 1 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKcl{{id}}
Contact: <sip:caller@{{local}}>
Content-Type: application/sdp
Content-Length: 9999
""",
        SDP,
    ),
)
add(
    "ncl",
    "3.1.2.3",
    False,
    "negative Content-Length (-999)",
    sip(
        """
INVITE sip:conf@{{target}} SIP/2.0
Max-Forwards: 254
To: sip:conf@{{target}}
From: sip:caller@example.net;tag={{id}}
Call-ID: ncl.{{id}}
CSeq: 1 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKncl{{id}}
Contact: <sip:caller@{{local}}>
Content-Type: application/sdp
Content-Length: -999
""",
        SDP,
    ),
)
add(
    "scalar02",
    "3.1.2.4",
    False,
    "REGISTER with overlarge CSeq, Max-Forwards, Expires and contact expires",
    sip(
        """
REGISTER sip:{{target}} SIP/2.0
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKsc{{id}}
Max-Forwards: 300
From: sip:user@example.com;tag={{id}}
To: sip:user@example.com
Call-ID: scalar02.{{id}}
CSeq: 36893488147419103232 REGISTER
Contact: <sip:user@{{local}}>;expires=280297596632815
Expires: 10000000000000
l: 0
"""
    ),
)
add(
    "scalarlg",
    "3.1.2.5",
    False,
    "a stray 503 with overlarge CSeq, Retry-After and Warning code",
    sip(
        """
SIP/2.0 503 Service Unavailable
Via: SIP/2.0/UDP {{target}};branch=z9hG4bKsl{{id}}
To: <sip:user@example.com>;tag=2{{id}}
From: <sip:other@example.net>;tag=3{{id}}
Call-ID: scalarlg.{{id}}
CSeq: 36893488147419103232 OPTIONS
Retry-After: 949302838503028349304023988
Warning: 1812 overture "In Progress"
Content-Length: 0
"""
    ),
)
add(
    "quotbal",
    "3.1.2.6",
    False,
    "unterminated quoted string in the To display name",
    sip(
        """
INVITE sip:conf@{{target}} SIP/2.0
To: "Mr. J. User <sip:conf@{{target}}>
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 70
Call-ID: quotbal.{{id}}
CSeq: 1 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKqb{{id}}
Contact: <sip:caller@{{local}}>
Content-Type: application/sdp
Content-Length: %CLEN%
""",
        SDP,
    ),
)
add(
    "ltgtruri",
    "3.1.2.7",
    False,
    "Request-URI enclosed in <>",
    sip(
        """
INVITE <sip:conf@{{target}}> SIP/2.0
To: sip:conf@{{target}}
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 23
Call-ID: ltgtruri.{{id}}
CSeq: 1 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKlt{{id}}
Contact: <sip:caller@{{local}}>
Content-Type: application/sdp
Content-Length: %CLEN%
""",
        SDP,
    ),
)
add(
    "lwsruri",
    "3.1.2.8",
    False,
    "LWS inside the Request-URI (sip:conf@host; lr)",
    sip(
        """
INVITE sip:conf@{{target}}; lr SIP/2.0
To: sip:conf@{{target}}
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 70
Call-ID: lwsruri.{{id}}
CSeq: 1 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKlr{{id}}
Contact: <sip:caller@{{local}}>
Content-Type: application/sdp
Content-Length: %CLEN%
""",
        SDP,
    ),
)
add(
    "lwsstart",
    "3.1.2.9",
    False,
    "several SP between the Request-Line's elements",
    sip(
        """
INVITE  sip:conf@{{target}}  SIP/2.0
Max-Forwards: 8
To: sip:conf@{{target}}
From: sip:caller@example.net;tag={{id}}
Call-ID: lwsstart.{{id}}
CSeq: 1 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKls{{id}}
Contact: <sip:caller@{{local}}>
Content-Type: application/sdp
Content-Length: %CLEN%
""",
        SDP,
    ),
)
add(
    "trws",
    "3.1.2.10",
    False,
    "SP characters at the end of the Request-Line",
    sip(
        """
OPTIONS sip:remote-target@{{target}} SIP/2.0\x20\x20
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKtw{{id}}
Max-Forwards: 70
From: <sip:remote-caller@example.net>;tag={{id}}
To: <sip:remote-target@example.com>
Call-ID: trws.{{id}}
CSeq: 1 OPTIONS
l: 0
"""
    ),
)
add(
    "escruri",
    "3.1.2.11",
    False,
    "escaped headers (?Route=) in an INVITE's Request-URI",
    sip(
        """
INVITE sip:conf@{{target}}?Route=%3Csip:127.0.0.1:9%3E SIP/2.0
To: sip:conf@{{target}}
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 87
Call-ID: escruri.{{id}}
CSeq: 1 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKer{{id}}
Contact: <sip:caller@{{local}}>
Content-Type: application/sdp
Content-Length: %CLEN%
""",
        SDP,
    ),
)
add(
    "baddate",
    "3.1.2.12",
    False,
    "Date with a non-GMT time zone (EST)",
    sip(
        """
INVITE sip:conf@{{target}} SIP/2.0
To: sip:conf@{{target}}
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 70
Call-ID: baddate.{{id}}
CSeq: 1 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKbd{{id}}
Date: Fri, 01 Jan 2010 16:00:00 EST
Contact: <sip:caller@{{local}}>
Content-Type: application/sdp
Content-Length: %CLEN%
""",
        SDP,
    ),
)
add(
    "regbadct",
    "3.1.2.13",
    False,
    "REGISTER whose Contact URI with ?headers is not enclosed in <>",
    sip(
        """
REGISTER sip:{{target}} SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag={{id}}
Max-Forwards: 70
Call-ID: regbadct.{{id}}
CSeq: 1 REGISTER
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKrb{{id}}
Contact: sip:user@{{local}}?Route=%3Csip:127.0.0.1:9%3E
l: 0
"""
    ),
)
add(
    "badaspec",
    "3.1.2.14",
    False,
    "spaces inside the addr-spec in To",
    sip(
        """
OPTIONS sip:user@{{target}} SIP/2.0
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKba{{id}}
Max-Forwards: 70
From: "Bell, Alexander" <sip:a.g.bell@example.com>;tag={{id}}
To: "Watson, Thomas" < sip:t.watson@example.org >
Call-ID: badaspec.{{id}}
CSeq: 3 OPTIONS
l: 0
"""
    ),
)
add(
    "baddn",
    "3.1.2.15",
    False,
    "non-token characters (a comma) in an unquoted display name",
    sip(
        """
OPTIONS sip:t.watson@{{target}} SIP/2.0
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKbn{{id}}
Max-Forwards: 70
From: Bell, Alexander <sip:a.g.bell@example.com>;tag={{id}}
To: Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.{{id}}
CSeq: 3923239 OPTIONS
l: 0
"""
    ),
)
add(
    "badvers",
    "3.1.2.16",
    False,
    "unknown protocol version SIP/7.0",
    sip(
        """
OPTIONS sip:t.watson@{{target}} SIP/7.0
Via: SIP/7.0/UDP {{local}};rport;branch=z9hG4bKbv{{id}}
Max-Forwards: 70
From: A. Bell <sip:a.g.bell@example.com>;tag={{id}}
To: T. Watson <sip:t.watson@example.org>
Call-ID: badvers.{{id}}
CSeq: 1 OPTIONS
l: 0
"""
    ),
)
add(
    "mismatch01",
    "3.1.2.17",
    False,
    "Request-Line OPTIONS but CSeq INVITE",
    sip(
        """
OPTIONS sip:user@{{target}} SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 6
Call-ID: mismatch01.{{id}}
CSeq: 8 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKmm1{{id}}
l: 0
"""
    ),
)
add(
    "mismatch02",
    "3.1.2.18",
    False,
    "unknown method NEWMETHOD with CSeq INVITE, carrying SDP",
    sip(
        """
NEWMETHOD sip:conf@{{target}} SIP/2.0
To: sip:conf@{{target}}
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 70
Call-ID: mismatch02.{{id}}
CSeq: 8 INVITE
Contact: <sip:caller@{{local}}>
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKmm2{{id}}
Content-Type: application/sdp
l: %CLEN%
""",
        SDP,
    ),
)
add(
    "bigcode",
    "3.1.2.19",
    False,
    "a stray response with status code 4294967301",
    sip(
        """
SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP {{target}};branch=z9hG4bKbc{{id}}
Call-ID: bigcode.{{id}}
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=8{{id}}
Max-Forwards: 70
Contact: <sip:user@{{local}}>
l: 0
"""
    ),
)
