"""Write tests/attacks/torture/*.sip: the RFC 4475 torture messages, re-created by hand.

Run it once after editing a message: `.venv/bin/python -m tests.attacks.make_torture`.
The files are the data the attack suite sends; this script is their source, so
every CRLF is explicit and every Content-Length is computed, never typed.

Each message keeps the RFC's name and the defect (or oddity) it exercises, but
is aimed at our own appliance instead of example.com hosts:

* `{{target}}` is replaced at send time with the receiver's host:port (Kamailio
  or the app server), so the Request-URI reaches real routing: INVITEs ask for
  `conf`, the conference access number, so an invalid INVITE that a parser
  waved through would be answered 200 by the IVR, which the test would see.
* `{{local}}` is the sender's own 127.x address and port: the top Via and the
  Contact point there, so every answer comes back to the test and nothing, not
  even a DNS lookup, ever leaves the loopback interface.
* `{{id}}` is a fresh token per send (Call-ID, branch and tags), so sending the
  same file to both receivers never matches an old transaction.

SDP bodies announce 127.0.0.1 port 9 (discard): if a call is answered, its
RTP goes nowhere. Hosts that nothing resolves (From/To display URIs) keep the
RFC's example.com names; no receiver looks them up.

`index.json` lists every message with its RFC section, whether the RFC calls
it valid, and whether it is a request or a response.
"""

# Wire data: a torture message's lines are as long as the RFC makes them.
# ruff: noqa: E501

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent / "torture"

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


def add(name: str, section: str, valid: bool, what: str, data: bytes) -> None:
    MESSAGES.append(Torture(name, section, valid, what, data))


# -- 3.1.1 valid messages ------------------------------------------------------
add(
    "wsinv",
    "3.1.1.1",
    True,
    "short tortuous INVITE: line folding, escaped quotes, LWS everywhere, "
    "mixed compact/long names, unknown headers and params, leading zeros",
    sip(
        """
INVITE sip:conf@{{target}};unknownparam SIP/2.0
TO :
 sip:conf@{{target}} ;   tag    = 1918181833n
from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8{{id}}
MaX-fOrWaRdS: 0068
Call-ID: wsinv.{{id}}@192.0.2.1
Content-Length   : %CLEN%
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    {{local}};rport;branch=z9hG4bKws{{id}}
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \\"\\"" <sip:jdrosen@{{local}}> ; newparam =
      newvalue ;
  secondparam ; q = 0.33
""",
        SDP,
    ),
)
# The To header carries a tag: to a proxy this looks like a mid-dialog request.
add(
    "intmeth",
    "3.1.1.2",
    True,
    "unknown method made of every token character, odd Request-URI, "
    "quoted NUL/BEL/DEL in To, UTF-8 parameter values and header names",
    sip(
        """
!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@{{target}} SIP/2.0
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bK-.!%66*_+`'~{{id}}
To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439";tag=_token~1'+`*%!-.{{id}}
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/"][?}{{{id}}
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:\ufeff\u5927\u505c\u96fb
Content-Length: 0
"""
    ),
)
add(
    "esc01",
    "3.1.1.3",
    True,
    "valid % escapes in the Request-URI user, in To/From and in a Contact",
    sip(
        """
INVITE sip:sips%3Auser%40example.com@{{target}} SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag={{id}}
Max-Forwards: 87
i: esc01.{{id}}
Content-Length: %CLEN%
CSeq: 1 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKesc{{id}}
Contact: <sip:cal%6Cer@{{local}};%6C%72;n%61me=v%61lue%25%34%31>
Content-Type: application/sdp
""",
        SDP,
    ),
)
add(
    "escnull",
    "3.1.1.4",
    True,
    "REGISTER whose URIs hold escaped NULs (%00)",
    sip(
        """
REGISTER sip:{{target}} SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag={{id}}
Max-Forwards: 70
Call-ID: escnull.{{id}}
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKnull{{id}}
Contact: <sip:%00@{{local}}>
Contact: <sip:%00%00@{{local}}>
L:0
"""
    ),
)
add(
    "esc02",
    "3.1.1.5",
    True,
    "a % that is not an escape: method RE%47IST%45R is an unknown method",
    sip(
        """
RE%47IST%45R sip:{{target}} SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag={{id}}
Max-Forwards: 70
Call-ID: esc02.{{id}}
CSeq: 29344 RE%47IST%45R
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKesc02{{id}}
Contact: <sip:alias1@{{local}}>
l: 0
"""
    ),
)
add(
    "lwsdisp",
    "3.1.1.6",
    True,
    "no LWS between a display name and <",
    sip(
        """
OPTIONS sip:user@{{target}} SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag={{id}}
Max-Forwards: 70
Call-ID: lwsdisp.{{id}}
CSeq: 3882340 OPTIONS
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKlws{{id}}
l: 0
"""
    ),
)
LONG = "very" * 200
add(
    "longreq",
    "3.1.1.7",
    True,
    "long values everywhere (display names, tags, Call-ID, an unknown header, "
    "a 40-entry Via chain): about 6 kB, under Kamailio's 8 kB limit",
    sip(
        f"""
INVITE sip:conf@{{{{target}}}} SIP/2.0
To: "I have a user name of {LONG} long proportion" <sip:conf@{{{{target}}}}>
From: sip:amazinglylongcallername{"x" * 300}@example.net;tag=12{"9" * 200}{{{{id}}}};unknownheaderparam{"a" * 200}=unknowheaderparamvalue{"b" * 100};unknownValuelessparam{"c" * 100}
Call-ID: longreq.{"one" * 200}{{{{id}}}}
CSeq: 3882340 INVITE
Unknown-{"Long" * 25}-Name: unknown-{"long" * 25}-value; unknown-{"long" * 25}-parameter-name = unknown-{"long" * 25}-parameter-value
Via: SIP/2.0/UDP {{{{local}}}};rport;branch=z9hG4bK.long{{{{id}}}}
{"".join(f"Via: SIP/2.0/TCP sip{i}.example.com:5060;branch=z9hG4bK{i:04d}{'x' * 40}{chr(10)}" for i in range(40)).rstrip()}
Max-Forwards: 70
Contact: <sip:amazinglylongcallername@{{{{local}}}}>
Content-Type: application/sdp
l: %CLEN%
""",
        SDP,
    ),
)
# A valid REGISTER followed, in the same datagram, by the start of an INVITE:
# a UDP receiver must take the first message and drop the trailing octets.
add(
    "dblreq",
    "3.1.1.8",
    True,
    "extra octets after a complete request in one UDP datagram",
    sip(
        """
REGISTER sip:{{target}} SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag={{id}}
Max-Forwards: 70
Call-ID: dblreq.{{id}}
CSeq: 8 REGISTER
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKdbl{{id}}
Contact: <sip:j.user@{{local}}>
l: 0
"""
    )
    + sip(
        """
INVITE sip:conf@{{target}} SIP/2.0
To: sip:conf@{{target}}
From: sip:j.user@example.com;tag=8{{id}}
Max-Forwards: 70
Call-ID: dblreq.{{id}}
CSeq: 8 INVITE
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKdbl2{{id}}
Contact: <sip:j.user@{{local}}>
Content-Type: application/sdp
Content-Length: %CLEN%
""",
        SDP,
    ),
)
add(
    "semiuri",
    "3.1.1.9",
    True,
    "semicolon-separated parameters in the Request-URI's user part",
    sip(
        """
OPTIONS sip:user;par=u%40example.net@{{target}} SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag={{id}}
Max-Forwards: 70
Call-ID: semiuri.{{id}}
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKsemi{{id}}
l: 0
"""
    ),
)
add(
    "transports",
    "3.1.1.10",
    True,
    "Via entries with SCTP, TLS, an unknown transport and TCP below ours",
    sip(
        """
OPTIONS sip:user@{{target}} SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag={{id}}
Max-Forwards: 70
Call-ID: transports.{{id}}
CSeq: 1 OPTIONS
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKtr{{id}}
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0
"""
    ),
)
MULTIPART = (
    "--7a9cbec02ceef655\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "\r\n"
    "C'est fou!\r\n"
    "--7a9cbec02ceef655\r\n"
    "Content-Type: application/sdp\r\n"
    "\r\n" + SDP + "--7a9cbec02ceef655--\r\n"
)
add(
    "mpart01",
    "3.1.1.11",
    True,
    "multipart/mixed body: text/plain and SDP",
    sip(
        """
INVITE sip:conf@{{target}} SIP/2.0
Via: SIP/2.0/UDP {{local}};rport;branch=z9hG4bKmp{{id}}
Max-Forwards: 70
From: "Caller" <sip:caller@example.com>;tag={{id}}
To: <sip:conf@{{target}}>
Call-ID: mpart01.{{id}}
CSeq: 1 INVITE
Contact: <sip:caller@{{local}}>
MIME-Version: 1.0
Content-Type: multipart/mixed;boundary=7a9cbec02ceef655
Content-Length: %CLEN%
""",
        MULTIPART,
    ),
)
add(
    "unreason",
    "3.1.1.12",
    True,
    "a stray 200 response with a UTF-8, punctuation-laden reason phrase",
    sip(
        """
SIP/2.0 200 = 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e\u0441\u0442\u043e\u0435
Via: SIP/2.0/UDP {{target}};branch=z9hG4bKun{{id}}
Call-ID: unreason.{{id}}
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=11141343
To: <sip:user@example.edu>;tag=2229{{id}}
Content-Length: %CLEN%
Content-Type: application/sdp
Contact: <sip:user@{{local}}>
""",
        SDP,
    ),
)
add(
    "noreason",
    "3.1.1.13",
    True,
    "a stray response with an empty reason phrase",
    sip(
        """
SIP/2.0 100\x20
Via: SIP/2.0/UDP {{target}};branch=z9hG4bKnr{{id}}
To: <sip:user@example.com>
From: <sip:user@example.net>;tag=12{{id}}
Call-ID: noreason.{{id}}
CSeq: 1 INVITE
Content-Length: 0
"""
    ),
)

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


def write(folder: Path = HERE) -> None:
    """(Re)write every .sip file and index.json."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    for m in MESSAGES:
        (folder / f"{m.name}.sip").write_bytes(m.data)
        index[m.name] = {
            "section": m.section,
            "valid": m.valid,
            "kind": m.kind,
            "method": m.method,
            "what": m.what,
        }
    (folder / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write()
    print(f"wrote {len(MESSAGES)} messages to {HERE}")
