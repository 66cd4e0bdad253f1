"""The hub's search service: one pooled client and the alias every query goes through.

This is the seam between the search engine and its users (the JSON query API, the
web front, feeds): they hold a :class:`SearchService` (``app[SEARCH]``) and never
build Typesense requests themselves, so filters always go through the typed,
escaping builders of :mod:`search.filters`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from search import geo
from search.client import SearchClient
from search.clusters import cluster_query
from search.query import SearchQuery, run_search
from search.schema import ALIAS
from search.suggest import suggest


class SearchService:
    """Queries of the hub's index (``alias`` names the live collection)."""

    def __init__(self, client: SearchClient, *, alias: str = ALIAS) -> None:
        self.client = client
        self.alias = alias

    async def search(self, query: SearchQuery) -> dict[str, Any]:
        """Hits, ``found`` and facet counts (disjunctive for the active facets)."""
        return await run_search(self.client, query, self.alias)

    async def suggest(self, prefix: str, limit: int = 5) -> dict[str, Any]:
        """Titles, communes and partners starting like ``prefix``."""
        return await suggest(self.client, prefix, limit, self.alias)

    async def clusters(self, bbox: geo.BBox, zoom: int, query: SearchQuery | None = None) -> dict[str, Any]:
        """Map clusters of the sheets inside ``bbox`` at ``zoom`` (server-side geohash counts)."""
        return await cluster_query(self.client, bbox, zoom, query, self.alias)

    async def count(self) -> int:
        """Documents in the live collection."""
        return await self.client.num_documents(self.alias)


SEARCH = web.AppKey("search", SearchService)
