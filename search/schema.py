"""The Typesense collection for sheets, and the pure sheet → document mapping.

Typesense 0.24.1 blocks reads and writes while a schema is PATCHed, so a schema
change is a new versioned collection (``sheets_v{N}_{timestamp}``) filled in the
background and then swapped behind the ``sheets`` alias.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from protocol.sheet import MatchStatus, Sheet
from search import geo
from search.text import clean_text, html_to_text, stem_text

SCHEMA_VERSION = 2  # 2: match_directions and match_pairs
ALIAS = "sheets"

# Apostrophes are folded to "'" before indexing (Typesense refuses "’" here) and
# hyphens split French compounds ("vélo-école"). No ``locale``: "fr" breaks
# accent-insensitive matching on 0.24.1.
TOKEN_SEPARATORS = ("'", "-")


class Kind(enum.StrEnum):
    """How a field may be filtered; drives the filter builder's validation."""

    STRING = "string"
    INT = "int"
    GEO = "geo"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: str
    facet: bool = False
    optional: bool = False
    sort: bool = False

    def to_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "facet": self.facet, "optional": self.optional}
        if self.sort:
            out["sort"] = True
        return out

    @property
    def kind(self) -> Kind:
        if self.type.startswith("geopoint"):
            return Kind.GEO
        if self.type.startswith(("int", "float")):
            return Kind.INT
        return Kind.STRING


TEXT_FIELDS = ("title", "summary", "description", "stemmed")

FACET_FIELDS = (
    "themes",
    "subthemes",
    "audiences",
    "stage",
    "engineering",
    "match_kinds",
    "match_directions",
    "match_pairs",
    "partner",
    "insee",
    "departement",
    "region",
    "duplicate_cluster",
)

GEOHASH_FIELDS = tuple(f"gh{p}" for p in geo.PRECISIONS)

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("title", "string"),
    FieldSpec("summary", "string", optional=True),
    FieldSpec("description", "string", optional=True),
    FieldSpec("stemmed", "string"),
    FieldSpec("holder", "string", optional=True),
    FieldSpec("communes", "string[]", facet=True, optional=True),
    FieldSpec("themes", "string[]", facet=True, optional=True),
    FieldSpec("subthemes", "string[]", facet=True, optional=True),
    FieldSpec("audiences", "string[]", facet=True, optional=True),
    FieldSpec("stage", "string", facet=True, optional=True),
    FieldSpec("engineering", "string[]", facet=True, optional=True),
    FieldSpec("match_kinds", "string[]", facet=True, optional=True),
    # Of the open matches too: "need"/"offer", and "direction:kind" pairs, so that "a need of a place" is
    # one filter (a sheet offering a place and needing money is not one).
    FieldSpec("match_directions", "string[]", facet=True, optional=True),
    FieldSpec("match_pairs", "string[]", facet=True, optional=True),
    FieldSpec("partner", "string", facet=True),
    FieldSpec("insee", "string[]", facet=True, optional=True),
    FieldSpec("departement", "string[]", facet=True, optional=True),
    FieldSpec("region", "string[]", facet=True, optional=True),
    FieldSpec("duplicate_cluster", "string", facet=True, optional=True),
    # 0.24 supports geopoint[] for filtering: ``locations`` holds every place, so a
    # radius or a box finds a sheet by any of its places; ``location`` (the first
    # place) sorts by distance and anchors the sheet on the map.
    FieldSpec("location", "geopoint", optional=True),
    FieldSpec("locations", "geopoint[]", optional=True),
    *(FieldSpec(name, "string", facet=True, optional=True) for name in GEOHASH_FIELDS),
    FieldSpec("datestamp", "int64"),
    FieldSpec("created", "int64"),
    FieldSpec("rotation", "int64"),
)

FIELDS_BY_NAME = {f.name: f for f in FIELDS}

# Fields a caller may filter on (the filter builder refuses any other name).
FILTERABLE = {f.name: f.kind for f in FIELDS if f.name not in ("title", "summary", "description", "stemmed")}
FILTERABLE["id"] = Kind.STRING


def collection_name(now: datetime | None = None, version: int = SCHEMA_VERSION) -> str:
    now = now or datetime.now(UTC)
    return f"sheets_v{version}_{now.astimezone(UTC):%Y%m%d%H%M%S}"


def collection_schema(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "fields": [f.to_schema() for f in FIELDS],
        "token_separators": list(TOKEN_SEPARATORS),
    }


def document_id(sheet_id: str) -> str:
    """Typesense id of a sheet: a digest of its URI.

    Sheet ids are URIs; Typesense ids travel in URL paths and in filters, so a
    fixed-alphabet digest avoids both escaping problems.
    """
    return hashlib.sha256(sheet_id.encode("utf-8")).hexdigest()[:32]


def rotation_key(sheet_id: str, salt: str = "") -> int:
    """Stable pseudo-random rank for fair ordering; change ``salt`` to reshuffle."""
    digest = hashlib.sha256(f"{salt}\x00{sheet_id}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


def _epoch(value: datetime | date | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def _unique(values: Any) -> list[str]:
    """The non-empty values, first occurrences in order."""
    return [v for v in dict.fromkeys(values) if v]


def document_from_sheet(sheet: Sheet, *, cluster: str | None = None, rotation_salt: str = "") -> dict[str, Any]:
    """The Typesense document of a sheet (pure: same sheet, same document)."""
    title = clean_text(sheet.title)
    summary = clean_text(sheet.summary)
    description = html_to_text(sheet.description)
    open_matches = [m for m in sheet.matches if m.status is MatchStatus.OPEN]
    doc: dict[str, Any] = {
        "id": document_id(sheet.id),
        "uri": sheet.id,
        "local_id": sheet.local_id,
        "title": title,
        "stemmed": stem_text(" ".join((title, summary, description))),
        "partner": sheet.partner.name,
        "themes": list(sheet.themes),
        "subthemes": list(sheet.subthemes),
        "audiences": list(sheet.audiences),
        "engineering": list(sheet.engineering),
        "match_kinds": _unique(m.kind.value for m in open_matches),
        "match_directions": _unique(m.direction.value for m in open_matches),
        "match_pairs": _unique(f"{m.direction.value}:{m.kind.value}" for m in open_matches),
        "communes": _unique(p.commune for p in sheet.places),
        "insee": _unique(p.insee for p in sheet.places),
        "departement": _unique(p.departement for p in sheet.places),
        "region": _unique(p.region for p in sheet.places),
        "datestamp": _epoch(sheet.datestamp) or 0,
        "created": _epoch(sheet.created) or _epoch(sheet.start_date) or _epoch(sheet.datestamp) or 0,
        "rotation": rotation_key(sheet.id, rotation_salt),
    }
    if summary:
        doc["summary"] = summary
    if description:
        doc["description"] = description
    if sheet.holder and sheet.holder.name:
        doc["holder"] = clean_text(sheet.holder.name)
    if sheet.stage is not None:
        doc["stage"] = sheet.stage.value
    if cluster:
        doc["duplicate_cluster"] = cluster
    points = [(p.lat, p.lon) for p in sheet.places if p.lat is not None and p.lon is not None]
    if points:
        doc["location"] = list(points[0])
        doc["locations"] = [list(pt) for pt in points]
        doc.update(geo.cells(*points[0]))
    # Stored for display only (not declared in the schema, so not indexed).
    if sheet.url:
        doc["url"] = sheet.url
    if sheet.images:
        doc["image"] = sheet.images[0].url
    if sheet.partner.id:
        doc["partner_id"] = sheet.partner.id
    return doc
