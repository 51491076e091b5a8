"""rtpengine as ponte's media relay: config, process, ng control client, quality.

Phones and providers send their RTP to rtpengine on pbx.listen's host (the
`external` logical interface); rtpengine relays it to the app server on
loopback (the `internal` interface), so the app server never faces the
network. Kamailio drives it with offer/answer over the ng protocol; the app
server queries it for each call's figures (packets, loss, jitter, RTT, MOS).

ponte runs rtpengine itself (as a child, or through ponte-rtpengine.service),
never Debian's rtpengine-daemon.service, and never with the kernel module:
forwarding is userspace only (`table = -1`). As a child it outlives a
`ponte serve` killed under it, like Kamailio, and the next one adopts it
(pbx/child.py): calls between extensions keep their media.

Debian 12 ships rtpengine 10.5; what is written here was checked against it
(`tests/test_rtpengine.py` pushes real RTP and RTCP through it).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bencodepy

from pbx.child import EdgeProcess
from provisioning.schema import Config

log = logging.getLogger("ponte.rtpengine")

BINARY = "/usr/bin/rtpengine"
# Offer/answer `direction` for a call from a phone or provider to the app
# server; reverse it for a call the app server places.
DIRECTION_INBOUND = ("external", "internal")
DIRECTION_OUTBOUND = ("internal", "external")
# Flags for both the offer and the answer: rtpengine applies an offer's flags
# to the offerer's streams and an answer's to the answerer's, so strict source
# needs them in both. Symmetric RTP (send back to where packets come from) is
# rtpengine's default; the flag only says so. With `endpoint-learning =
# immediate` the first packet latches the peer, and `strict-source` then drops
# packets from any other address or port.
STRICT_FLAGS = ("symmetric", "strict-source")
# Outgoing media is marked Expedited Forwarding (DSCP 46 = TOS 0xB8).
TOS_EF = 184


class RtpEngineError(Exception):
    """rtpengine is missing, misconfigured, died, or refused a command."""


class UnknownCallError(RtpEngineError):
    """rtpengine has no call with this Call-ID (never created, or gone)."""


def split_host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 with or without brackets) as (host, port)."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _endpoint(host: str, port: int) -> str:
    """rtpengine's `IP:PORT` syntax (brackets around IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def interfaces(config: Config) -> str:
    """The `interface` line: `internal` towards the app servers (loopback, or
    pbx.internal_listen's host when nodes run on other machines), `external`
    on pbx.listen's host, advertising pbx.public_address instead when behind
    a 1:1 NAT.

    When pbx.listen is itself 127.0.0.1 (everything on one machine, as in the
    tests) both logical interfaces share that address; rtpengine 10.5 accepts
    it and hands out distinct ports from the same range.
    """
    external = config.pbx.host
    if config.pbx.public_address:
        external += f"!{config.pbx.public_address}"
    return f"internal/{config.pbx.internal_host};external/{external}"


def render_config(config: Config, runtime: Path, log_level: int = 6) -> str:
    """rtpengine.conf (the [rtpengine] ini section) for this provisioning."""
    lo, hi = config.pbx.media_range
    ng_host, ng_port = split_host_port(config.pbx.rtpengine_control)
    lines = [
        "# Written by ponte from its provisioning file at each start: edits are lost.",
        "[rtpengine]",
        # Userspace forwarding only: no kernel module, no iptables rules.
        "table = -1",
        f"interface = {interfaces(config)}",
        f"listen-ng = {_endpoint(ng_host, ng_port)}",
        f"port-min = {lo}",
        f"port-max = {hi}",
        "foreground = true",
        "log-stderr = true",
        f"log-level = {log_level}",
        # Every ng command is logged at INFO: one line per query would drown
        # the peer-address and strict-source messages that matter.
        f"log-level-control = {min(log_level, 5)}",
        f"pidfile = {runtime / 'rtpengine.pid'}",
        f"tos = {TOS_EF}",
        # A call whose media stopped for 60 s is dead (the phone crashed or
        # lost its network); on hold (sendonly/inactive) it may sit an hour.
        "timeout = 60",
        "silent-timeout = 3600",
        # Offers never answered (Kamailio missed the failure) free their ports.
        "offer-timeout = 300",
        # Keep a deleted call's figures 30 s so the app server can still query
        # them once the call has ended.
        "delete-delay = 30",
        # The first packet latches the peer's address at once; with the
        # `strict-source` flag, packets from elsewhere are dropped from then
        # on. (The default, `delayed`, follows whatever source sends during
        # the first 3 s, so anyone could take the stream over then.)
        "endpoint-learning = immediate",
        # MOS from jitter and loss of each RTCP receiver report even when no
        # round-trip time is known (CQ, the default, gives no MOS at all then:
        # it needs RTCP SR/RR pairs on both legs).
        "mos = LQ",
        # No `play media`: no playback threads.
        "media-num-threads = 0",
    ]
    return "\n".join(lines) + "\n"


class NgClient:
    """rtpengine's ng control protocol: bencoded dictionaries over UDP, each
    message prefixed by a cookie that its reply repeats.

    Each request uses its own socket, so one client may serve several threads.
    A lost datagram is retried with the same cookie: rtpengine remembers the
    replies to recent cookies and answers a retransmission without running
    the command twice.
    """

    _codec = bencodepy.Bencode(encoding="utf-8", encoding_fallback="value")

    def __init__(
        self, host: str = "127.0.0.1", port: int = 2223, timeout: float = 1.0, retries: int = 3
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.retries = max(1, retries)

    @classmethod
    def for_config(cls, config: Config, timeout: float = 1.0, retries: int = 3) -> NgClient:
        """A client for pbx.rtpengine_control."""
        host, port = split_host_port(config.pbx.rtpengine_control)
        return cls(host, port, timeout, retries)

    def request(self, command: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send one command, return its reply dictionary.

        Raises RtpEngineError when rtpengine does not answer after the retries
        or answers `result: error` (UnknownCallError for an unknown Call-ID).
        """
        message = {"command": command, **(params or {})}
        cookie = secrets.token_hex(8).encode()
        payload = cookie + b" " + self._codec.encode(message)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((self.host, self.port))
            reply = self._exchange(sock, cookie, payload, command)
        result = reply.get("result")
        if result == "error":
            reason = str(reply.get("error-reason", "no reason given"))
            if reason.lower().startswith("unknown call-id"):
                raise UnknownCallError(f"rtpengine {command}: {reason}")
            raise RtpEngineError(f"rtpengine {command}: {reason}")
        if "warning" in reply:
            log.debug("rtpengine %s: %s", command, reply["warning"])
        return reply

    def _exchange(self, sock: socket.socket, cookie: bytes, payload: bytes, command: str) -> dict:
        last: Exception | None = None
        for _ in range(self.retries):
            try:
                sock.send(payload)
            except OSError as exc:  # e.g. ECONNREFUSED left by an earlier ICMP
                last = exc
                time.sleep(min(self.timeout, 0.1))
                continue
            deadline = time.monotonic() + self.timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(65535)
                except TimeoutError as exc:
                    last = exc
                    break
                except OSError as exc:  # ECONNREFUSED: nothing listens (yet)
                    last = exc
                    time.sleep(min(left, 0.1))
                    break
                got, _, body = data.partition(b" ")
                if got != cookie:
                    continue  # a late reply to an earlier request: not ours
                try:
                    reply = self._codec.decode(body)
                except bencodepy.BencodeDecodeError as exc:
                    raise RtpEngineError(f"rtpengine {command}: undecodable reply") from exc
                if not isinstance(reply, dict):
                    raise RtpEngineError(f"rtpengine {command}: reply is not a dictionary")
                return reply
        raise RtpEngineError(
            f"rtpengine at {_endpoint(self.host, self.port)} did not answer {command!r} "
            f"({self.retries} tries of {self.timeout:g} s: {last or 'no reply'})"
        )

    def ping(self) -> None:
        """Raise RtpEngineError unless rtpengine answers `pong`."""
        reply = self.request("ping")
        if reply.get("result") != "pong":
            raise RtpEngineError(f"rtpengine ping: unexpected reply {reply!r}")

    def offer(
        self, call_id: str, from_tag: str, sdp: str, options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """`offer`: returns the reply, whose `sdp` goes to the callee."""
        return self.request(
            "offer", {"call-id": call_id, "from-tag": from_tag, "sdp": sdp, **(options or {})}
        )

    def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: str,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`answer`: returns the reply, whose `sdp` goes back to the caller."""
        params = {"call-id": call_id, "from-tag": from_tag, "to-tag": to_tag, "sdp": sdp}
        return self.request("answer", {**params, **(options or {})})

    def query(self, call_id: str, from_tag: str | None = None) -> dict[str, Any]:
        """A call's state and statistics (see `quality`); UnknownCallError if
        rtpengine has no such call (a deleted call stays for delete-delay)."""
        params = {"call-id": call_id}
        if from_tag:
            params["from-tag"] = from_tag
        return self.request("query", params)

    def delete(
        self, call_id: str, from_tag: str, to_tag: str | None = None, delay: int | None = None
    ) -> dict[str, Any]:
        """Delete a call (after `delay` s, else the configured delete-delay).

        An unknown call is not an error (rtpengine answers with a warning);
        the reply holds the same statistics as a query when the call existed.
        """
        params: dict[str, Any] = {"call-id": call_id, "from-tag": from_tag}
        if to_tag:
            params["to-tag"] = to_tag
        if delay is not None:
            params["delete delay"] = delay
        return self.request("delete", params)

    def list_calls(self, limit: int = 1000) -> list[str]:
        """Call-IDs rtpengine holds (including deleted calls not yet purged)."""
        reply = self.request("list", {"limit": limit})
        return [str(c) for c in reply.get("calls", [])]


def _ms(us: Any) -> float | None:
    """Microseconds (rtpengine's RTT unit) as milliseconds; 0 means unknown."""
    return round(us / 1000.0, 1) if isinstance(us, int) and us > 0 else None


def _mos(value: Any) -> float | None:
    """rtpengine's MOS x 10 (an integer 10-50) as 1.0-5.0; 0 means none."""
    return value / 10.0 if isinstance(value, int) and value > 0 else None


def _stream_figures(stream: Mapping[str, Any]) -> tuple[int, int, int]:
    stats = stream.get("stats") or {}
    return int(stats.get("packets", 0)), int(stats.get("bytes", 0)), int(stats.get("errors", 0))


def _reported(entry: Mapping[str, Any] | None) -> dict[str, Any]:
    """The figures one endpoint's RTCP receiver reports gave, as rtpengine
    summed them up (keys and units documented in `quality`)."""
    if not entry:
        return {
            "reports": 0,
            "packet_loss": None,
            "cumulative_loss": None,
            "jitter": None,
            "rtt": None,
            "rtt_leg": None,
            "mos_average": None,
            "mos_lowest": None,
            "mos_highest": None,
            "worst": None,
        }
    avg = entry.get("average MOS") or {}
    low = entry.get("lowest MOS") or {}
    high = entry.get("highest MOS") or {}
    worst = None
    if low:
        worst = {
            "mos": _mos(low.get("MOS")),
            "packet_loss": low.get("packet loss"),
            "jitter": low.get("jitter"),
            "rtt": _ms(low.get("round-trip time")),
            "at": low.get("reported at"),
        }
    return {
        "reports": int(avg.get("samples", 0)),
        "packet_loss": avg.get("packet loss"),
        "cumulative_loss": entry.get("cumulative loss"),
        "jitter": avg.get("jitter"),
        "rtt": _ms(avg.get("round-trip time")),
        "rtt_leg": _ms(avg.get("round-trip time leg")),
        "mos_average": _mos(avg.get("MOS")),
        "mos_lowest": _mos(low.get("MOS")),
        "mos_highest": _mos(high.get("MOS")),
        "worst": worst,
    }


def quality(query_result: Mapping[str, Any]) -> dict[str, Any]:
    """Per-direction figures of one call from an ng `query` (or `delete`) reply.

    Returns `{"created": unix s, "last_signal": unix s, "directions": {...}}`
    where `directions` maps each sender's SIP tag to the stream it sends:

    - `from_tag`, `to_tag`, `from_label`: who sends, who receives.
    - `codec`: e.g. "PCMU/8000" (rtpengine's view of the media).
    - `packets`, `bytes`: RTP packets/bytes rtpengine received from the sender,
      including `dropped` ones; `dropped`: packets rtpengine did not forward
      (rtpengine's "errors": mostly strict-source rejections, i.e. packets
      from an address other than the latched peer).
    - `rtcp_packets`: RTCP packets received from the sender.
    - `last_packet`: unix time of the last packet received from the sender.
    - The quality the receiver saw, from the receiver's RTCP receiver reports
      about this stream (None when it sent none rtpengine could use):
      `packet_loss`: % of packets lost (average over the reports, integer;
      from each report's "fraction lost"); `cumulative_loss`: packets lost
      in total, as last reported; `jitter`: ms (average, integer);
      `rtt`: end-to-end round trip, ms (average; both legs' RTCP needed,
      counted as 0 in the average while one leg is unknown); `rtt_leg`: ms
      between rtpengine and the receiver only; `mos_average`,
      `mos_lowest`, `mos_highest`: 1.0-5.0 (rtpengine's MOS-LQ, from loss,
      jitter and, once known, RTT); `reports`: reports averaged; `worst`:
      the report with the lowest MOS (`mos`, `packet_loss`, `jitter`,
      `rtt`, `at`).

    rtpengine files RTCP figures under the *reporter's* SSRC (what that
    endpoint received), so they are matched to tags through the SSRCs each
    tag's RTP and RTCP streams carry.
    """
    tags: dict[str, Any] = query_result.get("tags") or {}
    ssrc_stats: dict[str, Any] = query_result.get("SSRC") or {}
    # SSRCs each tag sends, from its streams (RTCP's is the reporter's own).
    owned: dict[str, set[str]] = {}
    for name, tag in tags.items():
        for media in tag.get("medias") or []:
            for stream in media.get("streams") or []:
                if "SSRC" in stream:
                    owned.setdefault(name, set()).add(str(stream["SSRC"]))

    def reports_by(tag: str | None) -> Mapping[str, Any] | None:
        # A tag that changed SSRC mid-call has several entries: the one
        # summing up the most reports speaks for the call.
        entries = [ssrc_stats[s] for s in owned.get(tag or "", ()) if s in ssrc_stats]
        return max(
            entries, key=lambda e: int((e.get("average MOS") or {}).get("samples", 0)), default=None
        )

    directions: dict[str, Any] = {}
    for name, tag in tags.items():
        # 10.5 names the receivers of a tag's media in "subscribers"; older
        # releases had "in dialogue with".
        peer = next(
            (s.get("tag") for s in tag.get("subscribers") or [] if s.get("tag")),
            tag.get("in dialogue with"),
        )
        packets = bytes_ = dropped = rtcp = 0
        last_packet = 0
        codec = None
        for media in tag.get("medias") or []:
            codec = codec or media.get("codec")
            for stream in media.get("streams") or []:
                p, b, e = _stream_figures(stream)
                last_packet = max(last_packet, int(stream.get("last packet", 0) or 0))
                if "RTCP" in (stream.get("flags") or []) and "RTP" not in stream.get("flags", []):
                    rtcp += p
                else:
                    packets, bytes_, dropped = packets + p, bytes_ + b, dropped + e
        directions[name] = {
            "from_tag": name,
            "to_tag": peer,
            "from_label": tag.get("label"),
            "created": tag.get("created"),
            "codec": codec,
            "packets": packets,
            "bytes": bytes_,
            "dropped": dropped,
            "rtcp_packets": rtcp,
            "last_packet": last_packet or None,
            **_reported(reports_by(peer)),
        }
    return {
        "created": query_result.get("created"),
        "last_signal": query_result.get("last signal"),
        "directions": directions,
    }


class RtpEngine:
    """One rtpengine serving this provisioning: our child, or adopted from a
    `ponte serve` that died (pbx/child.py)."""

    def __init__(self, config: Config, runtime: Path, log_level: int = 6) -> None:
        self.config = config
        self.runtime = Path(runtime)
        self.log_level = log_level
        self.log_path = self.runtime / "rtpengine.log"
        self.conf_path = self.runtime / "rtpengine.conf"
        self.pid_path = self.runtime / "rtpengine.pid"
        self.edge = EdgeProcess("rtpengine", self.runtime, self.pid_path, str(self.conf_path), log)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The rtpengine we started (None when adopted or stopped)."""
        return self.edge.proc

    @staticmethod
    def binary() -> str:
        """The rtpengine executable (Debian's rtpengine-daemon package)."""
        found = shutil.which("rtpengine") or BINARY
        if not Path(found).exists():
            raise RtpEngineError(
                "rtpengine is not installed (scripts/setup installs rtpengine-daemon)"
            )
        return found

    def client(self, timeout: float = 1.0) -> NgClient:
        """An ng client for this rtpengine's control socket."""
        return NgClient.for_config(self.config, timeout)

    def prepare(self) -> list[str]:
        """Write runtime/rtpengine.conf; return the command that runs it.

        rtpengine 10.5 has no config-check mode: start() proves the config by
        pinging the ng socket.
        """
        self.binary()
        host, _ = split_host_port(self.config.pbx.rtpengine_control)
        if not ipaddress.ip_address(host).is_loopback:  # the schema checks too
            raise RtpEngineError(f"rtpengine's control socket must be on loopback, not {host}")
        # rtpengine starts even when pbx.listen's host is not on this machine,
        # then answers every offer with "Ran out of ports": say so now.
        for address in (self.config.pbx.internal_host, self.config.pbx.host):
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind((address, 0))
                except OSError as exc:
                    raise RtpEngineError(
                        f"cannot relay media on {address} ({exc.strerror}): "
                        "pbx.listen and pbx.internal_listen must be addresses of this machine"
                    ) from None
        self.runtime.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(render_config(self.config, self.runtime, self.log_level))
        return self.command()

    def command(self, log_timestamps: bool = True) -> list[str]:
        """rtpengine's command line for the written config (foreground,
        logging to stderr; without timestamps under journald, which adds them)."""
        argv = [self.binary(), f"--config-file={self.conf_path}"]
        if not log_timestamps:
            argv.append("--no-log-timestamps")
        return argv

    def _ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.conf_path).encode() in cmdline

    def _pid_from_file(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def running_elsewhere(self) -> bool:
        """Whether an rtpengine from our config runs (started by its own unit)."""
        pid = self._pid_from_file()
        return pid is not None and self._ours(pid)

    def reap_stale(self) -> None:
        """Stop an rtpengine from our config that we will not adopt: one
        whose config changed, or our own child left by another object."""
        pid = self._pid_from_file()
        if pid is None or not self._ours(pid):
            return
        if self.proc is not None and pid == self.proc.pid:
            return
        log.warning("stopping an rtpengine (pid %d) left by a previous run", pid)
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def adoptable(self) -> int | None:
        """The pid of an rtpengine a `ponte serve` that died left running from
        this very config (same rendered rtpengine.conf), or None."""
        return self.edge.adoptable(
            self.conf_path, render_config(self.config, self.runtime, self.log_level)
        )

    def start(self, timeout: float = 5.0) -> None:
        """Start rtpengine in the foreground as our child, logging to a file,
        or adopt the one a `ponte serve` that died left running; return once
        its ng socket answers ping."""
        self.edge.own()
        pid = self.adoptable()
        if pid is not None:
            try:
                self.client(timeout=0.5).ping()
            except RtpEngineError:
                log.warning("rtpengine (pid %d) left by a previous run does not answer", pid)
            else:
                self.edge.adopt(pid, self.log_path)
                return
        self.reap_stale()
        argv = self.prepare()
        # Another rtpengine on our control port (Debian's rtpengine-daemon
        # defaults to the same 127.0.0.1:2223) would answer our pings while
        # ours dies on the busy port: refuse up front, and say why.
        host, port = split_host_port(self.config.pbx.rtpengine_control)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise RtpEngineError(
                    f"rtpengine's control port {self.config.pbx.rtpengine_control} is in use "
                    f"({exc.strerror}): is Debian's rtpengine-daemon.service running? "
                    "ponte runs its own rtpengine"
                ) from None
        proc = self.edge.spawn(argv, self.log_path)
        client = NgClient.for_config(self.config, timeout=0.2)
        client.retries = 1
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                code = proc.returncode
                self.edge.stop()
                raise RtpEngineError(f"rtpengine exited ({code}) at start:\n{self._log_tail()}")
            try:
                client.ping()
                break
            except RtpEngineError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RtpEngineError(
                        f"rtpengine did not answer ping within {timeout:g} s:\n{self._log_tail()}"
                    ) from None
        lo, hi = self.config.pbx.media_range
        log.info(
            "rtpengine started (pid %d): media %s (%d-%d), control %s",
            proc.pid,
            interfaces(self.config),
            lo,
            hi,
            self.config.pbx.rtpengine_control,
        )

    def _log_tail(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def alive(self) -> bool:
        """Whether our rtpengine (started or adopted) still runs."""
        return self.edge.alive()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (rtpengine closes its calls), then SIGKILL."""
        self.edge.stop(timeout)


def summary(figures: Mapping[str, Any], remote_called: bool = False) -> dict[str, float | None]:
    """One call's quality as history columns, from `quality()`'s result.

    `loss_in`/`jitter_in` describe what reached us from the remote party (as
    we, the receiver, reported it), `loss_out`/`jitter_out` what reached the
    remote party from us (its own reports); `rtt_ms` the round trip through
    rtpengine and `mos` the lower of the two directions' average MOS.
    The remote party is the caller (the first tag rtpengine saw) unless
    `remote_called` (a call we placed).
    """
    directions = sorted(
        (figures.get("directions") or {}).values(), key=lambda d: d.get("created") or 0
    )
    empty: dict[str, float | None] = dict.fromkeys(
        ("loss_in", "loss_out", "jitter_in", "jitter_out", "rtt_ms", "mos")
    )
    if len(directions) < 2:
        return empty
    remote, local = (directions[1], directions[0]) if remote_called else directions[:2]
    moses = [d["mos_average"] for d in (remote, local) if d.get("mos_average") is not None]
    rtts = [d.get("rtt") or d.get("rtt_leg") for d in (remote, local)]
    rtts = [r for r in rtts if r]
    return {
        "loss_in": remote.get("packet_loss"),
        "loss_out": local.get("packet_loss"),
        "jitter_in": remote.get("jitter"),
        "jitter_out": local.get("jitter"),
        "rtt_ms": round(max(rtts), 1) if rtts else None,
        "mos": min(moses) if moses else None,
    }
