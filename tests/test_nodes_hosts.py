"""Two app-server nodes as machines of their own (issue 19): each node in a
network namespace on the edge's private network (tests/netns.py br-back),
sharing nothing but the database and the edge. The edge (`ponte serve` on
the one YAML, whose `nodes:` lists both) runs Kamailio and rtpengine in the
appliance's namespace; each node runs `ponte serve --node NAME` in its own,
taking its SIP address from the same file. Phones are on the LAN and behind
the NAT; one of them is baresip.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pbx.kamailio import kamcmd
from tests import audio
from tests.harness import ROOT, Server, report, serve_command
from tests.netns import APPLIANCE_BACK_IP, APPLIANCE_IP, Host, Topology, topology
from tests.pglink import db_link_fixture  # noqa: F401  (fixture `db_link`)
from tests.test_crash import baresip_account, phone_on, wait_for
from tests.test_edge_calls import edge_config, heard
from tests.test_nodes_edge import dispatcher_state

SIP_PORT = 5080
# Another machine on the nodes' network: neither the edge nor a node.
STRANGER_IP = "198.51.100.130"
SDP = (
    f"v=0\r\no=- 1 1 IN IP4 {STRANGER_IP}\r\ns=-\r\nc=IN IP4 {STRANGER_IP}\r\nt=0 0\r\n"
    "m=audio 17000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


@pytest.fixture
def hosts_net():
    """Two LAN phones, a NAT phone, and two node machines."""
    with topology(lan_phones=2, nat_phones=1, attacker=False, nodes=2) as t:
        yield t


def node_uri(host: Host) -> str:
    return f"sip:{host.ip}:{SIP_PORT}"


def start_edge(server_factory, net: Topology, database: str) -> Server:
    """The edge alone, in front of the YAML's two nodes."""
    cfg: dict[str, Any] = edge_config()
    cfg["pbx"]["internal_listen"] = f"{APPLIANCE_BACK_IP}:5060"
    cfg["nodes"] = [
        {"name": name, "listen": f"{h.ip}:{SIP_PORT}"}
        for name, h in zip("ab", net.nodes, strict=True)
    ]
    cfg["database"] = database
    return server_factory(netns=net.appliance.name, **cfg)


def start_node(edge: Server, host: Host, name: str, tmp: Path) -> Server:
    """`ponte serve --node NAME` on the edge's YAML, in the node's namespace;
    its own state folder and control socket, as on a machine of its own."""
    tmp.mkdir()
    log_path = tmp / "server.log"
    control = tmp / "control.sock"
    argv = serve_command(
        edge.config_path,
        host.name,
        extra_args=["--node", name, "--state-dir", str(tmp / "state")]
        + ["--control-socket", str(control)],
    )
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_path.open("w"))
    node = Server(proc, edge.config_path, edge.config, SIP_PORT, control, log_path, host.name)
    wait_for(lambda: proc.poll() is not None or _answers(node), 20, message=f"node {name}")
    if proc.poll() is not None:
        raise RuntimeError(f"node {name} exited {proc.returncode}:\n{node.log()}")
    return node


def _answers(node: Server) -> bool:
    try:
        node.status()
    except OSError:
        return False
    return True


@pytest.fixture
def cluster(server_factory, hosts_net, pg_url, db_link, tmp_path):
    """The edge and nodes a and b, once the dispatcher holds both active."""
    net = hosts_net
    database = db_link(net.appliance, pg_url)
    for h in net.nodes:
        db_link(h, pg_url)
    edge = start_edge(server_factory, net, database)
    nodes = {}
    try:
        for name, h in zip("ab", net.nodes, strict=True):
            nodes[name] = start_node(edge, h, name, tmp_path / f"node-{name}")
        wait_for(
            lambda: dispatcher_state(edge) == {node_uri(h): "A" for h in net.nodes},
            10,
            0.1,
            message=edge.log()[-3000:],
        )
        yield net, edge, nodes
    finally:
        for node in nodes.values():
            node.stop()


def serving(nodes: dict[str, Server], line: str) -> str:
    """The node whose log has `line` (waits for it)."""
    return wait_for(
        lambda: next((n for n, s in nodes.items() if line in s.log()), None),
        15,
        message="\n".join(s.log()[-2000:] for s in nodes.values()),
    )


def test_callers_on_two_node_machines_key_one_pin_and_hear_each_other(cluster, phone, tmp_path):
    """The moderator (our softphone, LAN) and a participant (baresip, behind
    the NAT) call the same access number: the dispatcher's round-robin puts
    them on different machines. Both key the room's PIN; the participant is
    handed to the room's node over the private network, and each hears the
    other (tone FFT both ways). The phones only ever see the edge's address."""
    from tests.baresip import Baresip

    net, edge, nodes = cluster
    mod = phone_on(
        phone,
        net.lan[0],
        "1001",
        "wait_media 5; dtmf 9999#; wait 1; tone 700; wait 16; hangup",
        "conf",
    )
    home = serving(nodes, "join room=demo role=moderator")
    account = baresip_account("1002")
    with Baresip(net.nat[0], tmp_path / "baresip", account=account, tone_hz=440) as bs:
        bs.wait_event("REGISTER_OK")
        bs.dial("conf")
        bs.wait_event("CALL_ESTABLISHED")
        up = time.monotonic()
        time.sleep(2.0)
        bs.sndcode("1111#")
        pin_at = time.monotonic() - up
        entered = serving(nodes, "incoming from=1002")
        time.sleep(7.0)
        bs.hangup()
        bs.wait_event("CALL_CLOSED")
        talked = time.monotonic() - up
        heard_path = bs.recording()
        trace = bs.log_text(tail=400_000)
    rm = mod.result()
    assert "error" not in rm, rm
    other = next(n for n in nodes if n != home)
    assert entered == other, "round-robin put the second caller on the other machine"
    assert f"handed off to {home}" in nodes[other].log(), nodes[other].log()[-3000:]
    assert "hand-off from" in nodes[home].log()
    assert "join room=demo role=participant members=2" in nodes[home].log()
    # The participant hears the moderator's tone, from 1.5 s after its PIN.
    samples, rate = audio.load(heard_path)
    part = audio.segment(samples, rate, pin_at + 1.5, talked - 0.5)
    assert audio.band_fraction(part, rate, 700) > 0.2, audio.band_fraction(part, rate, 700)
    # And the moderator hears the participant's.
    assert heard(mod, rm, up + pin_at + 1.5, up + talked - 0.5, 440) > 0.2
    # baresip was told the edge's LAN address for media, never a node's.
    answers = [m for m in re.split(r"UDP \S+ -> \S+\n", trace) if m.startswith("SIP/2.0 200 OK")]
    assert answers and all(
        set(re.findall(r"c=IN IP4 (\S+)", m)) <= {APPLIANCE_IP} for m in answers
    ), answers[:1]
    # Both calls in the one shared history, each on the node it entered.
    rows = wait_for(
        lambda: (
            (r := [x for x in report(edge, "calls") if x["call_type"] == "conference"])
            and len(r) == 2
            and r
        ),
        10,
    )
    assert sorted(r["origin"] for r in rows) == ["1001", "1002"], rows


def test_a_node_machine_killed_mid_conference_drops_only_its_calls(cluster, phone):
    """Room demo on one machine, room other on the other; kill -9 of the
    first: the edge sees it stop answering and ends its caller's call (BYE);
    the other room's two members go on hearing each other; the number's next
    caller is answered by the survivor within 5 s, and re-homes room demo."""
    net, edge, nodes = cluster
    first = phone_on(phone, net.lan[0], "1001", "wait_media 5; dtmf 9999#; wait_end 60", "conf")
    doomed = serving(nodes, "join room=demo role=moderator")
    survivor = next(n for n in nodes if n != doomed)
    # Room other: two members whose calls both entered on the survivor. The
    # round-robin alternates, so a short call in between takes the doomed
    # node's turn.
    talk = "wait_media 5; dtmf {pin}#; wait 1; tone {hz}; wait 30; hangup"
    a = phone_on(phone, net.nat[0], "1002", talk.format(pin="8888", hz=500), "conf")
    wait_for(
        lambda: "join room=other role=moderator" in nodes[survivor].log(),
        15,
        message="\n".join(s.log()[-3000:] for s in nodes.values()),
    )
    spacer = phone_on(phone, net.lan[1], "1003", "wait_media 5; hangup", "conf", record=False)
    assert "error" not in spacer.result()
    assert "incoming from=1003" in nodes[doomed].log()
    b = phone_on(phone, net.lan[1], "1003", talk.format(pin="2222", hz=900), "conf")
    wait_for(lambda: "join room=other role=participant" in nodes[survivor].log(), 15)
    time.sleep(3)
    killed = time.monotonic()
    nodes[doomed].proc.send_signal(signal.SIGKILL)
    nodes[doomed].proc.wait(10)
    # The number's next caller, a second later: the survivor answers (the
    # dispatcher fails an unanswered INVITE over), and room demo moves there.
    time.sleep(1.0)
    nxt = phone_on(
        phone, net.lan[1], "1004", "wait_media 5; wait 2; dtmf 9999#; wait 3; hangup", "conf"
    )
    rf, rn = first.result(), nxt.result()
    assert rf["hung_up_by"] == "remote", rf
    bye = rf["ended_at"] - killed
    answered = rn["confirmed_at"] - killed
    ra, rb = a.result(), b.result()
    print(
        f"node {doomed} killed: its caller got BYE after {bye:.2f} s; the next caller was "
        f"answered by {survivor} after {answered:.2f} s"
    )
    # The times are printed (speed is bench/'s); the behaviour: the edge
    # ended the dead machine's call, and the survivor took the next one.
    assert "error" not in rn, rn
    assert "join room=demo role=moderator members=1" in nodes[survivor].log()
    assert "handed off" not in nodes[survivor].log(), "room other lived on the survivor alone"
    # Room other was never touched: each member heard the other throughout.
    assert heard(a, ra, killed - 2, killed + 10, 900) > 0.3
    assert heard(b, rb, killed - 2, killed + 10, 500) > 0.3
    assert edge.proc.poll() is None


def test_a_reload_at_the_edge_reaches_the_nodes_on_other_machines(cluster):
    """The one YAML lives with the edge: a reload there publishes it in the
    database, and each node reloads from it within a few seconds (its own
    SIP address and folders kept). A broken file is refused at the edge and
    reaches no node."""
    from ponte.control import request

    _net, edge, nodes = cluster
    data = yaml.safe_load(edge.config_path.read_text())
    data["rooms"] = [
        *data["rooms"],
        {"name": "third", "participant_pin": "3333", "moderator_pin": "7777"},
    ]
    # A number for the new room alone: the edge hashes its callers to one node.
    data["access_numbers"] = [*data["access_numbers"], {"user": "third-line", "room": "third"}]
    edge.config_path.write_text(yaml.safe_dump(data))
    runtime = Path(edge.config["state_dir"]) / "kamailio"
    assert "third-line" not in kamcmd(runtime, "htable.dump", "roomnum").stdout
    assert request(edge.control, "reload").get("ok"), edge.log()[-2000:]
    for node in nodes.values():
        wait_for(
            lambda n=node: re.search(r"by edge: \d+ objects changed; 3 rooms", n.log()),
            10,
            message=node.log()[-2000:],
        )
    # Kamailio took the new one-room number live, no restart.
    assert "third-line" in kamcmd(runtime, "htable.dump", "roomnum").stdout
    edge.config_path.write_text("rooms: [\n")
    answer = request(edge.control, "reload")
    assert not answer.get("ok"), answer
    time.sleep(3)
    for node in nodes.values():
        assert node.log().count("reloaded") == 1, node.log()[-2000:]
        assert node.proc.poll() is None


def test_a_node_takes_new_calls_only_from_the_edge_and_the_other_nodes(cluster):
    """Attack: a node's SIP faces the nodes' network. An INVITE from another
    machine there (a second address on the appliance's inner link, not the
    edge's), even one dressed as a hand-off, is refused with 403 before
    anything else reads it, and nobody joins a room."""
    net, _edge, nodes = cluster
    a_host = net.nodes[0]
    net.appliance.run(["ip", "addr", "add", f"{STRANGER_IP}/25", "dev", "eth1"], check=True)
    stranger = net.appliance.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind((STRANGER_IP, 0))
    port = stranger.getsockname()[1]
    try:
        for call_id, user, extra, sdp in (
            ("plain", "conf", "", SDP),
            ("dressed", "handoff", "X-Ponte-Room: demo\r\nX-Ponte-Role: moderator\r\n", SDP),
            # Without SDP (a delayed offer): refused inside pjsua's incoming
            # callback, this once aborted the whole process (pbx/sipua.py).
            ("delayed", "conf", "", ""),
        ):
            invite = (
                f"INVITE sip:{user}@{a_host.ip}:{SIP_PORT} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {STRANGER_IP}:{port};branch=z9hG4bK-{call_id}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:evil@{STRANGER_IP}>;tag={call_id}\r\n"
                f"To: <sip:{user}@{a_host.ip}>\r\nCall-ID: {call_id}@stranger\r\n"
                f"CSeq: 1 INVITE\r\nContact: <sip:evil@{STRANGER_IP}:{port}>\r\n"
                f"{extra}Content-Type: application/sdp\r\n"
                f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
            )
            stranger.sendto(invite.encode(), (a_host.ip, SIP_PORT))
    finally:
        stranger.close()
    refused = "is neither the edge nor a node (403)"
    wait_for(lambda: nodes["a"].log().count(refused) >= 3, 10, message=nodes["a"].log()[-2000:])
    time.sleep(1.0)  # the refusals go out on the loop's next turn
    assert "join room=" not in nodes["a"].log() and "hand-off from" not in nodes["a"].log()
    assert nodes["a"].proc.poll() is None
