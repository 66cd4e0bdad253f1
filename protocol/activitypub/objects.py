"""A project sheet as an ActivityPub object: a ``Note`` that renders everywhere, plus the full sheet.

Why a ``Note`` (ARCHITECTURE §3): Mastodon shows ``Article``/``Page`` as name +
summary + link and drops ``content``; GoToSocial turns ``summary`` (or ``name``)
into a content warning. So the Note has neither: its ``content`` is HTML with the
title in bold, a short text and a link to the sheet page; themes and territory
travel as ``Hashtag`` tags, the first located place as ``location``. The complete
sheet rides along under ``sheet`` in Essaim's JSON-LD context (terms listed in
``contexts/essaim-v1.jsonld``), so an Essaim hub rebuilds the record exactly with
:func:`sheet_from_ld`, and JSON-LD processors keep it on expansion.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any

from protocol.activitypub.context import DEFAULT_CONTEXT, PUBLIC
from protocol.sheet import Sheet, format_datestamp, sheet_from_dict, sheet_to_dict
from protocol.taxonomy import Taxonomy, default_taxonomy

SHORT_TEXT_LIMIT = 300

# sheet_to_dict keys -> JSON-LD terms, where they differ. Renames avoid the
# ActivityStreams terms (summary, url, tag...) and reuse schema.org names.
_TOP = {
    "id": "sheetId",
    "local_id": "localId",
    "summary": "abstract",
    "url": "sameAs",
    "language": "inLanguage",
    "licence": "license",
    "tags": "partnerTags",
    "start_date": "startDate",
    "end_date": "endDate",
    "created": "dateCreated",
    "modified": "dateModified",
}
_NESTED: dict[str, dict[str, str]] = {
    "partner": {"id": "identifier"},
    "holder": {"legal_form": "legalForm"},
    "tags": {"tag": "term"},
    "places": {
        "postcode": "postalCode",
        "insee": "inseeCode",
        "country": "addressCountry",
        "lat": "latitude",
        "lon": "longitude",
    },
    "contact": {"phone": "telephone"},
    "matches": {"kind": "matchKind"},
}
_TOP_BACK = {v: k for k, v in _TOP.items()}
_NESTED_BACK = {k: {v: n for n, v in table.items()} for k, table in _NESTED.items()}


def _rename(value: Any, table: Mapping[str, str]) -> Any:
    if isinstance(value, list):
        return [_rename(v, table) for v in value]
    if isinstance(value, Mapping):
        return {table.get(k, k): v for k, v in value.items()}
    return value


def sheet_to_ld(sheet: Sheet) -> dict[str, Any]:
    """The sheet as a ``ProjectSheet`` node in Essaim's context (no ``@context`` of its own)."""
    out: dict[str, Any] = {"type": "ProjectSheet"}
    for key, value in sheet_to_dict(sheet).items():
        out[_TOP.get(key, key)] = _rename(value, _NESTED.get(key, {}))
    return out


def sheet_from_ld(data: Mapping[str, Any]) -> Sheet:
    """Inverse of :func:`sheet_to_ld`; validates through :func:`protocol.sheet.sheet_from_dict`."""
    plain: dict[str, Any] = {}
    for term, value in data.items():
        if term in ("type", "@type", "@context"):
            continue
        key = _TOP_BACK.get(term, term)
        plain[key] = _rename(value, _NESTED_BACK.get(key, {}))
    return sheet_from_dict(plain)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("p", "br", "li", "div"):
            self.parts.append(" ")


def plain_text(fragment: str) -> str:
    parser = _TextExtractor()
    parser.feed(fragment)
    parser.close()
    return " ".join("".join(parser.parts).split())


def short_text(sheet: Sheet, limit: int = SHORT_TEXT_LIMIT) -> str:
    """The summary, else the description as plain text, cut at a word boundary."""
    text = " ".join((sheet.summary or "").split()) or plain_text(sheet.description or "")
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:.")
    return cut + "…"


def hashtag_name(label: str) -> str:
    """``Éducation et jeunesse`` -> ``EducationEtJeunesse``: ASCII CamelCase, what every server links."""
    ascii_text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[A-Za-z0-9]+", ascii_text)
    return "".join(w[:1].upper() + w[1:] for w in words)


def sheet_hashtags(sheet: Sheet, taxonomy: Taxonomy, lang: str = "fr") -> list[str]:
    """Theme labels, then territory (communes, regions), de-duplicated, in that order."""
    labels: list[str] = []
    for code in sheet.themes:
        if code in taxonomy.themes:
            labels.append(taxonomy.themes[code].label(lang))
    for place in sheet.places:
        if place.commune:
            labels.append(place.commune)
        if place.region and place.region in taxonomy.regions:
            labels.append(taxonomy.regions[place.region].label(lang))
    names: list[str] = []
    for label in labels:
        name = hashtag_name(label)
        if name and name.lower() not in (n.lower() for n in names):
            names.append(name)
    return names


def _content(sheet: Sheet, page_url: str, tags: list[tuple[str, str]]) -> str:
    esc = html.escape
    parts = [f"<p><strong>{esc(sheet.title)}</strong></p>"]
    text = short_text(sheet)
    if text:
        parts.append(f"<p>{esc(text)}</p>")
    parts.append(f'<p><a href="{esc(page_url)}">{esc(page_url)}</a></p>')
    if tags:
        links = " ".join(
            f'<a href="{esc(href)}" class="mention hashtag" rel="tag">#<span>{esc(name)}</span></a>'
            for name, href in tags
        )
        parts.append(f"<p>{links}</p>")
    return "".join(parts)


def sheet_note(
    sheet: Sheet,
    *,
    actor_id: str,
    followers_url: str,
    base_url: str,
    page_url: str | None = None,
    taxonomy: Taxonomy | None = None,
    with_context: bool = True,
) -> dict[str, Any]:
    """The ``Note`` for a sheet; ``id`` is the sheet URI (served by content negotiation).

    ``page_url`` is the sheet's HTML page (default: the sheet URI itself).
    """
    tax = taxonomy or default_taxonomy()
    page = page_url or sheet.id
    base = base_url.rstrip("/")
    names = sheet_hashtags(sheet, tax, sheet.language)
    tags = [(name, f"{base}/tags/{name}") for name in names]
    content = _content(sheet, page, tags)
    note: dict[str, Any] = {
        "id": sheet.id,
        "type": "Note",
        "attributedTo": actor_id,
        "content": content,
        "contentMap": {sheet.language: content},
        "url": page,
        "to": [PUBLIC],
        "cc": [followers_url],
        "tag": [{"type": "Hashtag", "name": f"#{name}", "href": href} for name, href in tags],
        "sheet": sheet_to_ld(sheet),
    }
    published = sheet.created or sheet.datestamp
    if published is not None:
        note["published"] = format_datestamp(published)
    updated = sheet.datestamp or sheet.modified
    if updated is not None and (published is None or updated > published):
        note["updated"] = format_datestamp(updated)
    located = next((p for p in sheet.places if p.lat is not None and p.lon is not None), None)
    if located is not None:
        note["location"] = {
            "type": "Place",
            "name": located.commune or located.address or sheet.title,
            "latitude": located.lat,
            "longitude": located.lon,
        }
    if with_context:
        note = {"@context": list(DEFAULT_CONTEXT), **note}
    return note
