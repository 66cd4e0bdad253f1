"""Home, partner, theme and territory pages: facet counts of the index, the latest sheets, harvest health."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from node.context import NODE
from protocol.taxonomy import default_taxonomy
from search.errors import SearchError
from search.query import SearchQuery
from web.app import page, search
from web.labels import gazetteer
from web.search_pages import unavailable
from web.state import State

routes = web.RouteTableDef()
LATEST = 6


def counts(result: dict[str, Any], facet: str) -> dict[str, int]:
    return {c["value"]: c["count"] for c in result["facets"].get(facet, [])}


async def overview(
    request: web.Request, filters: dict[str, tuple[str, ...]], facets: tuple[str, ...]
) -> dict[str, Any]:
    """The newest sheets matching ``filters`` and the counts of ``facets`` over all of them."""
    query = SearchQuery(filters=filters, sort="date", per_page=LATEST, facets=facets, max_facet_values=100)
    return await search(request, query)


def search_link(filters: dict[str, tuple[str, ...]]) -> str:
    return State(SearchQuery(), tuple((k, v) for k, vs in filters.items() for v in vs)).url("/recherche")


async def sources(request: web.Request) -> list[dict[str, Any]]:
    rows = await request.app[NODE].db.fetch(
        "SELECT key, name, base_url, enabled, interval, last_run, next_run, last_stats, last_error FROM harvest_source"
        " ORDER BY name, key"
    )
    return [dict(r) for r in rows]


async def partner_profile(request: web.Request, key: str) -> dict[str, Any]:
    """The partner as the sheets of a source describe it (``name`` is the index's ``partner`` value)."""
    row = await request.app[NODE].db.fetchone(
        "SELECT data FROM sheet WHERE source = ? AND deleted = ? ORDER BY pk_id LIMIT 1", [key, False]
    )
    if row and row["data"]:
        return dict(json.loads(row["data"]).get("partner") or {})
    return {}


async def partner_name(request: web.Request, key: str, fallback: str) -> str:
    return str((await partner_profile(request, key)).get("name") or fallback)


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    tax = default_taxonomy()
    try:
        result, matching = await asyncio.gather(
            overview(request, {}, ("themes", "region", "partner")),
            search(request, SearchQuery(filters={"match_kinds": tuple(tax.match_kinds)}, per_page=0, facets=())),
        )
    except SearchError:
        return unavailable(request)
    themes = counts(result, "themes")
    regions = counts(result, "region")
    return page(
        request,
        "home.html",
        {
            "found": result["found"],
            "latest": result["hits"],
            "themes": [(code, themes.get(code, 0)) for code in tax.themes],
            "regions": sorted(regions.items(), key=lambda kv: -kv[1]),
            "partners": len(result["facets"].get("partner", [])),
            "matches": matching["found"],  # sheets with at least one open need or offer
        },
    )


@routes.get("/partenaires")
async def partners(request: web.Request) -> web.Response:
    try:
        result = await overview(request, {}, ("partner",))
    except SearchError:
        return unavailable(request)
    indexed = counts(result, "partner")
    rows = []
    for source in await sources(request):
        name = await partner_name(request, source["key"], source["name"] or source["key"])
        rows.append({**source, "partner": name, "count": indexed.pop(name, 0)})
    # Partners present in the index without a harvest source of their own (the hub's own sheets, say).
    others = [{"partner": name, "count": n} for name, n in indexed.items()]
    return page(request, "partners.html", {"rows": rows, "others": others, "search_link": search_link})


@routes.get("/partenaires/{key}")
async def partner(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    ctx = request.app[NODE]
    source = await ctx.db.fetchone(
        "SELECT key, name, base_url, kind, prefix, enabled, interval, last_run, next_run, last_stats, last_error,"
        " created FROM harvest_source WHERE key = ?",
        [key],
    )
    if source is None:
        return page(request, "error.html", {"status": 404, "message": None}, status=404)
    state = await ctx.db.fetchone(
        "SELECT last_complete, last_error, last_error_at FROM harvest_state WHERE source = ?"
        " ORDER BY updated DESC LIMIT 1",
        [key],
    )
    profile = await partner_profile(request, key)
    name = str(profile.get("name") or source["name"] or key)
    try:
        result = await overview(request, {"partner": (name,)}, ("themes", "region", "match_kinds"))
    except SearchError:
        return unavailable(request)
    stats = json.loads(source["last_stats"]) if source["last_stats"] else {}
    return page(
        request,
        "partner.html",
        {
            "source": dict(source),
            "harvest": dict(state) if state else {},
            "stats": stats,
            "name": name,
            "profile": profile,
            "result": result,
            "themes": sorted(counts(result, "themes").items(), key=lambda kv: -kv[1]),
            "regions": sorted(counts(result, "region").items(), key=lambda kv: -kv[1]),
            "search": search_link({"partner": (name,)}),
        },
    )


@routes.get("/themes")
async def themes_index(request: web.Request) -> web.Response:
    try:
        result = await overview(request, {}, ("themes",))
    except SearchError:
        return unavailable(request)
    found = counts(result, "themes")
    return page(request, "themes.html", {"themes": [(code, found.get(code, 0)) for code in default_taxonomy().themes]})


@routes.get("/themes/{code}")
async def theme(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    tax = default_taxonomy()
    if code not in tax.themes:
        return page(request, "error.html", {"status": 404, "message": None}, status=404)
    try:
        result = await overview(request, {"themes": (code,)}, ("subthemes", "region", "partner"))
    except SearchError:
        return unavailable(request)
    subs = counts(result, "subthemes")
    return page(
        request,
        "theme.html",
        {
            "code": code,
            "result": result,
            "subthemes": [
                (t.code, subs.get(t.code, 0), search_link({"themes": (code,), "subthemes": (t.code,)}))
                for t in tax.subthemes_of(code)
            ],
            "regions": sorted(counts(result, "region").items(), key=lambda kv: -kv[1]),
            "partners": sorted(counts(result, "partner").items(), key=lambda kv: -kv[1]),
            "search": search_link({"themes": (code,)}),
            "search_link": search_link,
        },
    )


@routes.get("/territoires")
async def territories(request: web.Request) -> web.Response:
    try:
        result = await overview(request, {}, ("region",))
    except SearchError:
        return unavailable(request)
    found = counts(result, "region")
    gaz = gazetteer()
    regions = sorted(gaz.regions, key=lambda c: gaz.regions[c][0])
    return page(request, "territories.html", {"regions": [(c, found.get(c, 0)) for c in regions]})


@routes.get("/territoires/{kind:region|departement}/{code}")
async def territory(request: web.Request) -> web.Response:
    kind, code = request.match_info["kind"], request.match_info["code"]
    gaz = gazetteer()
    if (kind == "region" and code not in gaz.regions) or (kind == "departement" and code not in gaz.departements):
        return page(request, "error.html", {"status": 404, "message": None}, status=404)
    filters = {kind: (code,)}
    try:
        result = await overview(request, filters, ("departement", "partner", "match_kinds", "themes"))
    except SearchError:
        return unavailable(request)
    departements: list[tuple[str, int]] = []
    if kind == "region":
        found = counts(result, "departement")
        departements = [(d, found.get(d, 0)) for d in sorted(gaz.departements) if gaz.departements[d][1] == code]
    region = code if kind == "region" else gaz.region_of_departement(code)
    return page(
        request,
        "territory.html",
        {
            "kind": kind,
            "code": code,
            "region": region,
            "result": result,
            "departements": departements,
            "themes": sorted(counts(result, "themes").items(), key=lambda kv: -kv[1]),
            "partners": sorted(counts(result, "partner").items(), key=lambda kv: -kv[1]),
            "search": search_link(filters),
            "map": State(SearchQuery(), tuple((k, v) for k, vs in filters.items() for v in vs)).url("/carte"),
            "search_link": search_link,
        },
    )
