"""The RFC 4475 torture messages (tests/attacks/torture/) to Kamailio and to the
app server, then a normal call (the attack suite: tests/attack_helpers.py)."""

from __future__ import annotations

import json
import re
import select
import socket
import time
import uuid
from dataclasses import dataclass, field

from tests import ports
from tests.attack_helpers import (
    TORTURE,
    AcceptedInvalid,
    PhoneFactory,
    ServerFactory,
    assert_alive,
    assert_still_serves_calls,
    headers_of,
    hostport,
    kamailio_pid,
    local_of,
    response_code,
    status_line,
    udp_socket,
)
from tests.pbx_helpers import pbx_overrides, proxy


@dataclass
class Exchange:
    """One torture message sent from its own socket, and what came back."""

    name: str
    sock: socket.socket
    got: list[bytes] = field(default_factory=list)
    cleaned_up: bool = False

    @property
    def codes(self) -> list[int]:
        return [c for c in (response_code(d) for d in self.got) if c is not None]

    @property
    def relayed(self) -> list[str]:
        """Requests that reached our socket (something relayed them to us)."""
        return [status_line(d) for d in self.got if response_code(d) is None]

    def summary(self) -> str:
        seen = list(dict.fromkeys(str(c) for c in self.codes))  # retransmissions once
        return ",".join(seen + [f"REQ[{r}]" for r in self.relayed]) or "-"


def torture_index() -> dict[str, dict]:
    return json.loads((TORTURE / "index.json").read_text())


def ack_and_bye(answer: bytes, local: str) -> list[bytes]:
    """End a call a torture INVITE opened: ACK the 2xx, then BYE (RFC 3261 13.2.2.4)."""
    h = headers_of(answer)
    contact = h.get("contact") or h.get("m", "")
    m = re.search(r"<([^>]+)>", contact)
    ruri = m.group(1) if m else contact.split(";")[0]
    seq = int((h.get("cseq") or "1").split()[0])
    out = []
    for method, n in (("ACK", seq), ("BYE", seq + 1)):
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK{uuid.uuid4().hex[:12]}",
            "Max-Forwards: 70",
            f"From: {h.get('from') or h.get('f', '')}",
            f"To: {h.get('to') or h.get('t', '')}",
            f"Call-ID: {h.get('call-id') or h.get('i', '')}",
            f"CSeq: {n} {method}",
            "Content-Length: 0",
        ]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode())
    return out


def fire_torture(target: str, seconds: float = 2.5) -> dict[str, Exchange]:
    """Send every torture message to `target`, each from its own 127.x address
    and port (so Kamailio's flood ban counts each sender once), and collect the
    answers. A call a valid INVITE opened is ACKed and hung up at once."""
    host, port = hostport(target)
    exchanges: dict[str, Exchange] = {}
    for name in torture_index():
        sock = udp_socket(ports.loopback_ip())
        data = (
            (TORTURE / f"{name}.sip")
            .read_bytes()
            .replace(b"{{target}}", target.encode())
            .replace(b"{{local}}", local_of(sock).encode())
            .replace(b"{{id}}", uuid.uuid4().hex[:12].encode())
        )
        sock.sendto(data, (host, port))
        exchanges[name] = Exchange(name, sock)
    by_sock = {e.sock: e for e in exchanges.values()}
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select(list(by_sock), [], [], left)
        for sock in ready:
            e = by_sock[sock]
            data, source = sock.recvfrom(65535)
            e.got.append(data)
            code = response_code(data)
            is_invite = headers_of(data).get("cseq", "").endswith("INVITE")
            if code is not None and 200 <= code < 300 and is_invite and not e.cleaned_up:
                e.cleaned_up = True
                for msg in ack_and_bye(data, local_of(sock)):
                    sock.sendto(msg, source)
    for e in exchanges.values():
        e.sock.close()
    return exchanges


def torture_table(results: dict[str, Exchange]) -> str:
    index = torture_index()
    rows = [f"{'message':<12} {'RFC':<9} {'valid':<6} answer"]
    for name, e in results.items():
        meta = index[name]
        rows.append(f"{name:<12} {meta['section']:<9} {str(meta['valid']):<6} {e.summary()}")
    return "\n".join(rows)


def refusal(code: int) -> bool:
    """A final answer that turns a malformed request away: any 4xx, or 513
    (Message Too Large, the one 5xx that is about the request itself)."""
    return 400 <= code < 500 or code == 513


def torture_violations(results: dict[str, Exchange]) -> list[str]:
    """Invalid requests answered with anything but a refusal; any answer to a stray
    response; any request relayed back to the sender."""
    index = torture_index()
    bad = []
    for name, e in results.items():
        meta = index[name]
        if e.relayed:
            bad.append(f"{name}: relayed {e.relayed}")
        if meta["kind"] == "response":
            if e.codes:
                bad.append(f"{name}: a stray response was answered {e.codes}")
        elif not meta["valid"] and any(not refusal(c) for c in e.codes if c >= 200):
            bad.append(f"{name}: invalid {meta['method']} answered {e.summary()}")
    return bad


def test_torture_messages_to_kamailio(server_factory: ServerFactory, phone: PhoneFactory) -> None:
    """Every torture message to Kamailio: it survives, nothing invalid gets
    past it with a 2xx, nothing is relayed back out, and the appliance still
    registers extensions and carries a conference call afterwards."""
    srv = server_factory(**pbx_overrides())
    kam = kamailio_pid(srv)
    # Fired right away: the server counted Kamailio started once it answered
    # SIP (a pid file alone once left all 51 messages unanswered for 2.5 s).
    assert "answering SIP after" in srv.log(), srv.log()
    results = fire_torture(proxy(srv))
    print(torture_table(results))
    assert_alive(srv, kam)
    assert torture_violations(results) == [], torture_table(results)
    index = torture_index()
    for name, e in results.items():
        if index[name]["method"] == "INVITE":
            # Unauthenticated: every INVITE is challenged or refused, never answered.
            assert all(c < 200 or c >= 400 for c in e.codes), (name, e.summary())
    # The size limit and the hop limit are Kamailio's own answers.
    assert results["oversize"].codes == [513]
    assert results["zeromf"].codes == [483]
    assert_still_serves_calls(srv, phone)
    assert_alive(srv, kam)


# The invalid requests pjsip 2.12.1 alone would answer 200 (or 501), which
# pbx/_pjx.c's SIP screen refuses with 400: one rule each.
SCREENED = {
    "clerr": "content_length",
    "multi01": "duplicate_header",
    "mcl01": "duplicate_header",
    "trws": "request_line",
    "escruri": "ruri_headers",
    "baddate": "date",
    "badaspec": "name_addr",
    "baddn": "name_addr",
    "mismatch01": "cseq_method",
    "mismatch02": "cseq_method",
}


def test_torture_messages_to_the_app_server(
    server_factory: ServerFactory, phone: PhoneFactory
) -> None:
    """Every torture message straight to the app server (pjsip plus our SIP
    screen): it survives, still serves calls, and every invalid request gets a
    4xx or nothing. The screen refuses exactly the invalid requests pjsip
    would have accepted, and no valid one."""
    srv = server_factory(**pbx_overrides())
    kam = kamailio_pid(srv)
    results = fire_torture(srv.config["sip"]["listen"])
    print(torture_table(results))
    assert_alive(srv, kam)
    for name in SCREENED:
        assert results[name].codes == [400], (name, results[name].summary())
    expected: dict[str, int] = {}
    for rule in SCREENED.values():
        expected[rule] = expected.get(rule, 0) + 1
    screened = srv.status()["screened"]
    assert {k: v for k, v in screened.items() if v} == expected, screened
    bad = torture_violations(results)
    if bad:
        raise AcceptedInvalid("\n".join(bad) + "\n\n" + torture_table(results))
    assert_still_serves_calls(srv, phone)
    assert_alive(srv, kam)
