"""A minimal SIP UA on raw UDP sockets: the benches' media-health probe.

It sends the INVITE itself (SDP pointing at an RTP port it owns), ACKs the
200, keys PINs as SIP INFO (application/dtmf-relay) or RFC 2833 events, sends
RTP every 20 ms (silence or a 440 Hz tone, PCMU) and lets the kernel stamp the
arrival of every RTP packet the server sends it (SO_TIMESTAMPNS): a busy bench
process cannot fake a gap, since the stamp is taken when the packet arrives,
not when Python gets round to reading it.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from tests import ports

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python lacks the name
PCMU_SILENCE = b"\xff" * 160  # 20 ms of silence at 8 kHz
DTMF_EVENTS = {d: i for i, d in enumerate("0123456789*#")}


def ulaw(sample: int) -> int:
    """One 16-bit linear sample to G.711 mu-law (the classic bias-and-segment code)."""
    sign = 0x80 if sample < 0 else 0
    mag = min(abs(sample), 32635) + 0x84
    exponent = max(0, mag.bit_length() - 8)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def pcmu_tone(hz: float = 440.0, level: float = 0.3) -> list[bytes]:
    """One second of a sine as 50 PCMU payloads of 20 ms (loops seamlessly at
    whole-Hz frequencies: a whole number of cycles in one second)."""
    samples = [round(level * 32767 * math.sin(2 * math.pi * hz * n / 8000)) for n in range(8000)]
    data = bytes(ulaw(s) for s in samples)
    return [data[i : i + 160] for i in range(0, 8000, 160)]


@dataclass
class Arrival:
    """One RTP packet from the server: kernel arrival time and sequence number."""

    at: float  # CLOCK_REALTIME seconds, stamped by the kernel on receipt
    seq: int


@dataclass
class RawLeg:
    """A SIP call made by hand: INVITE/ACK, INFO or RFC 2833 DTMF, BYE; RTP in and out."""

    server: tuple[str, int]
    host: str = "127.0.0.1"
    tone: bool = False  # send a 440 Hz tone (True) or silence, always every 20 ms
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    from_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    to_tag: str = ""
    target: str = ""  # the server's Contact: where in-dialog requests go
    cseq: int = 1
    arrivals: list[Arrival] = field(default_factory=list)
    # (digit, monotonic time of its first event packet, of its first end packet)
    dtmf_sent: list[tuple[str, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((self.host, ports.allocate(1)))
        lo = int(ports.rtp_range(2).partition("-")[0])
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((self.host, lo))
        self.rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.rtp.settimeout(0.2)
        # Bound so the server's RTCP lands somewhere instead of drawing ICMP errors.
        self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtcp.bind((self.host, lo + 1))
        self.rtp_port = lo
        self.sip_port = self.sip.getsockname()[1]
        self.responses: list[tuple[int, str, dict[str, str]]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=fn, daemon=True, name=fn.__name__)
            for fn in (self._sip_reader, self._rtp_reader, self._rtp_sender)
        ]
        self.remote_rtp: tuple[str, int] | None = None
        self.event_pt = 101  # telephone-event payload type (the server's answer may change it)
        self._probes = itertools.count(1000)  # CSeqs of the OPTIONS probes
        self._payloads = pcmu_tone() if self.tone else [PCMU_SILENCE]
        self._dtmf: deque[str] = deque()  # digits waiting for the RTP sender

    # -- SIP messages ---------------------------------------------------
    def _uri(self, user: str) -> str:
        return f"sip:{user}@{self.server[0]}:{self.server[1]}"

    def _request(self, method: str, uri: str, body: str = "", ctype: str = "") -> None:
        to = f"<{self._uri('conf')}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.sip_port};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:bench@{self.host}:{self.sip_port}>;tag={self.from_tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq if method != 'ACK' else 1} {method}",
            f"Contact: <sip:bench@{self.host}:{self.sip_port}>",
            "User-Agent: ponte-bench-raw",
        ]
        if ctype:
            lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.sip.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), self.server)

    def _sdp(self) -> str:
        return (
            "v=0\r\n"
            f"o=bench 1 1 IN IP4 {self.host}\r\n"
            "s=-\r\n"
            f"c=IN IP4 {self.host}\r\n"
            "t=0 0\r\n"
            f"m=audio {self.rtp_port} RTP/AVP 0 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-16\r\n"
            "a=ptime:20\r\n"
            "a=sendrecv\r\n"
        )

    def _final(self, method: str, cseq: int, timeout: float) -> tuple[int, dict[str, str]]:
        """Wait for the final answer to our request `cseq`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while time.monotonic() < deadline:
                for code, cs, headers in self.responses:
                    if cs == f"{cseq} {method}" and code >= 200:
                        return code, headers
                self._cond.wait(0.05)
        raise TimeoutError(f"no final answer to {method} (CSeq {cseq})")

    def call(self, user: str = "conf", timeout: float = 10) -> None:
        """INVITE, then ACK the 200: the server answers and its RTP starts."""
        for t in self._threads:
            t.start()
        self._request("INVITE", self._uri(user), self._sdp(), "application/sdp")
        code, headers = self._final("INVITE", 1, timeout)
        if code != 200:
            raise RuntimeError(f"INVITE answered {code}")
        self.to_tag = re.search(r"tag=([^;>\s]+)", headers["to"]).group(1)  # type: ignore[union-attr]
        self.target = re.search(r"<([^>]+)>", headers["contact"]).group(1)  # type: ignore[union-attr]
        m = re.search(r"m=audio (\d+)", headers["body"])
        c = re.search(r"c=IN IP4 (\S+)", headers["body"])
        if m and c:
            self.remote_rtp = (c.group(1), int(m.group(1)))
        te = re.search(r"a=rtpmap:(\d+) telephone-event", headers["body"])
        if te:
            self.event_pt = int(te.group(1))
        self._request("ACK", self.target)

    def info_digits(self, digits: str, gap: float = 0.15) -> None:
        """Key digits as SIP INFO (application/dtmf-relay), one request each."""
        for d in digits:
            self.cseq += 1
            self._request(
                "INFO", self.target, f"Signal={d}\r\nDuration=160\r\n", "application/dtmf-relay"
            )
            code, _ = self._final("INFO", self.cseq, 5)
            if code != 200:
                raise RuntimeError(f"INFO {d} answered {code}")
            time.sleep(gap)

    def rfc2833(self, digits: str) -> None:
        """Queue digits as RFC 2833 events on the RTP stream (100 ms each, then
        three end-of-event packets, as phones send them); `dtmf_sent` notes when."""
        self._dtmf.extend(digits)

    def options(self, timeout: float = 10) -> float:
        """An out-of-dialog OPTIONS; seconds until the server answers it.

        pjsua answers OPTIONS on the thread that polls it, the server's loop
        thread: the delay shows how long that thread was busy elsewhere.
        """
        cseq = next(self._probes)
        lines = [
            f"OPTIONS {self._uri('conf')} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.sip_port};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:bench@{self.host}:{self.sip_port}>;tag={uuid.uuid4().hex[:10]}",
            f"To: <{self._uri('conf')}>",
            f"Call-ID: {uuid.uuid4().hex}",
            f"CSeq: {cseq} OPTIONS",
            "Content-Length: 0",
        ]
        t0 = time.monotonic()
        self.sip.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self.server)
        self._final("OPTIONS", cseq, timeout)
        return time.monotonic() - t0

    def bye(self) -> None:
        """End the call (and the RTP threads)."""
        if self.target:
            self.cseq += 1
            self._request("BYE", self.target)
            with contextlib.suppress(TimeoutError):
                self._final("BYE", self.cseq, 3)
        self.close()

    def close(self) -> None:
        """Stop the threads and close the sockets (no BYE)."""
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=1)
        for s in (self.sip, self.rtp, self.rtcp):
            s.close()

    # -- threads --------------------------------------------------------
    def _sip_reader(self) -> None:
        self.sip.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, addr = self.sip.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
            first, *rest = head.split("\r\n")
            headers = {"body": body}
            for line in rest:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if first.startswith("SIP/2.0"):
                code = int(first.split()[1])
                if code == 200 and headers.get("cseq", "").endswith("INVITE") and self.to_tag:
                    self._request("ACK", self.target)  # a retransmitted 200: ACK again
                with self._cond:
                    self.responses.append((code, headers.get("cseq", ""), headers))
                    self._cond.notify_all()
            elif not first.startswith("ACK"):
                # BYE, OPTIONS, a re-INVITE...: 200 OK, echoing the dialog headers.
                reply = ["SIP/2.0 200 OK"] + [
                    line
                    for line in rest
                    if line.split(":", 1)[0].strip().lower()
                    in ("via", "from", "to", "call-id", "cseq")
                ]
                sdp = self._sdp() if first.startswith("INVITE") else ""
                if sdp:
                    reply.append("Content-Type: application/sdp")
                reply.append(f"Content-Length: {len(sdp)}")
                with contextlib.suppress(OSError):
                    self.sip.sendto(("\r\n".join(reply) + "\r\n\r\n" + sdp).encode(), addr)

    def _rtp_reader(self) -> None:
        cmsg = socket.CMSG_SPACE(16)
        while not self._stop.is_set():
            try:
                data, anc, _flags, _addr = self.rtp.recvmsg(2048, cmsg)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.time()
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", raw[:16])
                    at = sec + nsec / 1e9
            if len(data) >= 12 and data[1] & 0x7F == 0:  # PCMU audio, not RTCP or events
                self.arrivals.append(Arrival(at, struct.unpack("!H", data[2:4])[0]))

    def _rtp_sender(self) -> None:
        """A packet every 20 ms, as a phone with VAD off sends: symmetric RTP.

        DTMF events take the place of audio packets in the same stream (same
        SSRC, sequence numbers and clock), as a phone sends them.
        """
        ssrc, seq, ts = random.getrandbits(32), random.getrandbits(16), random.getrandbits(32)
        nxt = time.monotonic()
        n = 0
        event: list[bytes] = []  # RFC 2833 payloads still to send for the current digit
        event_ts = 0
        marks: list[float] = []
        digit = ""
        while not self._stop.is_set():
            if self.remote_rtp is not None:
                if not event and self._dtmf:
                    digit = self._dtmf.popleft()
                    code = DTMF_EVENTS[digit]
                    # 5 packets of a growing duration (100 ms), then 3 end packets.
                    event = [struct.pack("!BBH", code, 10, 160 * k) for k in range(1, 6)]
                    event += [struct.pack("!BBH", code, 0x80 | 10, 160 * 5)] * 3
                    event_ts, marks = ts, []
                if event:
                    payload = event.pop(0)
                    first = len(event) == 7
                    header = struct.pack(
                        "!BBHII", 0x80, (0x80 if first else 0) | self.event_pt, seq, event_ts, ssrc
                    )
                    with contextlib.suppress(OSError):
                        self.rtp.sendto(header + payload, self.remote_rtp)
                    if first or len(event) == 2:  # the event's first packet, its first end
                        marks.append(time.monotonic())
                    if not event:
                        self.dtmf_sent.append((digit, marks[0], marks[-1]))
                else:
                    header = struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc)
                    payload = self._payloads[n % len(self._payloads)]
                    with contextlib.suppress(OSError):
                        self.rtp.sendto(header + payload, self.remote_rtp)
                    n += 1
                seq, ts = (seq + 1) & 0xFFFF, (ts + 160) & 0xFFFFFFFF
            nxt += 0.02
            time.sleep(max(0.0, nxt - time.monotonic()))


# -- what the server's stream looked like ------------------------------------------


def gaps(arrivals: list[Arrival], start: float, end: float) -> list[float]:
    """Inter-arrival times (ms) of packets that arrived within [start, end]."""
    times = [a.at for a in arrivals if start <= a.at <= end]
    return [(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)]


def lost(arrivals: list[Arrival], start: float, end: float) -> int:
    """Packets missing by sequence number within [start, end]."""
    seqs = [a.seq for a in arrivals if start <= a.at <= end]
    return sum((b - a) % 65536 - 1 for a, b in zip(seqs, seqs[1:], strict=False))


def health(arrivals: list[Arrival], start: float, end: float) -> dict[str, float]:
    """Media health of the server's stream within [start, end].

    Expected packets are counted over the span from the first to the last
    arrival in the window (one per 20 ms), so a window edge falling between
    two packets is never mistaken for loss; packets the server never sent
    (its clock skipped) and packets lost on the way both count as lost.
    """
    times = [a.at for a in arrivals if start <= a.at <= end]
    expected = round((times[-1] - times[0]) / 0.02) + 1 if times else round((end - start) / 0.02)
    g = [(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)]
    return {
        "received": len(times),
        "expected": expected,
        "loss_pct": max(0.0, 100 * (1 - len(times) / expected)) if expected else 0.0,
        "seq_lost": lost(arrivals, start, end),
        "gaps_over_40ms": sum(1 for x in g if x > 40),
        "max_gap_ms": max(g, default=float("nan")),
    }
