"""REFER: no call escapes through a transfer, and none takes the server down.

pjsua 2.12.1 answers an in-dialog REFER 202 and places the call itself: no
line-profile decision, no history row, `ponte status` blind to it. pjsua2
then gives that call our pjsua2 Call object (the transferee's user data) and
repoints the object at whichever call had the last event, so when the
transferred call failed our DISCONNECTED handling dropped the conference leg
and freed the object while its own call was still up: the next event read
freed memory and the server died in _pjsua2 (SIGSEGV in
Endpoint::on_call_tsx_state). An INVITE with Replaces is the same hole: pjsua
answers it itself, and the app never hears of the call.

The app server now refuses both wherever they come from: the SIP screen in
pbx/_pjx.c answers 403 before pjsua sees them, and pbx/sipua.py refuses them
again (onCallTransferRequest, onCallReplaceRequest) for a UA without the
screen. Kamailio refuses REFER towards the app server on its own as well:
the extension's attack below goes through it (whoever refuses, nothing may
escape); the others go straight to the app server's loopback address.
"""

from __future__ import annotations

import re
import select
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests import ports
from tests.attack_helpers import (
    assert_alive,
    headers_of,
    kamailio_pid,
    local_of,
    provider_invites,
    recv_all,
    response_code,
    status_line,
    udp_socket,
    wait_for,
)
from tests.harness import Server, report
from tests.pbx_helpers import Provider, pbx_overrides, proxy, register
from tests.test_attacks_dialog import RawUac, conference_call

ServerFactory = Callable[..., Server]
PhoneFactory = Callable[..., Any]

INTERNATIONAL = "0015442079460000"  # London: blocked for 1002 below
NATIONAL = "02133334444"  # an allowed number, for the trunk leg


def refer_lines(target: str, *more: str) -> tuple[str, ...]:
    """Refer-To (in < >: it may carry ?headers) and a Referred-By."""
    return (f"Refer-To: <{target}>", "Referred-By: <sip:1001@127.0.0.1>", *more)


def route_through(proxy_hostport: str) -> str:
    """A Refer-To ?header that would send the new INVITE through Kamailio's
    trusted path (escaped as RFC 3261 19.1.1 wants inside a URI)."""
    return "?Route=" + quote(f"<sip:{proxy_hostport};lr>", safe="")


def history_destinations(srv: Server) -> list[str]:
    return [r["destination"] for r in report(srv, "calls")]


def assert_no_transfer_logged(srv: Server) -> None:
    """pjsua never started following a REFER, and no call ever reported
    another call's events (what crashed the server)."""
    log = srv.log()
    assert "is being transferred to" not in log, "pjsua followed a REFER"
    assert "on this call's object" not in log


# -- straight to the app server ----------------------------------------------


def test_refer_in_a_conference_call_is_refused_and_places_no_call(
    server_factory: ServerFactory, provider: Provider
) -> None:
    """A caller in a room sends REFERs straight to the app server's loopback
    address: to a listener of ours, to the provider through Kamailio's
    trusted path (`?Route=`), to a port where nothing listens, one asking for
    no subscription, and one outside any dialog. Each gets 403; no INVITE
    reaches anyone; the call goes on (its audio too) and is the only one in
    `ponte status`; the server stays up; the history holds that call alone."""
    srv = server_factory(**pbx_overrides(provider.port))
    kam = kamailio_pid(srv)
    uac = conference_call(srv)
    listener = udp_socket("127.0.0.1")
    nowhere = f"127.0.0.1:{ports.allocate(1)}"  # nothing listens there
    attacks = {
        "to a listener": refer_lines(f"sip:{INTERNATIONAL}@{local_of(listener)}"),
        "through Kamailio's trusted path": refer_lines(
            f"sip:{INTERNATIONAL}@localhost:{provider.port}{route_through(proxy(srv))}"
        ),
        "to nowhere": refer_lines(f"sip:{INTERNATIONAL}@{nowhere}"),
        "no subscription": refer_lines(
            f"sip:{INTERNATIONAL}@{local_of(listener)}", "Refer-Sub: false"
        ),
    }
    answers = {
        what: uac.transact(uac.build("REFER", extra=lines)) for what, lines in attacks.items()
    }
    # And one outside any dialog: a new Call-ID and no To tag.
    answers["out of dialog"] = uac.transact(
        uac.build(
            "REFER",
            call_id=f"{uuid.uuid4().hex}@raw",
            to_tag="",
            extra=refer_lines(f"sip:{INTERNATIONAL}@{local_of(listener)}"),
        )
    )
    print(answers)
    assert all(codes[-1:] == [403] for codes in answers.values()), answers

    reached = recv_all(listener, 2.0)
    assert reached == [], [status_line(d) for d in reached]
    assert provider_invites(provider) == []
    assert uac.requests("NOTIFY") == [], "no transfer subscription was started"
    assert srv.status()["calls"] == 1
    assert srv.status()["screened"]["refer"] == len(answers)
    assert uac.rtp_during(1.0) > 30, "the call still carries audio"
    assert_alive(srv, kam)

    # Nor does the app server offer what it refuses.
    options = uac.transact(uac.build("OPTIONS", to_tag="", call_id=f"{uuid.uuid4().hex}@raw"))
    assert options[-1:] == [200], options
    caps = headers_of(uac.last_answer)
    assert "REFER" not in caps["allow"] and "INVITE" in caps["allow"], caps
    assert "replaces" not in caps.get("supported", ""), caps
    assert "refer" not in caps.get("allow-events", ""), caps

    assert uac.transact(uac.build("BYE"))[-1:] == [200]
    wait_for(lambda: srv.status()["calls"] == 0, 5, "the call to end")
    wait_for(lambda: len(history_destinations(srv)) == 1, 5, "the history row")
    assert history_destinations(srv) == ["conf"]
    assert_no_transfer_logged(srv)
    assert_alive(srv, kam)
    uac.close()


def test_invite_with_replaces_is_refused(server_factory: ServerFactory) -> None:
    """An INVITE that names a live call in Replaces (RFC 3891) would be
    answered by pjsua itself, a call the app never hears of: 403, and the
    call it names goes on."""
    srv = server_factory()
    first = conference_call(srv)
    second = RawUac(("127.0.0.1", srv.sip_port), f"sip:conf@127.0.0.1:{srv.sip_port}")
    replaces = (
        f"Replaces: {first.call_id};to-tag={first.to_tag};from-tag={first.from_tag}",
        "Require: replaces",
    )
    assert second.invite(extra=replaces) == 403
    assert srv.status()["screened"]["replaces"] == 1
    assert srv.status()["calls"] == 1
    assert first.rtp_during(1.0) > 30 and not first.ended, "the named call goes on"
    assert_alive(srv, None)
    first.close()
    second.close()


# -- an extension, through Kamailio --------------------------------------------


def test_refer_from_an_extension_through_kamailio_places_no_call(
    server_factory: ServerFactory, provider: Provider, phone: PhoneFactory
) -> None:
    """The reported attack: extension 1002 (whose profile blocks
    international) calls `conf` through Kamailio and REFERs the app server to
    an international number at the provider, plainly and with `?Route=` to
    Kamailio. Whoever refuses (Kamailio or the app server), nothing reaches
    the provider, no call appears beside 1002's, the history holds only
    1002's call, and the appliance stays up."""
    cfg = pbx_overrides(provider.port)
    cfg.update(
        lines={"1002": {"area_code": "11", "profile": "no_international"}},
        profiles={
            "no_international": {
                "limits": {
                    "local": "unlimited",
                    "regional": "unlimited",
                    "national": "unlimited",
                    "international": "blocked",
                    "premium": "blocked",
                }
            }
        },
    )
    srv = server_factory(**cfg)
    kam = kamailio_pid(srv)
    plain = f"<sip:{INTERNATIONAL}@localhost:{provider.port}>"
    routed = f"<sip:{INTERNATIONAL}@localhost:{provider.port}{route_through(proxy(srv))}>"
    caller = phone(
        f"sip:conf@{proxy(srv)}",
        f"wait_media 8; dtmf 1111#; wait 1.5; refer {plain}; wait 2; refer {routed}; "
        "wait 3; hangup",
        record=False,
        bind=ports.loopback_ip(),
        extra=register("1002", srv),
    )
    wait_for(lambda: "join room=demo" in srv.log(), 20, "1002 to join")
    most = 0
    while caller.proc.poll() is None:
        most = max(most, srv.status()["calls"])
        time.sleep(0.2)
    r = caller.result()
    print(r.get("refer"))
    assert r["registration"]["code"] == 200 and "error" not in r, r
    finals = [code for code, final, *_ in r.get("refer", []) if final]
    assert len(finals) == 2 and all(code >= 400 for code in finals), r.get("refer")
    assert provider_invites(provider) == []
    assert most == 1, f"{most} calls at once: only 1002's may exist"
    wait_for(lambda: len(history_destinations(srv)) == 1, 5, "the history row")
    (row,) = report(srv, "calls")
    assert row["destination"] == "conf" and row["origin"] == "1002", row
    assert_no_transfer_logged(srv)
    assert_alive(srv, kam)


# -- the far end of a trunk call -------------------------------------------------


@dataclass
class RawProvider:
    """A trunk provider by hand (IP-authenticated, no REGISTER): answers the
    first INVITE 200 with SDP, then can send requests in that dialog either
    along its Record-Route (through Kamailio) or straight to the app
    server's Contact. Any further INVITE it receives is kept: one would be
    the call a REFER placed."""

    sock: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )
    invites: list[bytes] = field(default_factory=list)
    answers: list[bytes] = field(default_factory=list)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    cseq: int = 100
    dialog: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", ports.allocate(1)))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()
        self.rtp.close()

    def pump(self, seconds: float) -> None:
        """Answer what arrives for `seconds` (responses are kept)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                continue
            data, source = self.sock.recvfrom(65535)
            if response_code(data) is not None:
                self.answers.append(data)
                continue
            method = status_line(data).split(" ", 1)[0]
            if method == "INVITE":
                self._invite(data, source)
            elif method != "ACK":
                self._reply(data, source, "200 OK")

    def _reply(
        self,
        data: bytes,
        source: tuple[str, int],
        status: str,
        headers: tuple[str, ...] = (),
        sdp: str = "",
    ) -> None:
        """Answer a request: its Via, From, Call-ID, CSeq and Record-Route,
        its To with our tag, then `headers` and an SDP body if any."""
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        head = re.sub(r"\r\n[ \t]+", " ", head)
        keep = [
            line
            for line in head.split("\r\n")[1:]
            if re.match(r"(?i)(via|v|from|f|call-id|i|cseq|record-route):", line)
        ]
        to = re.search(r"(?im)^(?:to|t):(.*)$", head)
        to_value = to.group(1).strip() if to else ""
        if ";tag=" not in to_value:
            to_value += f";tag={self.tag}"
        lines = [f"SIP/2.0 {status}", *keep, f"To: {to_value}", *headers]
        if sdp:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(sdp)}")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + sdp).encode(), source)

    def _invite(self, data: bytes, source: tuple[str, int]) -> None:
        self.invites.append(data)
        if len(self.invites) > 1:  # a second call: what a REFER would place
            self._reply(data, source, "486 Busy Here")
            return
        h = headers_of(data)
        head = re.sub(r"\r\n[ \t]+", " ", data.split(b"\r\n\r\n", 1)[0].decode())
        contact = re.search(r"<([^>]+)>", h.get("contact") or h.get("m", ""))
        self.dialog = {
            "call_id": h.get("call-id") or h.get("i"),
            "remote": h.get("from") or h.get("f"),  # the app server's From, with its tag
            "local": (h.get("to") or h.get("t", "")) + f";tag={self.tag}",
            "target": contact.group(1) if contact else "",
            # A UAS keeps the Record-Route in its order (RFC 3261 12.1.1).
            "routes": [
                v.strip()
                for line in re.findall(r"(?im)^record-route:(.*)$", head)
                for v in line.split(",")
            ],
        }
        sdp = (
            "v=0\r\no=provider 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.rtp.getsockname()[1]} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        self._reply(
            data, source, "200 OK", (f"Contact: <sip:provider@127.0.0.1:{self.port}>",), sdp
        )

    def request(self, method: str, extra: tuple[str, ...], via_proxy: bool) -> list[int]:
        """Send a request in the dialog and return the answers' codes."""
        d = self.dialog
        self.cseq += 1
        branch = "z9hG4bK" + uuid.uuid4().hex
        routes = d["routes"] if via_proxy else []
        lines = [
            f"{method} {d['target']} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch={branch}",
            "Max-Forwards: 70",
            f"From: {d['local']}",
            f"To: {d['remote']}",
            f"Call-ID: {d['call_id']}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:provider@127.0.0.1:{self.port}>",
            *[f"Route: {r}" for r in routes],
            *extra,
            "Content-Length: 0",
        ]
        first = routes[0] if routes else f"<{d['target']}>"
        m = re.search(r"sips?:(?:[^@;>]*@)?([^:;>]+):?(\d+)?", first)
        assert m, first
        addr = (m.group(1), int(m.group(2) or 5060))
        before = len(self.answers)
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            self.pump(0.1)
            codes = [
                response_code(a)
                for a in self.answers[before:]
                if headers_of(a).get("cseq") == f"{self.cseq} {method}"
            ]
            if any(c is not None and c >= 200 for c in codes):
                return [c for c in codes if c is not None]
        return []


def test_refer_from_a_trunk_far_end_places_no_call(
    server_factory: ServerFactory, phone: PhoneFactory, tmp_path: Path
) -> None:
    """Extension 1001 calls a national number; the provider answers and then
    REFERs the app server's trunk leg to an international number at itself,
    along the Record-Route through Kamailio and straight to the app server.
    Both are refused, no second INVITE reaches the provider, the two legs of
    the call are all `ponte status` shows, and the history has the one call."""
    prov = RawProvider()
    cfg = pbx_overrides(prov.port)
    cfg["trunks"][0]["registration"] = False
    srv = server_factory(**cfg)
    kam = kamailio_pid(srv)
    caller = phone(
        f"sip:{NATIONAL}@{proxy(srv)}",
        "wait_media 10; wait 9; hangup",
        record=False,
        bind=ports.loopback_ip(),
        extra=register("1001", srv),
    )
    deadline = time.monotonic() + 15
    while not prov.dialog and time.monotonic() < deadline:
        prov.pump(0.2)
    assert prov.dialog, "the trunk call reached the provider"
    prov.pump(1.5)  # the ACK, media set up
    wait_for(lambda: srv.status()["calls"] == 2, 5, "both legs of the call")
    # The trunk leg's Contact is the app server's loopback address: what the
    # direct REFER below aims at.
    assert f"127.0.0.1:{srv.sip_port}" in prov.dialog["target"], prov.dialog

    target = f"sip:{INTERNATIONAL}@localhost:{prov.port}"
    answers = {
        "through Kamailio": prov.request("REFER", refer_lines(target), via_proxy=True),
        "straight to the app server": prov.request(
            "REFER", refer_lines(target + route_through(proxy(srv))), via_proxy=False
        ),
    }
    print(answers)
    assert all(codes and codes[-1] >= 400 for codes in answers.values()), answers
    assert answers["straight to the app server"][-1] == 403
    prov.pump(2.0)
    assert len(prov.invites) == 1, "the REFER placed no call"
    assert srv.status()["calls"] == 2
    assert_alive(srv, kam)

    r = caller.result()
    assert "error" not in r, r
    prov.pump(1.0)
    wait_for(lambda: srv.status()["calls"] == 0, 5, "the call to end")
    wait_for(lambda: len(history_destinations(srv)) == 1, 5, "the history row")
    assert history_destinations(srv) == [NATIONAL]
    assert len(prov.invites) == 1
    assert_no_transfer_logged(srv)
    assert_alive(srv, kam)
    prov.close()


# -- pbx/sipua.py alone ------------------------------------------------------------


def bound(ip: str, port: int) -> bool:
    """Whether something holds UDP ip:port (the phone, once it has started)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, port))
        except OSError:
            return True
    return False


def test_the_adapter_refuses_refer_and_replaces_without_the_screen(
    phone: PhoneFactory,
) -> None:
    """Defence in depth: a softphone on the same adapter, run without the
    SIP screen, answers a raw caller; the caller's REFER and an INVITE that
    would replace the call both get 403 from pbx/sipua.py itself, no INVITE
    leaves, and the phone carries on and ends the call normally."""
    port = ports.allocate(1)
    ip = ports.loopback_ip()
    callee = phone(
        "",
        "wait_end 12",
        record=False,
        bind=ip,
        extra=["--answer", "--no-screen", "--port", str(port)],
    )
    wait_for(lambda: bound(ip, port), 10, "the phone to listen")
    uac = RawUac((ip, port), f"sip:phone@{ip}:{port}")
    assert uac.invite() == 200
    listener = udp_socket("127.0.0.1")
    codes = uac.transact(
        uac.build("REFER", extra=refer_lines(f"sip:{INTERNATIONAL}@{local_of(listener)}"))
    )
    assert codes[-1:] == [403], codes
    second = RawUac((ip, port), f"sip:phone@{ip}:{port}")
    replaces = f"Replaces: {uac.call_id};to-tag={uac.to_tag};from-tag={uac.from_tag}"
    assert second.invite(extra=(replaces,)) == 403
    assert recv_all(listener, 1.5) == []
    assert uac.rtp_during(1.0) > 30 and not uac.ended, "the call goes on"
    assert uac.transact(uac.build("BYE"))[-1:] == [200]
    r = callee.result()
    assert r.get("code") == 200 and r["hung_up_by"] == "remote", r
    err = callee.stderr_path.read_text()
    assert "REFER to" in err and "refused (403)" in err, err[-2000:]
    assert "INVITE with Replaces refused (403)" in err
    for u in (uac, second):
        u.close()
