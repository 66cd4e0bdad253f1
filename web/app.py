"""``setup_web``: the hub's front mounted on the node app by the shell (``essaim/app.py``, role hub).

Pages read the index through ``app[search.service.SEARCH]`` and the stored sheets
through ``app[NODE]``; nothing here writes. Static files are the front's own
(``web/static``) and the npm packages installed by ``./run setup`` (Leaflet and its
cluster plugin), served by the hub itself, never from a CDN.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from essaim.settings import Settings, SettingsError
from node.context import NODE
from node.outbound import OutboundClient, OutboundConfig
from search.errors import SearchError
from search.geo import BBox
from search.query import MAX_PER_PAGE, SearchQuery
from search.service import SEARCH, SearchService
from web.i18n import COOKIE, LANGUAGES
from web.render import Renderer

ROOT = Path(__file__).resolve().parent.parent
STATIC = Path(__file__).resolve().parent / "static"
# npm package → (folder under node_modules served, URL prefix)
VENDOR = {
    "leaflet": ("leaflet/dist", "/web/vendor/leaflet/"),
    "markercluster": ("leaflet.markercluster/dist", "/web/vendor/markercluster/"),
}


class MicroCache:
    """Search results kept for a few seconds (``[web] cache_ttl``), least recently used evicted first.

    The pages everyone opens (home, the unfiltered search, theme and territory pages) are the
    same few index queries; answering them from memory for a few seconds keeps the index free
    for the long tail. A result is never changed after it is stored: callers copy what they edit.
    """

    def __init__(self, ttl: float, size: int = 1024) -> None:
        self.ttl = ttl
        self.size = size
        self.entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self.hits = self.misses = 0

    async def get(
        self, key: str, compute: Callable[[], Awaitable[Any]], count: Callable[[str], None] | None = None
    ) -> Any:
        if self.ttl <= 0:
            return await compute()
        now = time.monotonic()
        found = self.entries.get(key)
        if found is not None and now - found[0] < self.ttl:
            self.entries.move_to_end(key)
            self.hits += 1
            if count:
                count("web_search_cache_hits_total")
            return found[1]
        self.misses += 1
        if count:
            count("web_search_cache_misses_total")
        value = await compute()
        self.entries[key] = (now, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return value


@dataclass
class Front:
    """What the front's handlers share (``app[FRONT]``)."""

    settings: Settings
    renderer: Renderer
    vendor: bool  # Leaflet is installed: the map pages load it
    outbound: OutboundClient | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # short-lived figures (dashboards)
    results: MicroCache = field(default_factory=lambda: MicroCache(0))

    @property
    def site_name(self) -> str:
        return self.settings.web.site_name or self.settings.partner.name


FRONT = web.AppKey("web_front", Front)


def assets_dir(settings: Settings) -> Path:
    return Path(settings.web.assets_dir) if settings.web.assets_dir else ROOT / "node_modules"


def setup_web(app: web.Application, settings: Settings, outbound: OutboundConfig | None = None) -> None:
    """Add the front's routes and static files; call it before the node's public routes."""
    from web import boards, browse, dashboards, exports, search_pages, sheet_page

    if not 1 <= settings.web.per_page <= MAX_PER_PAGE:
        raise SettingsError(f"web.per_page: must be between 1 and {MAX_PER_PAGE}, not {settings.web.per_page}")
    # The CSP lets images come from this site or over https only.
    if settings.web.tile_url and not settings.web.tile_url.startswith(("https://", "/")):
        raise SettingsError(f"web.tile_url: must be an https:// or /path URL template, not {settings.web.tile_url!r}")
    modules = assets_dir(settings)
    vendor = all((modules / folder).is_dir() for folder, _ in VENDOR.values())
    renderer = Renderer()
    front = Front(settings=settings, renderer=renderer, vendor=vendor, results=MicroCache(settings.web.cache_ttl))
    renderer.shared.update(
        site_name=front.site_name,
        vendor=vendor,
        tile_url=settings.web.tile_url,
        tile_attribution=settings.web.tile_attribution,
        base_url=settings.base_url,
        sheet_href=lambda uri: sheet_href(settings.base_url, uri),
    )
    for env in renderer.envs.values():  # globals: imported macros see them too
        env.globals.update(renderer.shared)
    app[FRONT] = front

    if outbound is not None:

        async def client(app: web.Application) -> AsyncIterator[None]:
            front.outbound = OutboundClient(outbound)
            yield
            await front.outbound.close()

        app.cleanup_ctx.append(client)

    for module in (search_pages, sheet_page, browse, boards, dashboards, exports):
        app.add_routes(module.routes)
    app.router.add_get("/langue", switch_language)
    app.router.add_static("/web/static/", STATIC, name="web_static")
    if vendor:
        for name, (folder, prefix) in VENDOR.items():
            app.router.add_static(prefix, modules / folder, name=f"vendor_{name}")


def sheet_href(base_url: str, uri: str) -> str:
    """The link to a sheet page: its path when the sheet lives here (every harvested sheet does)."""
    base = base_url.rstrip("/")
    return uri[len(base) :] if uri.startswith(base + "/sheets/") else uri


def local_target(value: str | None, default: str = "/") -> str:
    """A redirect target on this site only (a path, never ``//host`` or a scheme)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


async def switch_language(request: web.Request) -> web.StreamResponse:
    lang = request.query.get("l", "")
    if lang not in LANGUAGES:
        raise web.HTTPBadRequest(text=f"unknown language {lang!r}: use one of {', '.join(LANGUAGES)}")
    response = web.HTTPSeeOther(local_target(request.query.get("next")))
    response.set_cookie(COOKIE, lang, max_age=365 * 86400, samesite="Lax", httponly=True, path="/")
    raise response


class IndexMissing(SearchError):
    """The hub runs without a search index (``app[SEARCH]`` is not set): pages say so with a 503."""


def search_service(request: web.Request) -> SearchService:
    service = request.app.get(SEARCH)
    if service is None:
        raise IndexMissing("this hub has no search index configured")
    return service


async def search(request: web.Request, query: SearchQuery) -> dict[str, Any]:
    """``SearchService.search`` through the front's micro-cache (the result must not be modified)."""
    service = search_service(request)
    counter = request.app[NODE].count if NODE in request.app else None
    return await request.app[FRONT].results.get(f"search {query!r}", lambda: service.search(query), counter)


async def clusters(request: web.Request, box: BBox, zoom: int, query: SearchQuery) -> dict[str, Any]:
    service = search_service(request)
    key = f"clusters {box!r} {zoom} {query!r}"
    return await request.app[FRONT].results.get(key, lambda: service.clusters(box, zoom, query))


def front(request: web.Request) -> Front:
    return request.app[FRONT]


def page(request: web.Request, name: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    return request.app[FRONT].renderer.page(request, name, context, status=status)
