"""Turn a sheet submitted by the API or the admin into a clean canonical sheet.

Shared by every write path that is not a file import, so that the API and the
admin apply exactly the same rules: validation with field paths, sanitised
description, taxonomy completed (a sub-theme brings its theme), places
geocoded, web addresses checked, the node's partner as publisher.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from node.importer import PlaceResolver
from protocol.errors import FieldError, SheetValidationError
from protocol.sheet import Partner, Sheet, sheet_from_dict
from protocol.taxonomy import default_taxonomy
from protocol.text import to_html


def prepare_sheet(
    data: Mapping[str, Any],
    *,
    partner: Partner,
    licence: str,
    resolver: PlaceResolver | None,
    local_id: str | None = None,
    description_format: str = "html",
) -> Sheet:
    """Validate and normalise; raises :class:`SheetValidationError` naming every bad field."""
    if not isinstance(data, Mapping):
        raise SheetValidationError([FieldError("", "the body must be a JSON object")])
    body = dict(data)
    if local_id is not None:
        if body.get("local_id") not in (None, "", local_id):
            raise SheetValidationError([FieldError("local_id", f"does not match the URL ({local_id!r})")])
        body["local_id"] = local_id
    body["id"] = "pending"  # assigned by storage from the local id
    body["partner"] = {"name": partner.name, "url": partner.url, "logo": partner.logo, "id": partner.id}
    body.setdefault("licence", licence)
    body.pop("datestamp", None)
    sheet = sheet_from_dict(body)
    taxonomy = default_taxonomy()
    unknown = [c for c in (*sheet.themes, *sheet.subthemes) if taxonomy.classify(c) is None]
    errors = [FieldError("themes", f"unknown taxonomy code {c!r}") for c in unknown]
    errors += [
        FieldError("audiences", f"unknown audience {a!r}") for a in sheet.audiences if a not in taxonomy.audiences
    ]
    errors += [
        FieldError("engineering", f"unknown engineering type {e!r}")
        for e in sheet.engineering
        if e not in taxonomy.engineering
    ]
    errors += _url_errors(sheet)
    if errors:
        raise SheetValidationError(errors)
    themes, subthemes = taxonomy.complete(sheet.themes + sheet.subthemes, sheet.themes + sheet.subthemes)
    try:
        description = to_html(sheet.description, description_format) if sheet.description else None
    except ValueError as exc:
        raise SheetValidationError([FieldError("description_format", str(exc))]) from None
    places = tuple(resolver(p)[0] for p in sheet.places) if resolver else sheet.places
    return replace(sheet, id="", themes=themes, subthemes=subthemes, description=description, places=places)


def _url_errors(sheet: Sheet) -> list[FieldError]:
    """Addresses shown as links must be web addresses (never ``javascript:`` and the like)."""
    found: list[tuple[str, str | None]] = [("url", sheet.url)]
    found += [(f"links[{i}].url", link.url) for i, link in enumerate(sheet.links)]
    found += [(f"images[{i}].url", image.url) for i, image in enumerate(sheet.images)]
    if sheet.contact is not None:
        found.append(("contact.url", sheet.contact.url))
    return [
        FieldError(path, f"must be an http(s) address, not {value!r}")
        for path, value in found
        if value and not value.lower().startswith(("http://", "https://"))
    ]
