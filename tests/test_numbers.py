"""Counts said as numbers (ivr/numbers.py), composed as Asterisk's say.c does,
checked as the words a caller hears: each prompt id read through the
catalogue, so a missing id fails here too."""

from __future__ import annotations

import pytest

from ivr.numbers import HIGHEST, Number, number_prompts
from ivr.prompts import LANGUAGES, load_catalogue

CATALOGUE = load_catalogue()
# pt-BR's "e" is spelt "i" in the catalogue so espeak-ng says it as spoken.
SAID = {"num_and": "e"}


def words(n: int, lang: str, feminine: bool = False) -> str:
    ids = number_prompts(n, lang, feminine)
    if lang == "pt-BR":
        return " ".join(SAID.get(pid, CATALOGUE[pid][lang]) for pid in ids)
    return " ".join(CATALOGUE[pid][lang] for pid in ids)


EN = {
    0: "zero",
    1: "one",
    2: "two",
    10: "ten",
    11: "eleven",
    12: "twelve",
    13: "thirteen",
    14: "fourteen",
    15: "fifteen",
    16: "sixteen",
    17: "seventeen",
    18: "eighteen",
    19: "nineteen",
    20: "twenty",
    21: "twenty one",
    99: "ninety nine",
    100: "one hundred",
    101: "one hundred one",  # en-US, as Asterisk's en: no "and"
    115: "one hundred fifteen",
    200: "two hundred",
    999: "nine hundred ninety nine",
    1000: "one thousand",
    1001: "one thousand one",
    2024: "two thousand twenty four",
    9999: "nine thousand nine hundred ninety nine",
}

PT = {
    0: "zero",
    1: "um",
    2: "dois",
    10: "dez",
    11: "onze",
    12: "doze",
    13: "treze",
    14: "catorze",
    15: "quinze",
    16: "dezesseis",
    17: "dezessete",
    18: "dezoito",
    19: "dezenove",
    20: "vinte",
    21: "vinte e um",
    99: "noventa e nove",
    100: "cem",
    101: "cento e um",
    115: "cento e quinze",
    200: "duzentos",
    999: "novecentos e noventa e nove",
    1000: "mil",
    1001: "mil e um",
    1100: "mil e cem",
    1200: "mil e duzentos",
    1234: "mil duzentos e trinta e quatro",
    2024: "dois mil e vinte e quatro",
    9999: "nove mil novecentos e noventa e nove",
}

# For a feminine noun ("mãos"): the ones, the hundreds and the thousands agree.
PT_FEMININE = {
    1: "uma",
    2: "duas",
    12: "doze",
    21: "vinte e uma",
    22: "vinte e duas",
    200: "duzentas",
    201: "duzentas e uma",
    1001: "mil e uma",
    2000: "duas mil",
    2002: "duas mil e duas",
    9999: "nove mil novecentas e noventa e nove",
}


@pytest.mark.parametrize(("n", "said"), EN.items())
def test_english_as_asterisk_en_us(n, said):
    assert words(n, "en") == said
    assert words(n, "en", feminine=True) == said  # English has no gender here


@pytest.mark.parametrize(("n", "said"), PT.items())
def test_brazilian_portuguese_as_asterisk_pt(n, said):
    assert words(n, "pt-BR") == said


@pytest.mark.parametrize(("n", "said"), PT_FEMININE.items())
def test_brazilian_portuguese_feminine(n, said):
    assert words(n, "pt-BR", feminine=True) == said


def test_every_count_in_range_uses_catalogue_prompts_with_both_languages():
    for lang in LANGUAGES:  # every language the catalogue speaks composes numbers
        for feminine in (False, True):
            ids = {pid for n in range(HIGHEST + 1) for pid in number_prompts(n, lang, feminine)}
            for pid in ids:
                assert set(CATALOGUE[pid]) >= set(LANGUAGES), pid


def test_out_of_range_falls_back_to_digits_and_bad_input_is_an_error():
    assert number_prompts(12345, "en") == ("digit_1", "digit_2", "digit_3", "digit_4", "digit_5")
    with pytest.raises(ValueError, match="no number composition for language 'fr'"):
        number_prompts(3, "fr")
    with pytest.raises(ValueError, match="must be an integer"):
        number_prompts(True, "en")
    with pytest.raises(ValueError, match="must be an integer"):
        number_prompts("12", "en")  # type: ignore[arg-type]


def test_a_count_item_is_a_value():
    assert Number(2, feminine=True) == Number(2, True) != Number(2)
