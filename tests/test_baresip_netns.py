"""baresip phones calling each other directly in the namespace topology
(no server): the driver, the tones and the NAT seen from the media."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests import audio
from tests.baresip import Baresip
from tests.netns import Topology, net_fixture  # noqa: F401  (the fixture `net`)

TALK = 3.0  # seconds of established call


def _heard(phone: Baresip) -> tuple[np.ndarray, int]:
    """What the phone heard, minus the first half second (jitter buffer filling)."""
    samples, rate = audio.load(phone.recording())
    return audio.segment(samples, rate, 0.5, len(samples) / rate), rate


def _talk(caller: Baresip, callee: Baresip) -> None:
    """Caller dials callee, both see the call up, TALK seconds, caller hangs up."""
    caller.dial(callee.uri)
    caller.wait_event("CALL_ESTABLISHED")
    callee.wait_event("CALL_ESTABLISHED")
    time.sleep(TALK)
    caller.hangup()
    caller.wait_event("CALL_CLOSED")
    callee.wait_event("CALL_CLOSED")


def test_lan_phones_hear_each_other(net: Topology, tmp_path: Path) -> None:
    alice = Baresip(net.lan[0], tmp_path / "alice", user="alice", tone_hz=440)
    bob = Baresip(net.lan[1], tmp_path / "bob", user="bob", tone_hz=700, auto_answer=True)
    with alice, bob:
        _talk(alice, bob)
        a, rate = _heard(alice)
        b, _ = _heard(bob)
    assert len(a) / rate > TALK - 1.5 and len(b) / rate > TALK - 1.5
    assert audio.hears_tone(a, rate, 700), f"alice heard {audio.band_fraction(a, rate, 700):.2f}"
    assert audio.hears_tone(b, rate, 440), f"bob heard {audio.band_fraction(b, rate, 440):.2f}"
    # The tone heard is the other's, not an echo of one's own.
    assert audio.band_fraction(a, rate, 440) < 0.05 and audio.band_fraction(b, rate, 700) < 0.05


def test_nat_phone_calls_lan_phone(
    net: Topology, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """NAT → LAN media must arrive; LAN → NAT cannot (the LAN phone answers to
    the private 203.0.113.10 of the SDP, which it has no route to): that is the
    NAT problem a server has to solve, recorded here and not asserted."""
    carol = Baresip(net.nat[0], tmp_path / "carol", user="carol", tone_hz=440)
    bob = Baresip(net.lan[1], tmp_path / "bob", user="bob", tone_hz=700, auto_answer=True)
    with carol, bob:
        # The NAT phone hangs up: its BYE goes to bob's reachable Contact, while
        # bob's would go to carol's private Contact.
        _talk(carol, bob)
        incoming = next(e for e in bob.events if e.get("type") == "CALL_ESTABLISHED")
        b, rate = _heard(bob)
        c, _ = _heard(carol)
    # The signalling carries the private address: nothing rewrote it.
    assert "203.0.113.10" in incoming["peeruri"]
    assert audio.hears_tone(b, rate, 440), f"bob heard {audio.band_fraction(b, rate, 440):.2f}"
    record_property("nat_phone_heard_seconds", round(len(c) / rate, 2))
    record_property("nat_phone_heard_rms", round(audio.rms(c), 4))


def test_root_namespace_loopback_phones(tmp_path: Path) -> None:
    """host=None: the same driver on this machine's loopback (ports from tests.ports)."""
    alice = Baresip(None, tmp_path / "alice", user="alice", tone_hz=440)
    bob = Baresip(None, tmp_path / "bob", user="bob", tone_hz=700, auto_answer=True)
    with alice, bob:
        _talk(alice, bob)
        a, rate = _heard(alice)
        b, _ = _heard(bob)
    assert audio.hears_tone(a, rate, 700) and audio.hears_tone(b, rate, 440)
