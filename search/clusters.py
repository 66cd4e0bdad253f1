"""Map clusters from geohash facet counts.

Each document carries the geohash cells of its first place (``gh2`` … ``gh6``);
a map view filters on its bounding box over the same first place (``location``)
and facets on the precision matching its zoom, so the cluster counts add up to
the number of sheets shown in the box.
"""

from __future__ import annotations

from typing import Any

from search import geo
from search.client import SearchClient
from search.filters import GeoPolygon, build_filter
from search.query import SearchQuery
from search.schema import ALIAS
from search.text import stem_query

MAX_CELLS = 2000


def cluster_params(bbox: geo.BBox, zoom: int, query: SearchQuery | None = None) -> tuple[int, dict[str, Any]]:
    if isinstance(zoom, bool) or not isinstance(zoom, int) or not 0 <= zoom <= 22:
        raise ValueError("zoom must be a whole number between 0 and 22")
    precision = geo.precision_for_zoom(zoom)
    clauses = query.clauses() if query is not None else []
    clauses.append(GeoPolygon.from_bbox(bbox, field="location"))
    params = {
        "q": stem_query(query.q) if query is not None else "*",
        "query_by": "stemmed,title",
        "filter_by": build_filter(clauses),
        "facet_by": f"gh{precision}",
        "max_facet_values": MAX_CELLS,
        "per_page": 0,
    }
    return precision, params


async def cluster_query(
    client: SearchClient,
    bbox: geo.BBox,
    zoom: int,
    query: SearchQuery | None = None,
    collection: str = ALIAS,
) -> dict[str, Any]:
    """Clusters ``{cell, lat, lon, count, bounds}`` of the sheets inside ``bbox``.

    The centre is the cell's centre (Typesense cannot average coordinates per facet
    value); ``complete`` is false when more than ``MAX_CELLS`` cells were needed.
    """
    precision, params = cluster_params(bbox, zoom, query)
    (response,) = await client.multi_search([{"collection": collection, **params}])
    field = f"gh{precision}"
    counts: list[dict[str, Any]] = next(
        (fc["counts"] for fc in response.get("facet_counts", []) if fc["field_name"] == field), []
    )
    clusters = []
    for c in counts:
        cell = c["value"]
        lat, lon = geo.cell_centre(cell)
        b = geo.cell_bounds(cell)
        clusters.append(
            {
                "cell": cell,
                "lat": lat,
                "lon": lon,
                "count": int(c["count"]),
                "bounds": [b.south, b.west, b.north, b.east],
            }
        )
    found = int(response.get("found", 0))
    return {
        "precision": precision,
        "found": found,
        "clusters": clusters,
        "complete": sum(c["count"] for c in clusters) == found,
    }
