"""kill -9 of the app server with calls up, phones off the host (issue 23).

The appliance runs in a network namespace: the app server on its loopback,
Kamailio and rtpengine on the LAN address (198.51.100.1); phones on the LAN
and behind the NAT router, a trunk provider at 198.51.100.50 (see
tests/netns.py). When the app server dies, Kamailio ends the dialogs it
held with it: each phone and the provider get a BYE within seconds, and
rtpengine drops those calls' media. Calls between extensions never touch
the app server and go on. A restarted app server adopts the edge and
answers new calls at once.

How the edge hears of the death: `ponte serve` runs Kamailio and rtpengine
beside a guard that holds no lock of ponte's: the kernel drops ponte's
owner lock when it dies, and the guard runs `python -m pbx.kamailio
release` (pbx/child.py). Under systemd, ponte.service's ExecStopPost runs
the same release. A restart that nobody reported is caught by the dialog
module's in-dialog OPTIONS, which the new app server answers with 481.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pbx.child import running
from pbx.kamailio import KA_FAILED_LIMIT, KA_INTERVAL, KA_TIMER
from tests import audio
from tests.baresip import Baresip
from tests.harness import ROOT, Server, report
from tests.netns import APPLIANCE_IP, PROVIDER_IP, Host, topology
from tests.pglink import db_link_fixture  # noqa: F401  (fixture `db_link`)
from tests.test_edge_calls import (
    ALL_PASSWORDS,
    PBX,
    PROVIDER_NAME,
    edge_config,
    heard,
    no_registration,
    provider_phone,
)
from tests.test_spine_calls import hash_time, window

BYE_WITHIN = 10.0  # seconds from the kill to each phone's BYE (issue 23)
# A new call placed right after the restart is answered, not refused: the bound
# only tells a call answered from one that waited for a timeout; how fast is
# printed (and measured by bench/), never asserted on a loaded machine.
ANSWER_WITHIN = 10.0
MORE_EXTENSIONS = [{"number": "1005", "name": "Elisa", "password": "elisa-Secret-w8n"}]
PASSWORDS = {**ALL_PASSWORDS, **{e["number"]: e["password"] for e in MORE_EXTENSIONS}}


@pytest.fixture
def crash_net():
    """Three LAN phones, two behind the NAT router, the provider; no attacker."""
    with topology(lan_phones=3, nat_phones=2, attacker=False) as t:
        t.hosts({PROVIDER_NAME: PROVIDER_IP})
        yield t


def crash_config() -> dict[str, Any]:
    """The edge appliance with a trunk to the provider (no registration), a
    room whose level-3 moderator may dial out, and a fifth extension."""
    cfg = no_registration(edge_config(provider=True))
    cfg["extensions"] = [*cfg["extensions"], *MORE_EXTENSIONS]
    cfg["rooms"] = [
        {"name": "demo", "participant_pin": "1111", "moderator_pin": "9999", "security_level": 3}
    ]
    cfg["lines"] = {"room:demo": {"area_code": "11", "profile": "dial"}}
    cfg["profiles"] = {"dial": {"limits": {"local": "unlimited", "national": "unlimited"}}}
    return cfg


def phone_on(phone, host: Host, number: str, script: str, target: str = "", **kw: Any):
    """Our softphone on `host`, registered as `number` (any of PASSWORDS)."""
    uri = f"sip:{target}@{PBX}" if target else ""
    extra = ["--register", f"{number}:{PASSWORDS[number]}@{PBX}", *kw.pop("extra", [])]
    return phone(uri, script, bind=host.ip, netns=host.name, extra=extra, **kw)


def baresip_account(number: str) -> str:
    return f'<sip:{number}@{APPLIANCE_IP}>;auth_pass={PASSWORDS[number]};outbound="sip:{PBX}"'


def wait_for(what, timeout: float, step: float = 0.1, message: str = "") -> Any:
    """Poll `what()` until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(message or f"timed out after {timeout} s")


def legs(srv: Server) -> int:
    try:
        return int(srv.status()["calls"])
    except OSError:
        return -1


def closed_at(bs: Baresip, timeout: float) -> dict[str, Any]:
    """Start watching for baresip's CALL_CLOSED; the dict gets its arrival time."""
    out: dict[str, Any] = {}

    def watch() -> None:
        try:
            ev = bs.wait_event("CALL_CLOSED", timeout=timeout)
        except TimeoutError:
            return
        out.update(at=time.monotonic(), reason=ev.get("param"))

    threading.Thread(target=watch, daemon=True).start()
    return out


def bye_received(bs: Baresip) -> bool:
    """baresip's SIP trace shows a BYE that came from the appliance."""
    trace = bs.log_text(tail=2_000_000)
    return re.search(rf"UDP {re.escape(APPLIANCE_IP)}:5060 -> \S+\s*\nBYE sip:", trace) is not None


def rtpengine_calls(host: Host) -> list[str]:
    """Call-IDs the appliance's rtpengine holds (asked inside its namespace)."""
    code = (
        "from pbx.rtpengine import NgClient\n"
        "for c in NgClient('127.0.0.1', 2223).list_calls(): print(c)"
    )
    done = host.run([sys.executable, "-c", code], cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return [c for c in done.stdout.splitlines() if c]


def edge_pids(srv: Server) -> dict[str, int]:
    state = Path(srv.config["state_dir"])
    return {
        name: int((state / name / f"{name}.pid").read_text().strip())
        for name in ("kamailio", "rtpengine")
    }


def test_kill_9_ends_every_call_with_a_bye_and_a_restart_answers_at_once(
    server_factory, phone, crash_net, tmp_path, records_spec, db_link
):
    """A 3-leg conference (two of our softphones, one baresip, on the LAN and
    behind the NAT) whose moderator dialed out to the provider: kill -9 of
    the app server. Every phone and the provider get a BYE within 10 s,
    rtpengine holds none of their media any more. The restarted app server
    (the same node) adopts Kamailio and rtpengine and answers a new call
    within 3 s; the caller hears the prompt, then the moderator's tone. The
    calls cut by the kill have their records. With the records on SQLite,
    then on PostgreSQL."""
    net = crash_net
    node = ["--node", "appliance"]
    database = db_link(net.appliance, records_spec)
    srv = server_factory(
        netns=net.appliance.name, extra_args=node, database=database, **crash_config()
    )
    guest = provider_phone(
        phone, net, "wait_media 5; tone 900; wait_end 60", extra=["--answer", "--max-seconds", "90"]
    )
    mod = phone_on(
        phone,
        net.lan[0],
        "1001",
        "wait_media 5; dtmf 9999#; tone 700; wait 1; dtmf *1; wait 1; "
        "dtmf 212133334444#; wait 1; dtmf 1; mark dialed; wait_end 60",
        "conf-en",
        extra=["--max-seconds", "90"],
    )
    part = phone_on(
        phone,
        net.nat[0],
        "1002",
        "wait_media 5; wait 1; dtmf 1111#; tone 440; wait_end 60",
        "conf",
        extra=["--max-seconds", "90"],
    )
    with Baresip(
        net.lan[1], tmp_path / "baresip", account=baresip_account("1003"), tone_hz=600
    ) as bs:
        bs.wait_event("REGISTER_OK")
        bs.dial("conf")
        bs.wait_event("CALL_ESTABLISHED")
        bs_answered = time.monotonic()
        time.sleep(1.5)
        bs.sndcode("1111#")
        # Three conference legs and the trunk leg to the provider's guest.
        wait_for(lambda: legs(srv) >= 4, 30, message=f"legs up: {legs(srv)}\n{srv.log()[-3000:]}")
        time.sleep(2.0)  # the guest answered and talks
        assert len(rtpengine_calls(net.appliance)) == 4
        pids = edge_pids(srv)

        bs_closed = closed_at(bs, 30)
        killed = time.monotonic()
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(10)
        rm, rp, rg = mod.result(), part.result(), guest.result()
        wait_for(lambda: "at" in bs_closed, BYE_WITHIN + 5, message="baresip got no BYE")
        byes = {
            "moderator (LAN)": rm["ended_at"] - killed,
            "participant (NAT)": rp["ended_at"] - killed,
            "provider's guest (trunk)": rg["ended_at"] - killed,
            "baresip (LAN)": bs_closed["at"] - killed,
        }
        print("BYE after kill -9:", {k: f"{v:.2f} s" for k, v in byes.items()})
        for who, rep in (("moderator", rm), ("participant", rp), ("guest", rg)):
            assert rep["hung_up_by"] == "remote" and "end_timeout" not in rep, (who, rep)
        assert all(0 < t < BYE_WITHIN for t in byes.values()), byes
        assert bye_received(bs), bs.log_text()[-3000:]
        # Their media is gone from rtpengine (no delete-delay for these).
        wait_for(lambda: not rtpengine_calls(net.appliance), 3, message="rtpengine kept media")
        # The edge outlived the app server.
        assert edge_pids(srv) == pids
        assert all(running(pid) for pid in pids.values())

    answered_at = {
        "1001": rm["confirmed_at"],
        "1002": rp["confirmed_at"],
        "1003": bs_answered,
        "dial-out": rg["confirmed_at"],
    }
    # The restart: phones call as soon as the new process starts. An INVITE
    # that reaches the app server before its SIP socket is bound is answered
    # at a retransmission (0.5 s, then 1 s later): the moderator stays 6 s, so
    # the participant shares the room with it even then.
    restarted = time.monotonic()
    mod2 = phone_on(
        phone, net.lan[0], "1001", "wait_media 5; wait 1.5; dtmf 9999#; tone 700; wait 6", "conf-en"
    )
    part2 = phone_on(
        phone, net.nat[0], "1002", "wait_media 5; wait 2.5; dtmf 1111#; wait 3; hangup", "conf"
    )
    assert srv.restart(extra_args=node) == 0
    check_crash_records(srv, killed, answered_at)
    rm2, rp2 = mod2.result(), part2.result()
    assert "error" not in rm2 and "error" not in rp2, (rm2, rp2)
    answered = rm2["confirmed_at"] - restarted
    print(f"new call answered {answered:.2f} s after the restart")
    assert answered < ANSWER_WITHIN, answered
    samples, rate = audio.load(mod2.record)
    pin = rm2["digits_sent"][0][2]
    prompt = audio.segment(samples, rate, *window(rm2, rm2["media_at"] + 0.2, pin))
    assert audio.speech_like(prompt, rate), "the new caller hears the entry prompt"
    room = (hash_time(rp2) + 1.0, rp2["hangup_sent_at"] - 0.3)
    assert heard(part2, rp2, *room, 700) > 0.3, "and the room works: the moderator's tone"
    log = srv.log()
    for name, pid in pids.items():
        assert f"{name} (pid {pid}), left by a ponte that died, adopted" in log
    assert edge_pids(srv) == pids


def test_a_long_call_outlives_its_keepalives_and_a_crash_spares_extension_calls(
    server_factory, phone, crash_net
):
    """A healthy conference call stays up through more than three of the
    dialog module's in-dialog OPTIONS to the app server, its audio whole to
    the end. Meanwhile a call between two extensions (which never touches
    the app server) goes on through a kill -9 of the app server and its
    restart, both ways, with no BYE: Kamailio and rtpengine outlived it and
    the new app server adopted them."""
    net = crash_net
    srv = server_factory(netns=net.appliance.name, **crash_config())
    long = KA_INTERVAL * 3 + KA_TIMER + 5  # past a 3rd keep-alive on any tick
    limit = ["--max-seconds", str(long + 60)]
    callee = phone_on(
        phone,
        net.nat[1],
        "1005",
        "wait_media 8; tone 500; wait_end 200",
        extra=["--answer", *limit],
    )
    wait_for(lambda: registered(srv, "1005"), 10, message="1005 did not register")
    # Up through the conference call, the kill and the restart (about 12 s).
    caller = phone_on(
        phone,
        net.lan[2],
        "1004",
        f"wait_media 8; tone 800; wait {long + 25}; hangup",
        "1005",
        extra=limit,
    )
    mod, part = conference(phone, net, long, until="wait")  # then each hangs up
    before = uac_transactions(srv)
    rm, rp = mod.result(timeout=long + 60), part.result(timeout=long + 60)
    assert rm["hung_up_by"] == "local" and rp["hung_up_by"] == "local", (rm, rp)
    up = rp["hangup_sent_at"] - hash_time(rp)
    assert up > 3 * KA_INTERVAL, up
    # Kamailio sent its keep-alives (local requests: OPTIONS to the app
    # server's side of each of the two conference dialogs) and they were
    # answered: nobody was cut, and the audio held to the end.
    assert uac_transactions(srv) - before >= 2 * 3, uac_transactions(srv)
    # Until the first of them hangs up (the moderator, usually: it keyed first).
    end = min(rp["hangup_sent_at"], rm["hangup_sent_at"]) - 0.5
    last = (end - 5.5, end)
    assert heard(part, rp, *last, 700) > 0.3
    assert heard(mod, rm, *last, 440) > 0.3
    samples, rate = audio.load(part.record)
    # From when both are in the room: before, the participant hears music.
    both = max(hash_time(rp), hash_time(rm)) + 1.5
    whole = audio.segment(samples, rate, *window(rp, both, last[1]))
    assert audio.longest_gap(whole, rate, 700) < 0.5

    # Now the crash, with the extension call up.
    killed = time.monotonic()
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    time.sleep(3)
    restarted = time.monotonic()
    assert srv.restart() == 0
    rc, rb = caller.result(timeout=60), callee.result(timeout=60)
    assert rc["hung_up_by"] == "local" and rb["hung_up_by"] == "remote", (rc, rb)
    assert rb["ended_at"] > restarted + 2.5, "the extension call ended before its time"
    for proc, rep, hz in ((caller, rc, 500), (callee, rb, 800)):
        assert heard(proc, rep, killed + 0.5, restarted, hz) > 0.3, "through the crash"
        assert heard(proc, rep, restarted + 0.5, restarted + 2.5, hz) > 0.3, "and the restart"


def registered(srv: Server, user: str) -> bool:
    from tests.pbx_helpers import wait_registered

    try:
        wait_registered(srv, user, timeout=0.2)
    except AssertionError:
        return False
    return True


def uac_transactions(srv: Server) -> int:
    """Requests Kamailio itself sent (tmx's UAC_transactions counter)."""
    from pbx.kamailio import kamcmd

    out = kamcmd(Path(srv.config["state_dir"]) / "kamailio", "stats.get_statistics", "tmx:")
    m = re.search(r"UAC_transactions\s*=\s*(\d+)", out.stdout)
    assert m, out.stdout + out.stderr
    return int(m.group(1))


# -- the systemd shape: Kamailio and rtpengine are units of their own ---------


def unit_command(unit: str, key: str, config_path: Path) -> list[str]:
    """argv of a unit's `key=` line (ExecStart, ExecStopPost) as `ponte
    install` renders it, on our config file, unescaped as systemd does."""
    from ponte.install import ponte_binary, render_unit

    line = next(
        ln.split("=", 1)[1]
        for ln in render_unit(unit, ponte_binary()).splitlines()
        if ln.startswith(f"{key}=")
    )
    line = line.lstrip("-").replace("$$", "$").replace("%%", "%")
    return shlex.split(line.replace("/etc/ponte/ponte.yaml", str(config_path)))


def unit_env() -> dict[str, str]:
    # This checkout's code, whatever the venv's editable install points at.
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def systemd_appliance(server_factory, net) -> Server:
    """The app server as ponte.service runs it (--no-kamailio), with
    ponte-rtpengine.service's and ponte-kamailio.service's commands beside
    it in the appliance's namespace."""
    srv = server_factory(netns=net.appliance.name, extra_args=["--no-kamailio"], **crash_config())
    for unit in ("ponte-rtpengine.service", "ponte-kamailio.service"):
        net.appliance.popen(
            unit_command(unit, "ExecStart", srv.config_path),
            cwd=ROOT,
            env=unit_env(),
            stdout=subprocess.DEVNULL,
            stderr=(srv.log_path.parent / f"{unit}.log").open("w"),
        )
    wait_for(
        lambda: "kamailio is up (ponte-kamailio.service)" in srv.log(),
        15,
        message=f"the units did not come up:\n{srv.log()[-2000:]}",
    )
    return srv


def check_crash_records(srv: Server, killed: float, answered_at: dict[str, float]) -> None:
    """After the restart: a history row for every call that was up at the
    kill (`ended_by: crash`), its duration within 10 s of the truth; the
    room's session closed and billed up to its last checkpoint."""
    crashed = [r for r in report(srv, "calls") if r["ended_by"] == "crash"]
    by_who = {
        "dial-out" if r["destination"].endswith("33334444") else r["origin"]: r for r in crashed
    }
    truth = {who: killed - at for who, at in answered_at.items()}
    print("crash rows:", {w: (r["duration"], round(truth[w], 2)) for w, r in by_who.items()})
    assert len(crashed) == len(answered_at) and set(by_who) == set(answered_at), crashed
    for who, row in by_who.items():
        assert row["disposition"] == "answered", row
        assert truth[who] - 10 <= row["duration"] <= truth[who] + 1, (who, row, truth[who])
    # The crashed one: the phones that call after the restart may already
    # have opened the room's next session when the report is read.
    sessions = [
        s for s in report(srv, "conferences") if s["room"] == "demo" and s["ended_by"] == "crash"
    ]
    assert len(sessions) == 1, sessions
    s = sessions[0]
    print("crashed session:", s)
    assert s["ended_at"] and s["ended_by"] == "crash" and s["legs"] == 3, s
    # Up to one checkpoint short per leg (rooms are entered after the PIN).
    room_seconds = sum(truth[w] for w in ("1001", "1002", "1003"))
    assert room_seconds - 3 * 10 <= s["participant_minutes"] * 60 <= room_seconds, s
    assert s["billed_minutes"] >= 3, s


def conference(phone, net, seconds: int, until: str = "wait_end"):
    """A moderator on the LAN (700 Hz) and a participant behind the NAT
    (440 Hz), each in the room for `seconds`: until the server ends the call
    (`wait_end`), or then hanging up (`wait`)."""
    limit = ["--max-seconds", str(seconds + 30)]
    mod_script = f"wait_media 5; dtmf 9999#; tone 700; {until} {seconds}"
    part_script = f"wait_media 5; wait 1; dtmf 1111#; tone 440; {until} {seconds}"
    mod = phone_on(phone, net.lan[0], "1001", mod_script, "conf", extra=limit)
    part = phone_on(phone, net.nat[0], "1002", part_script, "conf", extra=limit)
    return mod, part


def test_under_systemd_exec_stop_post_ends_the_calls_of_a_killed_app_server(
    server_factory, phone, crash_net
):
    """ponte.service killed (-9) with a conference up: its ExecStopPost line
    (run as systemd runs it once the main process is gone) has the
    still-running ponte-kamailio end both legs with a BYE within 10 s; the
    restarted service answers a new call at once."""
    net = crash_net
    srv = systemd_appliance(server_factory, net)
    mod, part = conference(phone, net, 60)
    wait_for(lambda: legs(srv) >= 2, 20, message=srv.log()[-3000:])
    time.sleep(1.0)
    killed = time.monotonic()
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    post = net.appliance.run(
        unit_command("ponte.service", "ExecStopPost", srv.config_path), cwd="/", env=unit_env()
    )
    assert post.returncode == 0 and "ended 2 dialogs" in post.stderr, post.stderr
    rm, rp = mod.result(), part.result()
    byes = {
        "moderator (LAN)": rm["ended_at"] - killed,
        "participant (NAT)": rp["ended_at"] - killed,
    }
    print("BYE after kill -9 (systemd shape):", {k: f"{v:.2f} s" for k, v in byes.items()})
    assert rm["hung_up_by"] == "remote" and rp["hung_up_by"] == "remote", (rm, rp)
    assert all(0 < t < BYE_WITHIN for t in byes.values()), byes
    restarted = time.monotonic()
    again = phone_on(phone, net.lan[0], "1001", "wait_media 5; wait 1.5; hangup", "conf")
    assert srv.restart(extra_args=["--no-kamailio"]) == 0
    ra = again.result()
    assert "error" not in ra and ra["confirmed_at"] - restarted < ANSWER_WITHIN, ra


def test_a_restart_nobody_reported_is_caught_by_the_keepalives(server_factory, phone, crash_net):
    """The systemd shape without the ExecStopPost: the app server killed and
    at once restarted, so Kamailio never hears of it. The dialog module's
    next in-dialog OPTIONS to the app server's side get 481 from the new
    one; after KA_FAILED_LIMIT of them Kamailio ends the dialog: a BYE to
    each phone, within two keep-alive intervals and the module's 10 s."""
    net = crash_net
    srv = systemd_appliance(server_factory, net)
    bound = KA_FAILED_LIMIT * (KA_INTERVAL + KA_TIMER) + 10 + 5
    mod, part = conference(phone, net, bound + 30)
    wait_for(lambda: legs(srv) >= 2, 20, message=srv.log()[-3000:])
    up = time.monotonic()
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    assert srv.restart(extra_args=["--no-kamailio"]) == 0
    rm, rp = mod.result(timeout=bound + 60), part.result(timeout=bound + 60)
    ends = {"moderator": rm["ended_at"] - up, "participant": rp["ended_at"] - up}
    print("BYE after an unreported restart, from the call's set-up:", ends)
    assert rm["hung_up_by"] == "remote" and rp["hung_up_by"] == "remote", (rm, rp)
    assert all(KA_INTERVAL < t < bound for t in ends.values()), (ends, bound)


# -- the embedded shape: what becomes of an edge nobody adopts ----------------


def test_an_orphaned_edge_ends_its_calls_then_leaves_when_nobody_adopts_it(server_factory, phone):
    """`ponte serve` killed and never restarted: its guard ends the app
    server's dialog at once, and after the linger (here 3 s) stops Kamailio
    and rtpengine; nothing of the edge is left running. A ponte stopped
    cleanly leaves nothing either, guards included."""
    from tests import ports
    from tests.pbx_helpers import pbx_overrides, proxy, register

    srv = server_factory(env={"PONTE_EDGE_LINGER": "3"}, **pbx_overrides())
    pids = edge_pids(srv)
    call = phone(
        f"sip:conf@{proxy(srv)}",
        "wait_media 5; dtmf 9999#; wait_end 30",
        record=False,
        bind=ports.loopback_ip(),
        extra=register("1001", srv),
    )
    wait_for(lambda: legs(srv) >= 1, 10)
    killed = time.monotonic()
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    r = call.result()
    assert r["hung_up_by"] == "remote" and r["ended_at"] - killed < BYE_WITHIN, r
    wait_for(lambda: not edge_processes(srv), 10, message=f"left: {edge_processes(srv)}")
    assert time.monotonic() - killed > 3
    assert not any(running(pid) for pid in pids.values())  # (a zombie until init reaps it)

    srv.restart()
    assert edge_processes(srv), "a fresh edge"
    srv.stop()
    wait_for(lambda: not edge_processes(srv), 3, message=f"left: {edge_processes(srv)}")


def edge_processes(srv: Server) -> list[str]:
    """Command lines of what runs from this server's state folder (edge
    processes and their guards)."""
    state = str(Path(srv.config["state_dir"]).resolve()).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if state in cmd and stat.rpartition(")")[2].split()[0] != "Z":
                found.append(cmd.replace(b"\0", b" ").decode(errors="replace"))
    return found
