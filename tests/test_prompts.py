"""Prompt catalogue and rendering (espeak-ng through pydub)."""

import wave

import pytest

from ivr.prompts import LANGUAGES, PromptError, PromptLibrary, load_catalogue
from tests import audio


def test_every_prompt_has_both_languages():
    cat = load_catalogue()
    assert {"enter_pin", "invalid_pin", "goodbye"} <= set(cat)
    assert all(set(LANGUAGES) <= set(t) for t in cat.values())


def test_rendered_prompts_are_speech_at_the_bridge_rate(prompt_cache):
    lib = PromptLibrary(prompt_cache)
    for lang in LANGUAGES:
        p = lib.get("enter_pin", lang)
        with wave.open(str(p.path)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        samples, rate = audio.load(p.path)
        assert p.seconds > 1.0 and audio.speech_like(samples, rate)


def test_admin_override_wins(prompt_cache, tmp_path):
    override = tmp_path / "en"
    override.mkdir()
    with wave.open(str(override / "goodbye.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 4000)
    lib = PromptLibrary(prompt_cache, tmp_path)
    assert lib.get("goodbye", "en").path == override / "goodbye.wav"
    assert lib.get("goodbye", "en").seconds == pytest.approx(0.5)
    assert lib.get("goodbye", "pt-BR").path.parent == prompt_cache / "pt-BR"


def test_unknown_prompt_is_an_error(prompt_cache):
    with pytest.raises(PromptError):
        PromptLibrary(prompt_cache).get("nope", "en")
