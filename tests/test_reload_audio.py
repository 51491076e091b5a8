"""Live reload during a live 3-leg conference, checked by what the callers heard.

`ponte reload` parses and validates the YAML on the server's loop thread, the
same thread that drives pjsua2. The media itself is clocked by pjmedia's own
thread, so a reload must not open a hole in anyone's audio; the recordings of
the three members say whether it did, 100 ms at a time.
"""

from __future__ import annotations

import re
import time
from typing import Any

import yaml

from tests import audio, ports
from tests.harness import Server, cli
from tests.test_spine_calls import hash_time, window

# Tones other call tests already tell apart by FFT (test_spine_calls, test_room_calls).
MOD_HZ, P1_HZ, P2_HZ = 700, 440, 900
OLD_PIN, NEW_PIN = "1111", "3434"  # room demo's participant PIN before and after the reload
EXTRA_ROOMS = 50
RELOADS = 3
MARGIN = 0.3  # seconds of window before the first reload and after the last one
# Upper bound of the mouth-to-ear delay (two jitter buffers and the bridge):
# up to ~0.8 s right after a call is set up, shrinking by ~50 ms/s after.
LAG = 1.0


def changed_config(server: Server, generation: int) -> dict[str, Any]:
    """The server's file with demo's participant PIN changed and 50 more rooms.

    Each generation differs a little (max_members), so every reload swaps in a
    genuinely new room table rather than an identical one.
    """
    cfg = dict(server.config)
    rooms = [dict(r) for r in cfg["rooms"]]
    for r in rooms:
        if r["name"] == "demo":
            r["participant_pin"] = NEW_PIN
    rooms += [
        {
            "name": f"extra{k}",
            "participant_pin": f"{500000 + k}",
            "moderator_pin": f"{700000 + k}",
            "max_members": 10 + generation,
        }
        for k in range(EXTRA_ROOMS)
    ]
    cfg["rooms"] = rooms
    return cfg


def demo_members(server: Server) -> int:
    """How many members room demo holds now (0 when it is not running)."""
    room = server.status()["rooms"].get("demo")
    return len(room["members"]) if room else 0


def wait_members(server: Server, n: int, timeout: float = 20.0) -> None:
    """Poll the control socket until room demo holds `n` members."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if demo_members(server) == n:
            return
        time.sleep(0.05)
    raise AssertionError(f"room demo has {demo_members(server)} members, wanted {n}")


def leg_from(log: str, ip: str) -> int:
    """The server's leg number of the call that came from `ip`."""
    m = re.search(rf"call (\d+) incoming from=\S+ to=\S+ src={re.escape(ip)}:", log)
    assert m, f"no call from {ip} in the log"
    return int(m.group(1))


def test_reload_during_a_live_conference_keeps_its_audio_flowing(server_factory, phone):
    srv = server_factory()
    # wait_end: the calls last exactly as long as the test needs, however slow
    # the machine; at the close the test ends them (SIGTERM: the phone sends BYE
    # and closes its recording), which is quicker than the server's spoken goodbye.
    talk = "wait_media 5; dtmf {pin}#; tone {hz}; wait_end 60"
    mod = phone(srv.uri("conf"), talk.format(pin="9999", hz=MOD_HZ))
    p1 = phone(srv.uri("conf"), talk.format(pin=OLD_PIN, hz=P1_HZ))
    p2 = phone(srv.uri("conf"), talk.format(pin=OLD_PIN, hz=P2_HZ))
    wait_members(srv, 3)
    # Each caller hears the others LAG after they join at worst: the window
    # starts once every recording carries both of the others' tones.
    time.sleep(2.0)

    first = time.monotonic()
    for generation in range(RELOADS):
        if generation:
            time.sleep(0.5)
        srv.config_path.write_text(yaml.safe_dump(changed_config(srv, generation)))
        r = cli(srv, "reload")
        assert r.returncode == 0, r.stderr
        assert demo_members(srv) == 3, "a reload dropped a member"
    last = time.monotonic()
    assert srv.log().count("reloaded ") == RELOADS

    # After the reload: the old PIN leads nowhere, the new one into the live room.
    old_ip, new_ip = ports.loopback_ip(), ports.loopback_ip()
    old = phone(
        srv.uri("conf"),
        f"wait_media 5; dtmf {OLD_PIN}#; wait 0.5; hangup",
        record=False,
        bind=old_ip,
    )
    new = phone(
        srv.uri("conf"), f"wait_media 5; dtmf {NEW_PIN}#; wait_end 60", record=False, bind=new_ip
    )
    assert old.result()["hung_up_by"] == "local"
    wait_members(srv, 4)
    log = srv.log()
    old_leg, new_leg = leg_from(log, old_ip), leg_from(log, new_ip)
    assert f"call {old_leg} pin failed" in log
    assert f"call {old_leg} join" not in log
    assert f"call {new_leg} join room=demo role=participant members=4" in log

    # What the server sent up to MARGIN after the last reload reaches the
    # recordings up to LAG later.
    time.sleep(max(0.0, last + MARGIN + LAG + 0.2 - time.monotonic()))
    members = [(mod, MOD_HZ), (p1, P1_HZ), (p2, P2_HZ)]
    for p in (mod, p1, p2, new):
        p.proc.terminate()
    reports = [p.result() for p, _hz in members]
    new.result()
    for r in reports:
        # Nothing went wrong on the call; it was only cut short by the test.
        assert r.get("error") == "script did not finish" and "record_start" in r, r
    # The test's clock and the phones' are the same CLOCK_MONOTONIC, so the
    # reload times map straight into each recording (record_start is its 0 s).
    # A sound the server sends at t is in the recording at t + delay, with
    # 0 < delay < LAG: this window holds everything sent from MARGIN before
    # the first reload to MARGIN after the last.
    start, end = first - MARGIN, last + MARGIN + LAG
    assert start > max(hash_time(r) for r in reports) + 1.0
    for (p, own), r in zip(members, reports, strict=True):
        samples, rate = audio.load(p.record)
        heard = audio.segment(samples, rate, *window(r, start, end))
        assert len(heard) >= int((end - start) * rate) - rate // 50, "recording too short"
        others = tuple(hz for _p, hz in members if hz != own)
        bad = audio.holes(heard, rate, others)
        assert not bad, f"the {own} Hz caller lost the others during the reloads:\n" + "\n".join(
            bad[:10]
        )
        assert audio.band_fraction(heard, rate, own) < 0.02, "nobody hears themselves"
