"""What the attack suite shares. The suite: real attack tools and hand-made
packets against a running appliance, over loopback only, each bounded in count
and time.

* svcrack (sipvicious) guessing an extension's password through Kamailio,
  flat out and paced below the flood limit (tests/test_attacks_svcrack.py).
* The RFC 4475 torture messages (tests/attacks/torture/) to Kamailio and to
  the app server, then a normal call (tests/test_attacks_torture.py).
* RTP from a stranger aimed at a live call's media port (tests/test_attacks_rtp.py).
* Toll fraud: SIPp dialing forbidden numbers with a real extension's
  credentials at 03:00; forged mid-dialog requests; Kamailio as a relay
  (tests/test_attacks_fraud.py).
* Conference PIN guessing: 3 per call, the 20-in-10-minutes lockout, and no
  way around it through Kamailio without credentials
  (tests/test_attacks_pin_lockout.py, tests/test_attacks_pin.py).
* Secrets never world-readable (tests/test_attacks_secrets.py); dialogs, REFER
  and the admin side in tests/test_attacks_dialog.py, tests/test_attacks_refer.py
  and tests/test_attacks_admin.py.

Where the appliance does not hold (yet), the test says what should happen and
is marked xfail(strict=True, raises=<the weakness>): only that exception is
the expected failure, so a broken setup still fails loudly, and the day the
weakness is fixed the XPASS tells us to drop the mark.
"""

from __future__ import annotations

import re
import select
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import audio, ports
from tests.harness import Server
from tests.pbx_helpers import Provider, proxy, register
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


def provider_invites(provider: Provider) -> list[str]:
    return [e for _, e in provider.events() if e.startswith("INVITE")]


# The conference IVR made quick, and a call that keys three wrong PINs
# (tests/test_attacks_pin_lockout.py, tests/test_attacks_pin.py).
FAST_IVR = {"interdigit_timeout": 1.0, "total_timeout": 3.0, "max_tries": 3}
THREE_WRONG = "wait_media 8; dtmf {pin}1#; dtmf {pin}2#; dtmf {pin}3#; wait_end 15"
