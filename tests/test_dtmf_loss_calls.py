"""A PIN of repeated digits gets through when each digit's first RTP packet
is lost (pjproject patch 0013).

Over Opus (RTP clock 48 kHz) a pjmedia phone sends a DTMF digit as one
RFC 4733 packet and three end packets. pjmedia's receiver took a packet for
the digit before whenever the digit was the same and its duration had not
gone down: lose the one packet of the second "1" of "1111#" and its end
packets counted as the first "1"'s, so the PIN failed. A loaded test run
showed it: one caller of six lost a digit of 1111 and the app server counted
one lost packet on that leg. RFC 4733 gives every packet of an event the
event's start timestamp, and the patched receiver goes by it.

A phone behind NAT calls the access number through Kamailio and rtpengine
on Opus; tests/udprelay.py, in the phone's namespace, drops the first packet
of every event it sends. Its PIN 1111# must open the room.
"""

from __future__ import annotations

from tests import udprelay
from tests.netns import APPLIANCE_IP, Topology, net_fixture  # noqa: F401
from tests.test_edge_calls import appliance, softphone

OPUS_PHONE = ["--clock-rate", "16000", "--codecs", "opus/48000", "--opus-rate", "16000"]


def test_a_pin_of_repeated_digits_survives_losing_each_digits_first_packet(
    server_factory, phone, net: Topology
):
    sip = {
        "listen": "127.0.0.1:5080",
        "rtp_ports": "40000-40199",
        "clock_rate": 16000,
        "codecs": ["opus/48000", "PCMU/8000"],
    }
    srv = appliance(server_factory, net, sip=sip)
    host = net.nat[0]
    relay, _ = udprelay.interpose(
        host, APPLIANCE_IP, srv.config["pbx"]["media_ports"], 0.0, 60, drop_event_starts=True
    )
    caller = softphone(
        phone,
        host,
        "1002",
        "wait_media 5; wait 1; dtmf 1111#; wait 3; hangup",
        "conf",
        extra=OPUS_PHONE,
    )
    rep = caller.result()
    c = udprelay.counts(relay)
    print("relay:", c)
    assert "error" not in rep, rep
    assert rep["rx"]["codec"] == "opus", rep["rx"]
    # All five digits went through the relay, each without its first packet.
    assert c["events_dropped"] == 5, c
    log = srv.log()
    assert "pin ok room=demo role=participant (try 1)" in log, log[-3000:]
    assert "pin failed" not in log
