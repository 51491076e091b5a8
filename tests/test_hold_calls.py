"""Hold and resume with real calls: a member whose phone holds the call (a
re-INVITE with a=sendonly) stays in the room, billed, shown "on hold", and
nothing it sends is mixed in; on resume (a=sendrecv) its media, whose
conference port pjsua recreated, is linked to the room again both ways."""

from __future__ import annotations

import json
import time

import pytest

from tests import audio
from tests.harness import cli, report
from tests.test_inprocess import DIAL_OUT, rig  # noqa: F401  (fixture `rig`)
from tests.test_nodes_rooms import hand_over, two_nodes  # noqa: F401  (fixture `two_nodes`)
from tests.test_spine_calls import hash_time, window

BEFORE, DURING, AFTER, ROOM_TONE = 700, 1300, 1000, 440


def _wait_for_hold(server, timeout: float = 20.0) -> dict | None:
    """The room's members as `ponte status` shows them once one is on hold."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = server.status()["rooms"].get("demo", {}).get("members", [])
        if any(m["on_hold"] for m in members):
            return {"members": members}
        time.sleep(0.2)
    return None


@pytest.mark.parametrize("how", ["sendonly", "inactive"])
def test_held_member_stays_unheard_then_is_relinked_on_resume(server, phone, how):
    mod = phone(server.uri("conf"), f"wait_media 5; dtmf 9999#; tone {ROOM_TONE}; wait 13; hangup")
    member = phone(
        server.uri("conf"),
        f"wait_media 5; wait 1; dtmf 1111#; tone {BEFORE}; wait 3; "
        f"hold{' inactive' if how == 'inactive' else ''}; tone {DURING}; "
        f"wait 3.5; resume; tone {AFTER}; wait 3.5; hangup",
    )
    held = _wait_for_hold(server)
    rm, rp = mod.result(), member.result()
    assert "error" not in rm and "error" not in rp and not rp.get("errors"), (rm, rp)
    # While on hold the member is still in the room, shown on hold.
    assert held is not None, "no member was ever shown on hold"
    assert len(held["members"]) == 2
    assert [m["on_hold"] for m in held["members"]].count(True) == 1
    hold_at, resume_at = rp["hold"][0], rp["resume"][0]
    # The server saw the hold and the resume (each a renegotiation).
    log = server.log()
    assert "on hold room=demo" in log and "resumed room=demo" in log

    ms, rate = audio.load(mod.record)
    before = audio.segment(ms, rate, *window(rm, hash_time(rp) + 0.8, hold_at))
    during = audio.segment(ms, rate, *window(rm, hold_at + 0.8, resume_at))
    after = audio.segment(ms, rate, *window(rm, resume_at + 0.8, rp["hangup_sent_at"]))
    assert audio.band_fraction(before, rate, BEFORE) > 0.2
    # The held phone kept sending (its "hold music"): the moderator heard none of it.
    assert len(during) > 2 * rate
    assert audio.band_fraction(during, rate, DURING) < 0.02
    assert audio.band_fraction(during, rate, BEFORE) < 0.02
    # Resumed: heard again, through the new conference port.
    assert audio.band_fraction(after, rate, AFTER) > 0.2

    # And the member hears the room again after resume.
    ps, prate = audio.load(member.record)
    heard = audio.segment(ps, prate, *window(rp, resume_at + 0.8, rp["hangup_sent_at"]))
    assert len(heard) > 2 * prate
    assert audio.band_fraction(heard, prate, ROOM_TONE) > 0.2

    # Billed as one stay, hold included.
    session = report(server, "conferences")[-1]["id"]
    done = cli(server, "report", "participants", str(session), "--json")
    assert done.returncode == 0, done.stderr
    legs = {r["role"]: r for r in json.loads(done.stdout)}
    assert legs["participant"]["seconds"] >= 9.0, legs


def test_baresip_hold_and_resume(server, phone, tmp_path):
    """A phone nobody here wrote: baresip's own hold and resume commands."""
    from tests.baresip import Baresip

    mod = phone(server.uri("conf"), f"wait_media 5; dtmf 9999#; tone {BEFORE}; wait 18; hangup")
    with Baresip(None, tmp_path / "baresip", tone_hz=ROOM_TONE) as bs:
        bs.dial(server.uri("conf"))
        bs.wait_event("CALL_ESTABLISHED")
        time.sleep(1.5)
        bs.sndcode("1111#")
        pin_at = time.monotonic()
        time.sleep(3.0)
        hold_at = time.monotonic()
        bs.command("hold")
        held = _wait_for_hold(server, timeout=5)
        time.sleep(max(0.0, hold_at + 3.5 - time.monotonic()))
        resume_at = time.monotonic()
        bs.command("resume")
        time.sleep(3.5)
        end_at = time.monotonic()
        bs.hangup()
        bs.wait_event("CALL_CLOSED")
        heard = sorted((tmp_path / "baresip" / "snd").glob("dump-*-dec.wav"))
        last = bs.recording()
    rm = mod.result()
    assert held is not None and len(held["members"]) == 2, "baresip's hold was not seen"
    ms, rate = audio.load(mod.record)
    before = audio.segment(ms, rate, *window(rm, pin_at + 1.0, hold_at))
    during = audio.segment(ms, rate, *window(rm, hold_at + 0.8, resume_at))
    after = audio.segment(ms, rate, *window(rm, resume_at + 0.8, end_at - 0.2))
    assert audio.band_fraction(before, rate, ROOM_TONE) > 0.2
    assert audio.band_fraction(during, rate, ROOM_TONE) < 0.02
    assert audio.band_fraction(after, rate, ROOM_TONE) > 0.2
    # baresip hears the room (the moderator's tone) at the end of its last recording.
    samples, brate = audio.load(last)
    tail = samples[-int(2.5 * brate) :]
    assert audio.band_fraction(tail, brate, BEFORE) > 0.2, [p.name for p in heard]


def test_re_invites_in_a_burst_and_during_the_pin_leave_nothing_stale(server, phone):
    """A phone that holds and resumes in the entry IVR and then in a quick
    burst (some re-INVITEs overlap and are refused by its own stack): it
    still joins, ends linked both ways, and nothing leaks once all leave."""
    before = server.status()
    mod = phone(server.uri("conf"), f"wait_media 5; dtmf 9999#; tone {BEFORE}; wait 12; hangup")
    burst = "; ".join(["hold; wait 0.1; resume; wait 0.1", "hold inactive; wait 0.1; resume"] * 3)
    member = phone(
        server.uri("conf"),
        "wait_media 5; hold; wait 0.4; resume; wait 0.6; dtmf 1111#; "
        f"tone {AFTER}; wait 1.5; {burst}; wait 2; mark settled; wait 3; hangup",
    )
    rm, rp = mod.result(), member.result()
    assert "error" not in rm and "error" not in rp, (rm, rp)
    settled = rp["marks"]["settled"]
    ms, rate = audio.load(mod.record)
    heard = audio.segment(ms, rate, *window(rm, settled, rp["hangup_sent_at"]))
    assert audio.band_fraction(heard, rate, AFTER) > 0.2
    ps, _ = audio.load(member.record)
    heard = audio.segment(ps, rate, *window(rp, settled, rp["hangup_sent_at"]))
    assert audio.band_fraction(heard, rate, BEFORE) > 0.2
    assert "join room=demo role=participant" in server.log()
    deadline = time.monotonic() + 5
    while (st := server.status())["calls"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert st["calls"] == 0 and st["links"] == 0 and st["rooms"] == {}
    assert st["conf_ports"] == before["conf_ports"], "a conference slot leaked"
    assert "Traceback" not in server.log()


# -- every kind of leg a member may be, in-process on the fake user agent --------
# (the real calls above prove the room; these the other owners of a leg's links)


def test_a_private_dial_out_talk_is_relinked_after_either_side_renegotiates(rig):  # noqa: F811
    r = rig(**DIAL_OUT)
    m, p = r.join("9999"), r.join("1111")
    r.ua.digits(m, "*1")
    r.run(4)
    r.ua.digits(m, "33334444#")
    r.run(4)
    r.ua.digits(m, "1")
    r.run(1)
    guest = next(leg for leg in r.ua.legs.values() if leg.uri).id
    r.ua.answer_out(guest)
    r.run(1)
    talk = {(m, guest), (guest, m)}
    assert talk <= r.ua.links
    for leg in (guest, m):
        r.ua.reinvite(leg)
        r.run(0.2)
        assert talk <= r.ua.links, f"leg {leg}'s re-INVITE cut the private talk"
        assert (m, p) not in r.ua.links and (p, m) not in r.ua.links  # still away


def test_a_handed_off_callers_hold_stays_off_the_home_and_resume_relinks(two_nodes):  # noqa: F811
    a, b = two_nodes["a"], two_nodes["b"]
    a.join("9999", caller="1001")
    caller = b.join("1111", caller="1002")
    (peer,) = [leg.id for leg in b.ua.legs.values() if leg.uri]
    hand_over(b, a, peer)
    both = {(caller, peer), (peer, caller)}
    assert both <= b.ua.links
    b.ua.reinvite(caller, held=True)
    b.run(0.2)
    assert (caller, peer) not in b.ua.links, "the home hears the held caller's phone"
    assert (peer, caller) in b.ua.links
    b.ua.reinvite(caller, held=False)
    b.run(0.2)
    assert both <= b.ua.links
    b.ua.reinvite(peer)  # the internal leg renegotiated: linked again too
    b.run(0.2)
    assert both <= b.ua.links
