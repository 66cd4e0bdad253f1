"""The hub's search service: one pooled client and the alias every query goes through.

This is the seam between the search engine and its users (the JSON query API, the
web front, feeds): they hold a :class:`SearchService` (``app[SEARCH]``) and never
build Typesense requests themselves, so filters always go through the typed,
escaping builders of :mod:`search.filters`.

Facet counts are cached per facet, keyed by what they depend on (the text and every
other constraint: not the sort, the page, nor the facet's own chosen values), for the
current index generation and, once the index has moved on, for ``counts_stale``
seconds more: a page whose counts are known asks Typesense for its hits alone. Counting
facets is most of Typesense's work for a page (about 50 ns a document and facet), and
the counts a page needs are shared by its sorts, its pages and its disjunctive
neighbours (the theme counts of « Santé » chosen are those of no theme chosen).

Aggregates that do not depend on the viewport's details are cached per *index
generation* (bumped by the index worker after every applied batch, and when the
alias moves): the home page's facet counts (:meth:`SearchService.overview`) and the
map clusters of wide views (zoom ≤ ``wide_zoom``), computed once over the whole index
at the view's geohash precision and cut to the viewport here. A stale entry is
served while one background refresh recomputes it, so the all-of-France map costs
a dictionary lookup even at a million sheets.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from search import geo
from search.client import SearchClient
from search.clusters import MAX_CELLS, cluster_query
from search.filters import build_filter
from search.query import DEFAULT_FACETS, SearchQuery, run_search
from search.schema import ALIAS
from search.suggest import suggest
from search.text import stem_query

OVERVIEW_FACETS = (*DEFAULT_FACETS, "insee")


@dataclass
class _Entry:
    generation: int
    computed: float
    value: Any


def query_key(query: SearchQuery | None) -> str:
    """What a cached aggregate depends on: the text and the filters (not paging or sorting)."""
    return "" if query is None else query.constraints_key()


class SearchService:
    """Queries of the hub's index (``alias`` names the live collection)."""

    def __init__(
        self,
        client: SearchClient,
        *,
        alias: str = ALIAS,
        wide_zoom: int = 7,
        cache_stale: float = 300.0,
        cache_size: int = 256,
        min_refresh: float = 2.0,
        counts_size: int = 4096,
        counts_stale: float = 2.0,
    ) -> None:
        self.client = client
        self.alias = alias
        self.wide_zoom = wide_zoom
        self.cache_stale = cache_stale
        self.cache_size = cache_size
        self.min_refresh = min_refresh
        self.counts_size = counts_size
        self.counts_stale = counts_stale
        self.generation = 0
        self._counts: OrderedDict[str, _Entry] = OrderedDict()
        self.counts_hits = self.counts_misses = 0  # facets read from the cache / counted by Typesense
        self.ready = True  # False while a restarted embedded server reloads its documents
        self._cache: OrderedDict[tuple[str, ...], _Entry] = OrderedDict()
        self._inflight: dict[tuple[str, ...], asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def changed(self, by: int = 1) -> None:
        """The index changed (the worker applied a batch, a reindex moved the alias)."""
        if by:
            self.generation += 1

    async def search(self, query: SearchQuery) -> dict[str, Any]:
        """Hits, ``found`` and facet counts (disjunctive for the active facets)."""
        if self.counts_size <= 0 or not query.facets:
            return await run_search(self.client, query, self.alias)
        now = time.monotonic()
        generation = self.generation
        keys = {name: query.counts_key(name) for name in query.facets}
        known: dict[str, Any] = {}
        for name, key in keys.items():
            entry = self._counts.get(key)
            if entry is not None and (entry.generation == generation or now - entry.computed < self.counts_stale):
                self._counts.move_to_end(key)
                known[name] = entry.value
        missing = [name for name in query.facets if name not in known]
        self.counts_hits += len(known)
        self.counts_misses += len(missing)
        responses = await self.client.multi_search(query.searches(self.alias, counted=missing))
        if missing:
            for name, values in query.counts(responses, missing).items():
                self._counts[keys[name]] = _Entry(generation, now, values)
                self._counts.move_to_end(keys[name])
            while len(self._counts) > self.counts_size:
                self._counts.popitem(last=False)
        return query.result(responses, missing, known)

    async def suggest(self, prefix: str, limit: int = 5) -> dict[str, Any]:
        """Titles, communes and partners starting like ``prefix``."""
        return await suggest(self.client, prefix, limit, self.alias)

    async def clusters(self, bbox: geo.BBox, zoom: int, query: SearchQuery | None = None) -> dict[str, Any]:
        """Map clusters of the sheets inside ``bbox`` at ``zoom`` (server-side geohash counts).

        Wide views (``zoom <= wide_zoom``) come from the per-generation cache of whole
        cells: a cell overlapping the viewport counts all of its sheets.
        """
        if isinstance(zoom, bool) or not isinstance(zoom, int) or not 0 <= zoom <= 22:
            raise ValueError("zoom must be a whole number between 0 and 22")
        if zoom > self.wide_zoom:
            return await cluster_query(self.client, bbox, zoom, query, self.alias)
        precision = geo.precision_for_zoom(zoom)
        key = ("cells", str(precision), query_key(query))
        cells = await self._cached(key, lambda: self._all_cells(precision, query))
        return _cut(cells, bbox)

    async def overview(self, query: SearchQuery | None = None) -> dict[str, Any]:
        """``found`` and the counts of every facet (home page, dashboards), cached per generation."""
        key = ("overview", query_key(query))
        return dict(await self._cached(key, lambda: self._overview(query)))

    async def count(self) -> int:
        """Documents in the live collection."""
        return await self.client.num_documents(self.alias)

    # ------------------------------------------------------------------ computing aggregates

    async def _all_cells(self, precision: int, query: SearchQuery | None) -> dict[str, Any]:
        clauses = query.clauses() if query is not None else []
        params: dict[str, Any] = {
            "q": stem_query(query.q) if query is not None else "*",
            "query_by": "stemmed,title",
            "facet_by": f"gh{precision}",
            "max_facet_values": MAX_CELLS,
            "per_page": 0,
        }
        if clauses:
            params["filter_by"] = build_filter(clauses)
        (response,) = await self.client.multi_search([{"collection": self.alias, **params}])
        field = f"gh{precision}"
        counts: list[dict[str, Any]] = next(
            (fc["counts"] for fc in response.get("facet_counts", []) if fc["field_name"] == field), []
        )
        return {
            "precision": precision,
            "cells": [(c["value"], int(c["count"])) for c in counts],
            "complete": len(counts) < MAX_CELLS,
            "generation": self.generation,
        }

    async def _overview(self, query: SearchQuery | None) -> dict[str, Any]:
        base = query or SearchQuery()
        q = SearchQuery(
            q=base.q,
            filters=base.filters,
            created_from=base.created_from,
            created_to=base.created_to,
            near=base.near,
            bbox=base.bbox,
            polygon=base.polygon,
            per_page=0,
            facets=OVERVIEW_FACETS,
            max_facet_values=100,
        )
        result = await run_search(self.client, q, self.alias)
        return {"found": result["found"], "facets": result["facets"], "generation": self.generation}

    async def _cached(self, key: tuple[str, ...], compute: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
            if entry.generation == self.generation:
                return entry.value
            age = time.monotonic() - entry.computed
            if age < self.cache_stale:
                # One refresh at a time per entry, and not more often than every ``min_refresh``
                # seconds: a steady trickle of changes at 1M sheets must not keep Typesense busy
                # recomputing the wide views. The stale value is served meanwhile.
                if key not in self._inflight and age >= self.min_refresh:
                    task = asyncio.create_task(self._compute(key, compute))
                    self._tasks.add(task)
                    task.add_done_callback(self._refreshed)
                return entry.value
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        return await self._compute(key, compute)

    def _refreshed(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # a failed refresh keeps the stale value; the next request retries

    async def _compute(self, key: tuple[str, ...], compute: Callable[[], Awaitable[Any]]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        generation = self.generation
        try:
            value = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # read: nobody else may be waiting
            raise
        finally:
            self._inflight.pop(key, None)
        self._cache[key] = _Entry(generation, time.monotonic(), value)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        future.set_result(value)
        return value

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _cut(cells: dict[str, Any], bbox: geo.BBox) -> dict[str, Any]:
    """The cached cells overlapping ``bbox``, in the shape of :func:`search.clusters.cluster_query`."""
    clusters = []
    for cell, count in cells["cells"]:
        b = geo.cell_bounds(cell)
        if b.north < bbox.south or b.south > bbox.north or b.east < bbox.west or b.west > bbox.east:
            continue
        lat, lon = geo.cell_centre(cell)
        clusters.append(
            {"cell": cell, "lat": lat, "lon": lon, "count": count, "bounds": [b.south, b.west, b.north, b.east]}
        )
    return {
        "precision": cells["precision"],
        "found": sum(c["count"] for c in clusters),
        "clusters": clusters,
        "complete": cells["complete"],
        "cached": True,
        "generation": cells["generation"],
    }


SEARCH = web.AppKey("search", SearchService)
