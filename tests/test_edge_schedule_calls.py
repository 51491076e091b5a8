"""Scheduled dial-out and the language of refusals with phones OFF the
appliance's host: the appliance runs in its network namespace (Kamailio and
rtpengine on 198.51.100.1), the trunk provider at 198.51.100.50 is reached
by its DNS name and answers the schedule's calls, LAN and NAT'd phones
register through Kamailio. What each callee hears is checked by content:
speech for the invitation and the refusals, tones both ways in the room.

What reaches the provider is watched on the wire: a raw socket in the
provider's namespace sees every INVITE as the kernel receives it, including
any the softphone would refuse, so "never dialled" and the trunk's pacing
are checked where the provider sees them.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import audio
from tests.harness import Server, cli, report
from tests.netns import PROVIDER_IP, Host, Topology, net_fixture  # noqa: F401
from tests.pbx_helpers import busiest_window
from tests.test_admin_calls import _members
from tests.test_dialout_calls import PROFILE_LINES
from tests.test_edge_calls import (
    PROVIDER_NAME,
    edge_config,
    no_registration,
    provider_phone,
    softphone,
)
from tests.test_language_calls import TONE, _tail, _tone_override
from tests.test_line_calls import pool_config
from tests.test_schedule_calls import DENIED, MODERATOR, P1, P2, added, at, room, wait_status

P3 = "0212133330004"
DID = "+551130001000"
# A long invitation: time to cancel while the moderator hears it.
LONG_INVITATION = (
    "You are invited to the weekly meeting of the sales team. Please stay on the line: "
    "we are joining you to the room in a moment."
)


class InviteWatch:
    """Each new INVITE (first sighting of its Call-ID) that reaches `host`'s
    SIP port: (monotonic time, request user). A raw UDP socket in the host's
    namespace gets a copy of every UDP datagram the kernel receives there,
    whatever listens on the port (or refuses the call)."""

    def __init__(self, host: Host, port: int = 5060) -> None:
        self.port = port
        self.sock = host.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        self.sock.settimeout(0.2)
        self.seen: dict[str, tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="invite-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self.sock.recv(65535)
            except TimeoutError:
                continue
            at = time.monotonic()
            header = (packet[0] & 0x0F) * 4
            (dport,) = struct.unpack("!H", packet[header + 2 : header + 4])
            payload = packet[header + 8 :]
            if dport != self.port or not payload.startswith(b"INVITE "):
                continue
            text = payload.decode(errors="replace")
            call_id = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", text, re.M | re.I)
            to = re.search(r"^(?:To|t)\s*:(.*)$", text, re.M | re.I)
            if call_id is None or (to is not None and ";tag=" in to.group(1)):
                continue  # a re-INVITE within a dialog: not a new call
            user = re.match(r"INVITE sips?:([^@;>\s]+)@", text)
            self.seen.setdefault(call_id.group(1), (at, user.group(1) if user else "?"))

    def users(self) -> list[str]:
        """The numbers dialled at the provider, in order."""
        return [u for _, u in sorted(self.seen.values())]

    def times(self) -> list[float]:
        """When each new INVITE arrived, in order."""
        return sorted(t for t, _ in self.seen.values())

    def close(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@contextlib.contextmanager
def invites_at(host: Host) -> Iterator[InviteWatch]:
    """An InviteWatch on `host`, closed afterwards."""
    watch = InviteWatch(host)
    try:
        yield watch
    finally:
        watch.close()


def schedule_appliance(server_factory, net: Topology, **room_extra: Any) -> Server:
    """The appliance with the provider's trunk (2 calls/s), the room `demo`
    with its invitation, and its line's profile (DENIED on the deny list)."""
    cfg = no_registration(edge_config(provider=True))
    cfg["rooms"] = [room(**room_extra)]
    cfg.update(PROFILE_LINES)
    net.hosts({PROVIDER_NAME: PROVIDER_IP})
    return server_factory(netns=net.appliance.name, **cfg)


def moderator_first(srv: Server, *numbers: str) -> int:
    """`schedule add demo` in 3 s: MODERATOR first, then `numbers`; its id."""
    args = ["--numbers", ",".join(numbers), "--moderator", MODERATOR, "--moderator-first"]
    return added(cli(srv, "schedule", "add", "demo", "--at", at(3.0), *args))


def heard_call(rep: dict, start: float, end: float, hz: float) -> float:
    """The share of `hz` in what one call of a multi-call phone heard between
    two monotonic times (its own recording)."""
    samples, rate = audio.load(rep["recording"])
    base = rep["record_start"]
    return audio.band_fraction(audio.segment(samples, rate, start - base, end - base), rate, hz)


def invitation_heard(rep: dict) -> bool:
    """Whether the callee heard speech right after answering (the invitation)."""
    samples, rate = audio.load(rep["recording"])
    return audio.speech_like(audio.segment(samples, rate, 0.2, 1.5), rate)


def test_a_schedule_calls_the_moderator_first_then_the_participants_at_the_provider(
    server_factory, phone, net
):
    """Moderator first, then three participants, all numbers at the provider
    off the host (by its DNS name), through Kamailio and rtpengine: each
    hears the invitation (speech), then the others in the room (tones, each
    way). A number the room line's profile refuses is reported `refused`
    with the reason and never reaches the provider; the provider never
    sees more than 2 new INVITEs in any 1-s window (the trunk's cps: 2)."""
    srv = schedule_appliance(server_factory, net)
    tones = {MODERATOR: 440, P1: 900, P2: 1300, P3: 1700}
    played = list(tones.values())
    with invites_at(net.provider) as wire:
        callees = provider_phone(
            phone,
            net,
            "wait_media 5; tone {pin}; wait 20; hangup",
            calls=4,
            # Each call plays the next tone in the order the INVITEs arrive
            # (its report's `index`): the participants' INVITEs may arrive in
            # another order than they were dialled (one paced and sent again).
            extra=["--answer", "--max-seconds", "90", "--pins", ",".join(map(str, played))],
        )
        schedule_id = moderator_first(srv, P1, P2, DENIED, P3)
        reps = sorted(callees.result(timeout=120), key=lambda r: r["started_at"])
        time.sleep(0.5)
    assert all("error" not in r for r in reps), reps
    moderator, participants = reps[0], reps[1:]
    assert moderator["dialed"] == MODERATOR, [r["dialed"] for r in reps]
    assert {r["dialed"] for r in participants} == {P1, P2, P3}
    # The participants were called only once the moderator had heard the
    # invitation and joined.
    first_participant = participants[0]["started_at"]
    assert first_participant - moderator["started_at"] > 1.5, [r["started_at"] for r in reps]

    # On the wire: the refused number never reached the provider, and the
    # trunk's pacing held: at most 2 new INVITEs in any 1-s window.
    assert sorted(wire.users()) == sorted(tones), wire.seen
    assert busiest_window(wire.times(), 1.0) <= 2, wire.times()

    for r in reps:
        assert invitation_heard(r), f"{r['dialed']} heard the invitation"
    # Everyone in the room: from the last participant's joining to the
    # moderator's hang-up. Each hears each of the others.
    hz = {r["dialed"]: played[r["index"]] for r in reps}
    together = (participants[-1]["started_at"] + 4.5, moderator["ended_at"] - 0.5)
    assert together[1] - together[0] > 3.0, together
    for r in reps:
        for other, other_hz in hz.items():
            if other != r["dialed"]:
                share = heard_call(r, *together, other_hz)
                assert share > 0.08, f"{r['dialed']} hears {other}: {share:.3f}"

    assert wait_status(srv, schedule_id, "done")["status"] == "done"
    rows = {r["number"]: r for r in report(srv, "schedules")}
    assert rows[MODERATOR]["role"] == "moderator" and rows[MODERATOR]["outcome"] == "joined"
    for number in (MODERATOR, P1, P2, P3):
        row = rows[number]
        assert row["outcome"] == "joined", row
        assert row["called_at"] and row["answered_at"] and row["joined_at"], row
    assert rows[DENIED]["outcome"] == "refused", rows[DENIED]
    assert "line profile" in rows[DENIED]["detail"] and not rows[DENIED]["called_at"]
    # Each call has its history row from the room's line, through the trunk.
    calls = report(srv, "calls", "--line", "room:demo")
    assert {c["destination"] for c in calls} == set(tones), calls


@pytest.mark.parametrize("moderator_at", ["invitation", "ringing"])
def test_cancelling_a_running_schedule_dials_nobody_else(server_factory, phone, net, moderator_at):
    """`ponte schedule cancel` while the moderator (at the provider) hears
    the invitation, or while its phone still rings: the participants are
    never dialled (nothing of theirs reaches the provider) and are reported
    `not_called`; a moderator who answered joins, a ringing one is hung up
    (`cancelled`); the schedule stays `cancelled`."""
    srv = schedule_appliance(
        server_factory, net, blast={"numbers": ["0212133339998"], "message": LONG_INVITATION}
    )
    ringing = moderator_at == "ringing"
    with invites_at(net.provider) as wire:
        callee = provider_phone(
            phone,
            net,
            "wait_media 5; tone 440; wait 14; hangup",
            extra=[
                "--answer",
                "--max-seconds",
                "40",
                *(["--answer-after", "20"] if ringing else []),
            ],
        )
        schedule_id = moderator_first(srv, P1, P2)
        # Cancelled once the moderator's call rings, or once it answered
        # (while it hears the invitation).
        wanted = "calling" if ringing else "answered"
        deadline = time.monotonic() + 20
        rows: dict[str, dict] = {}
        while time.monotonic() < deadline and rows.get(MODERATOR, {}).get("outcome") != wanted:
            time.sleep(0.2)
            rows = {r["number"]: r for r in report(srv, "schedules")}
        assert rows[MODERATOR]["outcome"] == wanted, rows
        if ringing:
            time.sleep(1.0)  # the INVITE is at the provider, which rings
        cancelled = cli(srv, "schedule", "cancel", str(schedule_id))
        assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr
        rm = callee.result(timeout=60)
        time.sleep(1.0)  # anything dialled after the moderator's joining is on the wire
    assert rm["dialed"] == MODERATOR, rm
    assert wire.users() == [MODERATOR], wire.seen
    if ringing:
        assert "media_at" not in rm and rm["hung_up_by"] == "remote", rm
        # The app server's ACK of the provider's 487 is hop by hop, with its
        # outbound-proxy Route and no dialog token: Kamailio's tm takes it
        # (refused as forged, it left tm sending the 487 again to Timer H).
        kam = (Path(srv.config["state_dir"]) / "kamailio" / "kamailio.log").read_text()
        assert "in-dialog ACK" not in kam, "the ACK of the 487 was refused"
    else:
        assert "error" not in rm, rm
        samples, rate = audio.load(callee.record)
        assert audio.speech_like(audio.segment(samples, rate, 0.2, 1.5), rate), "the invitation"

    row = wait_status(srv, schedule_id, "cancelled", timeout=0)
    assert row["status"] == "cancelled", row
    rows = {r["number"]: r for r in report(srv, "schedules")}
    assert rows[MODERATOR]["outcome"] == ("cancelled" if ringing else "joined"), rows[MODERATOR]
    for number in (P1, P2):
        assert rows[number]["outcome"] == "not_called", rows[number]
        assert "cancelled" in rows[number]["detail"] and not rows[number]["called_at"]
    assert f"schedule {schedule_id} room=demo cancelled while calling" in srv.log()
    # Once over it stays cancelled: a second cancel is refused, changing nothing.
    again = cli(srv, "schedule", "cancel", str(schedule_id))
    assert again.returncode == 2 and "is cancelled" in again.stderr, again.stderr
    audit = report(srv, "audit", "--object", "schedule")
    assert [a["action"] for a in audit] == ["add", "cancel"], audit
    calls = report(srv, "calls", "--line", "room:demo")
    assert [c["destination"] for c in calls] == [MODERATOR], calls


def english_and_portuguese(en: tuple[Any, int], pt: tuple[Any, int]) -> None:
    """The English caller heard speech and not the pt-BR prompt (a TONE
    here); the pt-BR caller heard the pt-BR one. Each is (samples, rate)."""
    assert audio.speech_like(*en), "the English caller hears why, spoken"
    assert audio.band_fraction(*en, TONE) < 0.1, "and not the pt-BR prompt"
    assert audio.band_fraction(*pt, TONE) > 0.5, "the pt-BR caller hears pt-BR"


def test_a_did_mapped_to_the_english_number_hears_its_refusal_in_english(
    server_factory, phone, net, prompt_cache, tmp_path
):
    """The provider's DID is mapped to the English access number: a caller
    through it to a locked room hears why in English (speech, not the pt-BR
    prompt, which is a 900 Hz tone here), while a NAT'd phone on the pt-BR
    access number hears the pt-BR one."""
    overrides = _tone_override(tmp_path, "conference_locked")
    cfg = no_registration(edge_config(provider=True))
    cfg["dids"] = {DID: {"room_access": "conf-en"}}
    cfg["prompts"] = {"cache_dir": str(prompt_cache), "override_dir": str(overrides)}
    net.hosts({PROVIDER_NAME: PROVIDER_IP})
    srv = server_factory(netns=net.appliance.name, **cfg)
    mod = softphone(
        phone, net.lan[0], "1001", "wait_media 5; dtmf 9999#; wait_end 45", "conf", record=False
    )
    _members(srv, "demo", 1)
    locked = cli(srv, "room", "lock", "demo", "--by", "tester")
    assert locked.returncode == 0, locked.stderr
    script = "wait_media 8; dtmf 1111#; wait_end 15"
    en = provider_phone(phone, net, script, DID)
    pt = softphone(phone, net.nat[0], "1002", script, "conf")
    ren, rpt = en.result(), pt.result()
    assert ren["hung_up_by"] == "remote" and rpt["hung_up_by"] == "remote", (ren, rpt)
    english_and_portuguese(_tail(en.record, 1.2), _tail(pt.record, 1.2))
    cli(srv, "room", "end", "demo", "--by", "tester")
    mod.result()


def test_an_english_extensions_refusal_reaches_a_lan_phone_in_english(
    server_factory, phone, net, prompt_cache, tmp_path
):
    """1001 (language: en) on the LAN dials an international number its
    line's profile blocks: it hears the reason in English as early media
    through rtpengine, then 403; 1002 behind the NAT (pt-BR) hears the
    pt-BR prompt (a tone here). Nothing reaches the provider."""
    overrides = _tone_override(tmp_path, "refused_type_blocked")
    cfg = no_registration(edge_config(provider=True))
    cfg["extensions"] = [
        {**e, "language": "en"} if e["number"] == "1001" else e for e in cfg["extensions"]
    ]
    cfg.update(pool_config(1))
    cfg["prompts"] = {"cache_dir": str(prompt_cache), "override_dir": str(overrides)}
    net.hosts({PROVIDER_NAME: PROVIDER_IP})
    server_factory(netns=net.appliance.name, **cfg)
    with invites_at(net.provider) as wire:
        en = softphone(phone, net.lan[0], "1001", "wait_end 15", "0015442079460000")
        pt = softphone(phone, net.nat[0], "1002", "wait_end 15", "0015442079460000")
        ren, rpt = en.result(), pt.result()
    assert ren["code"] == 403 and rpt["code"] == 403, (ren, rpt)
    english_and_portuguese(audio.load(en.record), audio.load(pt.record))
    assert wire.seen == {}, wire.seen
