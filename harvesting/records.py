"""Harvested OAI-PMH records → canonical sheets, tombstones or rejections (pure: elements in, records out).

Native ``essaim`` records go through :func:`protocol.oai.native.parse_native`
(hence :func:`protocol.sheet.sheet_from_dict`, which validates every field);
``oai_dc`` records are mapped to a sheet with the fields Dublin Core can carry
(title, descriptions, subjects as tags, URLs, coverage as place text, ...)
and validated the same way.

On the hub a harvested sheet is keyed by the record's OAI identifier (unique in
its repository, and the only key a ``deleted`` header carries), and gets a URI
minted by the hub: a source cannot claim another node's sheet URI. The
source's own sheet URI is kept in the provenance.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from protocol.errors import SheetValidationError
from protocol.oai.namespaces import DC, ESSAIM, OAI, OAI_DC, XML, qn
from protocol.oai.native import parse_native
from protocol.picklable import pickled_by_fields
from protocol.sheet import Sheet, sheet_from_dict, sheet_replacer

NAMESPACES = {"essaim": ESSAIM, "oai_dc": OAI_DC}


@dataclass(frozen=True, slots=True)
class Harvested:
    """A live record: the sheet to store, keyed by ``identifier``."""

    identifier: str
    datestamp: str
    sheet: Sheet
    original_id: str | None  # the sheet URI on the source, when it has one

    @property
    def url(self) -> str | None:
        """The project's page on the partner's site."""
        return self.sheet.url


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Deleted:
    identifier: str
    datestamp: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Rejected:
    identifier: str
    reason: str


Decoded = Harvested | Deleted | Rejected

# replace(sheet, id=..., local_id=..., datestamp=...), on every harvested record.
_rekeyed = sheet_replacer("id", "local_id", "datestamp")


def _datestamp(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00") if "T" in text else text)
    except ValueError:
        return False
    return True


_HEADER = qn(OAI, "header")
_METADATA = qn(OAI, "metadata")
_IDENTIFIER = qn(OAI, "identifier")
_DATESTAMP = qn(OAI, "datestamp")
_ESSAIM_SHEET = qn(ESSAIM, "sheet")
_OAI_DC = qn(OAI_DC, "dc")


def _first(element: etree._Element, tag: str) -> etree._Element | None:
    """``element.find(tag)`` for a plain qualified tag, without lxml's path machinery (every record)."""
    for child in element:
        if child.tag == tag:
            return child
    return None


def decode_record(record: etree._Element, prefix: str, *, partner_name: str) -> Decoded:
    """One ``<record>`` of a ListRecords page; never raises for bad content (it is a :class:`Rejected`)."""
    header = _first(record, _HEADER)
    if header is None:
        return Rejected("", "record without header")
    identifier_el = _first(header, _IDENTIFIER)
    identifier = (identifier_el.text or "").strip() if identifier_el is not None else ""
    if not identifier:
        return Rejected("", "header without identifier")
    if len(identifier) > 255:
        return Rejected(identifier[:255], "identifier longer than 255 characters")
    datestamp_el = _first(header, _DATESTAMP)
    datestamp = (datestamp_el.text or "").strip() if datestamp_el is not None else ""
    if not datestamp or not _datestamp(datestamp):
        return Rejected(identifier, f"bad or missing datestamp {datestamp!r}")
    if header.get("status") == "deleted":
        return Deleted(identifier, datestamp)
    metadata = _first(record, _METADATA)
    children = [c for c in metadata if isinstance(c.tag, str)] if metadata is not None else []
    if len(children) != 1:
        return Rejected(identifier, "live record without exactly one metadata element")
    element = children[0]
    try:
        if prefix == "essaim":
            if element.tag != _ESSAIM_SHEET:
                return Rejected(identifier, f"expected an essaim sheet, got {element.tag!r}")
            sheet = parse_native(element)
        elif prefix == "oai_dc":
            if element.tag != _OAI_DC:
                return Rejected(identifier, f"expected oai_dc:dc, got {element.tag!r}")
            sheet = sheet_from_dict(dublin_core_to_dict(element, identifier, partner_name))
        else:
            return Rejected(identifier, f"no decoder for metadataPrefix {prefix!r}")
    except SheetValidationError as exc:
        return Rejected(identifier, f"invalid sheet: {str(exc)[:500]}")
    except ValueError as exc:
        return Rejected(identifier, f"undecodable metadata: {str(exc)[:500]}")
    original = sheet.id if prefix == "essaim" else None
    # Keyed by the OAI identifier (the id was a placeholder); the hub mints the URI (SheetStore.make_uri).
    return Harvested(identifier, datestamp, _rekeyed(sheet, "", identifier, None), original)


# --------------------------------------------------------------------- oai_dc


def _texts(dc: etree._Element, name: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for el in dc.findall(qn(DC, name)):
        text = " ".join("".join(el.itertext()).split())
        if text:
            out.append((text, el.get(qn(XML, "lang"))))
    return out


def _is_url(text: str) -> bool:
    return text.startswith(("https://", "http://")) and " " not in text


def dublin_core_to_dict(dc: etree._Element, identifier: str, partner_name: str) -> dict[str, Any]:
    """A sheet dict (for :func:`sheet_from_dict`) from ``<oai_dc:dc>``: a lossy but documented mapping.

    title → title; first of several descriptions → summary, the others → description (escaped text
    in paragraphs, since the sheet's description is HTML); subject → tags; publisher → partner (else
    the source's name); creator → holder; last http(s) identifier → url; relation URLs → links;
    coverage → one place each, as address text; language (2 letters) → language; a date
    ``YYYY[-MM[-DD]]`` → start date; an http(s) rights → licence.
    """
    titles = _texts(dc, "title")
    data: dict[str, Any] = {"local_id": identifier, "id": identifier, "title": titles[0][0] if titles else ""}
    descriptions = [t for t, _ in _texts(dc, "description")]
    if len(descriptions) > 1:
        data["summary"] = descriptions[0]
        descriptions = descriptions[1:]
    if descriptions:
        data["description"] = "".join(f"<p>{html.escape(d, quote=False)}</p>" for d in descriptions)
    tags: list[dict[str, Any]] = []
    for subject, _ in _texts(dc, "subject"):
        if subject not in (t["tag"] for t in tags):
            tags.append({"tag": subject})
    if tags:
        data["tags"] = tags
    publishers = _texts(dc, "publisher")
    data["partner"] = {"name": publishers[0][0] if publishers else partner_name}
    creators = _texts(dc, "creator")
    if creators:
        data["holder"] = {"name": creators[0][0]}
    urls = [t for t, _ in _texts(dc, "identifier") if _is_url(t)]
    if urls:
        data["url"] = urls[-1]  # an Essaim node lists the sheet URI first, then the partner's page
    links = [{"url": t} for t, _ in _texts(dc, "relation") if _is_url(t)]
    if links:
        data["links"] = links
    places = [{"address": t} for t, _ in _texts(dc, "coverage")]
    if places:
        data["places"] = places
    languages = [t.lower()[:2] for t, _ in _texts(dc, "language") if t[:2].isalpha()]
    if languages:
        data["language"] = languages[0]
    elif titles and titles[0][1]:
        data["language"] = titles[0][1].lower()[:2]
    for text, _ in _texts(dc, "date"):
        start = _partial_date(text)
        if start:
            data["start_date"] = start
            break
    rights = [t for t, _ in _texts(dc, "rights") if _is_url(t)]
    if rights:
        data["licence"] = rights[0]
    return data


def _partial_date(text: str) -> str | None:
    parts = text[:10].split("-")
    try:
        year = int(parts[0])
        month = int(parts[1]) if len(parts) > 1 else 1
        day = int(parts[2]) if len(parts) > 2 else 1
        return datetime(year, month, day, tzinfo=UTC).date().isoformat()
    except (ValueError, IndexError):
        return None
