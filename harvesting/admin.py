"""The hub's admin pages (French): sources and their health, the crosswalk and its queue of unmapped tags.

Mounted by the app shell on a hub only, under ``/admin/hub/``, behind the node admin's
session and CSRF middleware (``node.http.admin.csrf_and_session``): no page answers
without a session and every POST carries the form's token.

"Moissonner maintenant" does not harvest inside the web request: it makes the source due
now, and the scheduler (or ``essaim hub harvest``) claims it within its poll interval, so a
long harvest never holds a request open and two workers still never run it at once.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from harvesting import normalise
from harvesting.hub import Hub, SourceError
from harvesting.transport import HarvestError
from node.context import NODE
from protocol.taxonomy import default_taxonomy

routes = web.RouteTableDef()
HUB = web.AppKey("hub", Hub)


def _when(epoch: Any) -> str:
    return time.strftime("%d/%m/%Y %H:%M", time.gmtime(int(epoch))) if epoch else "—"


def health(row: dict[str, Any]) -> dict[str, Any]:
    """A source row as the health table shows it (also what ``essaim hub sources list`` reads)."""
    stats = json.loads(row["last_stats"]) if row.get("last_stats") else {}
    if row.get("running_by"):
        state = "en cours"
    elif not row["enabled"]:
        state = "désactivée"
    elif not row.get("last_run"):
        state = "jamais moissonnée"
    elif row.get("last_error") or not stats.get("complete", False):
        state = "en erreur"
    else:
        state = "ok"
    return {
        "key": row["key"],
        "name": row["name"],
        "kind": row["kind"],
        "base_url": row["base_url"],
        "state": state,
        "last_run": _when(row.get("last_run")),
        "next_run": _when(row.get("next_run")) if row["enabled"] else "—",
        "added": stats.get("added", "—"),
        "updated": stats.get("updated", "—"),
        "deleted": stats.get("deleted", "—"),
        "rejected": stats.get("rejected", "—"),
        "duration": f"{stats['duration']:.1f} s" if "duration" in stats else "—",
        "error": row.get("last_error") or "",
    }


def _back(path: str, message: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"{path}?message={quote(message)}")


@routes.get("/admin/hub/sources")
@aiohttp_jinja2.template("admin/hub_sources.html")
async def sources_page(request: web.Request) -> dict[str, Any]:
    hub = request.app[HUB]
    rows = [health(r) for r in await hub.registry.all()]
    return {"sources": rows, "message": request.query.get("message", ""), "error": request.query.get("error", "")}


@routes.post("/admin/hub/sources")
async def add_source(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    form = await request.post()
    url = str(form.get("url", "")).strip()
    kind = str(form.get("kind", "oai"))
    name = str(form.get("name", "")).strip() or None
    try:
        interval = int(str(form.get("interval") or 3600))
        if kind == "file":
            row = await hub.register_file(
                url, mapping=str(form.get("mapping", "")).strip(), name=name, interval=interval
            )
        elif kind == "crawl":
            row = await hub.register_crawl(
                url,
                name=name,
                interval=interval,
                sitemap=str(form.get("sitemap", "")).strip() or None,
                delay=float(str(form.get("delay") or 1.0)),
            )
        else:
            row = await hub.register(url, name=name, interval=interval)
    except (SourceError, HarvestError, ValueError) as exc:
        raise web.HTTPSeeOther(f"/admin/hub/sources?error={quote(str(exc)[:500])}") from None
    raise _back("/admin/hub/sources", f"Source « {row['name']} » ajoutée ({row['key']}) : moisson imminente.")


@routes.post("/admin/hub/sources/{key}/harvest")
async def harvest_soon(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    key = request.match_info["key"]
    count = await hub.db.execute(
        "UPDATE harvest_source SET next_run = ?, enabled = ? WHERE key = ?", [int(time.time()), True, key]
    )
    if not count:
        raise web.HTTPNotFound(text="Source inconnue")
    raise _back("/admin/hub/sources", f"« {key} » sera moissonnée au prochain passage du planificateur.")


@routes.post("/admin/hub/sources/{key}/delete")
async def delete_source(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    key = request.match_info["key"]
    if not await hub.registry.remove(key):
        raise web.HTTPNotFound(text="Source inconnue")
    raise _back("/admin/hub/sources", f"Source « {key} » retirée (ses fiches moissonnées restent sur le hub).")


@routes.get("/admin/hub/crosswalk")
@aiohttp_jinja2.template("admin/hub_crosswalk.html")
async def crosswalk_page(request: web.Request) -> dict[str, Any]:
    db = request.app[NODE].db
    source = request.query.get("source", "").strip() or None
    sources = [r["key"] for r in await db.fetch("SELECT key FROM harvest_source ORDER BY key")]
    taxonomy = default_taxonomy()
    codes = [(t.code, t.fr) for t in taxonomy.themes.values()] + [
        (t.code, f"{taxonomy.themes[t.parent].fr if t.parent in taxonomy.themes else ''} — {t.fr}")
        for t in taxonomy.subthemes.values()
    ]
    return {
        "source": source,
        "sources": sources,
        "rules": await normalise.rules(db, source),
        "unmapped": await normalise.unmapped(db, source),
        "codes": codes,
        "message": request.query.get("message", ""),
        "error": request.query.get("error", ""),
    }


@routes.post("/admin/hub/crosswalk")
async def set_rule(request: web.Request) -> web.Response:
    db = request.app[NODE].db
    form = await request.post()
    source, tag = str(form.get("source", "")), str(form.get("tag", ""))
    codes = [str(c) for c in form.getall("codes", [])] + str(form.get("more", "")).replace(",", " ").split()
    back = f"/admin/hub/crosswalk?source={quote(str(form.get('back', '')))}"
    try:
        if not codes and not form.get("ignore"):
            raise normalise.CrosswalkError("choisissez au moins une thématique, ou « ignorer ce mot-clé »")
        await normalise.set_rule(db, source, tag, [] if form.get("ignore") else codes)
    except normalise.CrosswalkError as exc:
        raise web.HTTPSeeOther(f"{back}&error={quote(str(exc))}") from None
    raise web.HTTPSeeOther(
        f"{back}&message={quote(f'« {tag} » associé ; la prochaine moisson de {source} est complète.')}"
    )


@routes.post("/admin/hub/crosswalk/delete")
async def delete_rule(request: web.Request) -> web.Response:
    db = request.app[NODE].db
    form = await request.post()
    source, tag = str(form.get("source", "")), str(form.get("tag", ""))
    await normalise.remove_rule(db, source, tag)
    raise web.HTTPSeeOther(
        f"/admin/hub/crosswalk?source={quote(str(form.get('back', '')))}&message={quote('Règle supprimée.')}"
    )
