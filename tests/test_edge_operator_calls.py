"""Operator help (issue 20) with every phone off the appliance's host.

tests/test_operator_calls.py proves the operator's keys on loopback; here the
same calls go through Kamailio and rtpengine as a real office's would: the
operator is an extension registered from the LAN, the caller sits behind the
NAT router (or calls a DID from the trunk provider), the moderator is on the
LAN. What each side hears is checked by tone, both ways; a stranger on the LAN
attacks the private talk (its own RTP), and the caller tries to transfer
itself away with an in-dialog REFER.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tests.harness import report
from tests.netns import APPLIANCE_IP, Host, net_fixture  # noqa: F401  (fixture `net`)
from tests.pbx_helpers import wait_registered
from tests.test_edge_calls import (
    ALL_PASSWORDS,
    PBX,
    PROVIDER_NAME,
    appliance,
    edge_config,
    heard,
    no_registration,
    provider_phone,
    softphone,
    spray_rtp,
)

CALLER_HZ, OPERATOR_HZ, MODERATOR_HZ, STRANGER_HZ = 440, 900, 700, 1500
# ivr/tones.py's hold music: an arpeggio of C5, E5, G5.
HOLD_MUSIC_HZ = (523, 659, 784)
OPERATOR = "1003"  # an extension on the LAN (net.lan[1])


def operator_phone(phone, srv, host, script: str, after: float = 0.0):
    """The operator's phone on `host`, registered through Kamailio as
    OPERATOR, answering after `after` s of ringing."""
    extra = ["--answer", "--max-seconds", "60"]
    if after:
        extra += ["--answer-after", str(after)]
    p = softphone(phone, host, OPERATOR, script, extra=extra)
    wait_registered(srv, OPERATOR)
    return p


def mark(r: dict[str, Any], name: str) -> float:
    return r["marks"][name]


def music(proc, rep: dict[str, Any], start: float, end: float) -> float:
    """The share of the hold music's notes in what the phone heard."""
    return sum(heard(proc, rep, start, end, hz) for hz in HOLD_MUSIC_HZ)


def room_with_caller(phone, net, mod_seconds: float, caller_after: str):
    """A LAN moderator (1001) in room demo with its tone on for
    `mod_seconds`, and a NAT'd participant (1002) whose script, once in
    with its own tone on and marked `asked`, goes on with `caller_after`."""
    mod = softphone(
        phone,
        net.lan[0],
        "1001",
        f"wait_media 5; dtmf 9999#; tone {MODERATOR_HZ}; wait {mod_seconds}; hangup",
        "conf-en",
    )
    caller = softphone(
        phone,
        net.nat[0],
        "1002",
        f"wait_media 5; wait 0.5; dtmf 1111#; tone {CALLER_HZ}; wait 2; mark asked; "
        + caller_after,
        "conf-en",
    )
    return mod, caller


def test_star90_from_behind_nat_talks_privately_then_back_to_the_room(server_factory, phone, net):
    """A NAT'd participant keys *90: hold music (not the room) while the LAN
    operator's phone rings; then a private talk both ways the room never
    hears; the operator's *2 puts the caller back, heard and hearing."""
    srv = appliance(server_factory, net, operator=OPERATOR)
    op = operator_phone(
        phone,
        srv,
        net.lan[1],
        f"wait_media 8; mark answered; tone {OPERATOR_HZ}; wait 5; mark star2; dtmf *2; "
        "wait_end 10",
        after=5.0,
    )
    mod, caller = room_with_caller(phone, net, 26, "dtmf *90; wait 19; mark end; hangup")
    ro, rm, rc = op.result(), mod.result(), caller.result()
    for r in (ro, rm, rc):
        assert "error" not in r, r
    assert "confirmed_at" in ro and ro["hung_up_by"] == "remote", ro
    # Ringing: past "Calling an operator", before the operator answers.
    asked, answered = mark(rc, "asked"), mark(ro, "answered")
    ringing = (asked + 3.5, answered - 0.3)
    assert ringing[1] - ringing[0] > 1.0, (asked, ro)
    assert music(caller, rc, *ringing) > 0.3, "the caller hears hold music while it rings"
    # ±10 Hz: the hold music's 659 Hz note, 250 ms at a time, spills ~2 %
    # of the energy into 700 ± 25 Hz (a loaded suite read 0.021 there once);
    # the room's 700 Hz tone would be tens of %.
    assert heard(caller, rc, *ringing, MODERATOR_HZ, width=10) < 0.02, "not the room"
    assert heard(mod, rm, *ringing, CALLER_HZ) < 0.02, "and the room does not hear the caller"
    private = (answered + 1.5, mark(ro, "star2") - 0.3)
    assert heard(caller, rc, *private, OPERATOR_HZ) > 0.3, "the caller hears the operator"
    assert heard(caller, rc, *private, MODERATOR_HZ) < 0.02, "and not the room"
    assert music(caller, rc, *private) < 0.05, "the music stopped"
    assert heard(op, ro, *private, CALLER_HZ) > 0.3, "the operator hears the caller"
    assert heard(op, ro, *private, MODERATOR_HZ) < 0.02, "and not the room"
    assert heard(mod, rm, *private, CALLER_HZ) < 0.02, "the room does not hear the caller"
    assert heard(mod, rm, *private, OPERATOR_HZ) < 0.02, "nor the operator"
    after = (mark(ro, "star2") + 1.5, mark(rc, "end") - 0.3)
    assert after[1] - after[0] > 2.0, (ro, rc)
    assert heard(mod, rm, *after, CALLER_HZ) > 0.1, "*2: the room hears the caller again"
    assert heard(caller, rc, *after, MODERATOR_HZ) > 0.1, "and the caller hears the room"
    assert heard(mod, rm, *after, OPERATOR_HZ) < 0.02, "the operator's call ended"
    log = srv.log()
    assert f"asks for an operator (room room=demo): ringing {OPERATOR}" in log
    assert "operator key action=return" in log


def test_zero_at_the_pin_prompt_of_a_did_call_reaches_the_operator(server_factory, phone, net):
    """A caller from the trunk provider (a DID call, off the host) keys 0#
    at the PIN prompt: the LAN operator answers, talks with them, keys a
    wrong PIN (nothing changes) and then the room's: the caller is in the
    room, heard by the LAN moderator and hearing them."""
    cfg = no_registration(edge_config(provider=True, operator=OPERATOR))
    net.hosts({PROVIDER_NAME: net.provider.ip})
    srv = server_factory(netns=net.appliance.name, **cfg)
    op = operator_phone(
        phone,
        srv,
        net.lan[1],
        f"wait_media 8; mark answered; tone {OPERATOR_HZ}; wait 3; mark wrong; dtmf 12345#; "
        "wait 2.5; mark pin; dtmf 1111#; wait_end 10",
    )
    mod = softphone(
        phone,
        net.lan[0],
        "1001",
        f"wait_media 5; dtmf 9999#; tone {MODERATOR_HZ}; wait 24; hangup",
        "conf",
    )
    caller = provider_phone(
        phone,
        net,
        f"wait_media 5; wait 1; dtmf 0#; tone {CALLER_HZ}; wait 17; hangup",
        "+551130001000",
    )
    ro, rm, rc = op.result(), mod.result(), caller.result()
    for r in (ro, rm, rc):
        assert "error" not in r, r
    assert "confirmed_at" in ro and ro["hung_up_by"] == "remote", ro
    private = (mark(ro, "answered") + 1.5, mark(ro, "pin") - 0.2)
    assert heard(caller, rc, *private, OPERATOR_HZ) > 0.3, "the caller talks with the operator"
    assert heard(op, ro, *private, CALLER_HZ) > 0.3, "and the operator hears the caller"
    assert heard(mod, rm, *private, CALLER_HZ) < 0.02, "a wrong PIN put nobody in the room"
    assert heard(caller, rc, *private, MODERATOR_HZ) < 0.02
    after = (mark(ro, "pin") + 2.5, rc["hangup_sent_at"] - 0.3)
    assert after[1] - after[0] > 2.0, (ro, rc)
    assert heard(mod, rm, *after, CALLER_HZ) > 0.1, "the operator's PIN put the caller in"
    assert heard(caller, rc, *after, MODERATOR_HZ) > 0.1, "and the caller hears the room"
    log = srv.log()
    assert f"asks for an operator (entry): ringing {OPERATOR}" in log
    assert "put in room=demo role=participant by the operator" in log


def test_refer_and_a_strangers_rtp_during_the_private_talk_change_nothing(
    server_factory, phone, net
):
    """Attack, during the NAT caller's private talk with the LAN operator:
    the caller sends in-dialog REFERs to transfer itself to another
    extension (a phone that would answer) and to the operator directly; a
    stranger on the LAN sprays a tone at every media port. Both REFERs are
    refused, no call is placed (the other phone never rings, the app server
    never holds more than the three legs), nobody hears the stranger, the
    caller and the operator still hear each other, and the server lives."""
    srv = appliance(server_factory, net, operator=OPERATOR)
    # A phone that answers anything: where a followed REFER would land.
    bystander = softphone(
        phone,
        net.nat[1],
        "1004",
        "wait_media 5; wait 1; hangup",
        record=False,
        extra=["--answer", "--max-seconds", "32"],
    )
    wait_registered(srv, "1004")
    op = operator_phone(
        phone,
        srv,
        net.lan[1],
        f"wait_media 8; mark answered; tone {OPERATOR_HZ}; wait 11; mark bye; hangup",
        after=1.0,
    )
    mod, caller = room_with_caller(
        phone,
        net,
        28,
        f"dtmf *90; wait 6; mark refer; refer <sip:1004@{PBX}>; wait 1; "
        f"refer <sip:{OPERATOR}@{PBX}>; wait 12; mark end; hangup",
    )
    assert net.attacker is not None
    sock = net.attacker.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # rtpengine's whole media range: all the LAN can reach (the app server's
    # own RTP is on the appliance's loopback).
    targets = range(30000, 30400)
    sprayed: dict[str, float] = {}
    most = [0]

    def watch() -> None:
        """The app server's calls, while the phones run."""
        while caller.proc.poll() is None:
            with contextlib.suppress(OSError):  # a status read racing the end
                most[0] = max(most[0], srv.status()["calls"])
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        deadline = time.monotonic() + 30
        while f"operator {OPERATOR} answered" not in srv.log():
            assert time.monotonic() < deadline, srv.log()[-3000:]
            time.sleep(0.1)
        time.sleep(6.5)  # past both REFERs, still in the private talk
        sprayed["from"] = time.monotonic()
        sprayed["sent"] = spray_rtp(sock, APPLIANCE_IP, targets, 3.0, STRANGER_HZ)
    finally:
        sock.close()
    ro, rm, rc = op.result(), mod.result(), caller.result()
    rb = bystander.result()
    watcher.join()
    for r in (ro, rm, rc):
        assert "error" not in r, r
    assert sprayed["sent"] > 10 * len(targets)
    # Both REFERs got a final refusal; none was followed.
    finals = [code for code, final, *_ in rc.get("refer", []) if final]
    assert len(finals) == 2 and all(code >= 400 for code in finals), rc.get("refer")
    assert "started_at" not in rb, f"a REFER placed a call to 1004: {rb}"
    assert most[0] == 3, f"{most[0]} calls at once: only caller, moderator and operator"
    refer_at, bye = mark(rc, "refer"), mark(ro, "bye")
    assert mark(ro, "answered") < refer_at - 1.0 and sprayed["from"] + 3.0 < bye, (ro, rc)
    # The private talk went on, both ways, before, during and after the attacks.
    talk = (refer_at + 2.0, bye - 0.3)
    assert heard(caller, rc, *talk, OPERATOR_HZ) > 0.3, "the caller still hears the operator"
    assert heard(op, ro, *talk, CALLER_HZ) > 0.3, "the operator still hears the caller"
    assert heard(mod, rm, *talk, CALLER_HZ) < 0.02, "and it is still private"
    spray = (sprayed["from"], sprayed["from"] + 3.0)
    for proc, rep in ((caller, rc), (op, ro), (mod, rm)):
        assert heard(proc, rep, *spray, STRANGER_HZ) < 0.01, "nobody hears the stranger"
    # The operator left: the caller is back in the room.
    back = (bye + 2.5, mark(rc, "end") - 0.3)
    assert back[1] - back[0] > 1.5, (ro, rc)
    assert heard(mod, rm, *back, CALLER_HZ) > 0.1
    assert srv.proc.poll() is None, srv.log()[-2000:]
    log = srv.log()
    assert "is being transferred to" not in log, "pjsua followed a REFER"
    assert "operator hung up" in log
    dests = sorted(r["destination"] for r in report(srv, "calls"))
    assert "1004" not in dests, dests


class RawCaller:
    """A phone by hand on `host`, extension `user` (digest through Kamailio),
    in a conference call: it sends in-dialog requests no softphone would,
    with its own dialog's Call-ID, tags and Route token."""

    def __init__(self, host: Host, user: str) -> None:
        self.host, self.user = host, user
        self.sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host.ip, 5070))
        self.sock.settimeout(0.5)
        self.call_id, self.tag = uuid.uuid4().hex, uuid.uuid4().hex[:10]
        self.to, self.route, self.target, self.cseq = f"<sip:conf@{PBX}>", "", "", 1

    def close(self) -> None:
        """Release the socket."""
        self.sock.close()

    def _send(self, method: str, ruri: str, cseq: int, branch: str, extra: str = "") -> None:
        body = ""
        if method == "INVITE":
            body = (
                f"v=0\r\no=- 1 1 IN IP4 {self.host.ip}\r\ns=-\r\n"
                f"c=IN IP4 {self.host.ip}\r\nt=0 0\r\nm=audio 17000 RTP/AVP 0\r\n"
                "a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
            )
            extra += "Content-Type: application/sdp\r\n"
        msg = (
            f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host.ip}:5070;rport;branch=z9hG4bK{branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{self.user}@{APPLIANCE_IP}>;tag={self.tag}\r\n"
            f"To: {self.to}\r\nCall-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{self.user}@{self.host.ip}:5070>\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self.sock.sendto(msg.encode(), (APPLIANCE_IP, 5060))

    def _final(self, cseq: int, method: str, seconds: float = 10.0) -> str:
        """The final response to our request `cseq` (raises if none comes)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                msg = self.sock.recv(65535).decode(errors="replace")
                head = re.search(r"^CSeq: *(\d+) +(\w+)", msg, re.M | re.I)
                ours = head is not None and head.groups() == (str(cseq), method)
                if ours and msg.startswith("SIP/2.0 ") and int(msg.split(" ", 2)[1]) >= 200:
                    return msg
        raise AssertionError(f"no final answer to {method} {cseq}")

    def call(self) -> None:
        """INVITE `conf`, answer the 407 with the extension's password, ACK the 200."""
        ruri = f"sip:conf@{PBX}"
        self._send("INVITE", ruri, 1, "inv1" + self.call_id)
        challenge = self._final(1, "INVITE")
        assert challenge.startswith("SIP/2.0 407"), challenge
        to = re.search(r"^To: (.*)$", challenge, re.M | re.I)
        assert to
        self.to = to.group(1).strip()
        self._send("ACK", ruri, 1, "inv1" + self.call_id)  # the 407's ACK: same branch
        self.to = f"<{ruri}>"
        realm = challenge.split('realm="', 1)[1].split('"', 1)[0]
        nonce = challenge.split('nonce="', 1)[1].split('"', 1)[0]
        secret = f"{self.user}:{realm}:{ALL_PASSWORDS[self.user]}"
        ha1 = hashlib.md5(secret.encode()).hexdigest()  # noqa: S324  (SIP digest)
        ha2 = hashlib.md5(f"INVITE:{ruri}".encode()).hexdigest()  # noqa: S324
        response = hashlib.md5(  # noqa: S324
            f"{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}".encode()
        ).hexdigest()
        auth = (
            f'Proxy-Authorization: Digest username="{self.user}", realm="{realm}", '
            f'nonce="{nonce}", uri="{ruri}", response="{response}", algorithm=MD5, '
            'qop=auth, nc=00000001, cnonce="c0ffee"\r\n'
        )
        self.cseq = 2
        self._send("INVITE", ruri, 2, "inv2" + self.call_id, auth)
        ok = self._final(2, "INVITE")
        assert ok.startswith("SIP/2.0 200"), ok
        to = re.search(r"^To: (.*)$", ok, re.M | re.I)
        contact = re.search(r"^Contact: .*?<([^>]+)>", ok, re.M | re.I)
        assert to and contact, ok
        self.to, self.target = to.group(1).strip(), contact.group(1)
        routes = re.findall(r"^Record-Route: (.*)$", ok, re.M | re.I)
        self.route = "".join(f"Route: {r.strip()}\r\n" for r in routes)
        self._send("ACK", self.target, 2, "ack2" + self.call_id, self.route)

    def request(self, method: str, ruri: str = "", extra: str = "") -> int:
        """A request in our dialog (to `ruri`, else the app server's Contact),
        along its route set with its token: the final answer's code."""
        self.cseq += 1
        branch = f"{method.lower()}{self.cseq}{self.call_id}"
        self._send(method, ruri or self.target, self.cseq, branch, self.route + extra)
        return int(self._final(self.cseq, method).split(" ", 2)[1])


def test_a_callers_in_dialog_request_goes_to_the_app_server_only(server_factory, net):
    """Attack: a NAT'd extension in a conference call sends requests in its
    own dialog (its Call-ID, tags and Kamailio's Route token) to another
    address: a REFER and an INVITE to a desk phone on the LAN (the
    operator's kind of phone), an INVITE to the trunk provider (which
    trusts Kamailio's address). Kamailio once relayed them all wherever
    they named; now each is refused 403 and reaches nobody, while the
    dialog's own requests to the app server still pass (its BYE is
    answered 200) and the server lives."""
    cfg = no_registration(edge_config(provider=True, operator=OPERATOR))
    net.hosts({PROVIDER_NAME: net.provider.ip})
    srv = server_factory(netns=net.appliance.name, **cfg)
    desk = net.lan[1].socket(socket.AF_INET, socket.SOCK_DGRAM)
    desk.bind((net.lan[1].ip, 5060))
    provider = net.provider.socket(socket.AF_INET, socket.SOCK_DGRAM)
    provider.bind((net.provider.ip, 5060))
    raw = RawCaller(net.nat[1], "1004")
    try:
        raw.call()
        desk_uri = f"sip:{OPERATOR}@{net.lan[1].ip}:5060"
        refer_to = f"Refer-To: <sip:0015442079460000@{PROVIDER_NAME}>\r\n"
        answers = {
            "REFER to a LAN phone": raw.request("REFER", desk_uri, refer_to),
            "INVITE to a LAN phone": raw.request("INVITE", desk_uri),
            "INVITE to the provider": raw.request(
                "INVITE", f"sip:0015442079460000@{net.provider.ip}:5060"
            ),
        }
        assert all(code == 403 for code in answers.values()), answers
        for sock in (desk, provider):
            sock.settimeout(0.3)
            with contextlib.suppress(TimeoutError):
                got = sock.recv(65535).decode(errors="replace")
                raise AssertionError(f"relayed: {got.splitlines()[0]}")
        assert srv.status()["calls"] == 1, srv.status()
        assert raw.request("BYE") == 200, "the dialog's own requests still reach the app server"
    finally:
        raw.close()
        desk.close()
        provider.close()
    assert srv.proc.poll() is None, srv.log()[-2000:]
    kamailio = (Path(srv.config["state_dir"]) / "kamailio" / "kamailio.log").read_text()
    assert "in-dialog REFER from 198.51.100.20:5070" in kamailio
    assert "not the app server, refused" in kamailio
