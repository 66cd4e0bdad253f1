"""The service's facet-count cache: same results as counting every time, fewer facets counted, fresh after changes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest

from search.client import SearchClient
from search.geo import BBox
from search.query import SearchQuery, run_search
from search.schema import collection_name, collection_schema, document_from_sheet
from search.service import SearchService
from tests.search.corpus import RENNES, corpus_sheets

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUERIES = [
    SearchQuery(),
    SearchQuery(filters={"themes": ("ENV",)}),
    SearchQuery(filters={"themes": ("ENV", "EDU")}, sort="date"),
    SearchQuery(filters={"themes": ("ENV",), "stage": ("idee",)}),
    SearchQuery(filters={"themes": ("ENV",), "stage": ("idee",)}, page=2, per_page=1),
    SearchQuery(q="jardin"),
    SearchQuery(q="jardin", filters={"region": ("53",)}),
    SearchQuery(filters={"region": ("53",)}, sort="rotation"),
    SearchQuery(near=(RENNES[0], RENNES[1], 50.0)),
    SearchQuery(bbox=BBox(47.0, -5.0, 49.0, 0.0), filters={"themes": ("ENV",)}),
    SearchQuery(created_from=1_546_300_800, filters={"stage": ("idee", "essaimage")}),
    SearchQuery(filters={"themes": ("PAT",)}),  # a chosen value without hits stays listed
    SearchQuery(facets=("themes", "stage"), max_facet_values=2),
]


class Recording:
    """The real client, with the searches each ``multi_search`` sent kept for the assertions."""

    def __init__(self, client: SearchClient) -> None:
        self.client = client
        self.sent: list[list[dict[str, Any]]] = []

    async def multi_search(
        self, searches: Sequence[Mapping[str, Any]], common: Mapping[str, Any] | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        self.sent.append([dict(s) for s in searches])
        return await self.client.multi_search(searches, common, **kw)

    def counted(self) -> list[str]:
        """The facets the last request had Typesense count."""
        return [f for s in self.sent[-1] if s.get("facet_by") for f in s["facet_by"].split(",")]


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "search_time_ms"}


async def test_cached_counts_give_the_results_of_counting_every_time(client, collection) -> None:
    service = SearchService(client)  # type: ignore[arg-type]
    for _ in range(2):  # the second round reads every count from the cache
        for query in QUERIES:
            assert comparable(await service.search(query)) == comparable(await run_search(client, query)), query
    assert service.counts_hits > 0 and service.counts_misses > 0


async def test_counts_are_shared_by_sorts_pages_and_disjunctive_neighbours(client, collection) -> None:
    spy = Recording(client)
    service = SearchService(spy)  # type: ignore[arg-type]
    await service.search(SearchQuery())
    assert sorted(spy.counted()) == sorted(SearchQuery().facets)

    # Another sort or page of the same search: its hits only.
    await service.search(SearchQuery(sort="date", page=2, per_page=1))
    assert len(spy.sent[-1]) == 1 and spy.counted() == []

    # Choosing a theme: the theme counts are those of no theme chosen (disjunctive), so no side
    # search; the other facets are counted within the selection by the main search.
    await service.search(SearchQuery(filters={"themes": ("ENV",)}))
    assert len(spy.sent[-1]) == 1
    assert sorted(spy.counted()) == sorted(f for f in SearchQuery().facets if f != "themes")

    # A second theme: the theme counts are still those of no theme chosen; the others change.
    both = SearchQuery(filters={"themes": ("ENV", "EDU")})
    await service.search(both)
    assert len(spy.sent[-1]) == 1 and "themes" not in spy.counted()
    result = await service.search(replace(both, sort="rotation"))
    assert spy.counted() == []
    themes = {c["value"]: c for c in result["facets"]["themes"]}
    assert themes["ENV"]["selected"] and themes["EDU"]["selected"] and not themes["SOL"]["selected"]

    # Cached counts are copies: marking the selection above did not change what the next search reads.
    plain = await service.search(SearchQuery(page=2, per_page=1))
    assert not any(c.get("selected") for c in plain["facets"]["themes"])


async def test_counts_cache_off_counts_every_time(client, collection) -> None:
    spy = Recording(client)
    service = SearchService(spy, counts_size=0)  # type: ignore[arg-type]
    await service.search(SearchQuery())
    await service.search(SearchQuery(sort="date"))
    assert sorted(spy.counted()) == sorted(SearchQuery().facets)
    assert service.counts_hits == 0


async def test_counts_cache_is_bounded(client, collection) -> None:
    service = SearchService(client, counts_size=5)  # type: ignore[arg-type]
    for query in QUERIES:
        await service.search(query)
    assert len(service._counts) == 5


async def test_counts_follow_the_index(client: SearchClient) -> None:
    """Counts lag an index change by at most ``counts_stale`` seconds once the generation moved."""
    name = collection_name() + "_counts"
    await client.create_collection(collection_schema(name))
    alias = name + "_alias"
    await client.upsert_alias(alias, name)
    sheets = [s for s, _ in corpus_sheets()][:3]
    await client.import_documents(name, [document_from_sheet(s) for s in sheets])
    try:
        spy = Recording(client)
        service = SearchService(spy, alias=alias, counts_stale=0.5)  # type: ignore[arg-type]
        query = SearchQuery(facets=("themes",))

        async def env() -> int:
            counts = (await service.search(query))["facets"]["themes"]
            return next((c["count"] for c in counts if c["value"] == "ENV"), 0)

        before = await env()
        changed = replace(sheets[0], themes=("SOL",), subthemes=())  # sheet 1 leaves ENV
        await client.import_documents(name, [document_from_sheet(changed)])
        assert await env() == before  # same generation: the cached count stands
        service.changed()  # the index worker applied a batch
        assert await env() == before  # within counts_stale of the count: still served
        await asyncio.sleep(0.6)
        assert await env() == before - 1  # older than counts_stale: counted again
        await asyncio.sleep(0.6)
        assert await env() == before - 1 and spy.counted() == []  # and kept while the generation stands
    finally:
        await client.delete_alias(alias)
        await client.drop_collection(name)
