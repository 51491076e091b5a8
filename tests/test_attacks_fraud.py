"""Toll fraud: SIPp dialing forbidden numbers with a real extension's credentials
at 03:00; forged mid-dialog requests; Kamailio as a relay; a Record-Route token
copied into another dialog (the attack suite: tests/attack_helpers.py)."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

from tests import ports
from tests.attack_helpers import (
    ATTACKS,
    OpenRelay,
    ServerFactory,
    headers_of,
    hostport,
    local_of,
    provider_invites,
    recv_all,
    request,
    status_line,
    udp_socket,
    wait_for,
)
from tests.harness import Server
from tests.netns import net_fixture  # noqa: F401  (the fixture `net`)
from tests.pbx_helpers import PASSWORDS, Provider, pbx_overrides, proxy

AT_3AM = "2026-11-24T03:00:00-03:00"  # a Tuesday night, no holiday
FORBIDDEN = {
    "0015442079460000": "international",  # London, carrier 15
    "002112025550123": "international",  # Washington, carrier 21
    "0021537834123": "international",  # Havana
    "0014882161234567": "international",  # Iridium satellite (+881 6)
    "0021491701234567": "international",  # a German mobile
    "09001234567": "premium",
    "09005551234": "premium",
    "0500123456": "premium",
}
# Dial strings that try to slip past the classification: refused some way or
# another, never placed.
EVASIONS = ["+442079460000", "00%31%35442079460000"]
ALLOWED = "02133334444"  # national fixed: the control that the trunk path works


def fraud_config(provider_port: int) -> dict:
    cfg = pbx_overrides(provider_port)
    cfg.update(
        {
            "lines": {"1001": {"area_code": "11", "profile": "sem_ddi"}},
            "profiles": {
                "sem_ddi": {
                    "limits": {
                        "local": "unlimited",
                        "regional": "unlimited",
                        "national": "unlimited",
                        "international": "blocked",
                        "premium": "blocked",
                    }
                }
            },
        }
    )
    return cfg


def sipp_dial(srv: Server, numbers: list[str], tmp: Path, tag: str) -> dict[str, list[int]]:
    """SIPp dials `numbers` as extension 1001 (digest auth) through Kamailio;
    returns the codes each number got (1xx included)."""
    csv = tmp / f"{tag}.csv"
    csv.write_text("SEQUENTIAL\n" + "".join(f"{n};1001;\n" for n in numbers))
    log = tmp / f"{tag}.log"
    done = subprocess.run(
        [
            "sipp",
            "-sf",
            str(ATTACKS / "dial_uac.xml"),
            "-inf",
            str(csv),
            "-i",
            ports.loopback_ip(),
            "-p",
            str(ports.allocate(1)),
            "-mp",
            str(ports.allocate(4)),
            "-au",
            "1001",
            "-ap",
            PASSWORDS["1001"],
            "-m",
            str(len(numbers)),
            "-l",
            str(len(numbers)),
            "-r",
            "4",
            "-nostdin",
            "-timeout",
            "40s",
            "-timeout_error",
            "-trace_logs",
            "-log_file",
            str(log),
            proxy(srv),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp,
    )
    codes: dict[str, list[int]] = {n: [] for n in numbers}
    for line in log.read_text().splitlines() if log.exists() else []:
        m = re.match(r"^(\S+) (\d{3})$", line.strip())
        if m and m.group(1) in codes:
            codes[m.group(1)].append(int(m.group(2)))
    assert done.returncode == 0, f"SIPp: {done.returncode}\n{done.stderr[-2000:]}\n{codes}"
    return codes


def test_toll_fraud_at_3am_is_refused_and_never_reaches_the_trunk(
    server_factory: ServerFactory, provider: Provider, tmp_path: Path
) -> None:
    """With 1001's password (as a fraudster would have it), SIPp dials
    international and premium numbers at 03:00 on a profile without them:
    each hears the refusal (183) and gets 403, and the provider sees no
    INVITE. Then an allowed number does reach the provider, so the silence
    means refused, not broken."""
    srv = server_factory(env={"PONTE_NOW": AT_3AM}, **fraud_config(provider.port))
    wait_for(lambda: "trunk:provider1 registration 200" in srv.log(), 15, "the trunk to register")
    codes = sipp_dial(srv, [*FORBIDDEN, *EVASIONS], tmp_path, "fraud")
    for number in FORBIDDEN:
        assert codes[number][-1:] == [403], (number, codes[number])
        assert 183 in codes[number], f"{number}: the refusal is spoken first"
    for number in EVASIONS:
        assert codes[number] and 400 <= codes[number][-1] < 500, (number, codes[number])
    time.sleep(0.5)
    assert provider_invites(provider) == [], "no forbidden call may reach the trunk"
    log = srv.log()
    for number, kind in FORBIDDEN.items():
        assert re.search(rf"number={number} type={kind} decision=deny rule=type", log), number

    control = sipp_dial(srv, [ALLOWED], tmp_path, "control")
    assert 200 in control[ALLOWED], control
    # The trunk gets it in its own form (E.164 here): the same subscriber number.
    (sent,) = [e.split("to=")[1] for e in provider_invites(provider)]
    assert sent.endswith(ALLOWED[1:]), sent


def test_forged_mid_dialog_requests_do_not_reach_the_trunk(
    server_factory: ServerFactory, provider: Provider
) -> None:
    """Unauthenticated INVITEs that dodge Kamailio's digest auth must still
    never become a call to the trunk: one that looks mid-dialog (a To tag,
    which skips auth) carrying a forged X-Ponte-Line for the app server, and
    one with a preloaded Route to Kamailio (the trunk providers' path)."""
    srv = server_factory(env={"PONTE_NOW": AT_3AM}, **pbx_overrides(provider.port))
    wait_for(lambda: "trunk:provider1 registration 200" in srv.log(), 15, "the trunk to register")
    kam_host, kam_port = hostport(proxy(srv))
    app = srv.config["sip"]["listen"]
    number = "0015442079460000"
    attempts = {
        # Claim to be extension 1001 to the app server, from inside a "dialog".
        "X-Ponte-Line via the app server": request(
            "INVITE",
            f"sip:{number}@{app}",
            "{local}",
            to_tag="forged",
            extra=(f"Route: <sip:{app};lr>", "X-Ponte-Line: 1001"),
        ),
        # A preloaded Route to Kamailio itself: the trunk-provider path, no auth.
        "preloaded Route to Kamailio": request(
            "INVITE",
            f"sip:{number}@{proxy(srv)}",
            "{local}",
            extra=(f"Route: <sip:{proxy(srv)};lr>",),
        ),
    }
    answers = {}
    for what, data in attempts.items():
        sock = udp_socket(ports.loopback_ip())
        sock.sendto(data.replace(b"{local}", local_of(sock).encode()), (kam_host, kam_port))
        answers[what] = [status_line(d) for d in recv_all(sock, 1.5)]
        sock.close()
    print(answers)
    assert provider_invites(provider) == [], answers
    for what, got in answers.items():
        assert not any(" 200 " in line for line in got), (what, got)


def test_kamailio_is_not_an_open_relay(server_factory: ServerFactory) -> None:
    """An unauthenticated INVITE that claims to be mid-dialog (a To tag) and
    carries Route: <sip:victim;lr> must not be forwarded to the victim. The
    victim is a plain UDP socket on loopback: a SIPp UAS would drop a request
    with an unknown To tag and hide the relay, a real IP-trusting peer might not."""
    srv = server_factory(**pbx_overrides())
    kam_host, kam_port = hostport(proxy(srv))
    victim = udp_socket("127.0.0.1")
    target = local_of(victim)
    attacker = udp_socket(ports.loopback_ip())
    forged = request(
        "INVITE",
        f"sip:0015442079460000@{target}",
        local_of(attacker),
        to_tag="forged",
        extra=(f"Route: <sip:{target};lr>",),
    )
    attacker.sendto(forged, (kam_host, kam_port))
    reached = recv_all(victim, 1.5)
    answers = [status_line(d) for d in recv_all(attacker, 0.2)]
    victim.close()
    attacker.close()
    if reached:
        via = headers_of(reached[0]).get("via", "")
        raise OpenRelay(
            f"Kamailio forwarded {status_line(reached[0])!r} to {target} (top Via {via!r}: "
            f"from the PBX's own address); the attacker got back {answers}"
        )


# -- Record-Route tokens are bound to their dialog (issue 16, item 2) -------------


def test_a_record_route_token_opens_no_other_dialog(server_factory, net) -> None:
    """A real call's Record-Route token, copied by a stranger into an INVITE
    of its own (a To tag, a Route to Kamailio, another Call-ID), is refused:
    the token is a hash of a secret over the dialog's Call-ID and caller tag,
    not one value for every call. Nothing reaches the provider."""
    from tests.test_edge_calls import (
        APPLIANCE_IP,
        PBX,
        PROVIDER_IP,
        PROVIDER_NAME,
        _invite_with_reply,
        edge_config,
        no_registration,
    )

    cfg = no_registration(edge_config(provider=True))
    net.hosts({PROVIDER_NAME: PROVIDER_IP})
    srv = server_factory(netns=net.appliance.name, **cfg)
    provider = net.provider.socket(socket.AF_INET, socket.SOCK_DGRAM)
    provider.bind((PROVIDER_IP, 5060))
    provider.settimeout(1.0)
    attacker = net.attacker.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind((net.attacker.ip, 5060))
    try:
        _ack, ok = _invite_with_reply(provider, "real-call")
        routes = re.findall(r"^Record-Route: <([^>]+)>", ok, re.MULTILINE | re.IGNORECASE)
        token = re.search(r";ponte=([0-9a-f]+)", routes[0])
        assert token, routes
        recv_all(provider, 0.5)  # the real call's retransmissions, if any
        forged = request(
            "INVITE",
            f"sip:0015442079460000@{PROVIDER_NAME}",
            f"{net.attacker.ip}:5060",
            to_tag="forged",
            extra=(f"Route: <sip:{PBX};lr;ftag=x;ponte={token.group(1)}>",),
        )
        attacker.sendto(forged, (APPLIANCE_IP, 5060))
        answers = [status_line(d) for d in recv_all(attacker, 1.5)]
        reached = [status_line(d) for d in recv_all(provider, 0.5)]
        assert any(" 403 " in a for a in answers), answers
        assert not any(r.startswith("INVITE") for r in reached), reached
        assert (
            "with a Route token not of its dialog, refused"
            in (Path(srv.config["state_dir"]) / "kamailio" / "kamailio.log").read_text()
        )
    finally:
        provider.close()
        attacker.close()
