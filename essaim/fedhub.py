"""Wiring of the hub on the fediverse (``role = hub``, federation enabled): live ingest, hub feed actors.

Only the shell may join :mod:`harvesting` and :mod:`federation` (peers in the layering): the
inbox gets :class:`harvesting.push.PushIngest` as its content handler, and a background task
keeps the hub following every registered Essaim node (:func:`federation.hubpush.run_follow_loop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode

import aiohttp_jinja2
from aiohttp import web

from essaim.settings import Settings
from federation.hubfeeds import HubFeeds, HubFeedWorker, install_feed_queue, make_code
from federation.hubpush import push_status, run_follow_loop, sync_follows
from federation.service import FEDERATION, Federation
from harvesting.push import PushIngest, divergence
from node.context import NODE
from node.db import Database
from node.keys import ensure_actor_key
from node.outbound import OutboundClient
from protocol.sheet import Sheet
from search.errors import FilterError, QueryError
from search.match import check_savable, matches
from search.query import SearchQuery
from search.schema import document_from_sheet

HUB_FEEDS = web.AppKey("hub_feeds", HubFeeds)


@functools.lru_cache(maxsize=4096)
def parse_saved(query: str) -> SearchQuery:
    """A stored query string as a :class:`SearchQuery` (validated when the search was saved)."""
    return SearchQuery.from_params(parse_qs(query, keep_blank_values=False))


def search_matcher(query: str, sheet: Sheet) -> bool:
    return matches(parse_saved(query), document_from_sheet(sheet))


async def fedhub_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx`` after the federation's and the search index's (it needs ``app[FEDERATION]``)."""
    from essaim.app import SETTINGS

    settings = app[SETTINGS]
    conf = settings.fedhub
    tasks: list[asyncio.Task[None]] = []
    if FEDERATION in app:
        fed = app[FEDERATION]
        ctx = app[NODE]
        if conf.push:
            fed.content_handler = PushIngest(ctx.db, hub_base_url=settings.base_url, count=ctx.count)
            tasks.append(asyncio.create_task(run_follow_loop(fed, conf.follow_interval), name="hub follows nodes"))
        from essaim.app import oai_config

        feeds = HubFeeds(
            fed,
            regions=conf.regions,
            search_matcher=search_matcher if conf.saved_searches else None,
            relay_repo_id=oai_config(settings).repo_id if conf.relay else None,
        )
        if conf.saved_searches:
            await feeds.load_searches()
        worker = HubFeedWorker(feeds, poll=max(0.1, settings.federation.poll))
        install_feed_queue(ctx.db, worker.wake)
        app[HUB_FEEDS] = feeds
        tasks.append(asyncio.create_task(worker.run(), name="hub feed actors"))
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def open_federation(settings: Settings, db: Database) -> AsyncIterator[Federation]:
    """The hub's federation state for a command run beside the server (``essaim hub sources add``).

    What it queues (the Follow of a new source) is delivered by the running hub's worker,
    which reads the same ``ap_delivery`` table.
    """
    from essaim.app import federation_identity, outbound_config

    private_pem, public_pem = ensure_actor_key(settings.data_path)
    async with OutboundClient(outbound_config(settings)) as client:
        yield Federation(
            conf=settings.federation,
            identity=federation_identity(settings),
            db=db,
            client=client,
            private_pem=private_pem.decode("ascii"),
            public_pem=public_pem.decode("ascii"),
        )


async def follow_new_source(settings: Settings, db: Database, key: str) -> list[dict[str, Any]]:
    """Follow the node behind a just-registered source (nothing for a plain OAI-PMH provider)."""
    if settings.role != "hub" or not settings.federation.enabled or not settings.fedhub.push:
        return []
    async with open_federation(settings, db) as fed:
        return await sync_follows(fed, key)


async def status(settings: Settings, db: Database) -> list[dict[str, Any]]:
    async with open_federation(settings, db) as fed:
        return await push_status(fed, divergence)


async def sync(settings: Settings, db: Database) -> list[dict[str, Any]]:
    async with open_federation(settings, db) as fed:
        return await sync_follows(fed)


# ------------------------------------------------------------------ saved searches

# Parameters of a search URL that say how to show results, not which: left out of a saved search.
PRESENTATION = ("sort", "page", "per_page", "facets")
MAX_LABEL = 120

saved_routes = web.RouteTableDef()


class SavedSearchError(ValueError):
    """The query string cannot be a saved search; the message names the problem."""


def normalise_query(query: str) -> tuple[str, SearchQuery]:
    """A search URL's query string (``?`` optional) → (canonical query string, parsed query)."""
    params = parse_qs(query.strip().lstrip("?"), keep_blank_values=False)
    for name in PRESENTATION:
        params.pop(name, None)
    try:
        parsed = SearchQuery.from_params(params)
        check_savable(parsed)
    except (QueryError, FilterError) as exc:
        raise SavedSearchError(str(exc)) from None
    canonical = urlencode(sorted((k, v) for k, values in params.items() for v in sorted(values)))
    return canonical, parsed


def default_label(parsed: SearchQuery, taxonomy: Any) -> str:
    """« alimentation durable · Bretagne »: the keywords, then the labels of the chosen themes and régions."""
    parts = [parsed.q.strip()] if parsed.q.strip() else []
    tables = {"themes": taxonomy.themes, "region": taxonomy.regions}
    for name, values in parsed.filters.items():
        table = tables.get(name)
        parts.extend(table[v].label("fr") if table and v in table else v for v in values)
    return " · ".join(parts)[:MAX_LABEL] or "Recherche"


async def save_search(app: web.Application, query: str, label: str = "") -> tuple[dict[str, Any], bool]:
    """Create (or find) the saved search of ``query``; returns (its description, created)."""
    from essaim.app import SETTINGS

    feeds, fed = app[HUB_FEEDS], app[FEDERATION]
    conf = app[SETTINGS].fedhub
    if not conf.saved_searches:
        raise SavedSearchError("saved searches are disabled on this hub ([fedhub] saved_searches)")
    canonical, parsed = normalise_query(query)
    label = " ".join(label.split())[:MAX_LABEL] or default_label(parsed, fed.taxonomy)
    existing = await fed.db.fetchone("SELECT * FROM hub_saved_search WHERE query = ?", [canonical])
    if existing is not None:
        return describe(fed, fed.feeds[str(existing["code"])], canonical), False
    count = await fed.db.fetchone("SELECT COUNT(*) AS n FROM hub_saved_search")
    if count and int(count["n"]) >= conf.max_saved_searches:
        raise SavedSearchError(f"this hub keeps at most {conf.max_saved_searches} saved searches")
    taken = {a.username.lower() for a in fed.local_actors()} | set(fed.feeds)
    code = make_code(label, taken)
    row = {"code": code, "username": code, "label": label, "query": canonical, "created": fed.now()}
    await fed.db.execute(
        "INSERT INTO hub_saved_search (code, username, label, query, created) VALUES (?, ?, ?, ?, ?)",
        [row["code"], row["username"], row["label"], row["query"], row["created"]],
    )
    actor = feeds.add_search(row)
    return describe(fed, actor, canonical), True


def describe(fed: Federation, actor: Any, query: str) -> dict[str, Any]:
    return {
        "code": actor.feed,
        "name": actor.name,
        "query": query,
        "actor": actor.id,
        "handle": f"{actor.username}@{fed.host}",
        "page": actor.id,
        "atom": f"{actor.id}/atom",
    }


@saved_routes.get("/feeds/searches/new")
async def new_saved_search(request: web.Request) -> web.StreamResponse:
    """The page the search page links to (« Suivre cette recherche »), with the search's query string."""
    query = request.query_string
    try:
        _, parsed = normalise_query(query)
        label, error = default_label(parsed, request.app[FEDERATION].taxonomy), ""
    except SavedSearchError as exc:
        label, error = "", str(exc)
    context = {"query": query, "label": label, "error": error}
    return aiohttp_jinja2.render_template("public/saved_search.html", request, context, status=400 if error else 200)


@saved_routes.post("/feeds/searches")
async def create_saved_search(request: web.Request) -> web.StreamResponse:
    """JSON ``{"query": "q=…&region=53", "label": "…"}`` → 201 (200 if it existed) with the feed's handle;
    a form post is sent on to the new feed's page."""
    is_json = request.content_type == "application/json"
    try:
        data = await request.json() if is_json else dict(await request.post())
    except ValueError:
        return web.json_response({"error": "body is not JSON"}, status=400)
    if not isinstance(data, dict) or not isinstance(data.get("query", ""), str):
        return web.json_response({"error": "query must be a search query string"}, status=400)
    label = data.get("label", "")
    try:
        saved, created = await save_search(request.app, str(data.get("query", "")), str(label or ""))
    except SavedSearchError as exc:
        if is_json:
            return web.json_response({"error": str(exc)}, status=400)
        context = {"query": data.get("query", ""), "label": label, "error": str(exc)}
        return aiohttp_jinja2.render_template("public/saved_search.html", request, context, status=400)
    if is_json:
        return web.json_response(saved, status=201 if created else 200)
    raise web.HTTPSeeOther(saved["page"])
