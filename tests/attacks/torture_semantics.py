"""RFC 4475 sections 3.2 to 3.4: well-formed messages that test the transaction
layer, the application layer and RFC 2543 backward compatibility (part of the
catalogue tests/attacks/make_torture.py writes out).
"""

# Wire data: a torture message's lines are as long as the RFC makes them.
# ruff: noqa: E501

from __future__ import annotations

from tests.attacks.torture_message import SDP, Catalogue, sip

MESSAGES = Catalogue()
add = MESSAGES.add

# -- 3.2 transaction layer -----------------------------------------------------
add(
    "badbranch",
    "3.2.1",
    True,
    "Via branch without the z9hG4bK magic cookie (RFC 2543 transaction matching)",
    sip(
        """
OPTIONS sip:user@{{target}} SIP/2.0
To: sip:user@example.com
From: sip:caller@example.org;tag={{id}}
Max-Forwards: 70
Call-ID: badbranch.{{id}}
CSeq: 18 OPTIONS
Via: SIP/2.0/UDP {{local}};rport;branch={{id}}
l: 0
"""
    ),
)

# -- 3.3 application layer -----------------------------------------------------
add(
    "insuf",
    "3.3.1",
    False,
    "INVITE without Call-ID, From or To",
    sip(
        """
INVITE sip:conf@{{target}} SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKin{{id}}
Max-Forwards: 70
Contact: <sip:caller@{{local}}>
Content-Type: application/sdp
l: %CLEN%
""",
        SDP,
    ),
)
add(
    "unkscm",
    "3.3.2",
    True,
    "Request-URI with an unknown scheme (expect 416)",
    sip(
        """
OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 3
Call-ID: unkscm.{{id}}
CSeq: 3923 OPTIONS
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKus{{id}}
l: 0
"""
    ),
)
add(
    "novelsc",
    "3.3.3",
    True,
    "Request-URI with a known but atypical scheme (soap.beep)",
    sip(
        """
OPTIONS soap.beep://127.0.0.1:9/sip SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 3
Call-ID: novelsc.{{id}}
CSeq: 3923 OPTIONS
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKns{{id}}
l: 0
"""
    ),
)
add(
    "unksm2",
    "3.3.4",
    True,
    "REGISTER with isbn:, http: and name: URIs in To, From and Contact",
    sip(
        """
REGISTER sip:{{target}} SIP/2.0
To: isbn:2983792873
From: <http://www.example.com>;tag={{id}}
Call-ID: unksm2.{{id}}
CSeq: 3923 REGISTER
Max-Forwards: 70
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKu2{{id}}
Contact: <name:John_Smith>
l: 0
"""
    ),
)
add(
    "bext01",
    "3.3.5",
    True,
    "Require and Proxy-Require with unknown option tags (expect 420)",
    sip(
        """
OPTIONS sip:user@{{target}} SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 70
Call-ID: bext01.{{id}}
CSeq: 8 OPTIONS
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKbx{{id}}
Require: nothingSupportsThis, nothingSupportsThisEither
Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis
Content-Length: 0
"""
    ),
)
add(
    "invut",
    "3.3.6",
    True,
    "INVITE with an unknown Content-Type and Accept: application/sdp (expect 415)",
    sip(
        """
INVITE sip:conf@{{target}} SIP/2.0
Contact: <sip:caller@{{local}}>
To: sip:conf@{{target}}
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 70
Call-ID: invut.{{id}}
CSeq: 8 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKiu{{id}}
Content-Type: application/unknownformat
Accept: application/sdp
Content-Length: %CLEN%
""",
        '<audio>\r\n <pcmu port="9"/>\r\n</audio>\r\n',
    ),
)
add(
    "regaut01",
    "3.3.7",
    True,
    "REGISTER with an unknown Authorization scheme",
    sip(
        """
REGISTER sip:{{target}} SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag={{id}}
Max-Forwards: 70
Call-ID: regaut01.{{id}}
CSeq: 9338 REGISTER
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKra{{id}}
Authorization: NoOneKnowsThisScheme opaque-data=here
Content-Length:0
"""
    ),
)
add(
    "multi01",
    "3.3.8",
    False,
    "several values in single-value fields (To, Call-ID, Max-Forwards, CSeq, From)",
    sip(
        """
INVITE sip:conf@{{target}} SIP/2.0
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKmu{{id}}
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.{{id}}
Contact: <sip:caller@{{local}}>
Call-ID: multi01.98asdh@192.0.2.2
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.3
To: sip:conf@{{target}}
Max-Forwards: 5
From: sip:caller@example.net;tag={{id}}
To: sip:other@example.net
Content-Type: application/sdp
l: %CLEN%
""",
        SDP,
    ),
)
add(
    "mcl01",
    "3.3.9",
    False,
    "three Content-Length values, none matching the body",
    sip(
        """
OPTIONS sip:user@{{target}} SIP/2.0
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKmc{{id}}
To: sip:user@example.com
Call-ID: mcl01.{{id}}
Max-Forwards: 57
From: sip:caller@example.net;tag={{id}}
Content-Length: 5
CSeq: 59 OPTIONS
Content-Length: 4
Content-Type: text/plain
Content-Length: 3
""",
        "01234567890123456789012345678901234567890123456789\r\n",
    ),
)
# The RFC's broadcast Via is 255.255.255.255; ours is the loopback network's
# broadcast, port 9 (discard), so even a proxy that forwarded it stays on lo.
add(
    "bcast",
    "3.3.10",
    True,
    "a stray 200 whose second Via is a broadcast address",
    sip(
        """
SIP/2.0 200 OK
Via: SIP/2.0/UDP {{target}};branch=z9hG4bKbb{{id}}
Via: SIP/2.0/UDP 127.255.255.255:9;branch=z9hG4bK1saber23
Call-ID: bcast.{{id}}
CSeq: 2 OPTIONS
From: sip:user@example.com;tag=1{{id}}
To: sip:user@example.net;tag=2{{id}}
Content-Length: 0
"""
    ),
)
add(
    "zeromf",
    "3.3.11",
    True,
    "OPTIONS with Max-Forwards: 0 (a proxy answers 483)",
    sip(
        """
OPTIONS sip:user@{{target}} SIP/2.0
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKzm{{id}}
To: sip:user@example.com
From: sip:caller@example.net;tag={{id}}
Call-ID: zeromf.{{id}}
CSeq: 39234321 OPTIONS
Max-Forwards: 0
l: 0
"""
    ),
)
add(
    "cparam01",
    "3.3.12",
    True,
    "REGISTER with an unknown Contact header parameter (no <>)",
    sip(
        """
REGISTER sip:{{target}} SIP/2.0
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKc1{{id}}
Max-Forwards: 70
From: sip:watson@example.com;tag={{id}}
To: sip:watson@example.com
Call-ID: cparam01.{{id}}
CSeq: 2 REGISTER
Contact: sip:+19725552222@{{local}};unknownparam
l: 0
"""
    ),
)
add(
    "cparam02",
    "3.3.13",
    True,
    "REGISTER with an unknown Contact URI parameter (inside <>)",
    sip(
        """
REGISTER sip:{{target}} SIP/2.0
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKc2{{id}}
Max-Forwards: 70
From: sip:watson@example.com;tag={{id}}
To: sip:watson@example.com
Call-ID: cparam02.{{id}}
CSeq: 3 REGISTER
Contact: <sip:+19725552222@{{local}};unknownparam>
l: 0
"""
    ),
)
add(
    "regescrt",
    "3.3.14",
    True,
    "REGISTER whose Contact carries an escaped Route header",
    sip(
        """
REGISTER sip:{{target}} SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag={{id}}
Max-Forwards: 70
Call-ID: regescrt.{{id}}
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKre{{id}}
Contact: <sip:user@{{local}}?Route=%3Csip:127.0.0.1:9%3E>
L:0
"""
    ),
)
add(
    "sdp01",
    "3.3.15",
    True,
    "INVITE with SDP but Accept: text/nobodyknowsthis",
    sip(
        """
INVITE sip:conf@{{target}} SIP/2.0
To: sip:conf@{{target}}
From: sip:caller@example.net;tag={{id}}
Max-Forwards: 70
Call-ID: sdp01.{{id}}
CSeq: 68 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKsd{{id}}
Content-Type: application/sdp
Accept: text/nobodyknowsthis
Contact: <sip:caller@{{local}}>
Content-Length: %CLEN%
""",
        SDP,
    ),
)

# -- 3.4 backward compatibility -----------------------------------------------
add(
    "inv2543",
    "3.4.1",
    True,
    "INVITE in RFC 2543 syntax: no branch, no From tag",
    sip(
        """
INVITE sip:conf@{{target}} SIP/2.0
Via: SIP/2.0/UDP {{local}}
Max-Forwards: 70
From: <sip:caller@example.net>
To: sip:conf@{{target}}
Call-ID: inv2543.{{id}}
CSeq: 1 INVITE
Contact: <sip:caller@{{local}}>
Content-Type: application/sdp
Content-Length: %CLEN%
""",
        SDP,
    ),
)
