"""Map clusters from geohash facets: counts add up to the sheets in the box."""

from __future__ import annotations

import pytest

from search import geo
from search.clusters import cluster_query
from search.geo import BBox
from search.query import SearchQuery, run_search

pytestmark = pytest.mark.asyncio(loop_scope="session")

FRANCE = BBox(south=41.0, west=-5.5, north=51.5, east=10.0)
WEST = BBox(south=46.5, west=-5.0, north=49.0, east=-1.0)


@pytest.mark.parametrize("zoom", [3, 5, 8, 10, 14])
async def test_cluster_counts_add_up(client, collection, docs, zoom: int) -> None:
    result = await cluster_query(client, FRANCE, zoom)
    assert result["precision"] == geo.precision_for_zoom(zoom)
    assert result["complete"]
    # Sheets with a place in France (first place): everything but sheets 5 and 8.
    assert result["found"] == sum(1 for d in docs if "location" in d)
    assert sum(c["count"] for c in result["clusters"]) == result["found"]
    for c in result["clusters"]:
        south, west, north, east = c["bounds"]
        assert south <= c["lat"] <= north and west <= c["lon"] <= east
        assert len(c["cell"]) == result["precision"]


async def test_clusters_follow_the_query_and_the_box(client, collection) -> None:
    result = await cluster_query(client, WEST, 10)
    by_cell = {c["cell"]: c["count"] for c in result["clusters"]}
    assert by_cell[geo.encode(47.2184, -1.5536, 5)] == 3  # Nantes: sheets 2, 10, 11
    # Sheet 6 is anchored in Paris (its first place), so the western box does not count it.
    assert result["found"] == 6
    filtered = await cluster_query(client, WEST, 10, SearchQuery(filters={"themes": ("CON",)}))
    assert filtered["found"] == 3 and [c["count"] for c in filtered["clusters"]] == [3]
    texted = await cluster_query(client, WEST, 10, SearchQuery(q="jardins"))
    assert texted["found"] == 1
    # The list search on the same box agrees on the total when every sheet has one place.
    listed = await run_search(client, SearchQuery(filters={"themes": ("CON",)}, bbox=WEST))
    assert listed["found"] == filtered["found"]


async def test_cluster_zoom_validation(client, collection) -> None:
    with pytest.raises(ValueError):
        await cluster_query(client, FRANCE, 99)
