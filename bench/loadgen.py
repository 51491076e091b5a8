#!/usr/bin/env python3
"""A cheap load generator: many SIP legs from one process, RTP from pre-encoded loops.

The capacity bench used to load the server with pjsua2 softphones, which cost
as much machine as the server they measure: on two cores the bench ran out at
300 G.711 legs. This generator does the least a phone must do on the wire:

- **SIP by hand over one UDP socket**: INVITE (retransmitted until answered),
  ACK, BYE, and 200 OK to whatever the server asks in the dialog (BYE,
  OPTIONS, re-INVITE). Through Kamailio it keeps the Record-Route set, so
  ACK and BYE go back through the edge. The PIN goes as RFC 2833 events on
  the RTP stream (no SIP INFO to route).
- **RTP from loops encoded once**: one second of a talker's tone, or of
  silence (phones with VAD off send silence frames), encoded at start-up as
  50 payloads of 20 ms: PCMU with numpy, G.722 and Opus (16 kHz, mono) with
  PyAV (ffmpeg's adpcm_g722 and libopus; `av` comes with aiortc). The loops
  are cut from the middle of a longer encode, so the stateful coders (ADPCM,
  Opus) enter each loop already settled.
- **One 20 ms tick for every leg**: each tick sends every leg's next packet
  with sendto from one shared socket; there is no thread per leg. The load
  legs never read: their shared socket has a tiny SO_RCVBUF, so the
  kernel drops the server's RTP to them at once and receiving costs the
  generator nothing.
- **Probe legs** (PCMU, silent listeners) read what the server sends them,
  the kernel stamping each packet's arrival (SO_TIMESTAMPNS): each tick
  drains their sockets into a file per probe (`--probe-dir`), which the
  bench reads for a window's loss, gaps and the tones heard.

A tick that starts late is counted (`late_ticks`, `max_late_ms`): the
generator's own health, reported with its CPU (utime + stime) at the end as
one JSON line on stdout. SIGTERM (or --max-seconds) hangs every call up
with BYE first.

    .venv/bin/python bench/loadgen.py --target 127.0.0.1:5060 --user conf \\
        --codec pcmu --legs 50000:440,10000:700,10000,10000:p --ports 60100 \\
        --probe-dir /tmp/probes --max-seconds 60
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import select
import signal
import socket
import struct
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import BinaryIO, cast

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.audio import syllable_envelope  # noqa: E402

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python lacks the name
TICK_S = 0.02
FRAMES = 50  # one second of 20 ms payloads: whole-Hz tones loop seamlessly
OPUS_SET_DTX = 4016  # libopus's request (opus_defines.h)
LEVEL = 0.3  # of full scale
DTMF_EVENTS = {d: i for i, d in enumerate("0123456789*#")}
PIN_DELAY_S = 0.5  # after the ACK: the PIN prompt starts, digits barge in
INVITE_RETRY_S = 0.5  # RFC 3261 timer A, doubled each time
INVITE_TRIES = 6
# One probe arrival on file: kernel time, RTP sequence, payload length, payload.
PROBE_RECORD = struct.Struct("<dHH160s")


@dataclass(frozen=True)
class Codec:
    """How one codec goes on the wire and what it is encoded from."""

    pt: int
    rtpmap: str
    ts_step: int  # RTP timestamp per 20 ms
    rate: int  # the PCM the payloads are encoded from
    te_rate: int  # the telephone-event clock offered beside it
    fmtp: str = ""


CODECS = {
    "pcmu": Codec(0, "PCMU/8000", 160, 8000, 8000),
    # G.722's RTP clock is 8000 (RFC 3551) though it codes 16 kHz audio.
    "g722": Codec(9, "G722/8000", 160, 16000, 8000),
    # What pbx/softphone.py --opus-rate 16000 offers: mono, capped at 16 kHz.
    "opus": Codec(
        111,
        "opus/48000/2",
        960,
        16000,
        48000,
        "maxplaybackrate=16000;sprop-maxcapturerate=16000;useinbandfec=0",
    ),
}
TE_PT = 101


# -- payloads ----------------------------------------------------------------


def pcm(hz: int, rate: int, seconds: int, syllables: bool = False) -> np.ndarray:
    """`seconds` of a sine at `hz` (0: digital silence) as 16-bit samples;
    with `syllables` it swells and fades as tests.audio.syllable_envelope says."""
    n = np.arange(rate * seconds)
    if not hz:
        return np.zeros(len(n), dtype=np.int16)
    wave = LEVEL * np.sin(2 * np.pi * hz * n / rate)
    if syllables:
        wave *= syllable_envelope(len(n), rate)
    return np.round(32767 * wave).astype(np.int16)


def ulaw_encode(samples: np.ndarray) -> bytes:
    """16-bit linear to G.711 mu-law (bench/rawleg.ulaw, vectorised)."""
    x = samples.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    _, bits = np.frexp(mag)  # mag's bit length
    exponent = np.maximum(0, bits - 8)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    coded: np.ndarray = ~(sign | (exponent << 4) | mantissa) & 0xFF
    return coded.astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    """G.711 mu-law to linear samples in [-1, 1]."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    mag = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -mag, mag).astype(np.float64) / 32768.0


def av_encode(name: str, samples: np.ndarray, rate: int) -> list[bytes]:
    """Encode mono 16-bit PCM in 20 ms frames with ffmpeg (PyAV); the packets."""
    import av  # only for G.722 and Opus: PCMU needs none of it
    from av.audio.codeccontext import AudioCodecContext

    ctx = cast(AudioCodecContext, av.CodecContext.create(name, "w"))
    ctx.sample_rate = rate
    ctx.layout = "mono"
    ctx.format = "s16"
    if name == "libopus":
        ctx.bit_rate = 32000
        ctx.options = {"frame_duration": "20", "application": "voip"}
    step = rate // 50
    out: list[bytes] = []
    for i in range(0, len(samples), step):
        frame = av.AudioFrame.from_ndarray(
            samples[i : i + step].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return out


def payload_loop(codec: str, hz: int, syllables: bool = False) -> list[bytes]:
    """One second of `hz` (0: silence) as FRAMES payloads of 20 ms (pcm()'s
    `syllables`: a talker that swells and fades).

    G.722 (ADPCM) and Opus carry state from frame to frame: three seconds are
    encoded and the middle one kept, so the coder is settled where each loop
    starts and its state there is what the previous loop's end left (the
    signal repeats every second).
    """
    spec = CODECS[codec]
    if codec == "pcmu":
        data = ulaw_encode(pcm(hz, 8000, 1, syllables))
        return [data[i : i + 160] for i in range(0, len(data), 160)]
    if codec == "g722":
        data = b"".join(av_encode("g722", pcm(hz, spec.rate, 3, syllables), spec.rate))
        return [data[8000 + i : 8000 + i + 160] for i in range(0, 8000, 160)]
    packets = av_encode("libopus", pcm(hz, spec.rate, 3, syllables), spec.rate)
    return packets[FRAMES : 2 * FRAMES]


def dtx_silence_loop() -> list[bytes | None]:
    """Two seconds of an Opus phone's silence with discontinuous transmission:
    None where it sends nothing.

    What a phone does when the far end's SDP asks for `usedtx=1` (browsers
    and baresip honour it): libopus with OPUS_SET_DTX returns a packet of at
    most 2 bytes for a frame not worth sending, and the phone skips it; a
    comfort-noise update goes every 400 ms. libopus through ctypes (PyAV's
    ffmpeg wrapper does not expose DTX), set up as for the other loops;
    the middle two of six seconds, so every loop holds five updates.
    """
    import ctypes

    from opus_cost import OPUS_APPLICATION_VOIP, OPUS_SET_BITRATE, libopus

    lib = libopus()
    rate = CODECS["opus"].rate
    err = ctypes.c_int()
    enc = lib.opus_encoder_create(rate, 1, OPUS_APPLICATION_VOIP, ctypes.byref(err))
    if err.value != 0 or not enc:
        raise RuntimeError(f"opus_encoder_create: {err.value}")
    for request, value in ((OPUS_SET_BITRATE, 32000), (OPUS_SET_DTX, 1)):
        lib.opus_encoder_ctl(ctypes.c_void_p(enc), request, ctypes.c_int(value))
    step = rate // 50
    samples = np.ascontiguousarray(pcm(0, rate, 6))
    out = ctypes.create_string_buffer(1500)
    packets: list[bytes | None] = []
    for i in range(0, len(samples), step):
        n = lib.opus_encode(enc, samples[i : i + step].ctypes.data, step, out, len(out))
        if n < 0:
            raise RuntimeError(f"opus_encode: {n}")
        packets.append(out.raw[:n] if n > 2 else None)
    lib.opus_encoder_destroy(enc)
    return packets[2 * FRAMES : 4 * FRAMES]


# -- SIP ---------------------------------------------------------------------

Addr = tuple[str, int]


def uri_addr(uri: str) -> Addr:
    """Host and port of a SIP URI (5060 when it names none)."""
    m = re.match(r"<?sips?:(?:[^@;>]+@)?([^:;>]+)(?::(\d+))?", uri)
    if not m:
        raise ValueError(f"not a SIP URI: {uri}")
    return m.group(1), int(m.group(2) or 5060)


@dataclass
class Message:
    """A parsed SIP message: first line, headers (lower-case names, every value), body."""

    first: str
    headers: dict[str, list[str]]
    body: str

    @classmethod
    def parse(cls, data: bytes) -> Message:
        """Split one datagram (compact header names are not expected from our peers)."""
        head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
        first, *rest = head.split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in rest:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return cls(first, headers, body)

    def get(self, name: str) -> str:
        """The first value of a header ('' when absent)."""
        return self.headers.get(name, [""])[0]

    @property
    def code(self) -> int:
        """The status code of a response (0 for a request)."""
        return int(self.first.split()[1]) if self.first.startswith("SIP/2.0") else 0


@dataclass
class Leg:
    """One call: its dialog, its RTP stream, and what it sends."""

    index: int
    pin: str
    payloads: list[bytes | None]  # None: a frame the phone does not send (DTX)
    probe: bool = False
    hz: int = 0  # the tone it talks (0: silent)
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    from_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    branch: str = field(default_factory=lambda: "z9hG4bK" + uuid.uuid4().hex)
    to_tag: str = ""
    target: str = ""  # the server's Contact
    route: list[str] = field(default_factory=list)  # the route set, first hop first
    state: str = "new"  # new, inviting, up, failed, ended
    code: int = 0  # the INVITE's final answer
    tries: int = 0
    retry_at: float = 0.0
    pin_at: float = 0.0
    remote_rtp: Addr | None = None
    te_pt: int = TE_PT
    cseq: int = 1
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    ts: int = field(default_factory=lambda: random.getrandbits(32))
    n: int = 0  # audio packets sent
    event_ts: int = 0  # the RTP timestamp of the digit being keyed
    events: list[tuple[bytes, bool, int]] = field(default_factory=list)  # RFC 2833 to send
    sock: socket.socket | None = None  # a probe's own RTP socket
    out: BinaryIO | None = None  # a probe's file


class LoadGen:
    """Many legs on one SIP socket and one tick loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.codec = CODECS[args.codec]
        self.codec_name = args.codec
        self.server = uri_addr(f"sip:{args.target}")
        self.user = args.user
        self.host = args.host
        self.rate = args.rate
        # Through Kamailio as the trunk's provider: a Route to Kamailio itself,
        # as the provider follows the Path of the trunk's REGISTER.
        self.preload = [f"<sip:{args.target};lr>"] if args.edge else []
        self.stop = False
        lo = args.ports
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((self.host, lo))
        self.sip.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sip.setblocking(False)
        self.sip_port = lo
        # The load legs' shared RTP and RTCP sockets: never read, so a tiny
        # buffer makes the kernel drop what the server sends them.
        self.rtp_port = lo + 2
        self.rtp = self._udp(self.rtp_port, rcvbuf=1)
        self.rtcp = self._udp(self.rtp_port + 1, rcvbuf=1)
        self.sockets = [self.sip, self.rtp, self.rtcp]
        loops: dict[int, list[bytes]] = {}
        self.dtx_loop: list[bytes | None] | None = None  # made at the first usedtx=1
        self.legs: list[Leg] = []
        probe_port = lo + 4
        for i, spec in enumerate(args.legs.split(",")):
            pin, _, what = spec.partition(":")
            if what == "p":
                # Probes: PCMU listeners whose arrivals the bench reads.
                leg = Leg(i, pin, [*payload_loop("pcmu", 0)], probe=True)
                leg.sock = self._udp(probe_port, rcvbuf=1 << 20)
                leg.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self.sockets += [leg.sock, self._udp(probe_port + 1, rcvbuf=1)]
                leg.out = (Path(args.probe_dir) / f"probe-{args.name}-{i}.bin").open("wb")
                probe_port += 2
            else:
                hz = int(what or 0)
                if hz not in loops:
                    loops[hz] = payload_loop(args.codec, hz, args.syllables)
                leg = Leg(i, pin, [*loops[hz]], hz=hz)
            self.legs.append(leg)
        self.by_call = {leg.call_id: leg for leg in self.legs}
        self.ticks = self.late_ticks = self.packets = 0
        self.max_late = 0.0

    def _udp(self, port: int, rcvbuf: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((self.host, port))
        s.setblocking(False)
        return s

    # -- messages --------------------------------------------------------
    def _sdp(self, leg: Leg) -> str:
        port = leg.sock.getsockname()[1] if leg.sock else self.rtp_port
        c = CODECS["pcmu"] if leg.probe else self.codec
        fmtp = f"a=fmtp:{c.pt} {c.fmtp}\r\n" if c.fmtp else ""
        return (
            "v=0\r\n"
            f"o=bench {leg.index} 1 IN IP4 {self.host}\r\n"
            "s=-\r\n"
            f"c=IN IP4 {self.host}\r\n"
            "t=0 0\r\n"
            f"m=audio {port} RTP/AVP {c.pt} {TE_PT}\r\n"
            f"a=rtpmap:{c.pt} {c.rtpmap}\r\n{fmtp}"
            f"a=rtpmap:{TE_PT} telephone-event/{c.te_rate}\r\n"
            f"a=fmtp:{TE_PT} 0-16\r\n"
            "a=ptime:20\r\n"
            "a=sendrecv\r\n"
        )

    def _send(self, text: str, to: Addr) -> None:
        with contextlib.suppress(OSError):  # a full send buffer: the retry covers it
            self.sip.sendto(text.encode(), to)

    def _request(self, leg: Leg, method: str, cseq: int, branch: str = "") -> None:
        """A request of the leg's dialog (the INVITE, and the ACK of its
        failure, outside one: to the server's address, on no route set)."""
        dialog = leg.code == 200
        ruri = leg.target if dialog else f"sip:{self.user}@{self.server[0]}:{self.server[1]}"
        to = f"<sip:{self.user}@{self.server[0]}:{self.server[1]}>"
        if leg.to_tag:
            to += f";tag={leg.to_tag}"
        body = self._sdp(leg) if method == "INVITE" else ""
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.sip_port};branch="
            f"{branch or 'z9hG4bK' + uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:bench@{self.host}:{self.sip_port}>;tag={leg.from_tag}",
            f"To: {to}",
            f"Call-ID: {leg.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:bench@{self.host}:{self.sip_port}>",
            *(f"Route: {r}" for r in (leg.route if dialog else self.preload)),
            "User-Agent: ponte-bench-loadgen",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        hop = self.server
        if dialog:  # loose routing: to the first Record-Route hop, else the Contact
            hop = uri_addr(leg.route[0]) if leg.route else uri_addr(leg.target)
        self._send("\r\n".join(lines) + "\r\n\r\n" + body, hop)

    def _invite(self, leg: Leg, now: float) -> None:
        leg.state = "inviting"
        leg.tries += 1
        leg.retry_at = now + INVITE_RETRY_S * 2 ** (leg.tries - 1)
        self._request(leg, "INVITE", 1, leg.branch)

    def _answered(self, leg: Leg, msg: Message, now: float) -> None:
        """A 200 to the INVITE: the dialog, the route set, the server's RTP address."""
        first = not leg.to_tag
        m = re.search(r"tag=([^;>\s]+)", msg.get("to"))
        leg.to_tag = m.group(1) if m else ""
        c = re.search(r"<([^>]+)>", msg.get("contact"))
        leg.target = c.group(1) if c else msg.get("contact")
        # A UAC's route set: the Record-Route entries in reverse order.
        rr = [u for v in msg.headers.get("record-route", []) for u in re.findall(r"<[^>]+>", v)]
        leg.route = list(reversed(rr))
        leg.code = 200
        self._request(leg, "ACK", 1)
        if not first:
            return  # a retransmitted 200: ACKed again, nothing else changes
        mport = re.search(r"m=audio (\d+)", msg.body)
        caddr = re.search(r"c=IN IP4 (\S+)", msg.body)
        if mport and caddr:
            leg.remote_rtp = (caddr.group(1), int(mport.group(1)))
        te = re.search(r"a=rtpmap:(\d+) telephone-event", msg.body)
        if te:
            leg.te_pt = int(te.group(1))
        if self._asks_dtx(msg.body) and not leg.probe and not leg.hz:
            # A silent Opus leg honours the server's usedtx=1, as browsers do.
            if self.dtx_loop is None:
                self.dtx_loop = dtx_silence_loop()
            leg.payloads = self.dtx_loop
        leg.state = "up"
        leg.pin_at = now + PIN_DELAY_S

    def _asks_dtx(self, sdp: str) -> bool:
        """Whether an Opus answer asks this side for discontinuous transmission."""
        if self.codec_name != "opus":
            return False
        pt = re.search(r"a=rtpmap:(\d+) opus/", sdp, re.IGNORECASE)
        if not pt:
            return False
        fmtp = re.search(rf"a=fmtp:{pt.group(1)} ([^\r\n]*)", sdp)
        return bool(fmtp and re.search(r"(^|;)\s*usedtx=1\b", fmtp.group(1)))

    def _respond(self, msg: Message, addr: Addr) -> None:
        """200 OK to a request from the server (BYE, OPTIONS, re-INVITE, INFO...)."""
        leg = self.by_call.get(msg.get("call-id"))
        method = msg.first.split()[0]
        lines = ["SIP/2.0 200 OK"]
        for name in ("via", "from", "to", "call-id", "cseq"):
            lines += [f"{name.title()}: {v}" for v in msg.headers.get(name, [])]
        body = self._sdp(leg) if method == "INVITE" and leg else ""
        if body:
            lines += [f"Contact: <sip:bench@{self.host}:{self.sip_port}>"]
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        self._send("\r\n".join(lines) + "\r\n\r\n" + body, addr)
        if method == "BYE" and leg:
            leg.state = "ended"

    def poll_sip(self, now: float) -> None:
        """Everything waiting on the SIP socket."""
        while True:
            try:
                data, addr = self.sip.recvfrom(65535)
            except BlockingIOError:
                return
            msg = Message.parse(data)
            if not msg.code:
                if not msg.first.startswith("ACK"):
                    self._respond(msg, addr)
                continue
            leg = self.by_call.get(msg.get("call-id"))
            cseq = msg.get("cseq")
            if leg is None or not cseq.endswith("INVITE"):
                if leg is not None and cseq.endswith("BYE") and msg.code >= 200:
                    leg.state = "ended"
                continue
            if msg.code == 200:
                self._answered(leg, msg, now)
            elif msg.code >= 300 and leg.state == "inviting":
                # ACK the failure on the INVITE's own branch (hop by hop).
                m = re.search(r"tag=([^;>\s]+)", msg.get("to"))
                leg.state, leg.code = "failed", msg.code
                to_tag, leg.to_tag = leg.to_tag, m.group(1) if m else ""
                self._request(leg, "ACK", 1, leg.branch)
                leg.to_tag = to_tag
            elif msg.code >= 100 and leg.state == "inviting":
                leg.retry_at = now + 30  # provisional: the server has it; Timer B's role

    # -- media -----------------------------------------------------------
    def _key_pin(self, leg: Leg) -> None:
        """Queue the PIN and # as RFC 2833 events: 5 packets of a growing
        duration (100 ms), then 3 end packets, per digit, as phones send them."""
        step = CODECS["pcmu"].ts_step if leg.probe else self.codec.ts_step
        for digit in leg.pin + "#":
            code = DTMF_EVENTS[digit]
            pkts = [(struct.pack("!BBH", code, 10, step * k), k == 1) for k in range(1, 6)]
            pkts += [(struct.pack("!BBH", code, 0x80 | 10, step * 5), False)] * 3
            leg.events += [(p, first, -1) for p, first in pkts]

    def send_media(self, now: float) -> None:
        """Each leg's next packet: a DTMF event while keying, else the loop's next payload."""
        step = self.codec.ts_step
        for leg in self.legs:
            if leg.state != "up" or leg.remote_rtp is None:
                continue
            sock = leg.sock or self.rtp
            if leg.pin_at and now >= leg.pin_at:
                leg.pin_at = 0.0
                self._key_pin(leg)
            if leg.events:
                payload, first, _ = leg.events.pop(0)
                if first:
                    leg.event_ts = leg.ts
                header = struct.pack(
                    "!BBHII",
                    0x80,
                    (0x80 if first else 0) | leg.te_pt,
                    leg.seq,
                    leg.event_ts,
                    leg.ssrc,
                )
            else:
                pt = 0 if leg.probe else self.codec.pt
                header = struct.pack("!BBHII", 0x80, pt, leg.seq, leg.ts, leg.ssrc)
                frame = leg.payloads[leg.n % len(leg.payloads)]
                leg.n += 1
                if frame is None:  # DTX: time goes on, no packet and no sequence number
                    leg.ts = (leg.ts + step) & 0xFFFFFFFF
                    continue
                payload = frame
            with contextlib.suppress(OSError):
                sock.sendto(header + payload, leg.remote_rtp)
            self.packets += 1
            leg.seq = (leg.seq + 1) & 0xFFFF
            leg.ts = (leg.ts + (160 if leg.probe else step)) & 0xFFFFFFFF

    def read_probes(self) -> None:
        """Drain the probes' sockets to their files, with the kernel's arrival stamps."""
        cmsg = socket.CMSG_SPACE(16)
        for leg in self.legs:
            if leg.sock is None:
                continue
            while True:
                try:
                    data, anc, _flags, _addr = leg.sock.recvmsg(2048, cmsg)
                except BlockingIOError:
                    break
                if len(data) < 12 or data[1] & 0x7F != 0:
                    continue  # RFC 2833 or anything not PCMU
                at = time.time()
                for level, kind, raw in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", raw[:16])
                        at = sec + nsec / 1e9
                payload = data[12:172]
                seq = struct.unpack("!H", data[2:4])[0]
                if leg.out is not None:
                    leg.out.write(PROBE_RECORD.pack(at, seq, len(payload), payload))
            if leg.out is not None:
                leg.out.flush()

    # -- the loop --------------------------------------------------------
    def run(self, max_seconds: float) -> None:
        """Place the calls at `rate`, keep every leg's RTP going, until stopped."""
        start = time.monotonic()
        end = start + max_seconds
        placed = 0
        nxt = start
        while not self.stop and time.monotonic() < end:
            now = time.monotonic()
            self.poll_sip(now)
            due = min(len(self.legs), int((now - start) * self.rate) + 1)
            while placed < due:
                self._invite(self.legs[placed], now)
                placed += 1
            for leg in self.legs[:placed]:
                if leg.state == "inviting" and now >= leg.retry_at:
                    if leg.tries >= INVITE_TRIES:
                        leg.state, leg.code = "failed", 408
                    else:
                        self._invite(leg, now)
            self.send_media(now)
            self.read_probes()
            self.ticks += 1
            nxt += TICK_S
            delay = nxt - time.monotonic()
            if delay < 0:
                self.late_ticks += 1
                self.max_late = max(self.max_late, -delay)
                if delay < -0.2:
                    nxt = time.monotonic()  # far behind: start the schedule again
            else:
                select.select([], [], [], delay)

    def hang_up(self, timeout: float = 3.0) -> None:
        """BYE every call that is up (once more after a second), wait for the answers."""
        up = [leg for leg in self.legs if leg.state == "up"]
        for leg in up:
            leg.cseq = 2
            self._request(leg, "BYE", 2)
        deadline = time.monotonic() + timeout
        resent = False
        while time.monotonic() < deadline and any(leg.state == "up" for leg in up):
            now = time.monotonic()
            self.poll_sip(now)
            if not resent and now > deadline - timeout + 1:
                resent = True
                for leg in up:
                    if leg.state == "up":
                        self._request(leg, "BYE", 2)
            time.sleep(0.02)

    def report(self) -> dict[str, object]:
        """What happened, for the bench: calls, packets, the generator's own health."""
        t = os.times()
        codes: dict[str, int] = {}
        for leg in self.legs:
            if leg.state == "failed":
                codes[str(leg.code)] = codes.get(str(leg.code), 0) + 1
        return {
            "legs": len(self.legs),
            "answered": sum(1 for leg in self.legs if leg.code == 200),
            "failed": codes,
            "not_hung_up": sum(1 for leg in self.legs if leg.state == "up"),
            "packets": self.packets,
            "ticks": self.ticks,
            "late_ticks": self.late_ticks,
            "max_late_ms": round(1000 * self.max_late, 1),
            "cpu_s": round(t.user + t.system, 2),
        }


def main() -> int:
    """Run the legs until SIGTERM or --max-seconds; the report as JSON on stdout."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--target", required=True, help="HOST:PORT the INVITEs go to")
    ap.add_argument("--user", default="conf", help="the called user (access number or DID)")
    ap.add_argument("--codec", default="pcmu", choices=sorted(CODECS))
    ap.add_argument(
        "--legs",
        required=True,
        help="comma-separated PIN[:HZ|:p]: a talker sending HZ, a silent leg, or a probe (p)",
    )
    ap.add_argument(
        "--edge",
        action="store_true",
        help="--target is Kamailio: the INVITE carries a Route to it (the provider's way in)",
    )
    ap.add_argument("--rate", type=float, default=100.0, help="new calls per second")
    ap.add_argument("--ports", type=int, required=True, help="first of 4 + 2 per probe UDP ports")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--probe-dir", default=".", help="where the probes' arrival files go")
    ap.add_argument("--name", default=str(os.getpid()), help="names this process's probe files")
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument(
        "--syllables",
        action="store_true",
        help="talkers swell and fade 4 times a second, as speech does: with DTX, "
        "libopus takes a steady tone for background noise after about 3 s",
    )
    args = ap.parse_args()
    gen = LoadGen(args)

    def stop(_sig: int, _frame: FrameType | None) -> None:
        gen.stop = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        gen.run(args.max_seconds)
    finally:
        gen.hang_up()
        print(json.dumps(gen.report()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
