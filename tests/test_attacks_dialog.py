"""Attacks on dialogs, with a hand-made SIP user agent on loopback.

* A BYE with a call's right From and To tags but a made-up Call-ID must not
  end the call (RFC 3261 12.2.2: a request belongs to a dialog by Call-ID,
  local tag and remote tag; anything else gets 481). pjsip 2.12.1 matches by
  the tags alone; pbx/_pjx.c's screen checks the Call-ID too.
* Caller ID through the display name: extension 1002 calling with the display
  name "sip:1001@127.0.0.1" is logged and recorded as 1002.

`RawUac` is the raw user agent the REFER attacks (tests/test_attacks_refer.py)
use as well: a real SIP peer that answers what the app server sends it, so a
test controls every byte of the requests that matter.
"""

from __future__ import annotations

import re
import select
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests import ports
from tests.attack_helpers import headers_of, response_code, status_line, wait_for
from tests.harness import Server, report
from tests.pbx_helpers import pbx_overrides, proxy, register

ServerFactory = Callable[..., Server]
PhoneFactory = Callable[..., Any]


@dataclass
class Received:
    """A request the far end sent us (and what we answered)."""

    method: str
    data: bytes
    at: float


@dataclass
class RawUac:
    """A minimal RFC 3261 UAC over UDP: one INVITE dialog, requests in it
    with any Call-ID and tags we like, and 200 OK to whatever the far end
    sends (BYE, NOTIFY, INFO, OPTIONS). Its RTP socket counts what arrives,
    so a test can tell a call that still carries audio from a dead one."""

    target: tuple[str, int]  # where requests go (the app server, or Kamailio)
    ruri: str
    ip: str = field(default_factory=ports.loopback_ip)
    user: str = "1001"
    display: str | None = None
    call_id: str = field(default_factory=lambda: f"{uuid.uuid4().hex}@raw")
    from_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    to_tag: str = ""
    remote_target: str = ""
    cseq: int = 1
    received: list[Received] = field(default_factory=list)
    rtp_in: int = 0
    ended: bool = False  # the far end sent us BYE
    last_answer: bytes = b""  # the final response `transact` returned the code of

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.ip, ports.allocate(1)))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        port = ports.allocate(3)
        self.rtp.bind((self.ip, port + port % 2))
        self.local = f"{self.ip}:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        """Release both sockets."""
        self.sock.close()
        self.rtp.close()

    # -- building ---------------------------------------------------------
    def _from(self, tag: str) -> str:
        name = f'"{self.display}" ' if self.display is not None else ""
        return f"{name}<sip:{self.user}@{self.ip}>;tag={tag}"

    def build(
        self,
        method: str,
        *,
        ruri: str | None = None,
        call_id: str | None = None,
        from_tag: str | None = None,
        to_tag: str | None = None,
        cseq: int | None = None,
        branch: str | None = None,
        extra: tuple[str, ...] = (),
        body: str = "",
        content_type: str = "",
    ) -> bytes:
        """A request in our dialog, with any of its identifiers replaced."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        tag = self.to_tag if to_tag is None else to_tag
        lines = [
            f"{method} {ruri or self.remote_target or self.ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.local};rport;branch={branch or 'z9hG4bK' + uuid.uuid4().hex}",
            "Max-Forwards: 70",
            f"From: {self._from(from_tag or self.from_tag)}",
            f"To: <{self.ruri}>" + (f";tag={tag}" if tag else ""),
            f"Call-ID: {call_id or self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.user}@{self.local}>",
            *extra,
        ]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def sdp(self) -> str:
        port = self.rtp.getsockname()[1]
        return (
            "v=0\r\n"
            f"o=raw 1 1 IN IP4 {self.ip}\r\n"
            "s=-\r\n"
            f"c=IN IP4 {self.ip}\r\n"
            "t=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-15\r\n"
            "a=sendrecv\r\n"
        )

    # -- exchanging -------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Send one datagram to the target."""
        self.sock.sendto(data, self.target)

    def invite(self, timeout: float = 8.0, extra: tuple[str, ...] = ()) -> int:
        """INVITE with an SDP offer; ACK the final answer. Returns its code."""
        branch = "z9hG4bK" + uuid.uuid4().hex
        self.send(
            self.build(
                "INVITE",
                cseq=1,
                branch=branch,
                extra=extra,
                body=self.sdp(),
                content_type="application/sdp",
            )
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for data in self._receive(deadline - time.monotonic()):
                code = response_code(data)
                h = headers_of(data)
                if code is None or not h.get("cseq", "").endswith("INVITE") or code < 200:
                    continue
                m = re.search(r";\s*tag=([^;>\s]+)", h.get("to", ""))
                self.to_tag = m.group(1) if m else ""
                if code < 300:
                    c = re.search(r"<([^>]+)>", h.get("contact", ""))
                    self.remote_target = c.group(1) if c else self.ruri
                    self.send(self.build("ACK", cseq=1))
                else:  # a non-2xx is ACKed in its own transaction (same branch)
                    self.send(self.build("ACK", cseq=1, branch=branch, ruri=self.ruri))
                return code
        raise AssertionError("no final answer to the INVITE")

    def transact(self, request: bytes, timeout: float = 4.0) -> list[int]:
        """Send `request` and collect the answers to it (its CSeq) until a
        final one; returns their codes, provisional ones included."""
        cseq = headers_of(request)["cseq"]
        self.send(request)
        codes: list[int] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for data in self._receive(deadline - time.monotonic()):
                code = response_code(data)
                if code is not None and headers_of(data).get("cseq") == cseq:
                    codes.append(code)
                    if code >= 200:
                        self.last_answer = data
                        return codes
        return codes

    def pump(self, seconds: float) -> None:
        """Answer the far end's requests and count RTP for `seconds`."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._receive(left)

    def wait_bye(self, timeout: float) -> bool:
        """Pump until the far end hangs up (True) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while not self.ended and (left := deadline - time.monotonic()) > 0:
            self.pump(min(0.2, left))
        return self.ended

    def dtmf(self, digits: str) -> None:
        """Key digits by SIP INFO (application/dtmf-relay), one per transaction."""
        for d in digits:
            body = f"Signal={d}\r\nDuration=160\r\n"
            codes = self.transact(
                self.build("INFO", body=body, content_type="application/dtmf-relay")
            )
            assert codes[-1:] == [200], (d, codes)
            self.pump(0.2)

    def rtp_during(self, seconds: float) -> int:
        """RTP packets that arrive within the next `seconds`."""
        before = self.rtp_in
        self.pump(seconds)
        return self.rtp_in - before

    def requests(self, method: str) -> list[Received]:
        """The far end's requests of one method, so far."""
        return [r for r in self.received if r.method == method]

    def _receive(self, timeout: float) -> list[bytes]:
        """Wait up to `timeout` for SIP; answer requests, return responses."""
        out: list[bytes] = []
        ready, _, _ = select.select([self.sock, self.rtp], [], [], max(0.0, timeout))
        if self.rtp in ready:
            self.rtp.recv(2048)
            self.rtp_in += 1
        if self.sock in ready:
            data, source = self.sock.recvfrom(65535)
            if response_code(data) is None:
                self._answer(data, source)
            else:
                out.append(data)
        return out

    def _answer(self, data: bytes, source: tuple[str, int]) -> None:
        method = status_line(data).split(" ", 1)[0]
        self.received.append(Received(method, data, time.monotonic()))
        if method == "ACK":
            return
        if method == "BYE":
            self.ended = True
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        keep = [
            line
            for line in head.split("\r\n")[1:]
            if re.match(r"(?i)(via|v|from|f|to|t|call-id|i|cseq):", line)
        ]
        ok = "\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0"]) + "\r\n\r\n"
        self.sock.sendto(ok.encode(), source)


def conference_call(srv: Server, pin: str = "9999", **kw: Any) -> RawUac:
    """A raw UAC straight to the app server's access number, in a room."""
    uac = RawUac(("127.0.0.1", srv.sip_port), f"sip:conf@127.0.0.1:{srv.sip_port}", **kw)
    assert uac.invite() == 200
    uac.pump(0.5)
    uac.dtmf(pin + "#")
    wait_for(lambda: f"src={uac.local}" in srv.log(), 5, "the call in the log")
    leg = leg_of(srv, uac)
    wait_for(lambda: f"call {leg} join room=" in srv.log(), 10, "the caller to join")
    return uac


def leg_of(srv: Server, uac: RawUac) -> int:
    """The server's leg id for the raw UAC's call."""
    m = re.search(rf"call (\d+) incoming .* src={re.escape(uac.local)}\b", srv.log())
    assert m, "the call is in the log"
    return int(m.group(1))


# -- 8. a request outside its dialog ------------------------------------------------


def test_bye_with_the_right_tags_and_a_made_up_call_id_gets_481(
    server_factory: ServerFactory,
) -> None:
    """A caller in a room; BYEs that carry the call's From and To tags but
    not its Call-ID (or its Call-ID with a wrong tag) get 481 and end
    nothing: the room keeps its member and the audio keeps flowing. The
    caller's own BYE still ends the call."""
    srv = server_factory()
    uac = conference_call(srv)
    leg = leg_of(srv, uac)
    forged = {
        "made-up Call-ID": uac.build("BYE", call_id=f"{uuid.uuid4().hex}@raw"),
        "Call-ID with a different case": uac.build("BYE", call_id=uac.call_id.upper()),
        "wrong From tag": uac.build("BYE", from_tag="f" + uac.from_tag),
        "wrong To tag": uac.build("BYE", to_tag="t" + uac.to_tag),
    }
    answers = {what: uac.transact(data) for what, data in forged.items()}
    print(answers)
    assert all(codes[-1:] == [481] for codes in answers.values()), answers
    # The screen answers the Call-ID forgeries (pjsip itself took those into
    # the call); pjsip alone already refuses wrong tags.
    assert srv.status()["screened"]["dialog"] == 2
    assert uac.rtp_during(1.5) > 50, "the call still carries audio"
    assert srv.status()["calls"] == 1
    assert [m["leg"] for m in srv.status()["rooms"]["demo"]["members"]] == [leg]
    assert f"call {leg} hangup" not in srv.log()

    assert uac.transact(uac.build("BYE"))[-1:] == [200]
    wait_for(lambda: srv.status()["calls"] == 0, 5, "the genuine BYE to end the call")
    assert "demo" not in srv.status()["rooms"], "the room closed with its last member"
    uac.close()


def test_in_dialog_requests_that_match_still_work(server_factory: ServerFactory) -> None:
    """The 481 rule leaves every request of the real dialog alone: SIP INFO
    digits (the PIN), a retransmitted BYE after the call ended (answered again
    by its transaction, not 481), and the server's own BYE reaching us."""
    srv = server_factory()
    uac = RawUac(("127.0.0.1", srv.sip_port), f"sip:conf@127.0.0.1:{srv.sip_port}")
    assert uac.invite() == 200
    uac.dtmf("9999#")  # INFO in the dialog: the PIN gets the caller in
    leg = leg_of(srv, uac)
    wait_for(lambda: f"call {leg} join room=" in srv.log(), 5, "the caller to join")
    bye = uac.build("BYE")
    assert uac.transact(bye)[-1:] == [200]
    assert uac.transact(bye)[-1:] == [200], "a retransmission is its transaction's"
    # A second caller keys three wrong PINs: the server hangs up, and its BYE
    # (a request of ours in reverse) reaches us.
    other = RawUac(("127.0.0.1", srv.sip_port), f"sip:conf@127.0.0.1:{srv.sip_port}")
    assert other.invite() == 200
    other.dtmf("1231#1232#1233#")
    assert other.wait_bye(15), "the server's BYE reached us"
    assert srv.status()["screened"]["dialog"] == 0
    uac.close()
    other.close()


# -- 4. caller ID through the display name ------------------------------------------


DISPLAY_SPOOF = "sip:1001@127.0.0.1"


def test_display_name_is_not_the_caller_through_kamailio(
    server_factory: ServerFactory, phone: PhoneFactory
) -> None:
    """Extension 1002 calls `conf` through Kamailio with the display name
    "sip:1001@127.0.0.1": the log, the room and the history say 1002 (the
    user Kamailio authenticated), never 1001."""
    srv = server_factory(**pbx_overrides())
    caller = phone(
        f"sip:conf@{proxy(srv)}",
        "wait_media 8; dtmf 1111#; wait 2.5; hangup",
        record=False,
        bind=ports.loopback_ip(),
        extra=[*register("1002", srv), "--display", DISPLAY_SPOOF],
    )
    wait_for(lambda: "join room=demo" in srv.log(), 20, "1002 to join")
    members = srv.status()["rooms"]["demo"]["members"]
    r = caller.result()
    assert r["registration"]["code"] == 200 and "error" not in r, r
    assert [m["caller"] for m in members] == ["1002"], members
    log = srv.log()
    assert re.search(r"call \d+ incoming from=1002 to=conf ", log), log[-3000:]
    assert "from=1001" not in log
    wait_for(lambda: len(report(srv, "calls")) == 1, 5, "the history row")
    (row,) = report(srv, "calls")
    assert row["origin"] == "1002" and row["destination"] == "conf", row


def test_display_name_is_not_the_caller_straight_to_the_app_server(
    server_factory: ServerFactory,
) -> None:
    """Straight to the app server (no Kamailio to vouch for anyone): the
    caller is the From URI's user, whatever the display name says, and an
    X-Ponte-Line header from there is not believed."""
    srv = server_factory(**pbx_overrides())
    tricks = {
        "guest": DISPLAY_SPOOF,
        "visitor": f'a \\"<{DISPLAY_SPOOF}>\\" b',  # quotes and < > inside the quotes
    }
    for user, display in tricks.items():
        uac = RawUac(
            ("127.0.0.1", srv.sip_port),
            f"sip:conf@127.0.0.1:{srv.sip_port}",
            user=user,
            display=display,
        )
        assert uac.invite(extra=("X-Ponte-Line: 1001",)) == 200
        uac.pump(0.3)
        assert uac.transact(uac.build("BYE"))[-1:] == [200]
        uac.close()
    wait_for(lambda: len(report(srv, "calls")) == 2, 5, "the history rows")
    assert sorted(r["origin"] for r in report(srv, "calls")) == ["guest", "visitor"]
    log = srv.log()
    assert "from=guest " in log and "from=visitor " in log
    assert "from=1001" not in log


# -- the name-addr parser ----------------------------------------------------------


NAME_ADDRS = [
    # (From value, display, addr-spec, user)
    (
        '"sip:1001@127.0.0.1" <sip:1002@127.0.0.1>;tag=a',
        "sip:1001@127.0.0.1",
        "sip:1002@127.0.0.1",
        "1002",
    ),
    ("<sip:1002@h>", None, "sip:1002@h", "1002"),
    ("sip:1002@h;tag=x", None, "sip:1002@h", "1002"),  # bare addr-spec: ;tag is the header's
    ('"a \\"<sip:1001@x>\\" b" <sip:1002@h>', 'a "<sip:1001@x>" b', "sip:1002@h", "1002"),
    ('"back\\\\slash" <sip:1002@h>', "back\\slash", "sip:1002@h", "1002"),
    ('"<sip:1001@x>"<sip:1002@h>', "<sip:1001@x>", "sip:1002@h", "1002"),  # no LWS before <
    (
        "Bob  Smith <sip:1002@h:5060;transport=udp>",
        "Bob Smith",
        "sip:1002@h:5060;transport=udp",
        "1002",
    ),
    ("<sip:1002:secret@h>", None, "sip:1002:secret@h", "1002"),
    ("<sips:%31002@h>", None, "sips:%31002@h", "1002"),  # %31 is "1"
    ("<sip:%0a1001@h>", None, "sip:%0a1001@h", "%0a1001"),  # no newline into a log line
    ("<sip:1001;isub=2@h>", None, "sip:1001;isub=2@h", "1001;isub=2"),
    (
        "<tel:+551130001000;phone-context=x>",
        None,
        "tel:+551130001000;phone-context=x",
        "+551130001000",
    ),
    ("<sip:h.example>", None, "sip:h.example", ""),
    ('"" <sip:1002@h>', "", "sip:1002@h", "1002"),
]
NOT_NAME_ADDRS = [
    "sip:1001@x <sip:1002@h>",  # ':' and '@' are no token characters: no display name
    '"unterminated <sip:1002@h>',
    "<sip:1002@h",
    '"x" sip:1002@h',  # a quoted display name needs < >
    "< sip:1002@h>",
    "",
]


def test_name_addr_parsing() -> None:
    """RFC 3261 25.1's name-addr / addr-spec, as pbx/sipua.py reads a From."""
    from pbx.sipua import NameAddr, parse_name_addr, uri_user

    for text, display, uri, user in NAME_ADDRS:
        assert parse_name_addr(text) == NameAddr(display, uri), text
        assert uri_user(uri) == user, uri
    for text in NOT_NAME_ADDRS:
        assert parse_name_addr(text) is None, text
