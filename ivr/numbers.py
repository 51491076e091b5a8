"""Counts spoken as numbers ("twelve", "doze"), not digit by digit.

An integer 0..9999 becomes a tuple of prompt ids from prompts/catalogue.yaml,
composed per language the way Asterisk's main/say.c does
(`ast_say_number_full_en`, `ast_say_number_full_pt`):

- en (en-US, no "and"): "twenty three", "one hundred five", "two thousand
  twenty four";
- pt-BR: "vinte e três", "cem", "cento e cinco", "duzentos", "mil e um",
  "dois mil e vinte e quatro", "nove mil novecentos e noventa e nove"; with
  `feminine=True` for a feminine noun after the count ("duas mãos",
  "duzentas e uma mãos", "duas mil mãos").

0..9 reuse the keyed digits' prompts (`digit_N`, Asterisk's digits/N); the
words are data in the catalogue, so an admin's recording overrides them by id
like any other prompt. Phone numbers being dialled stay digit by digit
(ivr.dialout.spoken): this is for counts.

`Number` is the item a command carries: the room logic does not know who
hears it in which language, so the shell that plays it (ponte.media) resolves
it with `number_prompts` in the listener's language.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

LOWEST = 0
HIGHEST = 9999  # rooms and call lists stay far below this; past it, digits


@dataclass(frozen=True)
class Number:
    """A count to speak in the listener's language (resolved at playback).
    `feminine`: the noun that follows is feminine (pt-BR "uma", "duas",
    "duzentas"); English ignores it."""

    value: int
    feminine: bool = False


def _small(n: int) -> str:
    """0..19, and the tens 20..90: one prompt each."""
    return f"digit_{n}" if n < 10 else f"num_{n}"


def _en(n: int) -> list[str]:
    # ast_say_number_full_en: "N hundred", "N thousand", never "and".
    if n < 20:
        return [_small(n)]
    if n < 100:
        tens, ones = divmod(n, 10)
        return [_small(tens * 10)] + ([_small(ones)] if ones else [])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return [_small(hundreds), "num_hundred"] + (_en(rest) if rest else [])
    thousands, rest = divmod(n, 1000)
    return [*_en(thousands), "num_thousand"] + (_en(rest) if rest else [])


def _pt(n: int, feminine: bool) -> list[str]:
    # ast_say_number_full_pt: "e" between tens and units and after hundreds;
    # "cem" alone, "cento e" before more; "mil" without "um"; after "mil", "e"
    # only when what follows is below 100 or whole hundreds ("mil e cem",
    # "mil e duzentos", but "mil duzentos e três").
    if n < 20:
        if feminine and n in (1, 2):
            return [f"num_{n}f"]
        return [_small(n)]
    if n < 100:
        tens, ones = divmod(n, 10)
        return [_small(tens * 10)] + (["num_and", *_pt(ones, feminine)] if ones else [])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        if n == 100:
            return ["num_100"]
        gender = "f" if feminine else ""
        head = "num_100_plus" if hundreds == 1 else f"num_{hundreds * 100}{gender}"  # cento
        return [head] + (["num_and", *_pt(rest, feminine)] if rest else [])
    thousands, rest = divmod(n, 1000)
    # The thousands agree with the noun too: "duas mil mãos". (Asterisk's
    # `(num / 1000) * mf` would make that count negative and say "menos".)
    out = ([] if thousands == 1 else _pt(thousands, feminine)) + ["num_thousand"]
    if rest:
        if rest < 100 or rest % 100 == 0:
            out.append("num_and")
        out += _pt(rest, feminine)
    return out


COMPOSERS: dict[str, Callable[[int, bool], list[str]]] = {
    "en": lambda n, _feminine: _en(n),
    "pt-BR": _pt,
}


def number_prompts(value: int, language: str, feminine: bool = False) -> tuple[str, ...]:
    """The prompt ids that say `value` (0..9999) in `language` ("en" or
    "pt-BR"). Outside that range the digits are read one by one, as before:
    a clear fallback rather than an error on the media path."""
    compose = COMPOSERS.get(language)
    if compose is None:
        raise ValueError(f"no number composition for language {language!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a count must be an integer, not {value!r}")
    if not LOWEST <= value <= HIGHEST:
        return tuple(f"digit_{ch}" for ch in str(abs(value)))
    return tuple(compose(value, feminine))
