"""Drive baresip (Debian's, 1.0.0) as a headless test phone.

A phone nobody on this project wrote catches what our own softphone shares
with the server. Each Baresip gets its own config directory, sends a WAV
(a tone made here, or silence) through `aufile`, plays into `aubridge` (a
player nobody reads) and records what it hears with `sndfile`. ALSA's null
device, used before, takes every write at once, so baresip's player thread
spun a whole core for as long as a call was up: on two cores that starved
whatever ran beside it. The recording does not depend on the player: baresip
1.0.0 runs the decode filters (sndfile) as each packet is received. It is
driven over
`ctrl_tcp` (netstring JSON); that socket is on the namespace's own loopback,
so the driver creates its client socket inside the namespace (setns in a
short-lived thread, see tests.netns.socket_in).

    b = Baresip(net.lan[0], tmp_path / "a", tone_hz=440)
    b.start()
    b.dial("sip:bob@198.51.100.11")
    b.wait_event("CALL_ESTABLISHED")
    ...
    b.hangup(); b.wait_event("CALL_CLOSED")
    samples, rate = audio.load(b.recording())
    b.stop()

Events (ctrl_tcp's "type"): REGISTERING, REGISTER_OK, REGISTER_FAIL,
CALL_INCOMING (manual answer mode only), CALL_RINGING, CALL_PROGRESS,
CALL_ESTABLISHED, CALL_CLOSED (param: the reason), CALL_RTPESTAB,
CALL_DTMF_START/END, CALL_LOCAL_SDP, CALL_REMOTE_SDP, AUDIO_ERROR, EXIT …
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests import ports
from tests.netns import Host, socket_in

MODULE_PATH = "/usr/lib/baresip/modules"
RATE = 8000  # PCMU/PCMA

# In a namespace every phone has the ports to itself.
NS_SIP_PORT = 5060
NS_CTRL_PORT = 4444
NS_RTP_PORTS = (10000, 10099)


def write_tone(
    path: Path, hz: float | None, seconds: float, amplitude: float = 0.3, rate: int = RATE
) -> Path:
    """A mono 16-bit WAV at `rate`: a sine at `hz`, or silence for None.

    0.3 of full scale stays clear of G.711 clipping.
    """
    t = np.arange(int(seconds * rate)) / rate
    samples = amplitude * np.sin(2 * np.pi * hz * t) if hz else np.zeros_like(t)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


class PortInUse(RuntimeError):
    """baresip could not have its SIP or control port."""


class Baresip:
    """One baresip process: a phone at `listen_ip:sip_port` in `host`'s namespace.

    host: the namespace to run in; None runs in this process's namespace
        (ports are then drawn from tests.ports so xdist workers never collide).
    account: a baresip account line; None makes a local, unregistered one,
        `<sip:{user}@{listen_ip}:{sip_port}>;regint=0`.
    auto_answer: add `;answermode=auto` (answers every incoming call at once).
    tone_hz: the tone it sends for the whole call (None: silence).
    max_seconds: baresip quits by itself after this (`-t`), should the test
        process die without stopping it.
    modules: more modules to load, e.g. ("srtp.so",) for `mediaenc=srtp-mand`.
    codecs: its audio codec modules, in its order of preference (the only
        codecs its SDP offers), e.g. ("g722.so",) or ("opus.so",).
    rate: its audio's sample rate (what it sends and records): 16000 for a
        wideband codec.

    Ports: SIP on UDP and TCP `sip_port`, and always TLS on `sip_port + 1`
    (baresip 1.0.0 cannot turn TLS off); ctrl_tcp on 127.0.0.1:`ctrl_port`.

    The account is added over ctrl_tcp (`uanew`) once the driver is connected,
    so its REGISTERING/REGISTER_OK events cannot fire before anyone listens.
    """

    def __init__(
        self,
        host: Host | None,
        workdir: Path,
        *,
        account: str | None = None,
        user: str = "phone",
        auto_answer: bool = False,
        listen_ip: str | None = None,
        sip_port: int | None = None,
        rtp_ports: tuple[int, int] | None = None,
        tone_hz: float | None = None,
        tone_seconds: float = 60.0,
        ctrl_port: int | None = None,
        max_seconds: int = 600,
        verbose: bool = False,
        modules: tuple[str, ...] = (),
        codecs: tuple[str, ...] = ("g711.so",),
        rate: int = RATE,
    ) -> None:
        self.host = host
        self.workdir = Path(workdir)
        self.listen_ip = listen_ip or (host.ip if host else "127.0.0.1")
        given_sip, given_ctrl = sip_port is not None, ctrl_port is not None
        if host is None:
            # baresip always opens SIP over TLS too, on sip_port + 1.
            sip_port = sip_port or _free_ports(2)
            ctrl_port = ctrl_port or _free_ports(1)
            if rtp_ports is None:
                lo, hi = ports.rtp_range(40).split("-")
                rtp_ports = (int(lo), int(hi))
        # Ports picked here may be taken by another session before baresip binds
        # them: start() then picks others.
        self._repick = host is None and not (given_sip or given_ctrl)
        self.sip_port = sip_port or NS_SIP_PORT
        self.ctrl_port = ctrl_port or NS_CTRL_PORT
        self.rtp_ports = rtp_ports or NS_RTP_PORTS
        self.user = user
        self.auto_answer = auto_answer
        self._account = account
        self.tone_hz = tone_hz
        self.tone_seconds = tone_seconds
        self.max_seconds = max_seconds
        self.verbose = verbose
        # More of baresip's modules, e.g. ("srtp.so",) for mediaenc=srtp-mand.
        self.modules = modules
        self.codecs = codecs
        self.rate = rate
        self.confdir = self.workdir / ".baresip"
        self.snd_path = self.workdir / "snd"
        self.log = self.workdir / "baresip.log"
        self.proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._events: list[dict[str, Any]] = []
        self._consumed: set[int] = set()
        self._responses: dict[str, dict[str, Any]] = {}
        self._token = 0
        self._send_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------

    @property
    def account(self) -> str:
        """The account line given to `uanew`."""
        line = self._account or f"<sip:{self.user}@{self.listen_ip}:{self.sip_port}>;regint=0"
        if self.auto_answer and "answermode=" not in line:
            line += ";answermode=auto"
        return line

    @property
    def uri(self) -> str:
        """The SIP URI that reaches this phone directly (its user, its address)."""
        user = self.account.split("sip:", 1)[1].split("@", 1)[0].split(":", 1)[0]
        return f"sip:{user}@{self.listen_ip}:{self.sip_port}"

    def _write_config(self) -> None:
        self.confdir.mkdir(parents=True, exist_ok=True)
        self.snd_path.mkdir(parents=True, exist_ok=True)
        wav = write_tone(self.workdir / "send.wav", self.tone_hz, self.tone_seconds, rate=self.rate)
        lo, hi = self.rtp_ports
        more = "".join(f"module {m}\n" for m in self.modules)
        codecs = "".join(f"module {m}\n" for m in self.codecs)
        config = f"""\
poll_method epoll
sip_listen {self.listen_ip}:{self.sip_port}
net_interface {self.listen_ip}
call_local_timeout 120
call_max_calls 4
audio_player aubridge,null
audio_alert aubridge,null
audio_source aufile,{wav}
ausrc_srate {self.rate}
auplay_srate {self.rate}
ausrc_channels 1
auplay_channels 1
audio_level no
rtp_ports {lo}-{hi}
rtcp_mux no
jitter_buffer_delay 5-10
rtp_stats no
statmode_default off
module_path {MODULE_PATH}
{codecs}module aufile.so
module aubridge.so
module sndfile.so
{more}module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}
snd_path {self.snd_path}
"""
        (self.confdir / "config").write_text(config)
        # Empty on purpose: the account comes over ctrl_tcp (see the class doc);
        # a missing file would make baresip write a template.
        (self.confdir / "accounts").write_text("# added with uanew by tests/baresip.py\n")
        (self.confdir / "contacts").write_text("")

    def start(self, timeout: float = 10.0) -> None:
        """Start baresip, connect to ctrl_tcp, add the account (`uanew`)."""
        for attempt in range(3):
            try:
                self._start_once(timeout)
                return
            except PortInUse:
                if not self._repick or attempt == 2:
                    raise
                self.sip_port, self.ctrl_port = _free_ports(2), _free_ports(1)

    def _start_once(self, timeout: float) -> None:
        self._write_config()
        argv = ["baresip", "-4", "-s", "-f", str(self.confdir), "-t", str(self.max_seconds)]
        if self.verbose:
            argv.append("-v")
        env = {**os.environ, "HOME": str(self.workdir)}
        with open(self.log, "wb") as log:
            if self.host:
                self.proc = self.host.popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
                )
            else:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
                )
        try:
            self._connect(timeout)
            r = self.command("uanew", self.account)
            if not r.get("ok"):
                raise RuntimeError(f"uanew {self.account}: {r}")
        except BaseException:
            self.stop()
            raise

    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            sock = socket_in(self.host.name if self.host else None)
            try:
                sock.connect(("127.0.0.1", self.ctrl_port))
                self._check_ctrl_owner()
                break
            except PortInUse:
                sock.close()
                raise
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    where = f"127.0.0.1:{self.ctrl_port}"
                    raise RuntimeError(
                        f"baresip ctrl_tcp {where} never answered\n{self.log_text()}"
                    ) from None
                time.sleep(0.05)
        self._sock = sock
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name="baresip-ctrl")
        self._reader.start()

    def _check_ctrl_owner(self) -> None:
        """The control port we reached is this baresip's: should its ctrl_tcp
        have failed to bind, another process's port would take our commands."""
        assert self.proc is not None
        argv = ["ss", "-Hltnp", f"sport = :{self.ctrl_port}"]
        out = (
            self.host.run(argv)
            if self.host
            else subprocess.run(argv, capture_output=True, text=True)
        ).stdout
        if f"pid={self.proc.pid}," not in out:
            raise PortInUse(
                f"ctrl port {self.ctrl_port} is not baresip {self.proc.pid}'s: {out.strip()}\n"
                f"{self.log_text()}"
            )

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop baresip (SIGTERM, then SIGKILL) and always reap it; its exit code."""
        if self._sock:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._reader:
            self._reader.join(timeout=2)
            self._reader = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def __enter__(self) -> Baresip:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self, tail: int = 8000) -> str:
        """The end of baresip's output (SIP trace included), for failure messages."""
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            log = self.log_text()
            error = PortInUse if "Address already in use" in log else RuntimeError
            raise error(f"baresip exited ({self.proc.returncode}):\n{log}")

    # -- ctrl_tcp ----------------------------------------------------------------

    def _read_loop(self) -> None:
        """Split netstrings (`LEN:JSON,`) into responses (by token) and events."""
        assert self._sock is not None
        sock, buf = self._sock, b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b":" in buf:
                head, rest = buf.split(b":", 1)
                size = int(head)
                if len(rest) < size + 1:
                    break
                msg = json.loads(rest[:size])
                buf = rest[size + 1 :]  # past the trailing ","
                with self._cond:
                    if msg.get("response"):
                        self._responses[str(msg.get("token", ""))] = msg
                    else:
                        self._events.append(msg)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def command(self, cmd: str, params: str = "", timeout: float = 10.0) -> dict[str, Any]:
        """Run a baresip command; its response `{"response", "ok", "data", "token"}`."""
        if self._sock is None:
            raise RuntimeError("baresip not started")
        with self._send_lock:
            self._token += 1
            token = f"t{self._token}"
            body = json.dumps({"command": cmd, "params": params, "token": token}).encode()
            self._sock.sendall(b"%d:%s," % (len(body), body))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                self._check_alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no response to {cmd} {params}\n{self.log_text()}")
                self._cond.wait(min(left, 0.2))
            return self._responses.pop(token)

    def _ok(self, cmd: str, params: str = "") -> dict[str, Any]:
        r = self.command(cmd, params)
        if not r.get("ok"):
            raise RuntimeError(f"baresip {cmd} {params} failed: {r.get('data')}")
        return r

    def dial(self, uri_or_user: str) -> None:
        """Call a URI (or a user at the account's domain)."""
        self._ok("dial", uri_or_user)

    def sndcode(self, digits: str, gap: float = 0.15) -> None:
        """Key DTMF digits (RFC 2833 telephone-events) in the current call, as
        a person does: each digit pressed and released, `gap` seconds apart.

        Given a whole string, baresip starts each digit the moment the last
        one stops, with no release in between; when the short run of a
        repeated digit loses packets on a busy machine, the receiver hears
        "1111#" as one held 1 and a #."""
        for digit in digits:
            self._ok("sndcode", digit)
            time.sleep(gap)

    def hangup(self) -> None:
        """Hang up the current call."""
        self._ok("hangup")

    def reginfo(self) -> str:
        """baresip's registration status text."""
        return str(self._ok("reginfo").get("data", ""))

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event received so far (consumed or not)."""
        with self._cond:
            return list(self._events)

    def wait_event(
        self, what: str | Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """The earliest event not yet returned that matches `what` (an event type
        such as "CALL_ESTABLISHED", or a predicate on the event dict)."""
        match = what if callable(what) else (lambda ev: ev.get("type") == what)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, ev in enumerate(self._events):
                    if i not in self._consumed and match(ev):
                        self._consumed.add(i)
                        return ev
                self._check_alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(e.get("type"), e.get("param")) for e in self._events]
                    raise TimeoutError(f"no event {what!r}; seen {seen}\n{self.log_text()}")
                self._cond.wait(min(left, 0.2))

    # -- recordings ----------------------------------------------------------------

    def recording(self, kind: str = "dec", timeout: float = 5.0) -> Path:
        """The WAV of what it heard ("dec", the default) or sent ("enc") in the
        latest call, once baresip has closed it.

        sndfile names them `dump-YYYY-MM-DD-HH-MM-SS-{dec,enc}.wav` (local time
        of the call's audio start; calls starting within the same second share a
        name). The RIFF header gets its sizes when the file is closed, at the
        call's end, so this waits for the header to match the file's length.
        """
        deadline = time.monotonic() + timeout
        while True:
            files = sorted(self.snd_path.glob(f"dump-*-{kind}.wav"))
            if files and _wav_closed(files[-1]):
                return files[-1]
            if time.monotonic() > deadline:
                state = f"{files[-1]} not closed" if files else f"no {kind} recording"
                raise TimeoutError(f"{state} in {self.snd_path}\n{self.log_text()}")
            time.sleep(0.05)


@dataclass
class RoomVisit:
    """What `visit_room` saw, in this process's monotonic clock."""

    up: float  # the call established
    pin_at: float  # the PIN's last digit sent
    talked: float  # seconds from `up` to the call closed
    heard: Path  # what the phone heard (WAV)
    trace: str  # the end of baresip's log


def visit_room(
    bs: Baresip, target: str, pin: str, stay: float, before_pin: float = 2.0
) -> RoomVisit:
    """A registered baresip dials `target`, keys `pin` (RFC 2833) once the
    call is up `before_pin` s, stays `stay` s and hangs up."""
    bs.wait_event("REGISTER_OK")
    bs.dial(target)
    bs.wait_event("CALL_ESTABLISHED")
    up = time.monotonic()
    time.sleep(before_pin)  # the entry prompt starts; digits may barge in
    bs.sndcode(pin)
    pin_at = time.monotonic()
    time.sleep(stay)
    bs.hangup()
    bs.wait_event("CALL_CLOSED")
    talked = time.monotonic() - up
    return RoomVisit(up, pin_at, talked, bs.recording(), bs.log_text(tail=400_000))


def _tcp_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> int:
    """`count` consecutive ports from tests.ports (UDP-free) that are TCP-free too:
    baresip listens on TCP for SIP, SIP/TLS and ctrl_tcp."""
    for _ in range(100):
        start = ports.allocate(count)
        if all(_tcp_free(p) for p in range(start, start + count)):
            return start
    raise RuntimeError("no UDP+TCP-free ports left in this worker's block")


def _wav_closed(path: Path) -> bool:
    """libsndfile has written the final RIFF size (it does so on sf_close)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return False
    # A call that heard nothing leaves a closed 44-byte file: header only.
    return len(head) == 8 and size >= 44 and struct.unpack("<I", head[4:8])[0] == size - 8
