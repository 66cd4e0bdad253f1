"""Export sheets as CSV, JSON (the native import format) or GeoJSON, streamed.

CSV cells that a spreadsheet would run as a formula (starting with ``=``, ``+``,
``-``, ``@``, tab or carriage return) are prefixed with an apostrophe (OWASP
"CSV injection"), so an export opened in a spreadsheet never executes anything.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

from node.storage import SheetStore
from protocol.sheet import Sheet, sheet_to_dict
from protocol.text import html_to_text

FORMATS = ("csv", "json", "jsonl", "geojson")

CSV_COLUMNS = [
    "id",
    "local_id",
    "title",
    "summary",
    "description",
    "url",
    "language",
    "licence",
    "partner",
    "holder",
    "holder_legal_form",
    "holder_siret",
    "themes",
    "subthemes",
    "tags",
    "audiences",
    "stage",
    "engineering",
    "address",
    "postcode",
    "commune",
    "insee",
    "departement",
    "region",
    "lat",
    "lon",
    "precision",
    "scope",
    "other_places",
    "start_date",
    "end_date",
    "created",
    "modified",
    "awards",
    "contact_name",
    "contact_email",
    "contact_phone",
    "images",
    "links",
    "needs",
    "offers",
    "datestamp",
]
_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> str:
    """Make a cell inert for spreadsheets (formula injection).

    Numbers are written as they are: a negative longitude is a number, not a formula,
    and ``'-1.68`` would turn every place west of Greenwich into text.
    """
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(_DANGEROUS) else text


def csv_row(sheet: Sheet) -> list[str]:
    data = sheet_to_dict(sheet)
    first = sheet.places[0] if sheet.places else None
    others = [" ".join(x for x in (p.postcode, p.commune, p.insee) if x) for p in sheet.places[1:]]
    needs = [f"{m.kind.value}: {m.text}" for m in sheet.matches if m.direction.value == "need"]
    offers = [f"{m.kind.value}: {m.text}" for m in sheet.matches if m.direction.value == "offer"]
    values: dict[str, Any] = {
        "id": sheet.id,
        "local_id": sheet.local_id,
        "title": sheet.title,
        "summary": sheet.summary,
        "description": html_to_text(sheet.description or ""),
        "url": sheet.url,
        "language": sheet.language,
        "licence": sheet.licence,
        "partner": sheet.partner.name,
        "holder": sheet.holder.name if sheet.holder else None,
        "holder_legal_form": sheet.holder.legal_form if sheet.holder else None,
        "holder_siret": sheet.holder.siret if sheet.holder else None,
        "themes": ";".join(sheet.themes),
        "subthemes": ";".join(sheet.subthemes),
        "tags": ";".join(t.tag for t in sheet.tags),
        "audiences": ";".join(sheet.audiences),
        "stage": sheet.stage.value if sheet.stage else None,
        "engineering": ";".join(sheet.engineering),
        "other_places": ";".join(others),
        "start_date": sheet.start_date,
        "end_date": sheet.end_date,
        "created": data.get("created"),
        "modified": data.get("modified"),
        "awards": ";".join(a.name for a in sheet.awards),
        "contact_name": sheet.contact.name if sheet.contact else None,
        "contact_email": sheet.contact.email if sheet.contact else None,
        "contact_phone": sheet.contact.phone if sheet.contact else None,
        "images": " ".join(i.url for i in sheet.images),
        "links": " ".join(link.url for link in sheet.links),
        "needs": ";".join(needs),
        "offers": ";".join(offers),
        "datestamp": data.get("datestamp"),
    }
    if first is not None:
        values.update(
            address=first.address,
            postcode=first.postcode,
            commune=first.commune,
            insee=first.insee,
            departement=first.departement,
            region=first.region,
            lat=first.lat,
            lon=first.lon,
            precision=first.precision.value,
            scope=first.scope.value,
        )
    return [neutralise(values.get(c)) for c in CSV_COLUMNS]


def geojson_features(sheet: Sheet) -> list[dict[str, Any]]:
    """One Point feature per located place (a project may have several places)."""
    features = []
    for index, place in enumerate(sheet.places):
        if place.lat is None or place.lon is None:
            continue
        features.append(
            {
                "type": "Feature",
                "id": f"{sheet.id}#place-{index}",
                "geometry": {"type": "Point", "coordinates": [place.lon, place.lat]},
                "properties": {
                    "sheet": sheet.id,
                    "title": sheet.title,
                    "partner": sheet.partner.name,
                    "url": sheet.url,
                    "themes": list(sheet.themes),
                    "commune": place.commune,
                    "insee": place.insee,
                    "departement": place.departement,
                    "region": place.region,
                    "precision": place.precision.value,
                    "licence": sheet.licence,
                },
            }
        )
    return features


async def export_chunks(store: SheetStore, fmt: str, *, licence: str, source: str) -> AsyncIterator[str]:
    """Text chunks of the whole export; memory stays flat whatever the number of sheets."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        async for sheet in store.iter_sheets():
            writer.writerow(csv_row(sheet))
            if buffer.tell() > 64 * 1024:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()
        return
    first = True
    if fmt == "json":
        yield "[\n"
    elif fmt == "geojson":
        meta = json.dumps({"licence": licence, "source": source}, ensure_ascii=False)
        yield '{"type": "FeatureCollection", "metadata": ' + meta + ', "features": [\n'
    async for sheet in store.iter_sheets():
        if fmt == "jsonl":
            yield json.dumps(sheet_to_dict(sheet), ensure_ascii=False) + "\n"
            continue
        items = [sheet_to_dict(sheet)] if fmt == "json" else geojson_features(sheet)
        for item in items:
            yield ("" if first else ",\n") + json.dumps(item, ensure_ascii=False)
            first = False
    if fmt == "json":
        yield "\n]\n"
    elif fmt == "geojson":
        yield "\n]}\n"
