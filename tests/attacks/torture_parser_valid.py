"""RFC 4475 section 3.1.1: valid messages a parser must take, however tortuous
(part of the catalogue tests/attacks/make_torture.py writes out).
"""

# Wire data: a torture message's lines are as long as the RFC makes them.
# ruff: noqa: E501

from __future__ import annotations

from tests.attacks.torture_message import SDP, Catalogue, sip

MESSAGES = Catalogue()
add = MESSAGES.add

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
