"""The native ``essaim`` metadata format: the whole sheet as XML, and back.

Element names are the keys of :func:`protocol.sheet.sheet_to_dict`, lists become
repeated elements named after one item (``LIST_ITEMS``), so the mapping is
mechanical, complete by construction, and documented in one place: the XML
Schema ``schemas/essaim-sheet-1.0.xsd`` shipped next to this module. A hub
harvesting another node decodes records with :func:`parse_native`, which goes
through :func:`protocol.sheet.sheet_from_dict` so every field is validated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from lxml import etree

from protocol.oai.namespaces import ESSAIM, ESSAIM_SCHEMA_FILE, qn
from protocol.sheet import Sheet, sheet_from_dict, sheet_to_dict

# JSON list key -> XML element name of one item.
LIST_ITEMS: Mapping[str, str] = {
    "themes": "theme",
    "subthemes": "subtheme",
    "tags": "tag_mapping",
    "codes": "code",
    "audiences": "audience",
    "engineering": "engineering",
    "places": "place",
    "awards": "award",
    "images": "image",
    "links": "link",
    "matches": "match",
}
_ITEM_LISTS = {item: key for key, item in LIST_ITEMS.items()}
# Leaves that are numbers in the canonical JSON (everything else is text).
_NUMBERS: Mapping[str, type[int] | type[float]] = {"lat": float, "lon": float, "year": int}

# Characters XML 1.0 forbids (§2.2): lxml refuses them, a partner's CSV may contain them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: object) -> str:
    """Text safe for an XML 1.0 element (forbidden control characters dropped)."""
    text = value if type(value) is str else str(value)
    # Every forbidden character is non-printable: printable text (most of it) skips the regex.
    return text if text.isprintable() else _NOT_XML.sub("", text)


def escape_xml(value: object, *, quote: bool = False) -> str:
    """XML-escape text (and double quotes, for attribute values), dropping forbidden characters."""
    return escape_text(xml_text(value), quote)


def escape_text(text: str, quote: bool = False) -> str:
    """Escape text already free of forbidden characters (each replace only when needed)."""
    if quote and '"' in text:
        text = text.replace("&", "&amp;").replace('"', "&quot;")
    elif "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    return text


def plain_or_escaped(text: str) -> str:
    """:func:`escape_xml` of a text, answered without a copy for printable text with nothing to escape."""
    if text.isprintable() and "&" not in text and "<" not in text and ">" not in text:
        return text
    return escape_text(xml_text(text))


def _write(out: list[str], data: Mapping[str, Any]) -> None:
    append = out.append
    for key, value in data.items():
        kind = type(value)
        if kind is str:
            # plain_or_escaped, inlined (dozens of values per sheet, on every write).
            if not (value.isprintable() and "&" not in value and "<" not in value and ">" not in value):
                value = escape_text(xml_text(value))
            append(f"<{key}>{value}</{key}>")
        elif kind is list:
            name = LIST_ITEMS.get(key, key)
            for item in value:
                if type(item) is str:
                    append(f"<{name}>{plain_or_escaped(item)}</{name}>")
                else:
                    _write_one(out, name, item)
        elif (kind is dict or isinstance(value, Mapping)) and not value:
            continue  # an object whose fields are all absent says nothing
        elif isinstance(value, list):
            name = LIST_ITEMS.get(key, key)
            for item in value:
                _write_one(out, name, item)
        else:
            _write_one(out, key, value)


def _write_one(out: list[str], name: str, value: Any) -> None:
    if type(value) is dict or isinstance(value, Mapping):
        out.append(f"<{name}>")
        _write(out, value)
        out.append(f"</{name}>")
    else:
        out.append(f"<{name}>{escape_xml(value)}</{name}>")


def native_xml(sheet: Sheet, data: Mapping[str, Any] | None = None) -> str:
    """The native record as text, written directly (the hot path of every write).

    ``data`` is ``sheet_to_dict(sheet)`` when the caller has it already. Element
    names are fixed identifiers from the sheet model, so only text needs escaping.
    """
    return native_xml_of(data if data is not None else sheet_to_dict(sheet))


def native_xml_of(data: Mapping[str, Any]) -> str:
    """:func:`native_xml` of the sheet whose ``sheet_to_dict`` is ``data`` (a stored sheet, as read back)."""
    out = [f'<sheet xmlns="{ESSAIM}">']
    _write(out, data)
    out.append("</sheet>")
    return "".join(out)


def native_element(sheet: Sheet) -> etree._Element:
    """``<sheet xmlns="https://essaim.org/ns/sheet/1.0">`` carrying every field of the sheet."""
    return etree.fromstring(native_xml(sheet))


# Qualified tag -> (local name, list key or None, number type or None), filled as tags are met:
# a record has ~40 elements and a handful of distinct names, so each is split once per process.
_TAG_INFO: dict[str, tuple[str, str | None, type[int] | type[float] | None]] = {}


def _tag_info(tag: str) -> tuple[str, str | None, type[int] | type[float] | None]:
    name = tag[tag.rfind("}") + 1 :]  # "{ns}name" or "name"
    info = (name, _ITEM_LISTS.get(name), _NUMBERS.get(name))
    if len(_TAG_INFO) < 4096:  # a hostile record cannot grow the cache without bound
        _TAG_INFO[tag] = info
    return info


def _leaf(text: str | None, number: type[int] | type[float] | None) -> Any:
    text = text or ""
    if number is not None:
        try:
            return number(text)
        except ValueError:
            return text  # left for sheet_from_dict to report with the field's path
    return text


def _read(element: etree._Element) -> dict[str, Any] | None:
    """The element children of ``element`` as a dict (None when it has none: it is a leaf).

    The hot path of every harvested native record: one pass over the children, tag names
    looked up in :data:`_TAG_INFO`, leaves detected with ``len`` (no child list built).
    """
    out: dict[str, Any] = {}
    for child in element:
        tag = child.tag
        if type(tag) is not str:
            continue  # comments and processing instructions have a function as tag
        name, key, number = _TAG_INFO.get(tag) or _tag_info(tag)
        value = _read(child) if len(child) else None
        if value is None:
            value = _leaf(child.text, number)
        if key is None:
            out[name] = value
        else:
            items = out.get(key)
            if items is None:
                out[key] = [value]
            elif type(items) is list:
                items.append(value)
            else:
                raise ValueError(f"<{name}> items mixed with a <{key}> element")
    return out or None


def native_to_dict(element: etree._Element) -> dict[str, Any]:
    """Inverse of :func:`native_element`, as a dict for :func:`sheet_from_dict`."""
    if element.tag != qn(ESSAIM, "sheet"):
        raise ValueError(f"expected an essaim sheet element, got {element.tag!r}")
    data = _read(element)
    if data is None:
        raise ValueError("empty essaim sheet element")
    return data


def parse_native(element: etree._Element) -> Sheet:
    """Decode and validate a native record (raises ``SheetValidationError``)."""
    return sheet_from_dict(native_to_dict(element))


def schema_bytes() -> bytes:
    """The XML Schema of the native format, as served at ``/schemas/essaim-sheet-1.0.xsd``."""
    return resources.files("protocol.oai").joinpath("schemas", ESSAIM_SCHEMA_FILE).read_bytes()
