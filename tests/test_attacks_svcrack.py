"""svcrack (sipvicious) guessing an extension's password through Kamailio, flat
out and paced below the flood limit (the attack suite: tests/attack_helpers.py)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests import ports
from tests.attack_helpers import (
    ATTACKS,
    SYSTEM_PYTHON,
    PasswordCracked,
    ServerFactory,
    hostport,
    kamailio_dir,
    kamailio_log,
    local_of,
    recv_all,
    request,
    response_code,
    udp_socket,
    wait_for,
)
from tests.harness import Server
from tests.pbx_helpers import PASSWORDS, pbx_overrides, proxy


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


def wait_answering(host: str, port: int, timeout: float = 15.0) -> None:
    """Until Kamailio answers an OPTIONS (any response), from a throwaway
    loopback source: svcrack gives up at once ("no server response") when
    its first request, sent 0.1 s after Kamailio started on a loaded
    machine, gets nothing back (seen once in a full suite)."""
    src = ports.loopback_ip()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(0.3)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tag = uuid.uuid4().hex[:12]
            s.sendto(
                (
                    f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {src}:{s.getsockname()[1]};branch=z9hG4bK{tag}\r\n"
                    "Max-Forwards: 70\r\n"
                    f"From: <sip:probe@{src}>;tag={tag}\r\n"
                    f"To: <sip:{host}:{port}>\r\n"
                    f"Call-ID: {tag}@{src}\r\n"
                    "CSeq: 1 OPTIONS\r\n"
                    "Content-Length: 0\r\n\r\n"
                ).encode(),
                (host, port),
            )
            try:
                if s.recv(4096).startswith(b"SIP/2.0 "):
                    return
            except TimeoutError:
                pass
    raise AssertionError(f"Kamailio at {host}:{port} never answered an OPTIONS")


def run_svcrack(srv: Server, words: Path, delay: float, cwd: Path, limit: float = 40) -> Crack:
    """svcrack against extension 1001 through Kamailio from a fresh 127.x
    address, one guess per `delay` seconds at most. Stopped (SIGINT, which it
    answers by printing its result) a second after Kamailio bans it; else it
    runs until it finds the password or the list ends."""
    attacker = ports.loopback_ip()
    host, port = hostport(proxy(srv))
    wait_answering(host, port)
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
        # Each line reaches the pipe as it is written, so what svcrack said
        # is kept even if it has to be killed.
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
        try:
            out, _ = crack.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            # On a loaded machine svcrack once sat on the SIGINT (in a CI
            # run): what it tried and found is in its output already.
            crack.kill()
            out, _ = crack.communicate()
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
