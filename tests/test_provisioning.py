"""Provisioning: good files load, bad ones are refused naming file, line, key."""

import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.loader import ConfigError, load_config, parse_config

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
