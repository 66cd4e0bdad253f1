"""HTTP side of federation: discovery, the actor, its collections, activities and inboxes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from federation.actors import LocalActor
from federation.inbox import inbox
from federation.outbox import featured_uris, followers_page, note_of, outbox_page
from federation.service import FEDERATION, Federation
from node.context import NODE
from protocol.activitypub import discovery
from protocol.activitypub.activities import (
    ordered_collection,
    ordered_collection_page,
    service_actor,
    tombstone,
)
from protocol.activitypub.context import context_document
from protocol.activitypub.errors import WebFingerError
from protocol.sheet import Sheet, Tombstone

routes = web.RouteTableDef()
AP_TYPES = ("application/activity+json", "application/ld+json")


def ap_response(document: Any, status: int = 200) -> web.Response:
    response = web.Response(
        body=json.dumps(document, ensure_ascii=False).encode("utf-8"),
        status=status,
        content_type="application/activity+json",
        charset="utf-8",
    )
    response.headers["Vary"] = "Accept"
    return response


def wants_activity_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "").lower()
    return any(kind in accept for kind in AP_TYPES)


# ------------------------------------------------------------------ discovery


@routes.get("/.well-known/webfinger")
async def webfinger(request: web.Request) -> web.Response:
    fed = request.app[FEDERATION]
    actors = {local.username: local for local in fed.local_actors()}
    try:
        username = discovery.parse_webfinger_resource(
            request.query.get("resource"), host=fed.host, actors={name: a.id for name, a in actors.items()}
        )
    except WebFingerError as exc:
        return web.json_response({"error": str(exc)}, status=exc.http_status)
    local = actors[username]
    jrd = discovery.webfinger_jrd(username=username, host=fed.host, actor_id=local.id, profile_url=local.profile_url)
    response = web.json_response(jrd, content_type=discovery.JRD_CONTENT_TYPE)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@routes.get("/.well-known/host-meta")
async def host_meta(request: web.Request) -> web.Response:
    fed = request.app[FEDERATION]
    return web.Response(body=discovery.host_meta_xrd(fed.base_url), content_type=discovery.XRD_CONTENT_TYPE)


@routes.get("/.well-known/nodeinfo")
async def nodeinfo_links(request: web.Request) -> web.Response:
    return web.json_response(discovery.nodeinfo_links(request.app[FEDERATION].base_url))


@routes.get("/nodeinfo/2.1")
async def nodeinfo(request: web.Request) -> web.Response:
    fed = request.app[FEDERATION]
    posts = await request.app[NODE].store.count()
    document = discovery.nodeinfo_document(
        version=fed.identity.software_version,
        users_total=len(fed.local_actors()),
        active_month=len(fed.local_actors()),
        active_halfyear=len(fed.local_actors()),
        local_posts=posts,
        node_name=fed.identity.name,
        homepage=fed.identity.homepage or None,
    )
    response = web.json_response(document)
    response.content_type = "application/json"
    response.headers["Content-Type"] = discovery.NODEINFO_21_CONTENT_TYPE
    return response


# ------------------------------------------------------------------ actor and collections


def _local(request: web.Request) -> LocalActor:
    """The actor a route names: ``/actor/...`` the node's, ``/feeds/{code}/...`` a feed's."""
    fed = request.app[FEDERATION]
    code = request.match_info.get("code")
    if code is None:
        return fed.node_actor
    feed = fed.feeds.get(code)
    if feed is None:
        raise web.HTTPNotFound(text="no such feed")
    return feed


@routes.get("/actor")
async def actor(request: web.Request) -> web.StreamResponse:
    fed = request.app[FEDERATION]
    if not wants_activity_json(request):
        raise web.HTTPFound("/")
    return ap_response(service_actor(fed.profile()))


@routes.get("/feeds/{code}")
async def feed_actor(request: web.Request) -> web.StreamResponse:
    """A feed actor: its document for a peer, for a browser the list of the sheets it announced."""
    fed = request.app[FEDERATION]
    local = _local(request)
    if wants_activity_json(request):
        return ap_response(service_actor(fed.profile(local)))
    rows = await fed.db.fetch(
        "SELECT s.uri, s.title FROM ap_feed_item i JOIN sheet s ON s.uri = i.sheet_uri AND s.deleted = ?"
        " WHERE i.feed = ? ORDER BY i.id DESC LIMIT 100",
        [False, local.feed],
    )
    response = aiohttp_jinja2.render_template(
        "public/feed.html", request, {"feed": local, "handle": f"{local.username}@{fed.host}", "rows": rows}
    )
    response.headers["Vary"] = "Accept"
    return response


def _page(request: web.Request) -> int | None:
    value = request.query.get("page")
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise web.HTTPBadRequest(text="page must be a positive integer")
    return int(value)


async def _collection(request: web.Request, url: str, fetch: Any) -> web.Response:
    fed: Federation = request.app[FEDERATION]
    local = _local(request)
    page = _page(request)
    total, items = await fetch(fed, local, page or 1)
    last = max(1, -(-total // fed.conf.page_size))
    if page is None:
        return ap_response(ordered_collection(url, total=total, first=f"{url}?page=1", last=f"{url}?page={last}"))
    return ap_response(
        ordered_collection_page(
            f"{url}?page={page}",
            part_of=url,
            items=items,
            next_id=f"{url}?page={page + 1}" if page < last else None,
            prev_id=f"{url}?page={page - 1}" if page > 1 else None,
            start_index=(page - 1) * fed.conf.page_size,
            total=total,
        )
    )


@routes.get("/actor/outbox")
@routes.get("/feeds/{code}/outbox")
async def outbox(request: web.Request) -> web.Response:
    return await _collection(request, _local(request).outbox, outbox_page)


@routes.get("/actor/followers")
@routes.get("/feeds/{code}/followers")
async def followers(request: web.Request) -> web.Response:
    return await _collection(request, _local(request).followers_url, followers_page)


@routes.get("/actor/following")
@routes.get("/feeds/{code}/following")
async def following(request: web.Request) -> web.Response:
    fed = request.app[FEDERATION]
    local = _local(request)
    rows = (
        []
        if local.feed is not None
        else await fed.db.fetch("SELECT actor FROM ap_following WHERE status = 'accepted' ORDER BY id")
    )
    return ap_response(ordered_collection(local.following_url, total=len(rows), items=[r["actor"] for r in rows]))


@routes.get("/actor/featured")
@routes.get("/feeds/{code}/featured")
async def featured(request: web.Request) -> web.Response:
    """The most recently changed sheets, as Notes (Mastodon shows them pinned on the profile)."""
    fed = request.app[FEDERATION]
    local = _local(request)
    store = request.app[NODE].store
    notes = []
    for uri in await featured_uris(fed, local, store.source):
        item = await store.get_by_uri(uri)
        if isinstance(item, Sheet):
            notes.append({k: v for k, v in note_of(fed, item, uri).items() if k != "@context"})
    return ap_response(ordered_collection(local.featured_url, total=len(notes), items=notes))


@routes.get("/activities/{key}")
async def activity(request: web.Request) -> web.Response:
    fed = request.app[FEDERATION]
    row = await fed.db.fetchone("SELECT payload FROM ap_activity WHERE uri = ?", [fed.base_url + request.path])
    if row is None:
        raise web.HTTPNotFound(text="no such activity")
    return ap_response(json.loads(row["payload"]))


@routes.get("/ns/essaim-v1.jsonld")
async def essaim_context(request: web.Request) -> web.Response:
    """The published copy of Essaim's JSON-LD context (the one bundled with the code, byte for byte)."""
    response = web.Response(body=context_document(), content_type="application/ld+json", charset="utf-8")
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


@routes.get("/actor/inbox")
@routes.get("/feeds/{code}/inbox")
async def inbox_collection(request: web.Request) -> web.Response:
    """What an inbox GET shows: an empty ``OrderedCollection`` (what we receive is not published)."""
    return ap_response(ordered_collection(_local(request).inbox, total=0, items=[]))


routes.post("/actor/inbox")(inbox)
routes.post("/feeds/{code}/inbox")(inbox)
routes.post("/inbox")(inbox)


# ------------------------------------------------------------------ sheets: content negotiation


@web.middleware
async def sheet_negotiation(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """``/sheets/{key}`` with an ActivityPub Accept: the sheet's Note (410 + Tombstone once deleted)."""
    if request.method not in ("GET", "HEAD") or not request.path.startswith("/sheets/"):
        return await handler(request)
    if not wants_activity_json(request):
        response = await handler(request)
        response.headers["Vary"] = "Accept"
        return response
    fed = request.app[FEDERATION]
    uri = fed.base_url + request.path
    item = await request.app[NODE].store.get_by_uri(uri)
    if item is None:
        return web.json_response({"error": "sheet not found"}, status=404)
    if isinstance(item, Tombstone):
        assert item.datestamp is not None
        return ap_response(tombstone(uri, deleted=item.datestamp), status=410)
    return ap_response(note_of(fed, item, uri))
