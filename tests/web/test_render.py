"""The renderer's fast number formatting agrees with Babel's, in both languages."""

from __future__ import annotations

from babel.numbers import format_decimal

from web.render import LOCALES, _number


def test_whole_numbers_are_formatted_like_babel() -> None:
    for n in (0, 7, 999, 1000, 12345, 1_234_567, -4321):
        for lang, locale in LOCALES.items():
            assert _number(n, lang) == format_decimal(n, locale=locale)
    assert _number(2.5, "fr") == "2,5" and _number(None, "en") == "0"
