"""Jinja environments (one per language, with gettext installed) and the page renderer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import nh3
from aiohttp import web
from babel import Locale
from babel.dates import format_date
from babel.numbers import format_decimal
from markupsafe import Markup, escape

from web.i18n import LANGUAGES, negotiate, translations
from web.labels import FACETS, labeller

TEMPLATES = Path(__file__).resolve().parent / "templates"
LOCALES = {"fr": "fr_FR", "en": "en_GB"}
LANG = web.RequestKey("lang", str)

# What a harvested description may keep: partners are other organisations, so their
# HTML is cleaned again before it reaches a page, whatever their node did.
ALLOWED_TAGS = {"p", "br", "strong", "em", "b", "i", "ul", "ol", "li", "a", "blockquote", "h3", "h4"}


def _date(value: Any, lang: str) -> str:
    if value in (None, "", 0):
        return ""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, tz=UTC)
    return format_date(value, format="long", locale=LOCALES[lang])


@cache
def _group_symbol(lang: str) -> str:
    return str(Locale.parse(LOCALES[lang]).number_symbols["latn"]["group"])


def _number(value: Any, lang: str) -> str:
    # Counts are whole numbers: Babel's general formatter costs ~20 µs a call, and a search
    # page shows hundreds of counts, so whole numbers only get the locale's group separator.
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}".replace(",", _group_symbol(lang))
    return format_decimal(value or 0, locale=LOCALES[lang])


def _clean_html(value: str | None) -> Markup:
    if not value:
        return Markup("")
    # nh3 (ammonia) output is safe HTML by construction: that is its whole purpose.
    cleaned = nh3.clean(value, tags=ALLOWED_TAGS, url_schemes={"http", "https", "mailto"}, link_rel="noopener")
    return Markup(cleaned)  # noqa: S704


def _json_ld(value: Any) -> Markup:
    # Inside <script type="application/ld+json"> only "</" could end the element early.
    text = json.dumps(value, ensure_ascii=False, indent=1)
    escaped = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(escaped)  # noqa: S704  (no "<" left: nothing can close the element)


def facet_items(lang: str) -> Any:
    """``facet_items(facet, values, prefix)``: the checkboxes of one facet panel as HTML.

    A search page shows up to 30 values for each of ten facets; built by the template, their
    attribute look-ups and escapes were half of the page's rendering time. Same markup, built here.
    """
    label = labeller(lang).label

    def items(name: str, values: list[dict[str, Any]], prefix: str = "") -> Markup:
        facet = escape(name)
        out = []
        for index, v in enumerate(values, 1):
            ident = f"f-{facet}-{prefix}{index}"
            checked = " checked" if v["selected"] else ""
            out.append(
                f'<li><input type="checkbox" name="{facet}" value="{escape(v["value"])}" id="{ident}"{checked}>'
                f'<label for="{ident}">{escape(label(name, v["value"]))} '
                f'<span class="count">{_number(v["count"], lang)}</span></label></li>'
            )
        return Markup("\n".join(out))  # noqa: S704  (every value above is escaped)

    return items


def make_environment(lang: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "xml"], default=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    label = labeller(lang).label
    env.globals.update(
        lang=lang, label=label, facets=FACETS, facet_items=facet_items(lang), quote=lambda s: quote(str(s), safe="")
    )
    env.filters.update(
        date=lambda v: _date(v, lang),
        number=lambda v: _number(v, lang),
        clean_html=_clean_html,
        json_ld=_json_ld,
    )
    return env


@dataclass
class Renderer:
    """Renders a template in the request's language with the context every page shares."""

    shared: dict[str, Any] = field(default_factory=dict)
    envs: dict[str, jinja2.Environment] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.envs = {lang: make_environment(lang) for lang in LANGUAGES}

    def env(self, request: web.Request) -> jinja2.Environment:
        return self.envs[language(request)]

    def text(self, request: web.Request, name: str, context: dict[str, Any]) -> str:
        lang = language(request)
        page = {
            **self.shared,
            "path": request.path,
            "path_qs": request.path_qs,
            "other_lang": "en" if lang == "fr" else "fr",
            **context,
        }
        return self.envs[lang].get_template(name).render(page)

    def page(self, request: web.Request, name: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
        response = web.Response(text=self.text(request, name, context), status=status, content_type="text/html")
        response.headers["Content-Language"] = language(request)
        response.headers["Vary"] = "Accept-Language, Cookie"
        return response

    def gettext(self, request: web.Request, message: str) -> str:
        return translations(language(request)).gettext(message)


def language(request: web.Request) -> str:
    lang = request.get(LANG)
    if lang is None:
        lang = request[LANG] = negotiate(request)
    return lang
