"""Public pages of a node: home, sheet pages, health, metrics, the OpenAPI document."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from node.context import NODE
from node.storage import sheet_counts
from protocol.sheet import Tombstone
from protocol.taxonomy import default_taxonomy

routes = web.RouteTableDef()
# OpenAPI fragments ({"paths", "components", "tags"}) merged into /api/openapi.json by the parts that add routes.
OPENAPI_PARTS = web.AppKey("openapi_parts", list)
COUNTER_HELP = {
    "index_upserts_total": "Documents written to the search index since the process started.",
    "index_deletes_total": "Documents deleted from the search index since the process started.",
    "index_refused_total": "Documents the search index refused (retried, then set aside).",
    "imports_total": "Imports run since the process started (API and admin, dry runs included).",
    "imports_refused_total": "Imports refused and rolled back since the process started.",
    "admin_login_failures_total": "Failed admin sign-ins since the process started.",
    "http_errors_total": "Requests that failed with an internal error since the process started.",
    "harvest_runs_total": "Harvest runs of the hub's scheduler since the process started.",
    "harvest_failures_total": "Harvest runs that ended incomplete or with errors.",
    "harvest_added_total": "Sheets added by harvests since the process started.",
    "harvest_updated_total": "Sheets updated by harvests since the process started.",
    "harvest_deleted_total": "Sheets turned into tombstones by harvests since the process started.",
    "harvest_rejected_total": "Records or pages rejected by harvests since the process started (see the logs).",
    "harvest_pages_total": "Pages (OAI-PMH pages, files, crawled pages) harvested since the process started.",
    "web_search_cache_hits_total": "Searches of the hub's pages answered from the front's micro-cache.",
    "web_search_cache_misses_total": "Searches of the hub's pages sent to the index.",
}


# Paths a hub's web front (``web/``) serves in place of the node's own pages.
FRONT_PATHS = ("/", "/sheets/{key}")


@routes.get("/")
@aiohttp_jinja2.template("public/home.html")
async def home(request: web.Request) -> dict[str, Any]:
    ctx = request.app[NODE]
    total, rows = await ctx.store.search_titles(request.query.get("q", ""), limit=50)
    return {"total": total, "rows": rows, "q": request.query.get("q", "")}


@routes.get("/sheets/{key}")
async def sheet_page(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    uri = f"{ctx.base_url}/sheets/{request.match_info['key']}"
    item = await ctx.store.get_by_uri(uri)
    if item is None:
        raise web.HTTPNotFound(text="Fiche introuvable / sheet not found")
    if isinstance(item, Tombstone):
        raise web.HTTPGone(text="Cette fiche a été supprimée / this sheet was deleted")
    return aiohttp_jinja2.render_template("public/sheet.html", request, {"s": item, "taxonomy": default_taxonomy()})


@routes.get("/healthz")
async def health(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    await ctx.db.fetchone("SELECT 1 AS ok")
    return web.json_response({"status": "ok"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format: sheets, tombstones, and the process counters."""
    ctx = request.app[NODE]
    live, dead = await sheet_counts(ctx.db)
    lines = [
        "# HELP essaim_sheets Sheets stored on this node.",
        "# TYPE essaim_sheets gauge",
        f'essaim_sheets{{state="live"}} {live}',
        f'essaim_sheets{{state="deleted"}} {dead}',
    ]
    for name, value in sorted(ctx.counters.items()):
        help_text = COUNTER_HELP.get(name, name.replace("_", " "))
        lines += [f"# HELP essaim_{name} {help_text}", f"# TYPE essaim_{name} counter", f"essaim_{name} {value}"]
    for source in ctx.metrics:
        lines += await source()
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    text = resources.files("node").joinpath("http/openapi.json").read_text(encoding="utf-8")
    document = json.loads(text)
    for part in request.app.get(OPENAPI_PARTS, ()):  # the parts the shell adds (the hub's search API)
        document["paths"].update(part.get("paths", {}))
        for section, items in part.get("components", {}).items():
            document.setdefault("components", {}).setdefault(section, {}).update(items)
        document["tags"] = [*document.get("tags", []), *part.get("tags", [])]
    document["servers"] = [{"url": request.app[NODE].base_url}]
    return web.json_response(document)
