"""Does one sheet match a saved search? The query's typed clauses evaluated against the sheet's document.

A saved-search feed actor must decide for every changed sheet, as it changes, whether it
belongs: asking Typesense would mean waiting until the index worker has indexed that
version (the feeds run right after the write's commit, the index a moment later) and one
search per sheet and saved search. The document :func:`search.schema.document_from_sheet`
builds is what Typesense indexes, so its fields are evaluated here instead, with the same
semantics as :meth:`search.query.SearchQuery.filter_by`: values of one facet OR-ed, facets
AND-ed, ``created`` range inclusive, ``near`` a great-circle radius, ``bbox`` a box.

The keywords are the one approximation, on the strict side: every stem of the query
(Snowball French, as the ``stemmed`` field) must occur in the document's stems, a quoted
phrase as a run of stems, and a ``-word`` must not occur. Typesense would also accept a
typo or a prefix, and drops words when nothing matches them all; a followed search sends
only what matches the whole query. A polygon is not evaluated (:func:`check_savable`
refuses it).
"""

from __future__ import annotations

import math
from typing import Any

from search.errors import QueryError
from search.query import SearchQuery
from search.text import stem_query


def check_savable(query: SearchQuery) -> None:
    """A :class:`QueryError` when the query cannot be a saved search."""
    if query.polygon is not None:
        raise QueryError("a saved search cannot use polygon (use near or bbox)")
    if not (query.q.strip() or query.filters or query.near or query.bbox or query.created_from or query.created_to):
        raise QueryError("an empty search matches everything: give keywords or filters")


def _haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def _keywords(q: str, stems: list[str]) -> bool:
    query = stem_query(q)
    if query == "*":
        return True
    present = set(stems)
    text = f" {' '.join(stems)} "
    for part in _parts(query):
        if part.startswith('"'):
            if f" {part.strip(chr(34))} " not in text:
                return False
        elif part.startswith("-"):
            if part[1:] in present:
                return False
        elif part not in present:
            return False
    return True


def _parts(query: str) -> list[str]:
    out: list[str] = []
    for i, chunk in enumerate(query.split('"')):
        if i % 2 == 1:
            out.append(f'"{chunk}"')
        else:
            out.extend(chunk.split())
    return out


def matches(query: SearchQuery, doc: dict[str, Any]) -> bool:
    """Whether the document (:func:`search.schema.document_from_sheet`) is a result of ``query``."""
    for name, values in query.filters.items():
        have = doc.get(name)
        have_set = set(have) if isinstance(have, list) else {have} if have is not None else set()
        if values and not have_set & set(values):
            return False
    created = int(doc.get("created") or 0)
    if query.created_from is not None and created < query.created_from:
        return False
    if query.created_to is not None and created > query.created_to:
        return False
    points = [tuple(p) for p in doc.get("locations") or []]
    if query.near is not None:
        lat, lon, km = query.near
        if not any(_haversine_km((lat, lon), (p[0], p[1])) <= km for p in points):
            return False
    if query.bbox is not None:
        box = query.bbox
        if not any(box.south <= p[0] <= box.north and box.west <= p[1] <= box.east for p in points):
            return False
    return _keywords(query.q, str(doc.get("stemmed") or "").split())
