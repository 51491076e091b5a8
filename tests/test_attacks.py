"""The attack suite: real attack tools and hand-made packets against a running
appliance, over loopback only, each bounded in count and time.

* svcrack (sipvicious) guessing an extension's password through Kamailio,
  flat out and paced below the flood limit.
* The RFC 4475 torture messages (tests/attacks/torture/) to Kamailio and to
  the app server, then a normal call.
* RTP from a stranger aimed at a live call's media port.
* Toll fraud: SIPp dialing forbidden numbers with a real extension's
  credentials at 03:00; forged mid-dialog requests; Kamailio as a relay.
* Conference PIN guessing: 3 per call, the 20-in-10-minutes lockout, and no
  way around it through Kamailio without credentials.

Where the appliance does not hold (yet), the test says what should happen and
is marked xfail(strict=True, raises=<the weakness>): only that exception is
the expected failure, so a broken setup still fails loudly, and the day the
weakness is fixed the XPASS tells us to drop the mark.
"""

from __future__ import annotations

import json
import math
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import audio, ports
from tests.harness import Server
from tests.netns import net_fixture  # noqa: F401  (the fixture `net`)
from tests.pbx_helpers import PASSWORDS, Provider, pbx_overrides, proxy, register
from tests.test_spine_calls import hash_time, window

ATTACKS = Path(__file__).resolve().parent / "attacks"
TORTURE = ATTACKS / "torture"
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter Debian's sipvicious is installed for

# The conftest fixtures, as seen from a test.
ServerFactory = Callable[..., Server]
PhoneFactory = Callable[..., Any]


class KnownWeakness(Exception):
    """A defence failing: the tests raise these with the evidence."""


class PasswordCracked(KnownWeakness):
    """svcrack confirmed an extension's password."""


class AcceptedInvalid(KnownWeakness):
    """The app server answered an invalid request with something other than 4xx."""


class StrangerHeard(KnownWeakness):
    """RTP from an address that is not the call's peer reached the room."""


class OpenRelay(KnownWeakness):
    """Kamailio relayed an unauthenticated request to a host of the sender's choosing."""


# -- shared helpers -------------------------------------------------------------


def kamailio_dir(srv: Server) -> Path:
    return Path(srv.config["state_dir"]) / "kamailio"


def kamailio_pid(srv: Server) -> int:
    return int((kamailio_dir(srv) / "kamailio.pid").read_text().strip())


def kamailio_log(srv: Server) -> str:
    return (kamailio_dir(srv) / "kamailio.log").read_text(errors="replace")


def pid_alive(pid: int) -> bool:
    """Running, and not a zombie (a crashed child not yet reaped is dead to us)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(") ")[2][:1] != "Z"


def hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def udp_socket(ip: str) -> socket.socket:
    """A UDP socket on `ip` and a port from this worker's block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, ports.allocate(1)))
    return sock


def local_of(sock: socket.socket) -> str:
    ip, port = sock.getsockname()
    return f"{ip}:{port}"


def status_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode("utf-8", "replace")


def response_code(data: bytes) -> int | None:
    m = re.match(rb"SIP/2\.0 (\d{3}) ", data)
    return int(m.group(1)) if m else None


def headers_of(data: bytes) -> dict[str, str]:
    """First value of each header (lower-case names), folding undone."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    head = re.sub(r"\r\n[ \t]+", " ", head)
    out: dict[str, str] = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        out.setdefault(name.strip().lower(), value.strip())
    return out


def request(
    method: str,
    ruri: str,
    local: str,
    *,
    to: str | None = None,
    to_tag: str | None = None,
    extra: tuple[str, ...] = (),
) -> bytes:
    """A minimal well-formed request from `local` (no body)."""
    token = uuid.uuid4().hex[:12]
    to_uri = to or ruri
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK{token}",
        "Max-Forwards: 70",
        f"From: <sip:1001@{local}>;tag=f{token}",
        f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {token}@attack",
        f"CSeq: 1 {method}",
        f"Contact: <sip:1001@{local}>",
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def recv_all(sock: socket.socket, seconds: float) -> list[bytes]:
    """Every datagram `sock` receives within `seconds`."""
    got: list[bytes] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if ready:
            got.append(sock.recv(65535))
    return got


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll until `predicate()` is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def assert_alive(srv: Server, kam_pid: int | None) -> None:
    """The app server (and its Kamailio, same pid as before) still run and answer."""
    assert srv.proc.poll() is None, f"app server died ({srv.proc.returncode})"
    assert isinstance(srv.status(), dict), "the control socket answers"
    if kam_pid is not None:
        assert pid_alive(kam_pid), "Kamailio died"
        assert kamailio_pid(srv) == kam_pid, "Kamailio was restarted"


def assert_still_serves_calls(srv: Server, phone: PhoneFactory) -> None:
    """An extension registers through Kamailio, dials the bridge through it,
    hears the PIN prompt, keys the moderator PIN; then a second caller joins
    straight at the app server. The moderator hears the prompt and the join
    tone, the participant hears the moderator's 440 Hz: checked by content."""
    mod = phone(
        f"sip:conf@{proxy(srv)}",
        "wait_media 8; wait 1.5; dtmf 9999#; tone 440; wait 5; hangup",
        bind=ports.loopback_ip(),
        extra=register("1001", srv),
    )
    wait_for(lambda: "role=moderator" in srv.log(), 20, "the moderator to join")
    part = phone(srv.uri("conf"), "wait_media 8; dtmf 1111#; wait 2.5; hangup")
    rm, rp = mod.result(), part.result()
    assert rm["registration"]["code"] == 200, rm["registration"]
    assert "error" not in rm and "error" not in rp, (rm, rp)
    ms, rate = audio.load(mod.record)
    first_digit = rm["digits_sent"][0][2]
    prompt = audio.segment(ms, rate, *window(rm, rm["media_at"] + 0.2, first_digit))
    assert audio.speech_like(prompt, rate), "the PIN prompt was heard"
    beep = audio.segment(ms, rate, *window(rm, hash_time(rp), hash_time(rp) + 0.8))
    assert audio.band_fraction(beep, rate, 1400) > 0.5, "the join tone was heard"
    ps, _ = audio.load(part.record)
    heard = audio.segment(ps, rate, *window(rp, hash_time(rp) + 0.6, rp["hangup_sent_at"] - 0.2))
    assert audio.hears_tone(heard, rate, 440), "the participant hears the moderator"


# -- 1. svcrack ---------------------------------------------------------------


@dataclass
class Crack:
    """How an svcrack run ended."""

    attacker: str  # the source address svcrack sent from
    output: str
    tries: list[str]  # the passwords svcrack sent, in order
    banned: bool  # Kamailio logged a ban (flood or wrong passwords) for the attacker

    @property
    def found(self) -> bool:
        return "The password for" in self.output or "cracked users" in self.output


def run_svcrack(srv: Server, words: Path, delay: float, cwd: Path, limit: float = 40) -> Crack:
    """svcrack against extension 1001 through Kamailio from a fresh 127.x
    address, one guess per `delay` seconds at most. Stopped (SIGINT, which it
    answers by printing its result) a second after Kamailio bans it; else it
    runs until it finds the password or the list ends."""
    attacker = ports.loopback_ip()
    host, port = hostport(proxy(srv))
    crack = subprocess.Popen(
        [
            SYSTEM_PYTHON,
            str(ATTACKS / "svcrack_bound.py"),
            *("-u", "1001", "-d", str(words), "-p", str(port), "-b", attacker),
            *("-P", str(ports.allocate(1)), "-t", str(delay), "--maximumtime", "3"),
            "-vv",  # a "trying <password>" line per guess: the count we report
            host,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
    )
    bans = (
        f"flood from {attacker}:",
        f"wrong passwords from {attacker},",
        f"from {attacker}, that user refused",  # the user, from that source
    )

    def banned() -> bool:
        log = kamailio_log(srv)
        return any(b in log for b in bans)

    try:
        wait_for(lambda: banned() or crack.poll() is not None, limit, "svcrack")
        if crack.poll() is None:
            time.sleep(1.0)  # svcrack keeps firing into the ban: nothing comes back
            crack.send_signal(signal.SIGINT)
        out, _ = crack.communicate(timeout=15)
    finally:
        if crack.poll() is None:
            crack.kill()
            crack.wait()
    return Crack(attacker, out, re.findall(r"trying (\S+)", out), banned())


def production_flood_limits(srv: Server) -> None:
    """The production defaults, not the suite's relaxed 200: 30 requests per 2 s."""
    assert 'reqs_density_per_unit", 30)' in (kamailio_dir(srv) / "kamailio.cfg").read_text()


def test_svcrack_is_banned_long_before_the_password(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """svcrack with a 1,000-word list (the right password at line 990) through
    Kamailio at the production flood density: the source is banned after a
    few dozen tries and the password is never confirmed."""
    srv = server_factory(**pbx_overrides(pbx={"listen": f"127.0.0.1:{ports.allocate(1)}"}))
    production_flood_limits(srv)
    words = (ATTACKS / "passwords.txt").read_text().splitlines()
    assert len(words) == 1000 and words.index(PASSWORDS["1001"]) == 989

    crack = run_svcrack(srv, ATTACKS / "passwords.txt", 0.01, tmp_path)
    print(f"svcrack: banned after {len(crack.tries)} passwords tried; last {crack.tries[-1:]}")
    assert crack.banned, crack.output[-2000:]
    assert not crack.found and PASSWORDS["1001"] not in crack.output, "never confirmed"
    assert "found nothing" in crack.output, crack.output[-2000:]
    assert 5 <= len(crack.tries) < 100, f"{len(crack.tries)} tries before the ban"

    # The ban holds for the source, whatever it sends; other sources still get in.
    host, port = hostport(proxy(srv))
    banned = udp_socket(crack.attacker)
    fresh = udp_socket(ports.loopback_ip())
    for sock in (banned, fresh):
        sock.sendto(
            request("REGISTER", f"sip:{proxy(srv)}", local_of(sock), to=f"sip:1001@{host}"),
            (host, port),
        )
    assert recv_all(banned, 1.0) == [], "a banned source gets no answer at all"
    assert [response_code(d) for d in recv_all(fresh, 1.0)] == [401]


def test_svcrack_below_the_flood_rate_is_stopped_too(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """The same tool, politely paced (-t 0.1: one guess per ~100 ms, half
    the flood density) with the right password at line 100: wrong passwords,
    not just request rates, must get a source banned before it gets there."""
    srv = server_factory(**pbx_overrides(pbx={"listen": f"127.0.0.1:{ports.allocate(1)}"}))
    production_flood_limits(srv)
    others = [
        w for w in (ATTACKS / "passwords.txt").read_text().splitlines() if w != PASSWORDS["1001"]
    ]
    words = tmp_path / "words.txt"
    words.write_text("\n".join([*others[:99], PASSWORDS["1001"]]) + "\n")
    crack = run_svcrack(srv, words, 0.1, tmp_path)
    print(f"paced svcrack: {len(crack.tries)} tries, banned={crack.banned}, found={crack.found}")
    if crack.found:
        raise PasswordCracked(
            f"svcrack at -t 0.1 tried {len(crack.tries)} passwords unbanned and confirmed "
            f"{PASSWORDS['1001']!r}"
        )
    assert crack.banned, crack.output[-2000:]


# -- 2. RFC 4475 torture messages ------------------------------------------------


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


# -- 3. RTP from a stranger ------------------------------------------------------


def ulaw(sample: int) -> int:
    """G.711 mu-law encoding of one 16-bit sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = 7
    while exponent > 0 and not magnitude & (0x4000 >> (7 - exponent)):
        exponent -= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | exponent << 4 | mantissa) & 0xFF


def server_rtp_port(phone_stderr: Path, rtp_range: str) -> int | None:
    """The server's media port from the SDP answer in a softphone's pjsip log."""
    lo, _, hi = rtp_range.partition("-")
    for m in re.finditer(r"m=audio (\d+) ", phone_stderr.read_text(errors="replace")):
        if int(lo) <= int(m.group(1)) <= int(hi):
            return int(m.group(1))
    return None


@dataclass
class RtpAttack:
    """What the stranger sent and what it got back."""

    sent: int
    received: int  # RTP the server sent to the stranger (the room's audio leaking out)
    start: float
    end: float


def rtp_stranger(target: tuple[str, int], seconds: float, burst: int, every: float) -> RtpAttack:
    """Send a loud 1000 Hz PCMU stream with plausible headers (version 2, PT 0,
    one SSRC, consecutive sequence numbers, timestamps +160 per 20 ms) from a
    fresh 127.x address. Packets leave in bursts: pjmedia lets a new source in
    after a run of consecutive packets from it, and the real peer's own packets
    (one per 20 ms) break any slower run."""
    sock = udp_socket(ports.loopback_ip())
    frame = [int(26000 * math.sin(2 * math.pi * 1000 * i / 8000)) for i in range(160)]
    payload = bytes(ulaw(s) for s in frame)  # 1000 Hz fits 160 samples exactly: loopable
    ssrc, seq, ts = random.getrandbits(32), random.getrandbits(16), random.getrandbits(32)
    sent = received = 0
    start = time.monotonic()
    next_burst = start
    while next_burst < start + seconds:
        for _ in range(burst):
            marker = 0x80 if sent == 0 else 0
            header = struct.pack("!BBHII", 0x80, marker, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
            sock.sendto(header + payload, target)
            sent, seq, ts = sent + 1, seq + 1, ts + 160
        next_burst += every
        while (left := next_burst - time.monotonic()) > 0:
            if select.select([sock], [], [], left)[0]:
                sock.recv(2048)
                received += 1
    end = time.monotonic()
    received += len(recv_all(sock, 0.3))
    sock.close()
    return RtpAttack(sent, received, start, end)


def test_rtp_from_a_stranger_does_not_reach_the_room(
    server_factory: ServerFactory, phone: PhoneFactory
) -> None:
    """A caller sends 440 Hz into a room, a second member records. A stranger
    sends ~300 RTP packets of a loud 1000 Hz tone to the first caller's media
    port on the server, from another address: the member must not hear it."""
    srv = server_factory()
    rtp_range = srv.config["sip"]["rtp_ports"]
    caller = phone(
        srv.uri("conf"),
        "wait_media 8; dtmf 9999#; tone 440; wait 8; hangup",
        bind=ports.loopback_ip(),
        extra=["--pj-log-level", "5"],  # logs the SDP answer: the server's media port
    )
    member = phone(
        srv.uri("conf"),
        "wait_media 8; wait 0.3; dtmf 1111#; tone 700; wait 8; hangup",
        bind=ports.loopback_ip(),
    )
    port: list[int] = []
    wait_for(
        lambda: bool(p := server_rtp_port(caller.stderr_path, rtp_range)) and not port.append(p),
        15,
        "the server's SDP answer",
    )
    wait_for(lambda: srv.log().count("join room=demo") >= 2, 15, "both callers in the room")
    time.sleep(1.2)  # a baseline of the room's normal audio
    attack = rtp_stranger(("127.0.0.1", port[0]), seconds=3.0, burst=25, every=0.25)
    rc, rm = caller.result(), member.result()
    assert "error" not in rc and "error" not in rm, (rc, rm)
    assert attack.sent >= 250

    ms, rate = audio.load(member.record)
    cs, _ = audio.load(caller.record)
    before = audio.segment(ms, rate, *window(rm, attack.start - 1.0, attack.start))
    during = audio.segment(ms, rate, *window(rm, attack.start + 0.1, attack.end + 0.2))
    caller_during = audio.segment(cs, rate, *window(rc, attack.start + 0.1, attack.end + 0.2))
    # The set-up works: before the attack the member hears the caller.
    assert audio.hears_tone(before, rate, 440), "the member hears the caller before"
    evidence = (
        f"stranger sent {attack.sent} packets to port {port[0]}; the member heard 1000 Hz at "
        f"{audio.band_fraction(during, rate, 1000):.2f} of its audio (the caller's 440 Hz at "
        f"{audio.band_fraction(during, rate, 440):.2f}, "
        f"{audio.band_fraction(before, rate, 440):.2f} before); "
        f"the caller still heard the room's 700 Hz at "
        f"{audio.band_fraction(caller_during, rate, 700):.2f}; the stranger received "
        f"{attack.received} RTP packets from the server"
    )
    print(evidence)
    if audio.band_fraction(during, rate, 1000) > 0.02:
        raise StrangerHeard(evidence)
    assert audio.hears_tone(during, rate, 440), "the caller is still heard: " + evidence
    assert attack.received == 0, "the room's audio went to the stranger: " + evidence


# -- 4. Toll fraud -----------------------------------------------------------------

AT_3AM = "2026-11-24T03:00:00-03:00"  # a Tuesday night, no holiday
FORBIDDEN = {
    "0015442079460000": "international",  # London, carrier 15
    "002112025550123": "international",  # Washington, carrier 21
    "0021537834123": "international",  # Havana
    "0014882161234567": "international",  # Iridium satellite (+881 6)
    "0021491701234567": "international",  # a German mobile
    "09001234567": "premium",
    "09005551234": "premium",
    "0500123456": "premium",
}
# Dial strings that try to slip past the classification: refused some way or
# another, never placed.
EVASIONS = ["+442079460000", "00%31%35442079460000"]
ALLOWED = "02133334444"  # national fixed: the control that the trunk path works


def fraud_config(provider_port: int) -> dict:
    cfg = pbx_overrides(provider_port)
    cfg.update(
        {
            "lines": {"1001": {"area_code": "11", "profile": "sem_ddi"}},
            "profiles": {
                "sem_ddi": {
                    "limits": {
                        "local": "unlimited",
                        "regional": "unlimited",
                        "national": "unlimited",
                        "international": "blocked",
                        "premium": "blocked",
                    }
                }
            },
        }
    )
    return cfg


def sipp_dial(srv: Server, numbers: list[str], tmp: Path, tag: str) -> dict[str, list[int]]:
    """SIPp dials `numbers` as extension 1001 (digest auth) through Kamailio;
    returns the codes each number got (1xx included)."""
    csv = tmp / f"{tag}.csv"
    csv.write_text("SEQUENTIAL\n" + "".join(f"{n};1001;\n" for n in numbers))
    log = tmp / f"{tag}.log"
    done = subprocess.run(
        [
            "sipp",
            "-sf",
            str(ATTACKS / "dial_uac.xml"),
            "-inf",
            str(csv),
            "-i",
            ports.loopback_ip(),
            "-p",
            str(ports.allocate(1)),
            "-mp",
            str(ports.allocate(4)),
            "-au",
            "1001",
            "-ap",
            PASSWORDS["1001"],
            "-m",
            str(len(numbers)),
            "-l",
            str(len(numbers)),
            "-r",
            "4",
            "-nostdin",
            "-timeout",
            "40s",
            "-timeout_error",
            "-trace_logs",
            "-log_file",
            str(log),
            proxy(srv),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp,
    )
    codes: dict[str, list[int]] = {n: [] for n in numbers}
    for line in log.read_text().splitlines() if log.exists() else []:
        m = re.match(r"^(\S+) (\d{3})$", line.strip())
        if m and m.group(1) in codes:
            codes[m.group(1)].append(int(m.group(2)))
    assert done.returncode == 0, f"SIPp: {done.returncode}\n{done.stderr[-2000:]}\n{codes}"
    return codes


def provider_invites(provider: Provider) -> list[str]:
    return [e for _, e in provider.events() if e.startswith("INVITE")]


def test_toll_fraud_at_3am_is_refused_and_never_reaches_the_trunk(
    server_factory: ServerFactory, provider: Provider, tmp_path: Path
) -> None:
    """With 1001's password (as a fraudster would have it), SIPp dials
    international and premium numbers at 03:00 on a profile without them:
    each hears the refusal (183) and gets 403, and the provider sees no
    INVITE. Then an allowed number does reach the provider, so the silence
    means refused, not broken."""
    srv = server_factory(env={"PONTE_NOW": AT_3AM}, **fraud_config(provider.port))
    wait_for(lambda: "trunk:provider1 registration 200" in srv.log(), 15, "the trunk to register")
    codes = sipp_dial(srv, [*FORBIDDEN, *EVASIONS], tmp_path, "fraud")
    for number in FORBIDDEN:
        assert codes[number][-1:] == [403], (number, codes[number])
        assert 183 in codes[number], f"{number}: the refusal is spoken first"
    for number in EVASIONS:
        assert codes[number] and 400 <= codes[number][-1] < 500, (number, codes[number])
    time.sleep(0.5)
    assert provider_invites(provider) == [], "no forbidden call may reach the trunk"
    log = srv.log()
    for number, kind in FORBIDDEN.items():
        assert re.search(rf"number={number} type={kind} decision=deny rule=type", log), number

    control = sipp_dial(srv, [ALLOWED], tmp_path, "control")
    assert 200 in control[ALLOWED], control
    # The trunk gets it in its own form (E.164 here): the same subscriber number.
    (sent,) = [e.split("to=")[1] for e in provider_invites(provider)]
    assert sent.endswith(ALLOWED[1:]), sent


def test_forged_mid_dialog_requests_do_not_reach_the_trunk(
    server_factory: ServerFactory, provider: Provider
) -> None:
    """Unauthenticated INVITEs that dodge Kamailio's digest auth must still
    never become a call to the trunk: one that looks mid-dialog (a To tag,
    which skips auth) carrying a forged X-Ponte-Line for the app server, and
    one with a preloaded Route to Kamailio (the trunk providers' path)."""
    srv = server_factory(env={"PONTE_NOW": AT_3AM}, **pbx_overrides(provider.port))
    wait_for(lambda: "trunk:provider1 registration 200" in srv.log(), 15, "the trunk to register")
    kam_host, kam_port = hostport(proxy(srv))
    app = srv.config["sip"]["listen"]
    number = "0015442079460000"
    attempts = {
        # Claim to be extension 1001 to the app server, from inside a "dialog".
        "X-Ponte-Line via the app server": request(
            "INVITE",
            f"sip:{number}@{app}",
            "{local}",
            to_tag="forged",
            extra=(f"Route: <sip:{app};lr>", "X-Ponte-Line: 1001"),
        ),
        # A preloaded Route to Kamailio itself: the trunk-provider path, no auth.
        "preloaded Route to Kamailio": request(
            "INVITE",
            f"sip:{number}@{proxy(srv)}",
            "{local}",
            extra=(f"Route: <sip:{proxy(srv)};lr>",),
        ),
    }
    answers = {}
    for what, data in attempts.items():
        sock = udp_socket(ports.loopback_ip())
        sock.sendto(data.replace(b"{local}", local_of(sock).encode()), (kam_host, kam_port))
        answers[what] = [status_line(d) for d in recv_all(sock, 1.5)]
        sock.close()
    print(answers)
    assert provider_invites(provider) == [], answers
    for what, got in answers.items():
        assert not any(" 200 " in line for line in got), (what, got)


def test_kamailio_is_not_an_open_relay(server_factory: ServerFactory) -> None:
    """An unauthenticated INVITE that claims to be mid-dialog (a To tag) and
    carries Route: <sip:victim;lr> must not be forwarded to the victim. The
    victim is a plain UDP socket on loopback: a SIPp UAS would drop a request
    with an unknown To tag and hide the relay, a real IP-trusting peer might not."""
    srv = server_factory(**pbx_overrides())
    kam_host, kam_port = hostport(proxy(srv))
    victim = udp_socket("127.0.0.1")
    target = local_of(victim)
    attacker = udp_socket(ports.loopback_ip())
    forged = request(
        "INVITE",
        f"sip:0015442079460000@{target}",
        local_of(attacker),
        to_tag="forged",
        extra=(f"Route: <sip:{target};lr>",),
    )
    attacker.sendto(forged, (kam_host, kam_port))
    reached = recv_all(victim, 1.5)
    answers = [status_line(d) for d in recv_all(attacker, 0.2)]
    victim.close()
    attacker.close()
    if reached:
        via = headers_of(reached[0]).get("via", "")
        raise OpenRelay(
            f"Kamailio forwarded {status_line(reached[0])!r} to {target} (top Via {via!r}: "
            f"from the PBX's own address); the attacker got back {answers}"
        )


# -- 5. Conference PIN guessing ------------------------------------------------------

FAST_IVR = {"interdigit_timeout": 1.0, "total_timeout": 3.0, "max_tries": 3}
THREE_WRONG = "wait_media 8; dtmf {pin}1#; dtmf {pin}2#; dtmf {pin}3#; wait_end 15"


def calls_from(srv: Server, ip: str) -> list[int]:
    """Server call ids of the calls that came from `ip`."""
    return [int(n) for n in re.findall(rf"call (\d+) incoming .* src={re.escape(ip)}:", srv.log())]


def joined(srv: Server, leg: int) -> bool:
    return re.search(rf"call {leg} join room=", srv.log()) is not None


def test_third_wrong_pin_ends_the_call(server_factory: ServerFactory, phone: PhoneFactory) -> None:
    """Three wrong PINs keyed back to back (barging into the prompts): the
    server says goodbye and hangs up itself, within seconds of the third."""
    srv = server_factory(ivr=FAST_IVR)
    p = phone(srv.uri("conf-en"), THREE_WRONG.format(pin="123"), record=False)
    r = p.result()
    assert r["hung_up_by"] == "remote" and "end_timeout" not in r, r
    assert r["ended_at"] - hash_time(r) < 8, "hung up soon after the third wrong PIN"
    log = srv.log()
    assert log.count("pin failed") == 3 and "too many wrong PINs" in log
    assert "join room=" not in log


def test_twenty_wrong_pins_lock_the_source_out(
    server_factory: ServerFactory, phone: PhoneFactory
) -> None:
    """7 calls of 3 wrong PINs (21 > 20 in 10 minutes) from one source: that
    source's next call, even keying the right PIN, hears "try later" as early
    media and gets 403; a call from another address still gets in."""
    srv = server_factory(ivr=FAST_IVR)
    attacker = ports.loopback_ip()
    guesses = phone(
        srv.uri("conf"),
        THREE_WRONG,
        record=False,
        bind=attacker,
        calls=7,
        rate=2,
        extra=["--pins", ",".join(f"{n:03d}" for n in range(7))],  # 0001 .. 0063
    )
    reports = guesses.result(timeout=90)
    assert all(r["hung_up_by"] == "remote" for r in reports), reports
    assert srv.log().count("pin failed") == 21
    assert f"PIN guessing: ip:{attacker} locked out" in srv.log()

    locked = phone(srv.uri("conf"), "wait_media 8; dtmf 1111#; wait_end 10", bind=attacker)
    elsewhere = ports.loopback_ip()
    other = phone(
        srv.uri("conf"), "wait_media 8; dtmf 1111#; wait 1.5; hangup", record=False, bind=elsewhere
    )
    rl, ro = locked.result(), other.result()
    legs = calls_from(srv, attacker)
    assert len(legs) == 8 and not joined(srv, legs[-1]), legs
    assert rl.get("code") == 403, rl
    assert "confirmed_at" not in rl, "refused before any answer: no PIN is asked"
    samples, rate = audio.load(locked.record)
    assert audio.speech_like(samples, rate), "the locked-out caller hears why"
    assert f"ip:{attacker} is locked out" in srv.log()
    assert ro["hung_up_by"] == "local" and joined(srv, calls_from(srv, elsewhere)[-1]), (
        "another source is not locked out"
    )


def test_a_guesser_cannot_reach_the_ivr_through_kamailio_without_credentials(
    server_factory: ServerFactory, phone: PhoneFactory
) -> None:
    """Only trunk providers may reach the app server through Kamailio without
    digest auth (by a preloaded Route): anyone else is challenged, so a PIN
    guesser cannot pick a new caller ID per call to dodge the lockout."""
    srv = server_factory(ivr=FAST_IVR, **pbx_overrides())
    r = phone(
        f"sip:conf@{proxy(srv)}",
        "wait_end 5",
        record=False,
        bind=ports.loopback_ip(),
        extra=["--proxy", f"sip:{proxy(srv)};lr", "--user", "guess0"],
    ).result()
    assert r.get("code") == 407, r
    assert " incoming " not in srv.log()


# -- Record-Route tokens are bound to their dialog (issue 16, item 2) -------------


def test_a_record_route_token_opens_no_other_dialog(server_factory, net) -> None:
    """A real call's Record-Route token, copied by a stranger into an INVITE
    of its own (a To tag, a Route to Kamailio, another Call-ID), is refused:
    the token is a hash of a secret over the dialog's Call-ID and caller tag,
    not one value for every call. Nothing reaches the provider."""
    from tests.test_edge_calls import (
        APPLIANCE_IP,
        PBX,
        PROVIDER_IP,
        PROVIDER_NAME,
        _invite_with_reply,
        edge_config,
        no_registration,
    )

    cfg = no_registration(edge_config(provider=True))
    net.hosts({PROVIDER_NAME: PROVIDER_IP})
    srv = server_factory(netns=net.appliance.name, **cfg)
    provider = net.provider.socket(socket.AF_INET, socket.SOCK_DGRAM)
    provider.bind((PROVIDER_IP, 5060))
    provider.settimeout(1.0)
    attacker = net.attacker.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind((net.attacker.ip, 5060))
    try:
        _ack, ok = _invite_with_reply(provider, "real-call")
        routes = re.findall(r"^Record-Route: <([^>]+)>", ok, re.MULTILINE | re.IGNORECASE)
        token = re.search(r";ponte=([0-9a-f]+)", routes[0])
        assert token, routes
        recv_all(provider, 0.5)  # the real call's retransmissions, if any
        forged = request(
            "INVITE",
            f"sip:0015442079460000@{PROVIDER_NAME}",
            f"{net.attacker.ip}:5060",
            to_tag="forged",
            extra=(f"Route: <sip:{PBX};lr;ftag=x;ponte={token.group(1)}>",),
        )
        attacker.sendto(forged, (APPLIANCE_IP, 5060))
        answers = [status_line(d) for d in recv_all(attacker, 1.5)]
        reached = [status_line(d) for d in recv_all(provider, 0.5)]
        assert any(" 403 " in a for a in answers), answers
        assert not any(r.startswith("INVITE") for r in reached), reached
        assert (
            "with a Route token not of its dialog, refused"
            in (Path(srv.config["state_dir"]) / "kamailio" / "kamailio.log").read_text()
        )
    finally:
        provider.close()
        attacker.close()


# -- secrets are never world-readable (issue 16, item 7) ---------------------------


def test_secrets_are_not_readable_by_other_users(server_factory, tmp_path: Path) -> None:
    """Started from a shell whose umask is 022, ponte still writes nothing
    world-readable: the records, Kamailio's database (plaintext SIP
    passwords), its config and the Record-Route secret are 0600, a backup
    archive too; `ponte install`'s ponte.yaml is 0640."""
    import os
    import stat

    from tests.harness import cli

    old = os.umask(0o022)
    try:
        srv = server_factory(**pbx_overrides())
        done = cli(srv, "backup", "--parts", "rooms,usage", "--by", "tester")
        assert done.returncode == 0, done.stderr
    finally:
        os.umask(old)
    state = Path(srv.config["state_dir"])
    kam = state / "kamailio"

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    for secret in (
        Path(srv.config["database"]),
        kam / "kamailio.db",
        kam / "acc.db",
        kam / "kamailio.cfg",
        kam / "rr.secret",
        *sorted((state / "backups").glob("ponte-*.tar.gz")),
    ):
        assert mode(secret) == 0o600, (secret, oct(mode(secret)))
    assert list((state / "backups").glob("ponte-*.tar.gz")), "a backup was made"
    readable = [str(p) for p in state.rglob("*") if p.is_file() and mode(p) & stat.S_IROTH]
    assert readable == [], readable
    root = tmp_path / "root"
    done = subprocess.run(
        [sys.executable, "-m", "ponte.cli", "install", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert mode(root / "etc/ponte/ponte.yaml") == 0o640


def test_the_examples_passwords_never_face_a_network(tmp_path: Path) -> None:
    """The shipped placeholder passwords (`troque-esta-senha-N`) are refused
    by `ponte serve` once pbx.listen is a LAN address (exit 2, nothing
    started), and `ponte check` says so; on loopback they only warn."""
    import yaml

    example = yaml.safe_load(
        (Path(__file__).parent.parent / "provisioning" / "example.yaml").read_text()
    )
    example["pbx"]["listen"] = "198.51.100.1:5060"
    example["database"] = str(tmp_path / "ponte.db")
    example["state_dir"] = str(tmp_path / "state")
    example["control"] = {"socket": str(tmp_path / "control.sock")}
    path = tmp_path / "lan.yaml"
    path.write_text(yaml.safe_dump(example))
    run = [sys.executable, "-m", "ponte.cli"]
    serve = subprocess.run(
        [*run, "serve", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert serve.returncode == 2, serve.stderr
    assert "placeholder password" in serve.stderr and "faces the network" in serve.stderr
    assert not (tmp_path / "state").exists(), "nothing was started"
    check = subprocess.run(
        [*run, "check", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert "ponte serve will not start" in check.stdout, check.stdout
