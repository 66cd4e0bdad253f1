"""The aiohttp application factory: assembles a node from its settings.

No module globals: everything a handler needs hangs off typed ``web.AppKey``s,
set up and torn down by ``cleanup_ctx``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

import essaim
from essaim.settings import Settings
from federation.app import setup_federation
from federation.config import Identity
from node.auth import SessionSigner
from node.context import NODE, NodeContext
from node.db import Database
from node.geo.online import online_geocoder
from node.geocode import make_resolver, online_pass
from node.http import admin, api, public
from node.oai import ReadAhead, make_oai_handler, make_schema_handler
from node.outbound import OutboundClient, OutboundConfig
from node.storage import SheetStore
from protocol.oai.config import OaiConfig
from protocol.sheet import Partner, Place

log = logging.getLogger("essaim.http")
SETTINGS = web.AppKey("settings", Settings)
OAI_HANDLER = web.AppKey("oai_handler", Callable[[web.Request], Awaitable[web.StreamResponse]])
TEMPLATES = Path(__file__).resolve().parent.parent / "node" / "templates"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer gets them, streamed ones, redirects and errors included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where unexpected errors become HTTP answers (and a log line with the traceback).

    Under ``/api/`` every error is an RFC 9457 problem document, aiohttp's own
    (unknown route, wrong method, body too large) included.
    """
    started = time.monotonic()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if request.path.startswith("/api/") and exc.status >= 400 and "problem+json" not in (exc.content_type or ""):
            extra = {"detail": exc.text} if exc.text and exc.text != f"{exc.status}: {exc.reason}" else {}
            problem = api.problem(exc.status, exc.reason, **extra)
            for name in ("Allow", "WWW-Authenticate"):
                if name in exc.headers:
                    problem.headers[name] = exc.headers[name]
            return problem
        raise
    except Exception:
        log.exception("request failed", extra={"event": "http.error", "path": request.path, "method": request.method})
        if NODE in request.app:
            request.app[NODE].count("http_errors_total")
        if request.path.startswith("/api/"):
            return api.problem(500, "internal error: the administrator will find it in the logs")
        return web.Response(status=500, text="Erreur interne / internal error", content_type="text/plain")
    elapsed = round((time.monotonic() - started) * 1000, 1)
    if elapsed > 1000:
        log.warning("slow request", extra={"event": "http.slow", "path": request.path, "ms": elapsed})
    return response


def node_context(settings: Settings, db: Database) -> NodeContext:
    partner = Partner(
        name=settings.partner.name,
        url=settings.partner.url or None,
        logo=settings.partner.logo or None,
        id=f"{settings.base_url}/actor",
    )
    store = SheetStore(db, base_url=settings.base_url, hub=settings.role == "hub")
    ctx = NodeContext(
        db=db,
        store=store,
        partner=partner,
        base_url=settings.base_url,
        licence=settings.licence,
        signer=SessionSigner(settings.secret("session"), settings.admin.session_ttl),
        resolver=make_resolver(),
        max_upload=settings.admin.max_upload,
        secure_cookies=settings.base_url.startswith("https://"),
        write_workers=settings.node.write_workers,
    )
    if settings.geo.online:
        client = OutboundClient(outbound_config(settings))
        geocoder = online_geocoder(settings.geo, client.get)
        assert geocoder is not None
        ctx.closers.append(client.close)

        async def online(places: tuple[Place, ...]) -> tuple[tuple[Place, ...], int, int]:
            return await online_pass(places, geocoder)

        ctx.online = online
    return ctx


def outbound_config(settings: Settings) -> OutboundConfig:
    """The hardened outbound client's settings, from ``[outbound]``."""
    out = settings.outbound
    return OutboundConfig(
        connect_timeout=out.connect_timeout,
        total_timeout=out.total_timeout,
        max_body_bytes=out.max_body,
        allow_list=frozenset(out.allow),
        resolver_overrides=dict(out.resolve),
        per_host_limit=out.per_host,
        user_agent=out.user_agent,
    )


def federation_identity(settings: Settings) -> Identity:
    """What the federation needs to know of the node (it does not read the shell's settings)."""
    partner = settings.partner
    return Identity(
        base_url=settings.base_url,
        username=partner.username,
        name=partner.name,
        description=partner.description,
        logo=partner.logo,
        homepage=partner.url,
        software_version=essaim.__version__,
    )


def oai_config(settings: Settings) -> OaiConfig:
    return OaiConfig(
        repository_name=settings.oai.repository_name,
        base_url=f"{settings.base_url}/oai",
        admin_emails=(settings.partner.admin_email,),
        token_secret=settings.secret("oai-token"),
        page_size=settings.oai.page_size,
        token_ttl=settings.oai.token_ttl,
        hub=settings.role == "hub",
    )


def build_app(settings: Settings, *, migrate: bool = True) -> web.Application:
    app = web.Application(
        middlewares=[errors, api.bearer_auth, admin.csrf_and_session],
        client_max_size=settings.admin.max_upload,
    )
    app[SETTINGS] = settings
    app.on_response_prepare.append(security_headers)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "xml"], default=True),
        context_processors=[admin.template_context],
    )

    async def database(app: web.Application) -> AsyncIterator[None]:
        db = Database(settings.effective_database_url)
        if migrate:
            await db.upgrade()
        await db.open()
        app[NODE] = node_context(settings, db)
        read_ahead = ReadAhead(capacity=settings.oai.read_ahead)
        app[OAI_HANDLER] = make_oai_handler(db, oai_config(settings), read_ahead=read_ahead)
        yield
        read_ahead.invalidate()  # no page read may outlive the database
        await app[NODE].close()
        await db.close()

    app.cleanup_ctx.append(database)
    # after database: it needs app[NODE]
    setup_federation(
        app, settings.federation, federation_identity(settings), outbound_config(settings), settings.data_path
    )
    if settings.role == "hub":  # the hub harvests its sources in the background (essaim/hub.py)
        from essaim.hub import scheduler_ctx, search_config
        from harvesting.admin import routes as hub_admin_routes
        from search.http import setup_search_http
        from search.lifecycle import search_context

        # Before the scheduler: the index queue listener is installed before any harvest writes.
        app.cleanup_ctx.append(search_context(search_config(settings)))
        app.cleanup_ctx.append(scheduler_ctx)
        from essaim.fedhub import fedhub_ctx, saved_routes

        app.cleanup_ctx.append(fedhub_ctx)
        if settings.federation.enabled:
            app.add_routes(saved_routes)  # /feeds/searches: saved-search feed actors
        app.add_routes(hub_admin_routes)
        setup_search_http(app)
    app.add_routes(api.routes)
    app.add_routes(admin.routes)
    if settings.role == "hub":
        # The hub's front (web/) serves the home page and the sheet pages; the node's
        # other public routes (health, metrics, OpenAPI) stay.
        from web.app import setup_web

        setup_web(app, settings, outbound_config(settings))
        app.add_routes([r for r in public.routes if getattr(r, "path", None) not in public.FRONT_PATHS])
    else:
        app.add_routes(public.routes)
    app.router.add_static("/static/", TEMPLATES.parent / "static", name="static")

    async def oai(request: web.Request) -> web.StreamResponse:
        return await request.app[OAI_HANDLER](request)

    app.router.add_route("GET", "/oai", oai)
    app.router.add_route("POST", "/oai", oai)
    app.router.add_get("/schemas/{name}", make_schema_handler())
    return app
