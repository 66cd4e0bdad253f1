"""The sheet page (every field, a small map, links back, duplicates, share, follow) and the remote follow."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web
from yarl import URL

from harvesting.duplicates import also_listed_by
from node.context import NODE
from node.outbound import OutboundError
from protocol.sheet import LICENCE_OUVERTE_2, Sheet, sheet_from_dict
from web.app import front, page, sheet_href
from web.labels import gazetteer, labeller
from web.render import language

routes = web.RouteTableDef()
HANDLE = re.compile(r"^@?([A-Za-z0-9_.\-]{1,64})@([A-Za-z0-9.\-]{1,253}(?::\d{1,5})?)$")
SUBSCRIBE_REL = "http://ostatus.org/schema/1.0/subscribe"
LICENCES = {LICENCE_OUVERTE_2: "Licence Ouverte 2.0 (Etalab)"}


def json_ld(sheet: Sheet, permalink: str, lang: str) -> dict[str, Any]:
    """schema.org description of the project (``Project``, with its places and publisher)."""
    label = labeller(lang).label
    out: dict[str, Any] = {
        "@context": "https://schema.org",
        "@type": "Project",
        "@id": permalink,
        "url": permalink,
        "name": sheet.title,
        "inLanguage": sheet.language,
        "license": sheet.licence,
        "publisher": {
            "@type": "Organization",
            "name": sheet.partner.name,
            **({"url": sheet.partner.url} if sheet.partner.url else {}),
        },
        "keywords": [label("themes", t) for t in sheet.themes] + [label("subthemes", t) for t in sheet.subthemes],
    }
    if sheet.summary:
        out["description"] = sheet.summary
    if sheet.url:
        out["sameAs"] = sheet.url
    if sheet.holder:
        out["member"] = {"@type": "Organization", "name": sheet.holder.name}
    if sheet.created:
        out["dateCreated"] = sheet.created.isoformat()
    if sheet.modified:
        out["dateModified"] = sheet.modified.isoformat()
    if sheet.start_date:
        out["foundingDate"] = sheet.start_date.isoformat()
    if sheet.images:
        out["image"] = sheet.images[0].url
    places = []
    for p in sheet.places:
        place: dict[str, Any] = {
            "@type": "Place",
            "address": {
                "@type": "PostalAddress",
                **({"streetAddress": p.address} if p.address else {}),
                **({"postalCode": p.postcode} if p.postcode else {}),
                **({"addressLocality": p.commune} if p.commune else {}),
                "addressCountry": p.country,
            },
        }
        if p.lat is not None and p.lon is not None:
            place["geo"] = {"@type": "GeoCoordinates", "latitude": p.lat, "longitude": p.lon}
        places.append(place)
    if places:
        out["location"] = places
    return out


@routes.get("/sheets/{key}")
async def sheet_view(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    uri = f"{ctx.base_url}/sheets/{request.match_info['key']}"
    row = await ctx.db.fetchone("SELECT source, deleted, data FROM sheet WHERE uri = ?", [uri])
    if row is None:
        return page(request, "error.html", {"status": 404, "message": None}, status=404)
    if row["deleted"] or not row["data"]:
        return page(request, "error.html", {"status": 410, "message": None}, status=410)
    sheet = sheet_from_dict(json.loads(row["data"]))
    also = await also_listed_by(ctx.db, uri)  # the same project from other partners (duplicate cluster)
    settings = front(request).settings
    point = next(((p.lat, p.lon) for p in sheet.places if p.lat is not None and p.lon is not None), None)
    partner_actor = (
        sheet.partner.id if sheet.partner.id and sheet.partner.id.startswith(("https://", "http://")) else None
    )
    host = urlsplit(settings.base_url).netloc
    context = {
        "s": sheet,
        "permalink": uri,
        "point": point,
        "image": sheet.images[0].url if sheet.images else None,
        "json_ld": json_ld(sheet, uri, language(request)),
        "also": also,
        "source_key": row["source"] or None,
        "licence_name": LICENCES.get(sheet.licence, sheet.licence),
        "follow_target": partner_actor or f"{settings.base_url}/actor",
        "follow_handle": partner_actor or f"@{settings.partner.username}@{host}",
    }
    return page(request, "sheet.html", context)


@routes.get("/suivre")
async def remote_follow(request: web.Request) -> web.StreamResponse:
    """Remote follow: find the visitor's instance's subscribe page by WebFinger and send them there."""
    handle = request.query.get("handle", "").strip()
    target = request.query.get("target", "").strip()
    renderer = front(request).renderer
    match = HANDLE.match(handle)
    if not target.startswith(("https://", "http://")) or len(target) > 512:
        return page(
            request,
            "error.html",
            {"status": 400, "message": renderer.gettext(request, "Compte à suivre invalide.")},
            status=400,
        )
    if match is None:
        message = renderer.gettext(request, "Donnez votre compte sous la forme @nom@instance.example.")
        return page(request, "error.html", {"status": 400, "message": message}, status=400)
    user, host = match.groups()
    client = front(request).outbound
    if client is None:
        raise web.HTTPServiceUnavailable(text="outbound requests are disabled on this hub")
    name, _, port = host.rpartition(":") if ":" in host else (host, "", "443")
    scheme = "http" if client.config.is_allow_listed(name, int(port)) else "https"
    url = f"{scheme}://{host}/.well-known/webfinger?resource={quote(f'acct:{user}@{host}')}"
    try:
        response = await client.get(url, headers={"Accept": "application/jrd+json"}, max_bytes=256 * 1024)
        response.raise_for_status()
        jrd = response.json()
        template = next(
            (
                link.get("template")
                for link in jrd.get("links", [])
                if isinstance(link, dict) and link.get("rel") == SUBSCRIBE_REL and isinstance(link.get("template"), str)
            ),
            None,
        )
    except (OutboundError, ValueError, AttributeError):
        template = None
    if not template or "{uri}" not in template or not template.startswith(("https://", "http://")):
        message = renderer.gettext(
            request, "Votre instance ne propose pas le suivi à distance : cherchez ce compte depuis votre instance :"
        )
        return page(request, "error.html", {"status": 400, "message": f"{message} {target}"}, status=502)
    raise web.HTTPSeeOther(URL(template.replace("{uri}", quote(target, safe="")), encoded=True))


@routes.get("/carte/departements.json")
async def departement_points(request: web.Request) -> web.Response:
    """Centres and names of the départements: the map's reading aid when it is drawn without tiles."""
    gaz = gazetteer()
    points = [
        {"code": code, "name": name, "lat": lat, "lon": lon}
        for code, (name, _region, lat, lon) in sorted(gaz.departements.items())
        if lat is not None and lon is not None
    ]
    return web.json_response(points, headers={"Cache-Control": "public, max-age=86400"})


__all__ = ["routes", "sheet_href"]
