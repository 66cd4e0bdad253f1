"""Feed actors for people: the list of feeds, each feed's Atom equivalent, and the remote-follow button.

Every feed actor (a node's theme feeds, a hub's theme, région and saved-search feeds) has
``/feeds/{code}`` (its page for a browser, its actor for a peer), ``/feeds/{code}/atom`` (the
same sheets as an Atom 1.0 feed, for feed readers) and ``/feeds/{code}/follow?instance=…``,
which sends the visitor to their own server's "authorize interaction" page for the feed's
handle (Mastodon's remote follow; GoToSocial and Akkoma accept the same URL).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from lxml import etree

from federation.actors import LocalActor
from federation.service import FEDERATION, Federation

ATOM = "http://www.w3.org/2005/Atom"
HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")

routes = web.RouteTableDef()


def _feed(request: web.Request) -> tuple[Federation, LocalActor]:
    fed = request.app[FEDERATION]
    local = fed.feeds.get(request.match_info["code"])
    if local is None:
        raise web.HTTPNotFound(text="no such feed")
    return fed, local


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sub(parent: etree._Element, name: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, f"{{{ATOM}}}{name}", attrs)
    if text is not None:
        el.text = text
    return el


@routes.get("/feeds")
async def feeds_index(request: web.Request) -> web.StreamResponse:
    """Every feed actor of this server, with its handle, its page and its Atom feed."""
    fed = request.app[FEDERATION]
    feeds = [{"actor": f, "handle": f"{f.username}@{fed.host}"} for f in fed.feeds.values()]
    return aiohttp_jinja2.render_template("public/feeds.html", request, {"feeds": feeds})


@routes.get("/feeds/{code}/atom")
async def feed_atom(request: web.Request) -> web.Response:
    fed, local = _feed(request)
    rows = await fed.db.fetch(
        "SELECT s.uri, s.title, s.stamp, i.created FROM ap_feed_item i JOIN sheet s ON s.uri = i.sheet_uri"
        " AND s.deleted = ? WHERE i.feed = ? ORDER BY i.id DESC LIMIT 50",
        [False, local.feed],
    )
    root = etree.Element(f"{{{ATOM}}}feed", nsmap={None: ATOM})
    _sub(root, "id", local.id)
    _sub(root, "title", local.name)
    _sub(root, "subtitle", local.summary_text)
    _sub(root, "updated", _iso(max([int(r["created"]) for r in rows], default=fed.now())))
    _sub(root, "link", rel="self", href=f"{local.id}/atom", type="application/atom+xml")
    _sub(root, "link", rel="alternate", href=local.id, type="text/html")
    author = _sub(root, "author")
    _sub(author, "name", fed.identity.name)
    for row in rows:
        entry = _sub(root, "entry")
        _sub(entry, "id", str(row["uri"]))
        _sub(entry, "title", str(row["title"] or row["uri"]))
        _sub(entry, "link", rel="alternate", href=str(row["uri"]), type="text/html")
        _sub(entry, "updated", _iso(int(row["stamp"])))
        _sub(entry, "published", _iso(int(row["created"])))
    body = etree.tostring(root, xml_declaration=True, encoding="utf-8")
    return web.Response(body=body, content_type="application/atom+xml", charset="utf-8")


@routes.get("/feeds/{code}/follow")
async def remote_follow(request: web.Request) -> web.Response:
    """The follow button: ``instance`` is the visitor's own server (``mastodon.example``)."""
    fed, local = _feed(request)
    instance = request.query.get("instance", "").strip().lower().removeprefix("https://").rstrip("/")
    instance = instance.lstrip("@").rpartition("@")[2]  # "@me@mastodon.example" works too
    if not HOSTNAME.match(instance):
        raise web.HTTPBadRequest(text="instance: give the name of your server, e.g. mastodon.example")
    handle = f"{local.username}@{fed.host}"
    raise web.HTTPFound(f"https://{instance}/authorize_interaction?uri={quote(handle, safe='@')}")
