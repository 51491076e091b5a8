"""Provisioning: good files load, bad ones are refused naming file, line, key."""

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from provisioning.loader import ConfigError, load_config, parse_config
from provisioning.schema import Config

ROOT = Path(__file__).resolve().parent.parent


def err(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    return info.value


def test_example_loads():
    cfg = load_config()
    demo = next(r for r in cfg.rooms if r.name == "demo")
    assert (demo.participant_pin, demo.moderator_pin) == ("1111", "9999")
    assert cfg.sip.listen == "127.0.0.1:5080"
    assert cfg.access_number("conf") is not None


def test_yaml_syntax_error_names_the_line():
    e = err("sip:\n  listen: 127.0.0.1:5080\nrooms: [\n  - name: x\n")
    assert e.file == "t.yaml" and e.line is not None and "syntax" in e.message


def test_unknown_key_names_line_and_key():
    e = err("sip:\n  listen: 127.0.0.1:5080\n  lisen: 1\n")
    assert (e.line, e.key, e.message) == (3, "sip.lisen", "unknown key")


def test_unquoted_pin_is_refused():
    e = err("rooms:\n  - name: a\n    participant_pin: 1111\n    moderator_pin: '9999'\n")
    assert e.key == "rooms.0.participant_pin" and e.line == 3 and "quoted" in e.message


def test_duplicate_pin_across_rooms_is_refused():
    e = err(
        "rooms:\n  - {name: a, participant_pin: '1111', moderator_pin: '9999'}\n"
        "  - {name: b, participant_pin: '1111', moderator_pin: '8888'}\n"
    )
    assert "already used" in e.message


def test_talker_gate_settings():
    """sip.talker_threshold_dbfs: -50 by default, null turns the gate off, and a
    threshold that would gate speech (or nothing at all) is refused."""
    assert (Config().sip.talker_threshold_dbfs, Config().sip.talker_hangover_ms) == (-50.0, 400)
    off = parse_config("sip: {talker_threshold_dbfs: null, talker_hangover_ms: 0}\n", "t.yaml")
    assert (off.sip.talker_threshold_dbfs, off.sip.talker_hangover_ms) == (None, 0)
    for bad in (
        "talker_threshold_dbfs: -10",
        "talker_threshold_dbfs: -120",
        "talker_hangover_ms: -1",
    ):
        assert err(f"sip: {{{bad}}}\n").key.startswith("sip.talker_"), bad


def test_shared_encode_setting():
    """sip.shared_encode: on by default; off only to measure or if a codec misbehaves."""
    assert Config().sip.shared_encode is True
    assert parse_config("sip: {shared_encode: false}\n", "t.yaml").sip.shared_encode is False
    assert err("sip: {shared_encode: sometimes}\n").key == "sip.shared_encode"


def test_jitter_discard_setting():
    """sip.jitter_discard: pjsua's progressive by default; static drops fewer
    frames at more delay; nothing else."""
    assert Config().sip.jitter_discard == "progressive"
    cfg = parse_config("sip: {jitter_discard: static}\n", "t.yaml")
    assert cfg.sip.jitter_discard == "static"
    assert err("sip: {jitter_discard: sometimes}\n").key == "sip.jitter_discard"


def test_sip_port_inside_rtp_range_is_refused():
    e = err("sip: {listen: '127.0.0.1:40010', rtp_ports: 40000-40999}\n")
    assert "inside" in e.message


def test_ponte_check_refuses_malformed_yaml_with_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "sip:\n  listen: 127.0.0.1:5080\nrooms:\n  - name: demo\n    participant_pin: [\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "ponte.cli", "check", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert f"{bad}:" in r.stderr and "syntax" in r.stderr
    good = subprocess.run(
        [sys.executable, "-m", "ponte.cli", "check"], cwd=ROOT, capture_output=True, text=True
    )
    assert good.returncode == 0 and "room       demo" in good.stdout


def _edge(listen: str, **pbx: object) -> Config:
    return Config.model_validate(
        {
            "pbx": {"listen": listen, **pbx},
            "extensions": [{"number": "1001", "name": "A", "password": "a-long-Secret-1"}],
        }
    )


def test_a_loopback_pbx_listen_is_explained_a_lan_one_says_what_to_open():
    from provisioning.advice import network_notes

    (level, note), *_ = network_notes(_edge("127.0.0.1:5060"))
    assert level == "warning" and "only phones on this host" in note
    notes = network_notes(_edge("198.51.100.1:5060", public_address="203.0.113.7"))
    text = " ".join(n for _, n in notes)
    assert "open UDP 5060 (SIP) and UDP 30000-39999" in text and "203.0.113.7" in text


def test_edge_addresses_are_validated():
    for bad, why in (
        ({"listen": "0.0.0.0:5060"}, "not 0.0.0.0"),
        ({"listen": "198.51.100.1:5060", "public_address": "127.0.0.1"}, "reachable by phones"),
        ({"listen": "198.51.100.1:5060", "rtpengine_control": "198.51.100.1:2223"}, "loopback"),
        ({"listen": "198.51.100.1:5060", "media_ports": "40100-40300"}, "overlaps"),
    ):
        with pytest.raises(ValidationError, match=why):
            _edge(**bad)  # type: ignore[arg-type]
    # Kamailio's loopback socket takes pbx.listen's port on 127.0.0.1.
    with pytest.raises(ValidationError, match="taken by Kamailio's loopback socket"):
        Config.model_validate(
            {
                "sip": {"listen": "127.0.0.1:5060"},
                "pbx": {"listen": "198.51.100.1:5060"},
                "extensions": [{"number": "1001", "name": "A", "password": "a-long-Secret-1"}],
            }
        )


def test_the_browsers_websocket_is_validated_and_explained():
    from provisioning.advice import network_notes

    lan = "198.51.100.1:5060"
    for bad, why in (
        ({"listen": "0.0.0.0:8089"}, "not 0.0.0.0"),
        ({"listen": "8089"}, "HOST:PORT"),
        ({"listen": "ws.lan:8089"}, "must be an IP address"),
        ({"listen": "198.51.100.1:70000"}, "out of range"),
        ({"listen": "198.51.100.1:5060"}, "pick another port"),
        ({"listen": "198.51.100.1:8089", "wss": True}, "Extra inputs"),
        ({"listen": "198.51.100.1:8089", "origins": ["conf.example.com"]}, "must be an origin"),
        ({"listen": "198.51.100.1:8089", "origins": ['https://a.b"; exit;']}, "must be an origin"),
        ({"listen": "198.51.100.1:8089", "origins": ["https://a.b/join"]}, "no path"),
    ):
        with pytest.raises(ValidationError, match=why):
            _edge(lan, websocket=bad)  # type: ignore[arg-type]
    notes = " ".join(
        n for _, n in network_notes(_edge(lan, websocket={"listen": "198.51.100.1:8089"}))
    )
    assert "open TCP 8089 (WebSocket)" in notes, notes
    assert "web.listen is not" in notes and "no opus/48000" in notes, notes
    # Browsers alone (no extensions, no trunks) still need the edge.
    alone = Config.model_validate(
        {"pbx": {"listen": lan, "websocket": {"listen": "198.51.100.1:8089"}}}
    )
    assert alone.pbx.websocket.url == "ws://198.51.100.1:8089"
    assert "do not run" not in " ".join(n for _, n in network_notes(alone))


def test_weak_passwords_are_named_and_placeholders_refused_on_a_lan():
    from provisioning.advice import password_warnings, refusals

    def cfg(listen: str, *passwords: str) -> Config:
        return Config.model_validate(
            {
                "pbx": {"listen": listen},
                "extensions": [
                    {"number": str(1001 + i), "name": "X", "password": p}
                    for i, p in enumerate(passwords)
                ],
            }
        )

    weak = cfg(
        "127.0.0.1:5060",
        "troque-esta-senha-1",
        "senha12345",
        "short-pw-1",
        "a-Long-and-rare-one",
    )
    said = password_warnings(weak)
    assert [w.split(":")[0] for w in said] == [
        "extension 1001",
        "extension 1002",
        "extension 1003",
    ], said
    assert "placeholder" in said[0] and "common" in said[1] and "under 12" in said[2]
    assert refusals(weak) == []  # on loopback: a laptop demo may keep them
    lan = cfg("198.51.100.1:5060", "troque-esta-senha-2")
    (why,) = refusals(lan)
    assert "extension 1001" in why and "faces the network" in why


ROOM_WITH = (
    "rooms:\n  - name: a\n    participant_pin: '1111'\n    moderator_pin: '9999'\n"
    "    counter_pin: '4321'\n    counter_pins:\n{items}"
    "  - {{name: b, participant_pin: '2222', moderator_pin: '8888'}}\n"
)


def counter_pins(*items: str) -> str:
    return ROOM_WITH.format(items="".join(f"      - {i}\n" for i in items))


def test_individual_counter_pins_load_beside_the_collective_one():
    text = counter_pins("{name: Ana, pin: '5151'}", "{name: João, pin: '0626'}")
    cfg = parse_config(text, "t.yaml")
    room = cfg.rooms[0]
    assert room.counter_pin == "4321"
    assert room.counter_pin_names() == {"5151": "Ana", "0626": "João"}


@pytest.mark.parametrize(
    ("items", "key", "says"),
    [
        # no duplicates: names, then PINs
        (("{name: Ana, pin: '5151'}", "{name: Ana, pin: '6262'}"), None, "'Ana' is listed twice"),
        (("{name: Ana, pin: '5151'}", "{name: Bia, pin: '5151'}"), None, "counter-PIN of 'Ana'"),
        # not the room's other PINs, nor another room's entry PIN
        (("{name: Ana, pin: '9999'}",), None, "already the room's moderator_pin"),
        (("{name: Ana, pin: '1111'}",), None, "already the room's participant_pin"),
        (("{name: Ana, pin: '4321'}",), None, "already the room's counter_pin"),
        (("{name: Ana, pin: '2222'}",), None, "an entry PIN of room 'b'"),
        # digits only, quoted, 3 to 12 of them; a plain name; nothing else
        (("{name: Ana, pin: '51a1'}",), "rooms.0.counter_pins.0.pin", "digits only"),
        (("{name: Ana, pin: 5151}",), "rooms.0.counter_pins.0.pin", "quoted"),
        (("{name: Ana, pin: '51'}",), "rooms.0.counter_pins.0.pin", "3 to 12 digits"),
        (("{name: 'Ana; drop', pin: '5151'}",), "rooms.0.counter_pins.0.name", "pattern"),
        (("{name: Ana}",), "rooms.0.counter_pins.0.pin", "required"),
        (("{name: Ana, pin: '5151', role: admin}",), "rooms.0.counter_pins.0.role", "unknown key"),
    ],
)
def test_bad_individual_counter_pins_are_refused_clearly(items, key, says):
    e = err(counter_pins(*items))
    assert says in e.message, str(e)
    assert e.line is not None, str(e)
    if key is not None:
        assert e.key == key, str(e)
