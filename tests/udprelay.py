"""A bounded UDP relay that drops packets, run as a process of its own:

    python tests/udprelay.py --to IP --ports LO-HI --loss 3 --seed 1 --seconds 60

This kernel has no ``sch_netem``, and nftables' ``numgen random`` (what
tests/netns.py's `Topology.loss` uses) cannot be seeded: two runs of a call
lose different packets, so a quality figure measured through it moves from
run to run for no fault of the product. This relay loses the same packets
each time: every flow has its own `random.Random`, seeded from --seed, the
direction, the port and its senders' order, so its drops depend only on the order of its own
packets.

It listens on --listen (127.0.0.1) at every port of --ports and sends what
arrives at port P on to --to:P from an upstream socket of its own (one per
sender and port); what comes back on that socket goes back to the sender
from the port it first wrote to. Each direction loses --loss % of its
packets (--direction: both, up or down). With --from-voice a flow's loss
starts at its first loud packet instead (see `is_voice`): a call's set-up
(wait for media, PIN digits) sends a number of packets that differs by path
and by run, so with the drops counted from the flow's start the same seed
loses different syllables through the bridge and on a direct call (and
rtpengine's port, in the flows' seed, differs by run); counted from the
talker's first loud frame, with the seed from the order the flows turned
loud in, both lose the same ones. With --drop-event-starts it loses,
upstream only, the first packet of every RFC 4733 event (a DTMF digit's
start: see `is_event_start`), and nothing else unless --loss says so. It
exits after --seconds whatever
happens (a test that forgets it cannot leave it running), or on SIGTERM,
and prints its counts as one JSON line on stdout.

Put between a phone in a network namespace and the appliance with
`interpose()`: an nftables ``redirect`` in the phone's namespace sends the
phone's UDP for the appliance's media ports to the relay on the namespace's
loopback (the port is kept, so the relay knows where it was going), and
conntrack puts the appliance's address back on the replies. Standard
library only: it starts in a few milliseconds.
"""

from __future__ import annotations

import argparse
import json
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the script itself runs on the standard library alone
    from tests.netns import Host

# The relay's own upstream packets carry this firewall mark, so the redirect
# rule leaves them alone (else they would loop back into the relay).
MARK = 0x5EED
MAX_DATAGRAM = 65535
# is_voice(): a payload with at least this many distinct byte values. G.711
# digital silence is one value (0xFF), G.722's a dozen or so; a frame of
# speech or noise at -30 dBFS or more has well over 40 in 160 bytes. An Opus
# frame of silence is a few bytes, and a loud one at 24 kbit/s some 60 bytes
# of range-coded data, nearly all distinct.
VOICE_BYTES = 40


def is_voice(data: bytes) -> bool:
    """Whether a datagram is RTP audio (version 2; a static payload type
    below 35, or a dynamic one, 96-127, as Opus has: not RTCP, whose second
    byte reads 72-76 here, and no telephone-event, 4 bytes) carrying a loud
    frame."""
    pt = data[1] & 0x7F if len(data) > 1 else 0
    if len(data) < 12 + VOICE_BYTES or data[0] >> 6 != 2 or 35 <= pt < 96:
        return False
    return len(set(data[12:])) >= VOICE_BYTES


def is_event_start(data: bytes) -> bool:
    """Whether a datagram is the first packet of an RFC 4733 event: RTP
    version 2 with the marker bit, a dynamic payload type, no CSRC or
    extension, and a 4-byte payload (event 0-16, end bit clear)."""
    return (
        len(data) == 16
        and data[0] == 0x80
        and data[1] & 0x80 != 0
        and 96 <= data[1] & 0x7F <= 127
        and data[12] <= 16
        and data[13] & 0x80 == 0
    )


@dataclass
class Flow:
    """One sender talking to one port: its upstream socket and its two RNGs."""

    sender: tuple[str, int]
    listener: socket.socket
    upstream: socket.socket
    rng_up: random.Random
    rng_down: random.Random
    # --from-voice: whether this flow has carried a loud frame yet (its loss
    # starts there).
    voice: bool = False


@dataclass
class Counts:
    """Packets seen and dropped each way."""

    up: int = 0
    up_dropped: int = 0
    down: int = 0
    down_dropped: int = 0
    # --drop-event-starts: the DTMF events whose first packet was dropped.
    events_dropped: int = 0
    flows: int = 0
    # --from-voice: when (monotonic) each flow's loss started.
    voice_at: list[float] = field(default_factory=list)
    dropped_seq: dict[str, list[int]] = field(default_factory=dict)


class Relay:
    """The relay's sockets and its loop (see the module docstring)."""

    def __init__(
        self,
        listen: str,
        to: str,
        ports: range,
        loss: float,
        seed: int,
        direction: str = "both",
        mark: int = MARK,
        clean: float | None = 0.0,
        from_voice: bool = False,
        drop_event_starts: bool = False,
    ) -> None:
        if not 0 <= loss <= 100:
            raise ValueError("loss must be within 0..100 %")
        if direction not in ("both", "up", "down"):
            raise ValueError("direction must be both, up or down")
        self.to = to
        self.loss = loss / 100.0
        self.seed = seed
        self.direction = direction
        self.mark = mark
        self.from_voice = from_voice
        self.drop_event_starts = drop_event_starts
        # No loss before this (monotonic) time: a test measures what a
        # listener heard before the loss against what it hears during it.
        # None: not before SIGUSR1 (start_loss()).
        self.loss_at = time.monotonic() + clean if clean is not None else float("inf")
        self.sel = selectors.DefaultSelector()
        self.flows: dict[tuple[tuple[str, int], int], Flow] = {}
        self.counts = Counts()
        self.stop = False
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((listen, port))
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, ("listen", port))

    def _flow(self, sender: tuple[str, int], port: int, listener: socket.socket) -> Flow:
        key = (sender, port)
        flow = self.flows.get(key)
        if flow is None:
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            if self.mark:
                # Needs CAP_NET_ADMIN (tests run as root); without it the
                # redirect rule must leave the relay's packets alone by port.
                up.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
            up.connect((self.to, port))
            up.setblocking(False)
            # Not the sender's port (an ephemeral one differs every run):
            # the port relayed to and how many senders came to it before.
            nth = sum(1 for _, p in self.flows if p == port)
            name = f"{port}/{nth}"
            flow = Flow(
                sender,
                listener,
                up,
                random.Random(f"{self.seed}/up/{name}"),
                random.Random(f"{self.seed}/down/{name}"),
            )
            self.flows[key] = flow
            self.sel.register(up, selectors.EVENT_READ, ("up", key))
            self.counts.flows += 1
        return flow

    def _drops(self, rng: random.Random, way: str, flow: Flow | None = None) -> bool:
        """Whether this packet is lost. The RNG is drawn for every packet
        from the loss's start on, so the pattern does not depend on how many
        packets the clean start relayed."""
        if time.monotonic() < self.loss_at:
            return False
        if self.from_voice and flow is not None and not flow.voice:
            return False
        lost = rng.random() < self.loss
        return lost and self.direction in ("both", way)

    def run(self, seconds: float) -> Counts:
        """Relay until `seconds` have passed or stop is set."""
        end = time.monotonic() + seconds
        while not self.stop:
            left = end - time.monotonic()
            if left <= 0:
                break
            for key, _ in self.sel.select(min(left, 0.5)):
                kind, ref = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    if kind == "listen":
                        self._from_sender(sock, ref)
                    else:
                        self._from_upstream(self.flows[ref])
                except (BlockingIOError, ConnectionRefusedError):
                    pass  # nothing left, or the far port is closed (ICMP): lost
        return self.counts

    def _from_sender(self, listener: socket.socket, port: int) -> None:
        data, sender = listener.recvfrom(MAX_DATAGRAM)
        flow = self._flow(sender, port, listener)
        self.counts.up += 1
        if self.from_voice and not flow.voice:
            flow.voice = is_voice(data)
            if flow.voice:
                # Seeded by the order the flows turned loud in, not by the
                # port: rtpengine gives each call another one.
                nth = len(self.counts.voice_at)
                flow.rng_up = random.Random(f"{self.seed}/up/voice/{nth}")
                flow.rng_down = random.Random(f"{self.seed}/down/voice/{nth}")
                self.counts.voice_at.append(time.monotonic())
        if self.drop_event_starts and is_event_start(data):
            self.counts.events_dropped += 1
            self.counts.up_dropped += 1
            return
        if self._drops(flow.rng_up, "up", flow):
            self.counts.up_dropped += 1
            return
        flow.upstream.send(data)

    def _from_upstream(self, flow: Flow) -> None:
        data = flow.upstream.recv(MAX_DATAGRAM)
        self.counts.down += 1
        if self._drops(flow.rng_down, "down", flow):
            self.counts.down_dropped += 1
            return
        flow.listener.sendto(data, flow.sender)


def parse_ports(text: str) -> range:
    """ "LO-HI" (inclusive) or one port."""
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def main(argv: list[str] | None = None) -> int:
    """Run the relay; print its counts as JSON when it ends."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1", help="address to listen on")
    p.add_argument("--to", required=True, help="address to relay to (same port)")
    p.add_argument("--ports", required=True, help="ports LO-HI to listen on and relay to")
    p.add_argument("--loss", type=float, default=0.0, help="percent of packets dropped")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--direction", default="both", choices=["both", "up", "down"])
    p.add_argument("--seconds", type=float, required=True, help="exit after this long")
    p.add_argument("--mark", type=lambda s: int(s, 0), default=MARK, help="0: no mark")
    p.add_argument(
        "--clean",
        type=float,
        default=0.0,
        help="seconds without loss at first (negative: until SIGUSR1)",
    )
    p.add_argument(
        "--from-voice",
        action="store_true",
        help="each flow's loss starts at its first loud RTP packet (see is_voice)",
    )
    p.add_argument(
        "--drop-event-starts",
        action="store_true",
        help="drop the first packet of every RFC 4733 event sent upstream",
    )
    args = p.parse_args(argv)
    relay = Relay(
        args.listen,
        args.to,
        parse_ports(args.ports),
        args.loss,
        args.seed,
        args.direction,
        args.mark,
        args.clean if args.clean >= 0 else None,
        args.from_voice,
        args.drop_event_starts,
    )
    signal.signal(signal.SIGTERM, lambda *_: setattr(relay, "stop", True))
    signal.signal(signal.SIGUSR1, lambda *_: setattr(relay, "loss_at", time.monotonic()))
    # The loss's start on the host's monotonic clock (the same in every
    # namespace): the caller lines it up with its phones' reports.
    print(f"ready {relay.loss_at:.6f}", file=sys.stderr, flush=True)
    c = relay.run(args.seconds)
    out: dict[str, Any] = {
        k: getattr(c, k)
        for k in ("up", "up_dropped", "down", "down_dropped", "events_dropped", "flows", "voice_at")
    }
    out["loss_at"] = relay.loss_at
    print(json.dumps(out), flush=True)
    return 0


def command(
    to: str,
    ports: str,
    loss: float,
    seed: int,
    seconds: float,
    direction: str = "both",
    clean: float = 0.0,
    from_voice: bool = False,
    drop_event_starts: bool = False,
) -> list[str]:
    """The relay's command line (see main())."""
    return [
        sys.executable,
        __file__,
        *("--to", to, "--ports", ports, "--loss", str(loss), "--seed", str(seed)),
        *("--direction", direction, "--seconds", str(seconds), "--clean", str(clean)),
        *(["--from-voice"] if from_voice else []),
        *(["--drop-event-starts"] if drop_event_starts else []),
    ]


def interpose(
    host: Host,
    to: str,
    ports: str,
    loss: float,
    seconds: float,
    seed: int = 1,
    direction: str = "both",
    clean: float | None = 0.0,
    from_voice: bool = False,
    drop_event_starts: bool = False,
) -> tuple[subprocess.Popen, float]:
    """Put a relay between the phones on `host` (a namespace) and `to`'s
    UDP `ports` ("LO-HI"): start it there, then redirect to it.

    Returns the relay's process and when its loss starts (monotonic: after
    `clean` seconds; with None, inf: from start_loss() on). The relay is
    stopped with the host (Topology.close()) or after `seconds`; counts()
    reads what it did.
    """
    lo, hi = parse_ports(ports)[0], parse_ports(ports)[-1]
    argv = command(
        to,
        f"{lo}-{hi}",
        loss,
        seed,
        seconds,
        direction,
        -1 if clean is None else clean,
        from_voice,
        drop_event_starts,
    )
    proc = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until its sockets are bound: the first redirected packet must find them.
    assert proc.stderr is not None
    ready = proc.stderr.readline().split()
    if not ready or ready[0] != "ready":
        proc.kill()
        raise RuntimeError(f"udprelay did not start: {proc.stderr.read()}")
    rules = f"""table ip ponte_relay
delete table ip ponte_relay
table ip ponte_relay {{
  chain raw_in {{
    type filter hook prerouting priority raw;
    # What the far end sends straight to a phone (before the phone's first
    # packet) must not open a conntrack entry: the phone's first packet
    # would then be its reply, and a reply is never redirected.
    ip saddr {to} udp sport {lo}-{hi} notrack
  }}
  chain out {{
    type nat hook output priority -100;
    meta mark != {MARK:#x} ip daddr {to} udp dport {lo}-{hi} redirect
  }}
}}
"""
    r = host.run(["nft", "-f", "-"], input=rules)
    if r.returncode != 0:
        proc.kill()
        raise RuntimeError(f"nft in {host.name}: {r.stderr.strip()}")
    return proc, float(ready[1])


def start_loss(proc: subprocess.Popen) -> float:
    """Start the loss of a relay started with clean=None; returns when
    (monotonic; the relay's clock is the same, give or take its wake-up)."""
    proc.send_signal(signal.SIGUSR1)
    return time.monotonic()


def counts(proc: subprocess.Popen, timeout: float = 10.0) -> dict[str, Any]:
    """Stop the relay (SIGTERM) and return its counts."""
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    raise SystemExit(main())
