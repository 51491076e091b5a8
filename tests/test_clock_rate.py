"""One setting for the conference bridge's clock rate (`sip.clock_rate`, pcm/):
validated, and followed by everything rendered or framed for the bridge.

Real calls at 16 kHz are in tests/test_clock_rate_calls.py.
"""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import pytest

import pcm
from ivr.prompts import PromptLibrary
from ivr.tones import signal_path
from provisioning.loader import ConfigError, parse_config
from provisioning.schema import json_schema
from tests.harness import ROOT


def test_the_default_is_the_one_constant():
    assert pcm.CLOCK_RATE == 8000 and pcm.CLOCK_RATE in pcm.CLOCK_RATES
    assert parse_config("sip: {}", "p.yaml").sip.clock_rate == pcm.CLOCK_RATE
    assert (pcm.frame_samples(8000), pcm.frame_bytes(8000)) == (160, 320)
    assert (pcm.frame_samples(16000), pcm.frame_bytes(16000)) == (320, 640)


@pytest.mark.parametrize("rate", pcm.CLOCK_RATES)
def test_each_offered_rate_is_accepted(rate):
    assert parse_config(f"sip: {{clock_rate: {rate}}}", "p.yaml").sip.clock_rate == rate


@pytest.mark.parametrize("value", ["11025", "44100", "0", "fast"])
def test_other_rates_are_refused_with_file_line_and_key(value):
    with pytest.raises(ConfigError) as info:
        parse_config(f"sip:\n  listen: 127.0.0.1:5080\n  clock_rate: {value}\n", "p.yaml")
    e = info.value
    assert (e.file, e.line, e.key) == ("p.yaml", 3, "sip.clock_rate"), str(e)


def test_the_editor_schema_offers_the_same_choices():
    prop = json_schema()["$defs"]["SipConfig"]["properties"]["clock_rate"]
    assert prop["enum"] == list(pcm.CLOCK_RATES) and prop["default"] == pcm.CLOCK_RATE


def _rate(path: Path) -> int:
    with wave.open(str(path)) as w:
        return w.getframerate()


def test_signals_are_written_per_rate(tmp_path):
    low = signal_path(tmp_path, "join_tone")
    wide = signal_path(tmp_path, "join_tone", 16000)
    assert low != wide and (_rate(low), _rate(wide)) == (8000, 16000)
    lib = PromptLibrary(tmp_path, rate=16000)
    assert lib.signal("join_tone") == wide
    assert _rate(lib.signal("hold_music")) == 16000


def test_prompts_are_rendered_at_the_library_rate_and_never_mixed(tmp_path):
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text("goodbye: {pt-BR: 'Até logo.', en: 'Goodbye.'}\n")
    cache = tmp_path / "cache"
    low = PromptLibrary(cache, catalogue=catalogue)
    wide = PromptLibrary(cache, rate=16000, catalogue=catalogue)
    assert (low.render_all(), wide.render_all(), wide.render_all()) == (2, 2, 0)
    for lang in ("pt-BR", "en"):
        a, b = low.get("goodbye", lang), wide.get("goodbye", lang)
        assert a.path != b.path and (_rate(a.path), _rate(b.path)) == (8000, 16000)
        assert a.seconds == pytest.approx(b.seconds, abs=0.01)
    text = wide.render_text("Bem-vindo.", "pt-BR")
    assert _rate(text) == 16000 and text != low.render_text("Bem-vindo.", "pt-BR")


def test_rendering_prompts_warns_about_no_tool_it_does_not_use():
    """pydub warns at import that ffmpeg is missing and imports the deprecated
    audioop; WAV needs neither, so nothing is printed (scripts/setup stays quiet)."""
    code = "from ivr.prompts import _audio_segment; _audio_segment()"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_the_test_phone_runs_at_the_rate_it_is_given():
    from pbx.softphone import build_parser

    assert build_parser().parse_args([]).clock_rate == pcm.CLOCK_RATE
    assert build_parser().parse_args(["--clock-rate", "16000"]).clock_rate == 16000
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--clock-rate", "11025"])
