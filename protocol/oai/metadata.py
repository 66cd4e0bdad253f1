"""Metadata formats a node disseminates (spec §3.4) and their rendering.

A node's storage calls :func:`render_formats` on every effective change and keeps
the XML of each format's ``<metadata>`` child, so an OAI-PMH page is a join of
stored fragments; a hub stores none and renders each record as it serves it
(:func:`render_format`, from the stored sheet dict: the same text). ``oai_dc`` is
the mandatory Dublin Core format (spec §3.4, must be valid against oai_dc.xsd:
text only, no markup); ``essaim`` is the native format carrying the whole sheet
(:mod:`protocol.oai.native`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from lxml import etree

from protocol.oai.namespaces import DC, ESSAIM, ESSAIM_SCHEMA_FILE, OAI_DC, OAI_DC_SCHEMA, XSI
from protocol.oai.native import escape_text, escape_xml, native_xml, native_xml_of, xml_text
from protocol.oai.sets import departement_of, departements, region_of
from protocol.sheet import Place, Sheet, sheet_from_dict
from protocol.taxonomy import Taxonomy, default_taxonomy
from protocol.text import html_to_text


@dataclass(frozen=True, slots=True)
class MetadataFormat:
    """One format of ListMetadataFormats; ``schema`` is absolute, or relative to the node's site URL."""

    prefix: str
    schema: str
    namespace: str

    def schema_url(self, site_url: str) -> str:
        return urljoin(site_url.rstrip("/") + "/", self.schema)


METADATA_FORMATS: tuple[MetadataFormat, ...] = (
    MetadataFormat("oai_dc", OAI_DC_SCHEMA, OAI_DC),
    MetadataFormat("essaim", f"schemas/{ESSAIM_SCHEMA_FILE}", ESSAIM),
)
PREFIXES = frozenset(f.prefix for f in METADATA_FORMATS)


def dublin_core(sheet: Sheet, taxonomy: Taxonomy | None = None) -> etree._Element:
    """``<oai_dc:dc>`` for a sheet, as an element (see :func:`dublin_core_xml`)."""
    return etree.fromstring(dublin_core_xml(sheet, taxonomy))


def dublin_core_xml(sheet: Sheet, taxonomy: Taxonomy | None = None) -> str:
    """``<oai_dc:dc>`` for a sheet: a lossy but widely understood view (BASE, ISIDORE...).

    Written as text (it runs on every write); element names are fixed, text and
    the language attribute are escaped.
    """
    tax = taxonomy or default_taxonomy()
    out = [
        f'<oai_dc:dc xmlns:oai_dc="{OAI_DC}" xmlns:dc="{DC}" xmlns:xsi="{XSI}"'
        f' xsi:schemaLocation="{OAI_DC} {OAI_DC_SCHEMA}">'
    ]

    langs: dict[str | None, str] = {None: ""}  # the attribute of each language, escaped once

    def dc(name: str, value: str | None, lang: str | None = None) -> None:
        text = xml_text(value or "").strip()
        if text:
            attr = langs.get(lang)
            if attr is None:
                attr = langs[lang] = f' xml:lang="{escape_xml(lang, quote=True)}"' if lang else ""
            if not ("&" not in text and "<" not in text and ">" not in text and "\r" not in text):
                text = escape_text(text)
            out.append(f"<dc:{name}{attr}>{text}</dc:{name}>")

    dc("title", sheet.title, sheet.language)
    if sheet.holder is not None:
        dc("creator", sheet.holder.name)
    for theme in sheet.themes:
        dc("subject", tax.themes[theme].fr if theme in tax.themes else theme, "fr")
    for sub in sheet.subthemes:
        dc("subject", tax.subthemes[sub].fr if sub in tax.subthemes else sub, "fr")
    for mapping in sheet.tags:
        dc("subject", mapping.tag)
    dc("description", sheet.summary, sheet.language)
    if sheet.description:
        dc("description", html_to_text(sheet.description), sheet.language)
    dc("publisher", sheet.partner.name)
    if sheet.start_date is not None:
        dc("date", sheet.start_date.isoformat())
    elif sheet.created is not None:
        dc("date", sheet.created.date().isoformat())
    dc("type", "Projet d'innovation sociale", "fr")
    dc("identifier", sheet.id)
    if sheet.url and sheet.url != sheet.id:
        dc("identifier", sheet.url)
    dc("language", sheet.language)
    for link in sheet.links:
        dc("relation", link.url)
    for place in sheet.places:
        dc("coverage", _place_label(place, tax))
    dc("rights", sheet.licence)
    out.append("</oai_dc:dc>")
    return "".join(out)


def _place_label(place: Place, tax: Taxonomy) -> str:
    parts: list[str] = []
    if place.commune:
        parts.append(place.commune)
    code = departement_of(place)
    if code:
        parts.append(f"{departements()[code][0]} ({code})")
    region = region_of(place)
    if region and region in tax.regions:
        parts.append(tax.regions[region].fr)
    if place.country and place.country.upper() != "FR":
        parts.append(place.country)
    return ", ".join(parts)


def to_xml(element: etree._Element) -> str:
    text: str = etree.tostring(element, encoding="unicode")
    return text


def render_formats(
    sheet: Sheet, *, taxonomy: Taxonomy | None = None, data: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """metadataPrefix -> XML of the ``<metadata>`` child, for every format in :data:`METADATA_FORMATS`.

    ``data`` is ``sheet_to_dict(sheet)`` when the caller has it already.
    """
    return {
        "oai_dc": dublin_core_xml(sheet, taxonomy),
        "essaim": native_xml(sheet, data),
    }


def render_format(prefix: str, data: Mapping[str, Any], *, taxonomy: Taxonomy | None = None) -> str:
    """The ``<metadata>`` child in format ``prefix`` of the sheet whose dict is ``data`` (as stored):
    what :func:`render_formats` returns for that prefix. The native format is written from the
    dict alone; Dublin Core needs the sheet, decoded (and validated) from it."""
    if prefix == "essaim":
        return native_xml_of(data)
    if prefix == "oai_dc":
        return dublin_core_xml(sheet_from_dict(data), taxonomy)
    raise ValueError(f"no metadata format {prefix!r}")
