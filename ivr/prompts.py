"""Prompt catalogue: text per language, rendered to WAV with espeak-ng via pydub.

Prompts are rendered at the bridge's clock rate (`sip.clock_rate`). Rendered files
are cached by a hash of (voice, text, rate), so an edited text re-renders, an
unchanged one is reused, and bridges of different rates sharing a cache never play
each other's files. Admin WAVs in the override folder win over rendered ones
(pjmedia resamples them if their rate differs).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ivr.tones import signal_path
from pcm import CLOCK_RATE

log = logging.getLogger(__name__)

CATALOGUE = Path(__file__).resolve().parent.parent / "prompts" / "catalogue.yaml"
TEXTS = CATALOGUE.with_name("texts.yaml")
VOICES = {"pt-BR": "pt-br", "en": "en-us"}
LANGUAGES = tuple(VOICES)


class PromptError(Exception):
    """A prompt that cannot be found or rendered."""


@dataclass(frozen=True)
class Prompt:
    """One playable prompt file and its length."""

    id: str
    path: Path
    seconds: float


def load_catalogue(path: Path = CATALOGUE) -> dict[str, dict[str, str]]:
    """Read the catalogue and check every prompt has every language."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for pid, texts in data.items():
        missing = [lang for lang in LANGUAGES if lang not in (texts or {})]
        if missing:
            raise PromptError(f"{path}: prompt {pid!r} has no text for {', '.join(missing)}")
    return data


@functools.cache
def load_texts(path: Path = TEXTS) -> dict[str, dict[str, str]]:
    """Read the written texts (alerts), checked like the catalogue: every
    text has every language."""
    return load_catalogue(path)


def text(tid: str, language: str, **values: Any) -> str:
    """A written text in `language` (pt-BR if it has none), its {fields}
    filled in from `values`."""
    texts = load_texts()[tid]
    return texts.get(language, texts["pt-BR"]).format(**values)


def wav_seconds(path: Path) -> float:
    """Length of a WAV file in seconds."""
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / float(w.getframerate())


def _audio_segment() -> Any:
    """pydub's AudioSegment, imported late (only rendering needs it) and quietly.

    pydub looks for ffmpeg when it is imported and warns that it is missing, and
    imports the deprecated `audioop`; here it only reads and writes WAV, which
    needs neither warning's tool, so neither is shown.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Couldn't find ffmpeg", RuntimeWarning)
        warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
        from pydub import AudioSegment
    return AudioSegment


def _render(text: str, voice: str, rate: int, out: Path) -> None:
    AudioSegment = _audio_segment()
    if shutil.which("espeak-ng") is None:
        raise PromptError("espeak-ng is not installed (scripts/setup installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text],
            check=True,
            capture_output=True,
        )
        # pydub leaves the files it opens by name open: give it ours.
        with raw.open("rb") as f:
            audio = AudioSegment.from_wav(f)
        audio = audio.set_channels(1).set_sample_width(2).set_frame_rate(rate)
        # A short lead-in so the first syllable is not clipped while the
        # far end's jitter buffer fills.
        audio = AudioSegment.silent(duration=120, frame_rate=rate) + audio
        # Written beside the target and renamed: a concurrent renderer (another
        # test worker) never sees a half-written file.
        fd, tmp_name = tempfile.mkstemp(dir=out.parent, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            audio.export(f, format="wav")
        os.replace(tmp_name, out)


class PromptLibrary:
    """Resolves prompt ids to WAV files for one bridge clock rate."""

    def __init__(
        self,
        cache_dir: Path,
        override_dir: Path | None = None,
        rate: int = CLOCK_RATE,
        catalogue: Path = CATALOGUE,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.override_dir = Path(override_dir) if override_dir else None
        self.rate = rate
        self.texts = load_catalogue(catalogue)
        self._resolved: dict[tuple[str, str], Prompt] = {}

    def _cached_path(self, pid: str, lang: str) -> Path:
        text = self.texts[pid][lang]
        digest = hashlib.sha256(f"{VOICES[lang]}|{self.rate}|{text}".encode()).hexdigest()[:12]
        return self.cache_dir / lang / f"{pid}-{digest}.wav"

    def render_all(self) -> int:
        """Render every prompt not yet in the cache; return how many were rendered."""
        count = 0
        for pid in self.texts:
            for lang in LANGUAGES:
                path = self._cached_path(pid, lang)
                if path.exists():
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                _render(self.texts[pid][lang], VOICES[lang], self.rate, path)
                count += 1
        return count

    def render_text(self, text: str, lang: str) -> Path:
        """A WAV of free text (e.g. a blast invitation), rendered once and cached."""
        digest = hashlib.sha256(f"{VOICES[lang]}|{self.rate}|{text}".encode()).hexdigest()[:16]
        path = self.cache_dir / lang / f"text-{digest}.wav"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _render(text, VOICES[lang], self.rate, path)
        return path

    def get(self, pid: str, lang: str) -> Prompt:
        """The WAV for a prompt id in a language (override first)."""
        key = (pid, lang)
        if key in self._resolved:
            return self._resolved[key]
        if pid not in self.texts:
            raise PromptError(f"unknown prompt {pid!r}")
        path = None
        if self.override_dir is not None:
            candidate = self.override_dir / lang / f"{pid}.wav"
            if candidate.exists():
                path = candidate
        if path is None:
            path = self._cached_path(pid, lang)
            if not path.exists():
                raise PromptError(f"prompt {pid!r} ({lang}) is not rendered: run `ponte prompts`")
        prompt = Prompt(pid, path, wav_seconds(path))
        self._resolved[key] = prompt
        return prompt

    def signal(self, name: str) -> Path:
        """The WAV of a generated signal (ivr/tones.py) at this library's rate."""
        return signal_path(self.cache_dir, name, self.rate)
