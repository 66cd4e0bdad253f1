"""The hub's JSON search API over HTTP, on a real hub whose sheets went through the whole path
(SheetStore → queue → embedded Typesense): French text, every facet and filter, geography,
sorts and caps, map clusters and their cache, the home-page overview, suggestions, injection
attempts through every query parameter, the OpenAPI description, scoped search keys.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import aiohttp
import pytest
import pytest_asyncio

from node.context import NODE
from search.schema import FACET_FIELDS
from search.text import words
from tests.node_support import bearer, schema_errors
from tests.search.corpus import BAIT_PARTNER, BREST, NANTES, RENNES, corpus_sheets
from tests.search.hub_support import eventually, hub_client, hub_settings, runtime

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(tmp_path_factory):
    async with hub_client(hub_settings(tmp_path_factory.mktemp("hub"))) as client:
        ctx = client.server.app[NODE]
        sheets = [s for s, _ in corpus_sheets()]
        # The seam the hub's duplicate detection plugs into: uri -> duplicate-cluster id.
        known = {s.id: c for s, c in corpus_sheets() if c}

        async def clusters_of(db, uris):
            return {u: known[u] for u in uris if u in known}

        runtime(client).worker.clusters = clusters_of
        async with ctx.db.transaction() as tx:
            await ctx.store.upsert_many(sheets, tx=tx)

        async def all_indexed() -> bool:
            return (await get(client, "/api/search", per_page="0"))["found"] == len(sheets)

        await eventually(all_indexed, within=10)
        yield client


async def get(client, path: str, expect: int = 200, **params: str | list[str]) -> dict:
    query = urlencode(params, doseq=True)
    response = await client.get(f"{path}?{query}" if query else path)
    body = await response.json(content_type=None)
    assert response.status == expect, (path, params, response.status, body)
    return body


def ids(result: dict) -> set[str]:
    return {h["document"]["local_id"] for h in result["hits"]}


@pytest.mark.parametrize(
    "q,expected",
    [
        ("ecole", {"1"}),
        ("École", {"1"}),
        ("l’ecole", {"1"}),
        ("l'école", {"1"}),
        ("l’atelier", {"2"}),
        ("jardins", {"1"}),
        ("cheval", {"4"}),
        ("tiers lieu", {"6"}),
        ("bicyclette", {"2"}),
    ],
)
async def test_french_queries_over_http(hub, q: str, expected: set[str]) -> None:
    assert ids(await get(hub, "/api/search", q=q)) == expected


async def test_public_without_token_and_documented(hub) -> None:
    spec = await get(hub, "/api/openapi.json")
    for path in ("/api/search", "/api/search/suggest", "/api/search/clusters", "/api/search/overview"):
        assert path in spec["paths"], path
    assert "/api/v1/sheets" in spec["paths"]  # the node's own API is still there

    async def check(path: str, status: int, schema_name: str | None, **params: str) -> None:
        response = await hub.get(path, params=params)
        assert response.status == status
        body = await response.json(content_type=None)
        operation = spec["paths"][path]["get"]
        declared = operation["responses"][str(status)]
        if "$ref" in declared:
            declared = spec["components"]["responses"][declared["$ref"].rsplit("/", 1)[-1]]
        schema = declared["content"][response.content_type]["schema"]
        errors = schema_errors(spec, schema, body)
        assert not errors, errors

    await check("/api/search", 200, "SearchResult", q="jardin", themes="EDU")
    await check("/api/search", 400, None, page="51")
    await check("/api/search/suggest", 200, "Suggestions", q="jard")
    await check("/api/search/clusters", 200, "Clusters", bbox="41,-5.5,51.5,10", zoom="5")
    await check("/api/search/clusters", 200, "Clusters", bbox="47,-2,48.5,-1", zoom="12")
    await check("/api/search/overview", 200, "Overview")


async def test_every_facet_filters_to_its_count(hub) -> None:
    overview = await get(hub, "/api/search/overview")
    assert overview["found"] == len(corpus_sheets())
    checked = 0
    for facet in FACET_FIELDS:
        counts = overview["facets"].get(facet)
        if counts is None:  # not an overview facet: ask for its counts explicitly
            counts = (await get(hub, "/api/search", facets=facet, per_page="0"))["facets"][facet]
        assert counts, f"the corpus has no value of {facet}"
        for value in counts:
            result = await get(hub, "/api/search", **{facet: value["value"]}, per_page="0", facets=facet)
            assert result["found"] == value["count"], (facet, value)
            checked += 1
    assert checked > len(FACET_FIELDS)


async def test_disjunctive_facets_and_combined_filters(hub) -> None:
    one = await get(hub, "/api/search", themes="EDU", per_page="0")
    both = await get(hub, "/api/search", themes=["EDU", "ENV"], per_page="0")
    assert both["found"] > one["found"]
    # The active facet keeps the other values' counts; the selected one is marked.
    themes = {c["value"]: c for c in one["facets"]["themes"]}
    assert themes["EDU"]["selected"] and "ENV" in themes and not themes["ENV"]["selected"]
    # Two facets are AND-ed.
    narrowed = await get(hub, "/api/search", themes=["EDU", "ENV"], partner="Réseau B", per_page="0")
    assert narrowed["found"] < both["found"]
    assert await get(hub, "/api/search", partner=BAIT_PARTNER) and ids(
        await get(hub, "/api/search", partner=BAIT_PARTNER)
    ) == {"9"}


async def test_geography_sorts_and_caps(hub) -> None:
    near = await get(hub, "/api/search", near=f"{RENNES[0]},{RENNES[1]},10", per_page="50")
    assert ids(near) == {"1", "7", "9"}
    assert ids(await get(hub, "/api/search", near=f"{BREST[0]},{BREST[1]},5")) == {"6"}
    assert ids(await get(hub, "/api/search", bbox="46.5,-5,49,-1", per_page="50")) == {
        "1",
        "2",
        "6",
        "7",
        "9",
        "10",
        "11",
    }
    triangle = "46.8,-1.2,47.8,-1.2,47.8,-2.2"
    assert ids(await get(hub, "/api/search", polygon=triangle, per_page="50")) == {"2", "10", "11"}
    by_distance = await get(hub, "/api/search", near=f"{NANTES[0]},{NANTES[1]},200", sort="distance", per_page="50")
    order = [h["document"]["local_id"] for h in by_distance["hits"]]
    assert set(order[:3]) == {"2", "10", "11"} and by_distance["hits"][0]["distance_m"] < 1000
    by_date = await get(hub, "/api/search", sort="date", per_page="50")
    created = [h["document"]["created"] for h in by_date["hits"]]
    assert created == sorted(created, reverse=True)
    rotation = await get(hub, "/api/search", sort="rotation", per_page="4", page="2")
    assert rotation["page"] == 2 and len(rotation["hits"]) == 4 and rotation["pages"] == 3
    for params in ({"page": "51"}, {"per_page": "51"}, {"sort": "distance"}, {"page": "0"}):
        problem = await get(hub, "/api/search", 400, **params)
        assert problem["status"] == 400 and problem["detail"]


async def test_clusters_wide_views_cached_per_generation(hub) -> None:
    service = hub.server.app[NODE] and runtime(hub).service
    assert service is not None
    placed = sum(1 for s, _ in corpus_sheets() if any(p.lat is not None for p in s.places))
    france = await get(hub, "/api/search/clusters", bbox="41,-5.5,51.5,10", zoom="5")
    assert france["cached"] is True and france["found"] == placed
    again = await get(hub, "/api/search/clusters", bbox="42,-5,51,9", zoom="5")  # another viewport, same cache
    assert again["generation"] == france["generation"]
    detailed = await get(hub, "/api/search/clusters", bbox="47,-2,48.5,-1", zoom="12")
    assert "cached" not in detailed and detailed["found"] >= 1
    filtered = await get(hub, "/api/search/clusters", bbox="41,-5.5,51.5,10", zoom="5", partner="Réseau B")
    assert 0 < filtered["found"] < france["found"]
    # A change bumps the generation: the stale view is served once, then refreshed.
    ctx = hub.server.app[NODE]
    sheet = next(s for s, _ in corpus_sheets() if s.local_id == "1")
    from dataclasses import replace

    generation = service.generation
    await ctx.store.upsert(replace(sheet, id="https://node.example/sheets/100", local_id="100"))

    async def refreshed() -> bool:
        view = await get(hub, "/api/search/clusters", bbox="41,-5.5,51.5,10", zoom="5")
        return view["found"] == placed + 1 and view["generation"] > generation

    await eventually(refreshed, within=5)
    await ctx.store.delete("100")

    async def back() -> bool:
        return (await get(hub, "/api/search/clusters", bbox="41,-5.5,51.5,10", zoom="5"))["found"] == placed

    await eventually(back, within=5)


async def test_suggestions_over_http(hub) -> None:
    result = await get(hub, "/api/search/suggest", q="jard")
    assert [t["title"] for t in result["titles"]] == ["École des jardins partagés"]
    assert [c["value"] for c in (await get(hub, "/api/search/suggest", q="nan"))["communes"]] == ["Nantes"]
    await get(hub, "/api/search/suggest", 400, q="x", limit="500")
    await get(hub, "/api/search/suggest", 400, q="x", other="1")


PAYLOADS = [
    "`",
    "EDU` || themes:!=`EDU",
    "EDU\\` || id:!=x || themes:=\\`EDU",
    "x:(1,2,3 km) || id:!=x",
    "EDU) || (id:!=x",
    "EDU && stage:=idee",
    "*",
    "(",
    "||",
    "&&",
]


@pytest.mark.parametrize("payload", PAYLOADS)
async def test_injection_through_every_http_parameter(hub, payload: str) -> None:
    # Free text only ever matches text: the payload finds what its words alone find.
    plain = " ".join(words(payload))
    for path in ("/api/search", "/api/search/overview"):
        result = await get(hub, path, q=payload)
        assert result["found"] == (await get(hub, path, q=plain))["found"], (path, payload)
    assert isinstance((await get(hub, "/api/search/suggest", q=payload))["titles"], list)
    # Facet values are literal values: no sheet has them.
    for facet in FACET_FIELDS:
        response = await hub.get("/api/search", params={facet: payload})
        assert response.status in (200, 400), (facet, payload)
        if response.status == 200:
            assert (await response.json())["found"] == 0, (facet, payload)
        clusters = await hub.get(
            "/api/search/clusters", params={"bbox": "41,-5.5,51.5,10", "zoom": "5", facet: payload}
        )
        assert clusters.status in (200, 400)
        if clusters.status == 200:
            assert (await clusters.json())["found"] == 0, (facet, payload)
    # Typed and enumerated parameters refuse it with a problem document naming the parameter.
    for name in ("near", "bbox", "polygon", "sort", "page", "per_page", "facets", "created_from", "created_to"):
        problem = await get(hub, "/api/search", 400, **{name: payload})
        assert problem["status"] == 400
    for name in ("bbox", "zoom"):
        params = {"bbox": "41,-5.5,51.5,10", "zoom": "5", name: payload}
        await get(hub, "/api/search/clusters", 400, **params)
    await get(hub, "/api/search", 400, **{payload: "EDU"})


async def test_scoped_search_keys(hub) -> None:
    rt = runtime(hub)
    response = await hub.post("/api/search/keys", json={"filters": {"partner": ["Réseau B"]}})
    assert response.status == 401
    headers = await bearer(hub)
    for bad in ({}, {"filters": {}}, {"filters": {"nope": ["x"]}}, {"filters": {"partner": "x"}, "expires_in": 1}):
        response = await hub.post("/api/search/keys", json=bad, headers=headers)
        assert response.status == 400, bad
    response = await hub.post(
        "/api/search/keys", json={"filters": {"partner": ["Réseau B"]}, "expires_in": 3600}, headers=headers
    )
    assert response.status == 201
    minted = await response.json()
    assert minted["filter_by"] == "partner:=`Réseau B`"
    url = rt.nodes.urls[0]
    async with aiohttp.ClientSession(headers={"X-TYPESENSE-API-KEY": minted["key"]}) as session:
        search = f"{url}/collections/sheets/documents/search"
        async with session.get(search, params={"q": "*", "query_by": "title", "per_page": "50"}) as r:
            assert r.status == 200
            partners = {h["document"]["partner"] for h in (await r.json())["hits"]}
        assert partners == {"Réseau B"}
        # The holder's own filter is AND-ed with the embedded one: it cannot widen it.
        params = {"q": "*", "query_by": "title", "filter_by": "partner:=`Réseau A` || partner:!=x"}
        async with session.get(search, params=params) as r:
            body = await r.json()
            assert r.status != 200 or {h["document"]["partner"] for h in body["hits"]} <= {"Réseau B"}
        # Search only: no writes, no administration.
        doc = {
            "id": "intrus",
            "title": "x",
            "stemmed": "x",
            "partner": "x",
            "datestamp": 0,
            "created": 0,
            "rotation": 0,
        }
        async with session.post(f"{url}/collections/sheets/documents", data=json.dumps(doc)) as r:
            assert r.status in (401, 403)
        async with session.get(f"{url}/collections") as r:
            assert r.status in (401, 403)
