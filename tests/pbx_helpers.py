"""Peers for PBX tests: a SIPp provider, and waiting on Kamailio's registrar."""

from __future__ import annotations

import hashlib
import random
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pbx.kamailio import ctl_path
from tests import ports
from tests.harness import Server, in_netns
from tests.netns import APPLIANCE_IP, Host

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
EXTENSIONS = [
    {"number": "1001", "name": "Ana", "password": "ana-Secret-xk27q"},
    {"number": "1002", "name": "Bruno", "password": "bruno-Secret-m4w"},
]


def pbx_overrides(provider_port: int | None = None, **extra) -> dict:
    """Config for a server with Kamailio, two extensions and (optionally) a trunk."""
    cfg: dict = {
        "pbx": {"listen": f"127.0.0.1:{ports.allocate(1)}", "flood_density": 200},
        "extensions": EXTENSIONS,
    }
    if provider_port is not None:
        cfg.update(trunk_to(f"sip:localhost:{provider_port}"))
    cfg.update(extra)
    return cfg


def trunk_to(registrar: str) -> dict:
    """A trunk `provider1` at `registrar` (2 calls/s, prefixes 0 and 00) and its
    DID +551130001000 routed to the access number `conf`."""
    return {
        "trunks": [
            {
                "name": "provider1",
                "registrar": registrar,
                "username": "trunkuser",
                "password": "trunkpass",
                "cps": 2,
                "dids": ["+551130001000"],
                "outbound_prefixes": ["0", "00"],
            }
        ],
        "dids": {"+551130001000": {"room_access": "conf"}},
    }


PASSWORDS = {e["number"]: e["password"] for e in EXTENSIONS}


def register(number: str, server: Server) -> list[str]:
    """Softphone arguments to register `number` to the server's Kamailio."""
    return ["--register", f"{number}:{PASSWORDS[number]}@{proxy(server)}"]


def via_proxy(server: Server) -> list[str]:
    """Softphone arguments to call through Kamailio as a provider would (Route: Kamailio)."""
    return ["--proxy", f"sip:{proxy(server)};lr"]


def busiest_window(times: list[float], width: float) -> int:
    """The most events in any window of `width` (what a provider's CPS counter sees)."""
    times = sorted(times)
    return max((sum(1 for x in times[i:] if x < t + width) for i, t in enumerate(times)), default=0)


def answering_extension(phone, server: Server, number: str = "1002", hz: int = 700):
    """A softphone registered as `number` that answers, sends a tone and records."""
    callee = phone(
        "",
        f"wait_media 5; tone {hz}; wait 4; hangup",
        bind=ports.loopback_ip(),
        extra=[*register(number, server), "--answer"],
    )
    wait_registered(server, number)
    return callee


def assert_two_way_audio(
    caller, callee, ra: dict, rb: dict, caller_hz: int = 440, callee_hz: int = 700
) -> None:
    """Each side heard the other's tone while both were up."""
    from tests import audio
    from tests.test_spine_calls import window

    start = max(ra["media_at"], rb["media_at"]) + 0.5
    end = min(ra["hangup_sent_at"], rb["ended_at"]) - 0.3
    sa, rate = audio.load(caller.record)
    sb, _ = audio.load(callee.record)
    assert audio.hears_tone(audio.segment(sa, rate, *window(ra, start, end)), rate, callee_hz)
    assert audio.hears_tone(audio.segment(sb, rate, *window(rb, start, end)), rate, caller_hz)


def proxy(server: Server) -> str:
    """host:port of the server's Kamailio."""
    return server.config["pbx"]["listen"]


def wait_registered(server: Server, user: str, timeout: float = 10.0) -> None:
    """Block until Kamailio holds a contact for `user`."""
    ctl = ctl_path(Path(server.config["state_dir"]) / "kamailio")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(
            ["kamcmd", "-s", f"unix:{ctl}", "ul.lookup", "location", f"s:{user}"],
            capture_output=True,
            text=True,
        )
        if r.returncode == 0 and "Contact" in r.stdout:
            return
        time.sleep(0.1)
    raise AssertionError(f"{user} did not register")


@dataclass
class Provider:
    """A SIPp UAS playing the trunk provider."""

    proc: subprocess.Popen
    port: int
    log_path: Path

    def events(self) -> list[tuple[int, str]]:
        """(ms since SIPp started, text) for each logged request."""
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            m = re.match(r"^(\d+) (.*)$", line.strip())
            if m:
                out.append((int(m.group(1)), m.group(2)))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_provider(tmp: Path, netns: str | None = None, ip: str = "127.0.0.1") -> Provider:
    """Start the provider UAS on `ip` (on this host the trunk reaches it as
    `localhost`; in a network namespace, by the name the test gives it)."""
    port = 5060 if netns else ports.allocate(1)
    # SIPp binds -mp to -mp + 3 (audio and video, RTP and RTCP): a range of
    # two once left its video port to be handed out next, as Kamailio's SIP
    # port, which then failed to bind ("Address already in use").
    rtp = 16000 if netns else ports.allocate(4)
    log_path = tmp / "provider.log"
    proc = subprocess.Popen(
        [
            *in_netns(netns),
            "sipp",
            "-sf",
            str(SIPP_DIR / "provider_uas.xml"),
            "-i",
            ip,
            "-p",
            str(port),
            "-mp",
            str(rtp),
            "-rtp_echo",
            "-nostdin",
            "-trace_logs",
            "-log_file",
            str(log_path),
            "-timeout",
            "90s",
            "-timeout_error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "provider.err").open("w"),
        stdin=subprocess.DEVNULL,
        cwd=tmp,
    )
    time.sleep(0.3)
    return Provider(proc, port, log_path)


def register_once(host: Host, user: str, password: str) -> int | None:
    """One REGISTER with digest credentials from `host` (a phone in a network
    namespace) to the appliance's Kamailio; the final status code (None: no answer)."""
    sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host.ip, 0))
    sock.settimeout(2.0)
    port = sock.getsockname()[1]
    call_id = f"{random.getrandbits(64):x}@{host.ip}"

    def send(cseq: int, auth: str = "") -> str | None:
        msg = (
            f"REGISTER sip:{APPLIANCE_IP} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host.ip}:{port};branch=z9hG4bK{random.getrandbits(48):x};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{APPLIANCE_IP}>;tag={cseq}x\r\n"
            f"To: <sip:{user}@{APPLIANCE_IP}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@{host.ip}:{port}>\r\nExpires: 60\r\n"
            f"{auth}Content-Length: 0\r\n\r\n"
        )
        sock.sendto(msg.encode(), (APPLIANCE_IP, 5060))
        try:
            return sock.recv(4096).decode(errors="replace")
        except TimeoutError:
            return None

    try:
        first = send(1)
        if first is None:
            return None
        code = int(first.split()[1])
        if code != 401:
            return code
        nonce = first.split('nonce="', 1)[1].split('"', 1)[0]
        realm = first.split('realm="', 1)[1].split('"', 1)[0]
        ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()  # noqa: S324
        ha2 = hashlib.md5(f"REGISTER:sip:{APPLIANCE_IP}".encode()).hexdigest()  # noqa: S324
        resp = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()  # noqa: S324
        auth = (
            f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", '
            f'uri="sip:{APPLIANCE_IP}", response="{resp}", algorithm=MD5\r\n'
        )
        second = send(2, auth)
        return int(second.split()[1]) if second else None
    finally:
        sock.close()
