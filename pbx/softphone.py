"""A scriptable test softphone built on the same pjsua2 adapter.

It dials, sends DTMF (RFC 2833, SIP INFO or both), plays a sine tone, records
everything it hears, and prints a JSON report of what happened. Tests run it
in a subprocess, so each phone is a real SIP peer with its own endpoint.

    python -m pbx.softphone --target sip:conf@127.0.0.1:5080 \\
        --script "wait_media 5; dtmf 1111#; tone 440; wait 3; hangup" \\
        --record /tmp/a.wav

Script steps (separated by `;`):
    wait S                 sleep S seconds
    wait_media T           wait up to T s for audio to be up
    dtmf DIGITS [METHOD]   send digits one by one (rfc2833 | info | both)
    tone HZ [DBFS]         send a continuous sine of HZ Hz (0: silence), at DBFS
                           (its peak, dB of full scale) or the signals' usual level
    play WAV [loop]        send a recording (mono 16-bit WAV at any rate: the
                           phone's bridge resamples it), once or looped; it
                           replaces a tone, and `tone 0` stops it
    mark NAME              note the time under NAME in the report
    refer URI              send REFER (Refer-To: URI, as given) in the call
    hold [inactive]        put the call on hold (re-INVITE, a=sendonly: our tone still goes
                           out; or a=inactive)
    resume                 take it off hold (re-INVITE, a=sendrecv)
    hangup                 send BYE
    wait_end T             wait up to T s for the far end to hang up

With --calls N the same script runs on N calls, started --rate per second;
`{pin}` in the script takes the next of --pins for each call, `{tone}` the next
of --tones. --display
puts a display name in our From (any text: it is quoted for us), and
--no-screen leaves out pbx/_pjx.c's SIP screen, so a test can see what
pbx/sipua.py refuses on its own. --clock-rate sets the phone's own bridge
rate (its tones and recordings; 8 kHz by default), e.g. 16000 with
--codecs G722/16000 for a wideband phone. --tls registers and calls over
SIP/TLS (the target then names `;transport=tls`), --srtp mandatory offers
SRTP (RTP/SAVP with SDES keys). --jitter-ms caps its jitter buffer
(200 ms by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.tones import AMPLITUDE, write_segments
from pbx.opus import OpusSettings
from pbx.sipua import IncomingCall, SipUA
from pcm import CLOCK_RATE, CLOCK_RATES

DIGIT_GAP = 0.18  # seconds between digits of one `dtmf` step (a human is slower)


def write_tone(
    path: Path,
    hz: float,
    seconds: float = 10.0,
    rate: int = CLOCK_RATE,
    dbfs: float | None = None,
) -> None:
    """A loopable sine WAV (a whole number of cycles in the file), with its peak
    at `dbfs` (dB of full scale) or at the generated signals' level."""
    amplitude = AMPLITUDE if dbfs is None else 10 ** (dbfs / 20)
    write_segments(path, [(hz, int(seconds * 1000))], rate, amplitude)


@dataclass
class PhoneCall:
    """One scripted call and what happened on it."""

    index: int
    steps: list[list[str]]
    record: Path | None
    leg: int | None = None
    step: int = 0
    resume_at: float = 0.0
    waiting: str | None = None  # "media" | "end" while blocked on an event
    deadline: float = 0.0
    pending_digits: list[tuple[str, str]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    answer_at: float | None = None  # --answer-after: ringing until then


class Softphone:
    """Runs scripted calls on one SipUA and collects their reports."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        lo, _, hi = args.rtp.partition("-")
        self.ua = SipUA(
            self,
            args.bind,
            args.port,
            (int(lo), int(hi)),
            clock_rate=args.clock_rate,
            user=args.user,
            user_agent="ponte-softphone",
            max_calls=max(4, args.calls + 2),
            codecs=args.codecs.split(","),
            pj_log_level=args.pj_log_level,
            opus_rate=args.opus_rate,
            # Its SDP's maxaveragebitrate (default 24000, as the app server's):
            # the far end's Opus encoder for this leg is capped there.
            opus=OpusSettings(bitrate=args.opus_bitrate) if args.opus_bitrate else None,
            screen=not args.no_screen,
            # RTP read as it arrives (pbx/sipsetup.py): a recording's timing
            # is the far end's, without a start-up burst of our own.
            media_polled=True,
            # Its jitter buffer capped too: what it records shows the far
            # end's delay, not ~0.4 s of its own start-up.
            jitter_ms=args.jitter_ms,
            jitter_hold_ms=args.jitter_hold_ms,
            jitter_discard=args.jitter_discard,
            tls_port=args.tls_port if args.tls else None,
            tls_pair=(args.tls_cert, args.tls_key) if args.tls_cert else None,
            srtp=args.srtp,
        )
        self.tmp = Path(tempfile.mkdtemp(prefix="softphone-"))
        self.calls: list[PhoneCall] = []
        self.by_leg: dict[int, PhoneCall] = {}
        self.stop = False
        self.registration: dict[str, Any] | None = None
        self.account: str | None = None
        # Extra INVITE headers (--header NAME:VALUE), e.g. a forged one in attack tests.
        self.headers = dict(h.split(":", 1) for h in args.header)
        self.headers = {k.strip(): v.strip() for k, v in self.headers.items()}
        self.messages: list[dict[str, Any]] = []

    # -- SipEvents --------------------------------------------------------
    def on_incoming(self, call: IncomingCall) -> None:
        waiting = [c for c in self.calls if c.leg is None and not c.done]
        if not self.args.answer or not waiting:
            self.ua.answer(call.leg, 486)
            return
        c = waiting[0]
        c.leg = call.leg
        c.report.update(
            started_at=time.monotonic(),
            from_user=call.from_user,
            from_display=call.from_display,
            dialed=call.request_user,
        )
        self.by_leg[c.leg] = c
        if self.args.answer_after > 0:
            # Ring first (an operator's phone that takes a while, or never answers).
            self.ua.answer(call.leg, 180)
            c.report["ringing_at"] = time.monotonic()
            c.answer_at = time.monotonic() + self.args.answer_after
            return
        self.ua.answer(call.leg, 200)

    def on_message(self, from_uri: str, body: str) -> None:
        self.messages.append({"from": from_uri, "body": body, "at": time.monotonic()})

    def on_registration(self, account: str, code: int, reason: str, active: bool) -> None:
        self.registration = {
            "code": code,
            "reason": reason,
            "active": active,
            "at": time.monotonic(),
        }

    def on_progress(self, leg: int, code: int) -> None:
        c = self.by_leg.get(leg)
        if c is not None:
            c.report.setdefault("progress", []).append([code, time.monotonic()])

    def on_media_ready(self, leg: int) -> None:
        c = self.by_leg.get(leg)
        if c is None:
            return
        c.report["media_at"] = time.monotonic()
        if c.record is not None:
            self.ua.record(leg, c.record)
            c.report["record_start"] = time.monotonic()
            c.report["recording"] = str(c.record)

    def on_media_changed(self, leg: int, held: bool) -> None:
        c = self.by_leg.get(leg)
        if c is not None:
            c.report.setdefault("media_changes", []).append([held, time.monotonic()])

    def on_transfer_status(self, leg: int, code: int, final: bool) -> None:
        c = self.by_leg.get(leg)
        if c is not None:
            c.report.setdefault("refer", []).append([code, final, time.monotonic()])

    def on_confirmed(self, leg: int) -> None:
        c = self.by_leg.get(leg)
        if c is not None:
            c.report["confirmed_at"] = time.monotonic()

    def on_digit(self, leg: int, digit: str, method: str) -> None:
        c = self.by_leg.get(leg)
        if c is not None:
            c.report.setdefault("digits_received", []).append(digit)

    def on_disconnected(
        self, leg: int, code: int, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        c = self.by_leg.pop(leg, None)
        if c is None:
            return
        c.report.update(ended_at=time.monotonic(), code=code, reason=reason, headers=headers or {})
        c.report.setdefault("hung_up_by", "remote")
        c.done = True

    # -- running ----------------------------------------------------------
    def start_call(self, c: PhoneCall) -> None:
        c.report["started_at"] = time.monotonic()
        try:
            c.leg = self.ua.make_call(
                self.args.target, account=self.account, headers=self.headers or None
            )
        except Exception as exc:  # report, don't crash the other calls
            c.report["error"] = str(exc)
            c.done = True
            return
        self.by_leg[c.leg] = c

    def advance(self, c: PhoneCall, now: float) -> None:
        """Run the call's script as far as it can go without waiting."""
        while not c.done:
            if c.pending_digits:
                if now < c.resume_at:
                    return
                digit, method = c.pending_digits.pop(0)
                self._send_digit(c, digit, method)
                c.resume_at = now + DIGIT_GAP
                continue
            if c.waiting == "media":
                if "media_at" in c.report:
                    c.waiting = None
                elif now > c.deadline:
                    c.report["error"] = "no media"
                    self._hangup(c)
                    return
                else:
                    return
            if c.waiting == "end":
                if now > c.deadline:
                    c.waiting = None
                    c.report["end_timeout"] = True
                else:
                    return
            if now < c.resume_at:
                return
            if c.step >= len(c.steps):
                self._hangup(c)
                return
            op, *argv = c.steps[c.step]
            c.step += 1
            self._do(c, op, argv, now)

    def _do(self, c: PhoneCall, op: str, argv: list[str], now: float) -> None:
        assert c.leg is not None
        if op == "wait":
            c.resume_at = now + float(argv[0])
        elif op == "wait_media":
            c.waiting, c.deadline = "media", now + float(argv[0] if argv else 10)
        elif op == "wait_end":
            c.waiting, c.deadline = "end", now + float(argv[0] if argv else 30)
        elif op == "dtmf":
            method = argv[1] if len(argv) > 1 else "rfc2833"
            methods = ["rfc2833", "info"] if method == "both" else [method]
            c.pending_digits = [(d, m) for d in argv[0] for m in methods]
        elif op == "tone":
            hz = float(argv[0])
            path = self._tone_file(argv)
            if hz:
                self.ua.play(c.leg, [path], loop=True, slot="tone")
            else:
                self.ua.stop_play(c.leg, slot="tone")
            c.report.setdefault("tones", []).append([hz, time.monotonic()])
        elif op == "play":
            # Real speech for the quality bench (bench/quality.py), in the
            # tone's slot: one source at a time.
            self.ua.play(c.leg, [Path(argv[0])], loop=argv[1:] == ["loop"], slot="tone")
            c.report.setdefault("plays", []).append([argv[0], time.monotonic()])
        elif op == "mark":
            c.report.setdefault("marks", {})[argv[0]] = time.monotonic()
            # Its jitter buffer's counts then: what happened to it after the
            # mark is the difference from those at the end.
            if c.leg is not None:
                c.report.setdefault("marks_jbuf", {})[argv[0]] = self.ua.jbuf_state(c.leg)
        elif op == "refer":
            c.report.setdefault("refer_sent", []).append([argv[0], time.monotonic()])
            try:
                self.ua.refer(c.leg, argv[0])
            except Exception as exc:  # reported: the script goes on
                c.report.setdefault("refer", []).append([0, True, time.monotonic(), str(exc)])
        elif op in ("hold", "resume"):
            c.report.setdefault(op, []).append(time.monotonic())
            try:
                if op == "hold":
                    self.ua.hold(c.leg, inactive=argv == ["inactive"])
                else:
                    self.ua.resume(c.leg)
            except Exception as exc:  # reported: the script goes on
                c.report.setdefault("errors", []).append(f"{op}: {exc}")
        elif op == "hangup":
            self._hangup(c)
        else:
            raise ValueError(f"unknown script step {op!r}")

    def _send_digit(self, c: PhoneCall, digit: str, method: str) -> None:
        if c.leg is None or not self.ua.has_leg(c.leg):
            return
        self.ua.send_dtmf(c.leg, digit, method)
        c.report.setdefault("digits_sent", []).append([digit, method, time.monotonic()])

    def _hangup(self, c: PhoneCall) -> None:
        if c.leg is not None and self.ua.has_leg(c.leg):
            c.report["hung_up_by"] = "local"
            c.report["hangup_sent_at"] = time.monotonic()
            # Its receive jitter buffer at the end (what it adds to the far
            # end's delay in the recording).
            c.report["jbuf"] = self.ua.jbuf_state(c.leg)
            # What reached it (the far end's codec settings show in the size).
            c.report["rx"] = self.ua.rx_stat(c.leg)
            self.ua.stop_record(c.leg)
            self.ua.hangup(c.leg)
        c.waiting = "end"
        c.deadline = time.monotonic() + 5
        c.step = len(c.steps) + 1
        if c.leg is None or not self.ua.has_leg(c.leg):
            c.done = True

    def _tone_file(self, argv: list[str]) -> Path:
        """The WAV a `tone HZ [DBFS]` step plays, written on first use."""
        hz = float(argv[0])
        dbfs = float(argv[1]) if len(argv) > 1 else None
        path = self.tmp / f"tone-{hz:g}-{dbfs}.wav"
        if not path.exists():
            write_tone(path, hz, rate=self.args.clock_rate, dbfs=dbfs)
        return path

    def run(self) -> list[dict[str, Any]]:
        """Place the calls, run their scripts, return one report per call."""
        args = self.args
        pins = args.pins.split(",") if args.pins else [""]
        for i in range(args.calls):
            script = args.script.replace("{pin}", pins[i % len(pins)])
            if args.tones:
                tones = args.tones.split(",")
                script = script.replace("{tone}", tones[i % len(tones)])
            steps = [shlex.split(s.strip()) for s in script.split(";") if s.strip()]
            rec = None
            if args.record:
                rec = Path(args.record.replace("{i}", str(i)))
            self.calls.append(PhoneCall(i, steps, rec, report={"index": i}))
            # Written now: rendering a tone in Python takes a tenth of a second
            # at 16 kHz, which in the middle of a call stalled the media poll
            # and left a seam in what the phone recorded.
            for op, *argv in steps:
                if op == "tone":
                    self._tone_file(argv)
        self.ua.start()
        t0 = time.monotonic()
        limit = t0 + args.max_seconds
        if args.register:
            self._register(limit)
        elif args.proxy:
            # Calls through an outbound proxy, e.g. a provider reaching us via Kamailio.
            self.account = "proxy"
            self.ua.add_account("proxy", self._id(f"sip:{args.user}@{args.bind}"), proxy=args.proxy)
        elif args.display is not None:
            # The endpoint's own account has no display name: one that does.
            self.account = "display"
            self.ua.add_account("display", self._id(f"sip:{args.user}@{args.bind}"))
        interval = 1.0 / args.rate if args.rate > 0 else 0.0
        # Answering phones wait for calls; a phone that only registers places none.
        started = len(self.calls) if args.answer or not args.target else 0
        t0 = time.monotonic()
        try:
            while not self.stop and time.monotonic() < limit:
                now = time.monotonic()
                while started < len(self.calls) and now >= t0 + started * interval:
                    self.start_call(self.calls[started])
                    started += 1
                for c in self.calls[:started]:
                    if c.answer_at is not None and not c.done and now >= c.answer_at:
                        c.answer_at = None
                        if c.leg is not None and self.ua.has_leg(c.leg):
                            self.ua.answer(c.leg, 200)
                    if not c.done and c.leg is not None and c.answer_at is None:
                        self.advance(c, now)
                if not args.target and not args.answer and now - t0 >= args.linger:
                    for c in self.calls:  # registering (and listening) was the whole job
                        c.done = True
                    break
                if started == len(self.calls) and all(c.done for c in self.calls):
                    break
                self.ua.poll(5)
        finally:
            for c in self.calls:
                if not c.done:
                    c.report["error"] = c.report.get("error", "script did not finish")
            self.ua.shutdown(timeout=2.0)
            # Its tone files: a test run of hundreds of calls left as many folders in /tmp.
            shutil.rmtree(self.tmp, ignore_errors=True)
        for c in self.calls:
            c.report["digits_sent"] = c.report.get("digits_sent", [])
            c.report["registration"] = self.registration
            c.report["messages"] = self.messages
        return [c.report for c in self.calls]

    def _id(self, uri: str) -> str:
        """An account's identity: `uri`, behind --display's name if given
        (a quoted-string: backslash and double quote escaped, RFC 3261 25.1)."""
        if self.args.display is None:
            return uri
        name = self.args.display.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{name}" <{uri}>'

    def _register(self, limit: float) -> None:
        """REGISTER (with digest auth) and wait for the first answer."""
        user_pass, _, hostport = self.args.register.rpartition("@")
        user, _, password = user_pass.partition(":")
        self.account = "reg"
        self.ua.add_account(
            "reg",
            self._id(f"sip:{user}@{hostport}"),
            registrar=f"sip:{hostport}" + (";transport=tls" if self.args.tls else ""),
            username=user,
            password=password,
            retry_seconds=60,
        )
        while self.registration is None and time.monotonic() < limit:
            self.ua.poll(10)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="softphone", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--target", default="", help="SIP URI to call (none: answer or register)")
    p.add_argument("--register", default="", help="USER:PASSWORD@HOST:PORT to register to")
    p.add_argument(
        "--answer",
        action="store_true",
        help="answer --calls incoming calls and run the script on each",
    )
    p.add_argument(
        "--answer-after",
        type=float,
        default=0.0,
        help="with --answer: ring (180) this many seconds before answering",
    )
    p.add_argument("--script", default="wait_media 5; wait 2; hangup")
    p.add_argument("--bind", default="127.0.0.1", help="local IP (a 127.x address)")
    p.add_argument("--header", action="append", default=[], help="extra INVITE header NAME:VALUE")
    p.add_argument("--proxy", default="", help="outbound proxy URI for calls (sip:HOST:PORT;lr)")
    p.add_argument("--port", type=int, default=0, help="local SIP port (0: any)")
    p.add_argument("--rtp", default="30000-30999", help="local RTP port range LOW-HIGH")
    p.add_argument("--user", default="softphone", help="user part of our From URI")
    p.add_argument("--display", default=None, help="display name in our From (any text)")
    p.add_argument(
        "--no-screen",
        action="store_true",
        help="leave out the SIP screen (pbx/_pjx.c): tests of pbx/sipua.py alone",
    )
    p.add_argument("--codecs", default="PCMU/8000,PCMA/8000")
    p.add_argument("--opus-rate", type=int, default=0, help="opus clock rate, e.g. 16000")
    p.add_argument(
        "--opus-bitrate",
        type=int,
        default=0,
        help="opus maxaveragebitrate we ask of the far end (0: 24000, as the app server)",
    )
    p.add_argument(
        "--clock-rate",
        type=int,
        default=CLOCK_RATE,
        choices=CLOCK_RATES,
        help="the phone's own bridge rate: its tones and recordings (default %(default)s)",
    )
    p.add_argument(
        "--jitter-ms",
        type=int,
        default=200,
        help="cap of the adaptive jitter buffer in ms (0: pjmedia's default)",
    )
    p.add_argument(
        "--jitter-hold-ms",
        type=int,
        default=0,
        help="what the jitter buffer fills before it plays (0: pjmedia's default)",
    )
    p.add_argument(
        "--jitter-discard",
        choices=["", "none", "static", "progressive"],
        default="",
        help="how the jitter buffer sheds delay ('': pjsua's own, progressive)",
    )
    p.add_argument("--record", help="WAV path for what we hear ({i}: call index)")
    p.add_argument("--calls", type=int, default=1)
    p.add_argument(
        "--linger",
        type=float,
        default=0.0,
        help="with no target: stay registered this long (to receive MESSAGEs)",
    )
    p.add_argument("--pins", default="", help="comma-separated PINs for {pin}, one per call")
    p.add_argument("--tones", default="", help="comma-separated Hz for {tone}, one per call")
    p.add_argument("--rate", type=float, default=10.0, help="new calls per second")
    p.add_argument("--max-seconds", type=float, default=120.0, help="hard stop")
    p.add_argument("--pj-log-level", type=int, default=1)
    p.add_argument(
        "--tls",
        action="store_true",
        help="register and call over SIP/TLS (--register's HOST:PORT is the TLS port)",
    )
    p.add_argument("--tls-port", type=int, default=0, help="with --tls: local TLS port (0: any)")
    p.add_argument("--tls-cert", default="", help="with --tls: certificate (PEM) to accept TLS")
    p.add_argument("--tls-key", default="", help="with --tls-cert: its private key (PEM)")
    p.add_argument(
        "--srtp",
        default="",
        choices=["", "optional", "mandatory"],
        help="SRTP (SDES) on our calls: mandatory offers RTP/SAVP",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the scripted calls and print the reports as JSON on stdout."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if args.pj_log_level > 3 else logging.WARNING
    )
    phone = Softphone(args)
    signal.signal(signal.SIGTERM, lambda *_: setattr(phone, "stop", True))
    reports = phone.run()
    json.dump(reports if args.calls > 1 else reports[0], sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
