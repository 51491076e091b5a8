"""Issue 20's room features with phones OFF the appliance's host.

The keypad (*94 hand, *95 count, *96 floor), recording (*93, the mix and a
track per member), individual counter-PINs, a foreign client's hold and
resume, and the app's internal headers forged by a phone: each through
Kamailio and rtpengine, with phones on the LAN or behind the NAT router
(tests/netns.py), checked by what the callers hear.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pbx.sipevents import HANDOFF_HEADERS
from tests import audio
from tests.harness import cli, report
from tests.netns import APPLIANCE_IP, net_fixture  # noqa: F401  (fixture `net`)
from tests.test_counter_pins_calls import ROOMS as COUNTER_ROOMS
from tests.test_edge_calls import (
    ALL_PASSWORDS,
    PBX,
    _wait_rows,
    appliance,
    heard,
    softphone,
    spray_rtp,
)
from tests.test_hold_calls import _wait_for_hold
from tests.test_recording_calls import RECORDED, files, key_times, recordings
from tests.test_spine_calls import hash_time, window

MOD_TONE, PART_TONE, STRANGER = 700, 440, 1500


def speech(proc: Any, rep: dict[str, Any], start: float, end: float) -> bool:
    """Whether the phone heard speech (a prompt) between two of its own times."""
    samples, rate = audio.load(proc.record)
    return audio.speech_like(audio.segment(samples, rate, *window(rep, start, end)), rate)


def level(proc: Any, rep: dict[str, Any], start: float, end: float) -> float:
    """The RMS of what the phone heard between two of its own times."""
    samples, rate = audio.load(proc.record)
    return audio.rms(audio.segment(samples, rate, *window(rep, start, end)))


def star_times(rep: dict[str, Any], key: str) -> list[float]:
    """When each `key` (e.g. "*94") was complete, in the phone's own clock."""
    return key_times(rep, key)


def lan_moderator_and_nat_caller(
    phone: Any,
    net: Any,
    mod_script: str,
    part_script: str,
    target: str = "conf",
    extra: list[str] | None = None,
) -> tuple[Any, Any]:
    """The room's two phones: 1001 on the LAN (the moderator, by its script's
    PIN) and 1002 behind the NAT router, both calling `target`."""
    mod = softphone(phone, net.lan[0], "1001", mod_script, target)
    return mod, softphone(phone, net.nat[0], "1002", part_script, target, extra=extra or [])


def test_keypad_hand_count_and_floor_from_a_nat_phone(server_factory, phone, net):
    """Lecture mode (*5) by the LAN moderator; the NAT participant's *94 raises
    its hand: `ponte status` shows it (the real extension, 1002), the moderator
    hears "one hand raised", then its *95 the head count; the participant's
    tone reaches the moderator only after its *96 gives the floor."""
    srv = appliance(server_factory, net)
    mod, part = lan_moderator_and_nat_caller(
        phone,
        net,
        "wait_media 5; dtmf 9999#; wait 1.5; dtmf *5; wait 10; dtmf *95; wait 4; "
        "dtmf *96; wait 6; hangup",
        f"wait_media 5; wait 1; dtmf 1111#; tone {PART_TONE}; wait 7; dtmf *94; wait 16; hangup",
        "conf-en",
    )
    # The hand, as `ponte status` (the control socket) shows it.
    deadline = time.monotonic() + 25
    shown: dict[str, Any] = {}
    while time.monotonic() < deadline:
        room = srv.status()["rooms"].get("demo", {})
        if room.get("hands"):
            shown = room
            break
        time.sleep(0.2)
    rm, rp = mod.result(), part.result()
    assert "error" not in rm and "error" not in rp, (rm, rp)
    assert shown, "no hand was ever shown"
    (raised_by,) = [m for m in shown["members"] if m["hand"]]
    assert shown["hands"] == [raised_by["leg"]] and shown["lecture"]
    assert (raised_by["caller"], raised_by["role"]) == ("1002", "participant"), raised_by

    (lecture,) = star_times(rm, "*5")
    (raised,) = star_times(rp, "*94")
    (count,) = star_times(rm, "*95")
    (floor,) = star_times(rm, "*96")
    assert lecture + 3 < raised < count - 2.5 and count + 3 < floor, "the scripts' order held"
    # "one hand raised", then the count: speech at the moderator's phone.
    assert speech(mod, rm, raised + 0.2, raised + 1.8), "the moderator heard no hand raised"
    assert speech(mod, rm, count + 0.2, count + 2.2), "the moderator heard no count"
    # Lecture mode: the participant's tone is not heard before *96: between
    # the prompts (whose speech has some energy near 440 Hz) the moderator's
    # line is silent, and nowhere does the tone dominate ...
    for quiet in ((raised - 1.5, raised - 0.1), (count - 1.5, count - 0.2), (floor - 1, floor)):
        assert level(mod, rm, *quiet) < 0.01, quiet
    samples, rate = audio.load(mod.record)
    held_back = audio.segment(samples, rate, *window(rm, lecture + 2.5, floor - 0.1))
    assert not audio.hears_tone(held_back, rate, PART_TONE)
    # ... and is, once "the floor is given" is over.
    assert heard(mod, rm, floor + 3.0, rm["hangup_sent_at"] - 0.2, PART_TONE) > 0.3
    # The participant was told it has the floor.
    assert speech(part, rp, floor + 0.3, floor + 2.0), "the participant heard no 'your turn'"
    log = srv.log()
    assert "key action=hand room=demo" in log and "key action=next_hand room=demo" in log
    assert "key action=count room=demo" in log


def test_recording_a_lan_moderator_and_a_nat_participant(server_factory, phone, net):
    """The LAN moderator's *93 with a NAT participant: both hear "this
    conference is being recorded" (and "stopped" on the second *93); the mix
    holds both tones, each member's track its own tone only."""
    srv = appliance(server_factory, net, rooms=RECORDED)
    mod, part = lan_moderator_and_nat_caller(
        phone,
        net,
        f"wait_media 5; dtmf 9999#; wait 1.5; dtmf *93; wait 3; tone {MOD_TONE}; wait 3.5; "
        "tone 0; wait 0.5; dtmf *93; wait 2.5; hangup",
        f"wait_media 5; wait 0.5; dtmf 1111#; wait 4.5; tone {PART_TONE}; wait 3; tone 0; "
        "wait 4; hangup",
        "conf-en",
    )
    rm, rp = mod.result(), part.result()
    assert "error" not in rm and "error" not in rp, (rm, rp)
    start, stop = star_times(rm, "*93")
    assert hash_time(rp) < start, "the participant was in before the start"
    for proc, rep in ((mod, rm), (part, rp)):
        assert speech(proc, rep, start + 0.3, start + 2.3), f"{proc.record}: no 'recorded'"
        assert speech(proc, rep, stop + 0.3, stop + 1.5), f"{proc.record}: no 'stopped'"
    # Through rtpengine both ways while recording: each heard the other's tone.
    both = (start + 4.0, start + 6.0)
    assert heard(mod, rm, *both, PART_TONE) > 0.2 and heard(part, rp, *both, MOD_TONE) > 0.2

    (row,) = recordings(srv)
    assert row["room"] == "demo" and row["dropped_frames"] == 0, row
    got = files(srv, row)
    assert "mix.wav" in got and len(got) == 3, row  # the mix and two members
    mix, rate = audio.load(got["mix.wav"])
    assert audio.band_fraction(mix, rate, MOD_TONE) > 0.15, "the moderator is not in the mix"
    assert audio.band_fraction(mix, rate, PART_TONE) > 0.15, "the participant is not in the mix"
    assert abs(len(mix) / rate - (stop - start)) < 0.6, (len(mix) / rate, stop - start)
    by_caller = {f["caller"]: got[f["name"]] for f in row["files"] if f.get("caller")}
    assert set(by_caller) == {"1001", "1002"}, row  # the extensions Kamailio authenticated
    own = {"1001": (MOD_TONE, PART_TONE), "1002": (PART_TONE, MOD_TONE)}
    for caller, (mine, theirs) in own.items():
        track, rate = audio.load(by_caller[caller])
        assert audio.band_fraction(track, rate, mine) > 0.5, caller
        assert audio.band_fraction(track, rate, theirs) < 0.02, caller


def test_a_lan_moderators_own_counter_pin_names_its_billing(server_factory, phone, net):
    """A LAN moderator keys the moderator PIN and its own counter-PIN (Ana's):
    the NAT participant waiting in the room hears it, it hears the
    participant, and the billing says Ana (never the PIN)."""
    srv = appliance(server_factory, net, rooms=COUNTER_ROOMS)
    mod, part = lan_moderator_and_nat_caller(
        phone,
        net,
        f"wait_media 5; wait 1.5; dtmf 9999#; wait 0.5; dtmf 5151#; tone {MOD_TONE}; wait 5; "
        "hangup",
        f"wait_media 5; dtmf 1111#; tone {PART_TONE}; wait 9; hangup",
    )
    rp, rm = part.result(), mod.result()
    assert "error" not in rm and "error" not in rp, (rm, rp)
    talk = (hash_time(rm) + 1.0, rm["hangup_sent_at"] - 0.2)
    assert heard(part, rp, *talk, MOD_TONE) > 0.2, "the room did not start for Ana"
    assert heard(mod, rm, *talk, PART_TONE) > 0.2
    log = srv.log()
    assert log.count("counter-pin ok name=Ana") == 1
    assert "5151" not in log  # the name is logged, never the PIN
    (conference,) = report(srv, "conferences")
    assert conference["counter_pins"] == "Ana", conference
    done = cli(srv, "report", "participants", str(conference["id"]), "--json")
    assert done.returncode == 0, done.stderr
    legs = {r["role"]: r for r in json.loads(done.stdout)}
    assert legs["moderator"]["counter_pin_name"] == "Ana", legs
    assert legs["participant"]["counter_pin_name"] is None, legs


def _wait_members(srv: Any, n: int, timeout: float = 15.0) -> float:
    """When (monotonic) room demo first had `n` members."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(srv.status()["rooms"].get("demo", {}).get("members", [])) >= n:
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"room demo never had {n} members")


def test_baresip_behind_nat_holds_and_resumes_while_a_stranger_sprays_rtp(
    server_factory, phone, net, tmp_path
):
    """baresip (a phone nobody here wrote) behind the NAT holds with its own
    command: the LAN moderator hears nothing it sends while held; meanwhile an
    attacker sprays a tone at every media port, which nobody hears. After
    baresip's resume both hear each other again."""
    from tests.baresip import Baresip

    srv = appliance(server_factory, net)
    mod = softphone(
        phone,
        net.lan[0],
        "1001",
        f"wait_media 5; dtmf 9999#; tone {MOD_TONE}; wait 25; hangup",
        "conf",
    )
    account = (
        f"<sip:1002@{APPLIANCE_IP}>;auth_pass={ALL_PASSWORDS['1002']};"
        f'outbound="sip:{PBX}";regint=60'
    )
    assert net.attacker is not None
    sock = net.attacker.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # rtpengine's media ports, the only ones reachable from the LAN (the app
    # server's own are on the appliance's loopback).
    targets = range(30000, 30400)
    sprayed: dict[str, int] = {}
    with Baresip(net.nat[0], tmp_path / "baresip", account=account, tone_hz=PART_TONE) as bs:
        bs.wait_event("REGISTER_OK")
        bs.dial("conf")
        bs.wait_event("CALL_ESTABLISHED")
        time.sleep(1.5)
        bs.sndcode("1111#")
        # In the room before the hold: on a loaded machine the PIN's check and
        # the join can take longer than a fixed pause (the hold of a caller
        # still at the PIN prompt is no room member's).
        joined_at = _wait_members(srv, 2)
        time.sleep(2.0)
        hold_at = time.monotonic()
        bs.command("hold")
        held = _wait_for_hold(srv, timeout=10)
        spray = threading.Thread(
            target=lambda: sprayed.update(n=spray_rtp(sock, APPLIANCE_IP, targets, 2.5, STRANGER))
        )
        spray_at = time.monotonic()
        spray.start()
        time.sleep(max(0.0, hold_at + 3.5 - time.monotonic()))
        spray.join()
        resume_at = time.monotonic()
        bs.command("resume")
        time.sleep(3.5)
        end_at = time.monotonic()
        bs.hangup()
        bs.wait_event("CALL_CLOSED")
        last = bs.recording()
    sock.close()
    rm = mod.result()
    assert "error" not in rm, rm
    assert held is not None and len(held["members"]) == 2, "baresip's hold was not seen"
    (member,) = [m for m in held["members"] if m["on_hold"]]
    assert member["caller"] == "1002", member
    assert sprayed["n"] > 10 * len(targets)
    assert heard(mod, rm, joined_at + 0.5, hold_at, PART_TONE) > 0.2, "not heard before the hold"
    assert heard(mod, rm, hold_at + 0.8, resume_at, PART_TONE) < 0.02, "heard while held"
    assert heard(mod, rm, spray_at, spray_at + 2.5, STRANGER) < 0.01, "the stranger was heard"
    assert heard(mod, rm, resume_at + 0.8, end_at - 0.2, PART_TONE) > 0.2, "not heard after"
    # baresip hears the moderator at the end of its last recording (after the resume).
    samples, rate = audio.load(last)
    tail = samples[-int(2.5 * rate) :]
    assert audio.band_fraction(tail, rate, MOD_TONE) > 0.2
    assert audio.band_fraction(tail, rate, STRANGER) < 0.01
    log = srv.log()
    assert "on hold room=demo" in log and "resumed room=demo" in log


def forged_headers() -> list[str]:
    """Every header the app believes from its own side, forged by a phone:
    Kamailio's authenticated line (twice, in both cases, naming 1001) and a
    node's signed hand-off into the room as its moderator (a made-up token)."""
    handoff = dict(
        zip(
            HANDOFF_HEADERS,
            ("demo", "moderator=Ana", "1001", "0", f"{time.time() + 20:.3f}000001", "0" * 64),
            strict=True,
        )
    )
    # Header names are case-insensitive: the app reads them so, the edge must strip them so.
    cased: tuple[Callable[[str], str], ...] = (str.lower, str.upper, str, str, str.lower, str)
    heads = ["X-Ponte-Line: 1001", "x-ponte-line: 1001"]
    heads += [f"{case(k)}: {v}" for case, (k, v) in zip(cased, handoff.items(), strict=True)]
    return [arg for h in heads for arg in ("--header", h)]


def test_a_nat_phone_forging_the_apps_internal_headers_gains_nothing(server_factory, phone, net):
    """A NAT phone registered as 1002 calls the room with X-Ponte-Line: 1001
    and a hand-off's X-Ponte-Room/Role (moderator)/Caller/… headers: it is
    still asked for a PIN (the moderator hears nothing of it until it keys
    one), joins as the participant its PIN says, as 1002 in `ponte status`
    and in the billing."""
    srv = appliance(server_factory, net)
    mod, forger = lan_moderator_and_nat_caller(
        phone,
        net,
        f"wait_media 5; dtmf 9999#; tone {MOD_TONE}; wait 12; hangup",
        f"wait_media 5; tone {PART_TONE}; wait 4; dtmf 1111#; wait 5; hangup",
        extra=forged_headers(),
    )
    deadline = time.monotonic() + 20
    members: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(members) < 2:
        members = srv.status()["rooms"].get("demo", {}).get("members", [])
        time.sleep(0.2)
    rm, rf = mod.result(), forger.result()
    assert "error" not in rf and "media_at" in rf, rf
    assert {(m["caller"], m["role"]) for m in members} == {
        ("1001", "moderator"),
        ("1002", "participant"),
    }, members
    pin = hash_time(rf)
    # No PIN yet: the forged hand-off did not bring it into the room.
    assert heard(mod, rm, rf["media_at"] + 1.0, pin - 0.2, PART_TONE) < 0.02
    assert heard(mod, rm, pin + 1.0, rf["hangup_sent_at"] - 0.2, PART_TONE) > 0.2
    log = srv.log()
    assert "hand-off" not in log, [line for line in log.splitlines() if "hand-off" in line]
    (conference,) = report(srv, "conferences")
    done = cli(srv, "report", "participants", str(conference["id"]), "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["role"]: r for r in json.loads(done.stdout)}
    assert rows["participant"]["counter_pin_name"] is None, rows
    calls = {r["origin"] for r in _wait_rows(srv, 2, call_type="conference")}
    assert calls == {"1001", "1002"}, calls
