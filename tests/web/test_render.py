"""The renderer's fast number formatting agrees with Babel's, in both languages."""

from __future__ import annotations

from babel.numbers import format_decimal

from web.render import LOCALES, _number


def test_whole_numbers_are_formatted_like_babel() -> None:
    for n in (0, 7, 999, 1000, 12345, 1_234_567, -4321):
        for lang, locale in LOCALES.items():
            assert _number(n, lang) == format_decimal(n, locale=locale)
    assert _number(2.5, "fr") == "2,5" and _number(None, "en") == "0"


def test_facet_checkboxes_escape_values_and_labels() -> None:
    from lxml import html

    from web.render import facet_items

    bait = '<img src=x onerror=alert(1)> "Réseau" & co'
    markup = facet_items("fr")("partner", [{"value": bait, "count": 12345, "selected": True},
                                           {"value": "ENV", "count": 3, "selected": False}], "m")  # fmt: skip
    assert "<img" not in markup and "&lt;img" in markup
    items = html.fragments_fromstring(str(markup))
    first, second = (li.cssselect("input")[0] for li in items)
    assert first.get("value") == bait and first.get("checked") is not None and first.get("id") == "f-partner-m1"
    assert second.get("checked") is None and second.get("id") == "f-partner-m2"
    label = items[0].cssselect("label")[0]
    assert label.get("for") == "f-partner-m1" and label.text_content() == f"{bait} {_number(12345, 'fr')}"
