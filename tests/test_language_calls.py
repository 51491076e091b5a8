"""Refusals follow the caller's language on real calls: an English access
number's caller and an English extension hear the English text, spoken,
while a pt-BR caller hears the pt-BR one. To tell the two apart by content,
the pt-BR prompt is overridden (prompts.override_dir) with a 900 Hz tone:
English callers must hear speech and no tone."""

from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np

from pcm import CLOCK_RATE
from tests import audio, ports
from tests.harness import cli
from tests.pbx_helpers import EXTENSIONS, proxy, register
from tests.test_admin_calls import _members
from tests.test_line_calls import lines_config

TONE = 900.0


def _tone_override(root: Path, *prompt_ids: str) -> Path:
    """override_dir with pt-BR/<id>.wav = 2 s of a 900 Hz tone for each id."""
    folder = root / "overrides" / "pt-BR"
    folder.mkdir(parents=True)
    t = np.arange(int(2.0 * CLOCK_RATE)) / CLOCK_RATE
    pcm = (0.4 * 32767 * np.sin(2 * np.pi * TONE * t)).astype("<i2").tobytes()
    for pid in prompt_ids:
        with wave.open(str(folder / f"{pid}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(CLOCK_RATE)
            w.writeframes(pcm)
    return folder.parent


def _tail(path: Path, seconds: float) -> tuple[np.ndarray, int]:
    """The last `seconds` of sound in a recording (what was said last, before
    the BYE), trailing silence left out."""
    samples, rate = audio.load(path)
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    end = int(loud[-1]) + 1 if len(loud) else len(samples)
    return samples[max(0, end - int(seconds * rate)) : end], rate


def test_an_english_access_numbers_refusal_is_spoken_in_english(
    server_factory, phone, prompt_cache, tmp_path
):
    overrides = _tone_override(tmp_path, "conference_locked")
    srv = server_factory(prompts={"cache_dir": str(prompt_cache), "override_dir": str(overrides)})
    mod = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; wait_end 40", record=False)
    _members(srv, "demo", 1)
    locked = cli(srv, "room", "lock", "demo", "--by", "tester")
    assert locked.returncode == 0, locked.stderr
    script = "wait_media 8; dtmf 1111#; wait_end 15"
    en = phone(srv.uri("conf-en"), script)
    pt = phone(srv.uri("conf"), script)
    ren, rpt = en.result(), pt.result()
    assert ren["hung_up_by"] == "remote" and rpt["hung_up_by"] == "remote"
    samples, rate = _tail(en.record, 1.2)
    assert audio.speech_like(samples, rate), "the English caller hears why, spoken"
    assert audio.band_fraction(samples, rate, TONE) < 0.1, "and not the pt-BR prompt"
    samples, rate = _tail(pt.record, 1.2)
    assert audio.band_fraction(samples, rate, TONE) > 0.5, "the pt-BR caller hears pt-BR"
    cli(srv, "room", "end", "demo", "--by", "tester")
    mod.result()


def test_an_english_extensions_refusal_is_spoken_in_english(
    server_factory, phone, provider, prompt_cache, tmp_path
):
    overrides = _tone_override(tmp_path, "refused_type_blocked")
    extensions = [{**e, "language": "en"} if e["number"] == "1001" else e for e in EXTENSIONS]
    cfg = lines_config(provider.port, 1)
    cfg["extensions"] = extensions
    cfg["prompts"] = {"cache_dir": str(prompt_cache), "override_dir": str(overrides)}
    srv = server_factory(**cfg)
    calls = {}
    for ext in ("1001", "1002"):
        calls[ext] = phone(
            f"sip:0015442079460000@{proxy(srv)}",
            "wait_end 15",
            bind=ports.loopback_ip(),
            extra=register(ext, srv),
        )
        time.sleep(0.5)
    r_en, r_pt = calls["1001"].result(), calls["1002"].result()
    assert r_en["code"] == 403 and r_pt["code"] == 403, (r_en, r_pt)
    samples, rate = audio.load(calls["1001"].record)
    assert audio.speech_like(samples, rate), "the reason, spoken, in English"
    assert audio.band_fraction(samples, rate, TONE) < 0.1
    samples, rate = audio.load(calls["1002"].record)
    assert audio.band_fraction(samples, rate, TONE) > 0.5, "1002 keeps pt-BR"
