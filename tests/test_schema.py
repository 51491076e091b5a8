"""The editor schema (`ponte schema`) and the validator agree."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml

from provisioning.loader import EXAMPLE, ConfigError, parse_config
from provisioning.schema import json_schema
from tests.harness import ROOT

SCHEMA = json_schema()
CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER  # editors check formats too


def validate(data) -> None:
    jsonschema.validate(data, SCHEMA, format_checker=CHECKER)


BAD = [
    "sip: {listen: 127.0.0.1:5080, bogus: 1}",
    "nonsense: true",
    "sip: {listen: 5080}",
    "rooms: [{name: 'a b', participant_pin: '1111', moderator_pin: '9999'}]",
    "rooms: [{name: a, participant_pin: 1111, moderator_pin: '9999'}]",
    "rooms: [{name: a, participant_pin: '1111', moderator_pin: '9999', security_level: 4}]",
    "rooms: [{name: a, participant_pin: '1111', moderator_pin: '9999', entry_signal: beep}]",
    "rooms: [{name: a, participant_pin: '1111', moderator_pin: '9999', max_members: 0}]",
    "rooms: [{name: a, participant_pin: '1111', moderator_pin: '9999', issued: someday}]",
    "rooms: [{name: a, participant_pin: '1111'}]",
    "access_numbers: [{user: 'con f'}]",
    "access_numbers: [{user: conf, language: fr}]",
    "ivr: {interdigit_timeout: -1}",
    "ivr: {max_tries: 0}",
    "keys: {feature_digit_timeout: 9}",
    "extensions: [{number: '01', password: 'long-enough-pw'}]",
    "extensions: [{number: '1001'}]",
    "trunks: [{name: t, registrar: 'sip:x.example', username: u}]",
    "trunks: [{name: t, registrar: 'sip:x.example', username: u, password: p, cps: 0}]",
    "profiles: {p: {limits: {local: maybe}}}",
    "profiles: {p: {calendar: {days: [funday]}}}",
    "profiles: {p: {quota: both}}",
    "lines: {'1001': {area_code: '1'}}",
    "carrier: {csp: '2', force: true}",
    "billing_cycle_day: 31",
    "alerts: {thresholds: [sixty]}",
    "dids: {'+5511': {ivr: menu}}",
    "pbx: {flood_density: 1}",
]


def _data(text: str):
    return json.loads(json.dumps(yaml.safe_load(text), default=str))


@pytest.mark.parametrize("text", BAD)
def test_schema_rejects_what_the_validator_rejects(text):
    with pytest.raises(ConfigError):
        parse_config(text, "bad.yaml")
    with pytest.raises(jsonschema.ValidationError):
        validate(_data(text))


def test_the_example_passes_both():
    text = EXAMPLE.read_text()
    parse_config(text, "example.yaml")
    validate(_data(text))
    assert text.startswith("# yaml-language-server: $schema=../ponte.schema.json")


def test_committed_schema_is_current():
    out = subprocess.run(
        [sys.executable, "-m", "ponte.cli", "schema"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == json.loads((ROOT / "ponte.schema.json").read_text()), (
        "run: .venv/bin/ponte schema > ponte.schema.json"
    )
