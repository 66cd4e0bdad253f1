"""The search page, its results fragment, type-ahead suggestions, the map page and its server clusters."""

from __future__ import annotations

import logging
import math
from typing import Any

from aiohttp import web

from search.errors import QueryError, SearchError
from search.geo import BBox
from web.app import clusters as clusters_of
from web.app import front, page, search, search_service
from web.labels import FACET_NAMES, N_
from web.render import language
from web.state import State, parse_state

routes = web.RouteTableDef()
log = logging.getLogger("essaim.web")

SORTS = (("relevance", N_("Pertinence")), ("date", N_("Date")), ("rotation", N_("Rotation équitable")))
FRANCE = BBox(41.0, -5.5, 51.5, 10.0)  # metropolitan France: the map's first view
FACET_TOP = 8  # values shown before "more" (the rest stays in the page, in a <details>)


def bad_request(request: web.Request, error: Exception) -> web.Response:
    return page(request, "error.html", {"status": 400, "message": str(error)}, status=400)


def unavailable(request: web.Request) -> web.Response:
    log.warning("search unavailable", extra={"event": "web.search_unavailable", "path": request.path})
    response = page(request, "error.html", {"status": 503, "message": None, "unavailable": True}, status=503)
    response.headers["Retry-After"] = "30"
    return response


async def run(request: web.Request, **defaults: Any) -> tuple[State, dict[str, Any]]:
    """The state of the URL and the search result (raises QueryError / SearchError)."""
    state = parse_state(request.query, **defaults)
    if "per_page" not in dict(state.params) and "per_page" not in defaults:
        from dataclasses import replace

        state = State(replace(state.query, per_page=front(request).settings.web.per_page), state.params)
    result = await search(request, state.query)
    return state, result


def chips(state: State, path: str) -> list[dict[str, Any]]:
    """The removable filters: one per chosen value, plus the text, the box and the radius."""
    out = []
    if state.query.q:
        out.append({"facet": "q", "value": state.query.q, "remove": state.url(path, remove=[("q", None)])})
    for name in FACET_NAMES:
        for value in state.query.filters.get(name, ()):
            out.append({"facet": name, "value": value, "remove": state.url(path, remove=[(name, value)])})
    for name in ("bbox", "near", "created_from", "created_to"):
        if state.first(name):
            out.append({"facet": name, "value": state.first(name), "remove": state.url(path, remove=[(name, None)])})
    return out


def facet_panels(state: State, result: dict[str, Any], path: str) -> list[dict[str, Any]]:
    panels = []
    for name in FACET_NAMES:
        counts = result["facets"].get(name, [])
        chosen = set(state.query.filters.get(name, ()))
        values = [
            {
                "value": c["value"],
                "count": c["count"],
                "selected": c["value"] in chosen,
            }
            for c in counts
        ]
        if values:
            # Chosen values always show, whatever their rank; the others fill the panel up to FACET_TOP.
            top = [v for v in values if v["selected"]]
            top += [v for v in values if not v["selected"]][: max(0, FACET_TOP - len(top))]
            more = [v for v in values if v not in top]
            panels.append({"name": name, "top": top, "more": more, "chosen": chosen})
    return panels


def pagination(state: State, result: dict[str, Any], path: str) -> dict[str, Any]:
    current, last = result["page"], result["pages"]
    window = sorted({1, last, *range(max(1, current - 2), min(last, current + 2) + 1)}) if last else []
    return {
        "current": current,
        "last": last,
        "pages": [{"n": n, "href": state.with_param(path, "page", str(n))} for n in window],
        "prev": state.with_param(path, "page", str(current - 1)) if current > 1 else None,
        "next": state.with_param(path, "page", str(current + 1)) if current < last else None,
    }


def context(state: State, result: dict[str, Any], path: str) -> dict[str, Any]:
    return {
        "state": state,
        "result": result,
        "q": state.query.q,
        "sort": state.query.sort,
        "sorts": SORTS,
        "chips": chips(state, path),
        "panels": facet_panels(state, result, path),
        "pagination": pagination(state, result, path),
        "hidden": [(k, v) for k, v in state.params if k in ("bbox", "near", "created_from", "created_to")],
        "search_path": path,
    }


@routes.get("/recherche")
async def search_page(request: web.Request) -> web.Response:
    try:
        state, result = await run(request)
    except QueryError as exc:
        return bad_request(request, exc)
    except SearchError:
        return unavailable(request)
    settings = front(request).settings
    follow = settings.federation.enabled and settings.fedhub.saved_searches  # essaim/fedhub.py's feeds
    return page(request, "search.html", {**context(state, result, "/recherche"), "follow_search": follow})


@routes.get("/recherche/resultats")
async def results_fragment(request: web.Request) -> web.Response:
    """The result list alone; with ``view=map``, also the map page's chips and facet panel (swapped in as the map
    moves, so that the counts are those of the viewport)."""
    try:
        state, result = await run(request)
    except QueryError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    except SearchError:
        raise web.HTTPServiceUnavailable(text="search unavailable") from None
    on_map = request.query.get("view") == "map"
    # The map page refreshes its chips, facet counts and list-view link with the list, for the viewport.
    template, path = ("_map_fragment.html", "/carte") if on_map else ("_results.html", "/recherche")
    html = front(request).renderer.text(request, template, context(state, result, path))
    return web.Response(text=html, content_type="text/html")


@routes.get("/recherche/suggestions.json")
async def suggestions(request: web.Request) -> web.Response:
    prefix = request.query.get("q", "")
    if len(prefix) > 100:
        raise web.HTTPBadRequest(text="q must be at most 100 characters")
    try:
        found = await search_service(request).suggest(prefix, 6)
    except SearchError:
        raise web.HTTPServiceUnavailable(text="search unavailable") from None
    return web.json_response(found, headers={"Cache-Control": "public, max-age=60"})


def _zoom(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return 5
    if not raw.strip().isdigit() or not 0 <= int(raw) <= 22:
        raise QueryError("zoom must be a whole number between 0 and 22")
    return int(raw)


@routes.get("/carte")
async def map_page(request: web.Request) -> web.Response:
    try:
        zoom = _zoom(request.query.get("zoom"))
        state, result = await run(request)
    except QueryError as exc:
        return bad_request(request, exc)
    except SearchError:
        return unavailable(request)
    view = state.query.bbox or FRANCE
    ctx = context(state, result, "/carte")
    ctx.update(view=view, zoom=zoom, lang=language(request))
    return page(request, "map.html", ctx)


@routes.get("/carte/clusters.json")
async def clusters(request: web.Request) -> web.Response:
    """Clusters of the current search inside the box (``bbox`` is required here, ``zoom`` picks the cell size)."""
    try:
        zoom = _zoom(request.query.get("zoom"))
        state = parse_state(request.query)
        box = state.query.bbox
        if box is None:
            raise QueryError("bbox is required: south,west,north,east")
        from dataclasses import replace

        # The box is the clusters' own filter; the query keeps every other filter.
        query = replace(state.query, bbox=None, page=1)
        cached = await clusters_of(request, box, zoom, query)
    except (QueryError, ValueError) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    except SearchError:
        raise web.HTTPServiceUnavailable(text="search unavailable") from None
    # Radius grows with the log of the count: readable from 1 to 100,000 (a copy: the result is cached).
    found = {
        **cached,
        "zoom": zoom,
        "clusters": [{**c, "size": round(24 + 10 * math.log10(max(1, c["count"])))} for c in cached["clusters"]],
    }
    return web.json_response(found)
