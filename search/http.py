"""The hub's JSON search API: the browser's only way to the index (the hub proxies Typesense).

``/api/search``, ``/api/search/suggest``, ``/api/search/clusters`` and
``/api/search/overview`` are public (no bearer token: the search page calls them);
``POST /api/search/keys`` mints a scoped search-only key for a partner's own widget
and needs a bearer token. Every parameter goes through :class:`search.query.SearchQuery`
(typed, validated, filters escaped); the OpenAPI description is ``search/openapi.json``,
merged into ``/api/openapi.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

from aiohttp import web

from node.http.api import PUBLIC_API_PATHS, problem
from node.http.public import OPENAPI_PARTS
from search import geo
from search.errors import ApiError, QueryError, SearchError
from search.filters import Filter, build_filter
from search.query import SearchQuery, one_param, whole_param
from search.schema import ALIAS, FACET_FIELDS
from search.service import SEARCH, SearchService

routes = web.RouteTableDef()
PUBLIC = frozenset({"/api/search", "/api/search/suggest", "/api/search/clusters", "/api/search/overview"})
MAX_KEY_TTL = 366 * 86_400
RETRY_AFTER = "2"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_search_http(app: web.Application) -> None:
    """Add the routes, list the public ones, and merge the OpenAPI fragment (before startup)."""
    app.add_routes(routes)
    app[PUBLIC_API_PATHS] = frozenset(app.get(PUBLIC_API_PATHS, frozenset()) | PUBLIC)
    text = resources.files("search").joinpath("openapi.json").read_text(encoding="utf-8")
    app[OPENAPI_PARTS] = [*app.get(OPENAPI_PARTS, []), json.loads(text)]


def _params(request: web.Request, drop: Sequence[str] = ()) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in request.query.items():
        if name not in drop:
            out.setdefault(name, []).append(value)
    return out


def _service(request: web.Request) -> SearchService:
    service = request.app.get(SEARCH)
    if service is None:
        raise web.HTTPNotFound(text="this node has no search index (role = node)")
    return service


def _unavailable(detail: str) -> web.Response:
    response = problem(503, "the search index is unavailable, try again shortly", detail=detail)
    response.headers["Retry-After"] = RETRY_AFTER
    return response


async def _answer(request: web.Request, work: Callable[[SearchService], Awaitable[Any]]) -> web.Response:
    service = _service(request)
    if not service.ready:
        return _unavailable("the search server restarted and is reloading its documents")
    try:
        result = await work(service)
    except QueryError as exc:
        return problem(400, "invalid search request", detail=str(exc))
    except ValueError as exc:  # bbox, zoom, limit
        return problem(400, "invalid search request", detail=str(exc))
    except ApiError as exc:
        if 400 <= exc.status < 500 and exc.status != 404:
            return problem(400, "the search engine refused the request", detail=exc.message)
        return _unavailable(str(exc))
    except SearchError as exc:
        return _unavailable(str(exc))
    return web.json_response(result, headers={"Cache-Control": "no-store"})


def _whole(raw: str | None, name: str, default: int) -> int:
    value = whole_param(raw, name, default)
    assert value is not None
    return value


@routes.get("/api/search")
async def search(request: web.Request) -> web.Response:
    return await _answer(request, lambda s: s.search(SearchQuery.from_params(_params(request))))


@routes.get("/api/search/suggest")
async def suggest(request: web.Request) -> web.Response:
    params = _params(request)

    async def work(service: SearchService) -> Any:
        unknown = set(params) - {"q", "limit"}
        if unknown:
            raise QueryError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        return await service.suggest(one_param(params, "q") or "", _whole(one_param(params, "limit"), "limit", 5))

    return await _answer(request, work)


@routes.get("/api/search/clusters")
async def clusters(request: web.Request) -> web.Response:
    params = _params(request)

    async def work(service: SearchService) -> Any:
        raw = one_param(params, "bbox")
        if not raw:
            raise QueryError("bbox=south,west,north,east is required")
        try:
            box = geo.BBox(*(float(v) for v in raw.split(",")))
        except (TypeError, ValueError) as exc:
            raise QueryError(f"bbox must be 4 comma-separated numbers south,west,north,east ({exc})") from None
        zoom = _whole(one_param(params, "zoom"), "zoom", -1)
        if zoom < 0:
            raise QueryError("zoom (0 to 22) is required")
        rest = {k: v for k, v in params.items() if k not in ("bbox", "zoom")}
        query = SearchQuery.from_params(rest) if rest else None
        return await service.clusters(box, zoom, query)

    return await _answer(request, work)


@routes.get("/api/search/overview")
async def overview(request: web.Request) -> web.Response:
    params = _params(request)
    return await _answer(request, lambda s: s.overview(SearchQuery.from_params(params) if params else None))


@routes.post("/api/search/keys")
async def mint_key(request: web.Request) -> web.Response:
    """A scoped search-only key whose embedded filter its holder cannot remove."""
    from search.lifecycle import SEARCH_RUNTIME

    runtime = request.app.get(SEARCH_RUNTIME)
    if runtime is None:
        raise web.HTTPNotFound(text="this node has no search index (role = node)")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return problem(400, "the body is not JSON", detail=str(exc))
    if not isinstance(body, dict):
        return problem(400, "the body must be a JSON object")
    unknown = set(body) - {"filters", "expires_in"}
    if unknown:
        return problem(400, "unknown member(s)", detail=", ".join(sorted(unknown)))
    filters = body.get("filters") or {}
    if not isinstance(filters, dict) or not filters:
        return problem(400, 'filters is required: {facet: [values]}, e.g. {"partner": ["Réseau A"]}')
    clauses = []
    for name, values in filters.items():
        if name not in FACET_FIELDS:
            return problem(400, f"unknown filter {name!r}", detail=f"one of {', '.join(FACET_FIELDS)}")
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            return problem(400, f"filter {name!r} needs a list of non-empty strings")
        clauses.append(Filter(name, values))
    ttl = body.get("expires_in", runtime.config.search_key_ttl)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 60 <= ttl <= MAX_KEY_TTL:
        return problem(400, f"expires_in must be a whole number of seconds between 60 and {MAX_KEY_TTL}")
    try:
        filter_by = build_filter(clauses)
        expires_at = int(time.time()) + ttl
        key = await runtime.mint_scoped_key(filter_by, expires_at)
    except QueryError as exc:
        return problem(400, "invalid filter", detail=str(exc))
    except SearchError as exc:
        return _unavailable(str(exc))
    return web.json_response(
        {"key": key, "filter_by": filter_by, "expires_at": expires_at, "collection": ALIAS}, status=201
    )
