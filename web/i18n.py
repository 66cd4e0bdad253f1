"""Languages of the front: French first (the message ids are French), English from a gettext catalogue.

The catalogue is ``web/locale/en/LC_MESSAGES/messages.po`` (extracted from the templates
and the Python modules with Babel, see ``web/babel.cfg``) compiled into ``messages.mo``
next to it; ``tests/web/test_i18n.py`` checks that the compiled file matches the source.
"""

from __future__ import annotations

import gettext
from functools import cache
from pathlib import Path

from aiohttp import web
from babel.support import NullTranslations, Translations

from protocol.accept import qualities

LANGUAGES = ("fr", "en")
DEFAULT = "fr"
COOKIE = "essaim_lang"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"


class French(NullTranslations):
    """The source language: message ids as they are, with the French plural rule (0 and 1 are singular)."""

    def ngettext(self, singular: str, plural: str, n: int) -> str:  # type: ignore[override]
        return singular if n <= 1 else plural


@cache
def translations(lang: str) -> gettext.NullTranslations:
    """The catalogue of ``lang``; French is the source language and needs none."""
    if lang == DEFAULT:
        return French()
    found = Translations.load(str(LOCALE_DIR), [lang], domain="messages")
    if not isinstance(found, Translations):
        raise RuntimeError(f"no compiled catalogue for {lang!r} under {LOCALE_DIR}")
    return found


def negotiate(request: web.Request) -> str:
    """The cookie set by the language switch, else the browser's first supported preference, else French."""
    chosen = request.cookies.get(COOKIE)
    if chosen in LANGUAGES:
        return chosen
    ranked: list[tuple[float, int, str]] = []
    for position, (tag, quality) in enumerate(qualities(request.headers.get("Accept-Language", ""))):
        primary = tag.split("-")[0]
        if primary in LANGUAGES and quality is not None and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else DEFAULT
