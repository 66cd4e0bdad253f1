"""Open data for any search: Atom, CSV, JSON and GeoJSON, each item with its licence and provenance.

The URL is the search page's (``/recherche.csv?themes=ENV&region=53`` is the CSV
of ``/recherche?themes=ENV&region=53``). Exports read the index page by page
(at most ``MAX_ROWS`` rows: deep paging is refused by the search layer) and the
stored sheets for the licence and the harvest provenance.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from lxml import etree

from node.context import NODE
from protocol.sheet import format_datestamp, sheet_from_dict
from search.errors import QueryError, SearchError
from search.query import MAX_PAGE, MAX_PER_PAGE
from web.app import front, search_service
from web.labels import labeller
from web.render import language
from web.state import State, parse_state

routes = web.RouteTableDef()
MAX_ROWS = MAX_PAGE * MAX_PER_PAGE
ATOM_ENTRIES = 50
ATOM = "http://www.w3.org/2005/Atom"
CSV_COLUMNS = (
    "uri", "title", "summary", "partner", "url", "themes", "subthemes", "communes", "departements", "regions",
    "lat", "lon", "stage", "created", "modified", "licence", "harvested_from", "original_id", "harvest_date",
)  # fmt: skip


async def collect(request: web.Request, state: State, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Up to ``limit`` items of the search, in its order, joined with the stored sheet and its provenance."""
    service = search_service(request)
    items: list[dict[str, Any]] = []
    found = 0
    page = 1
    while len(items) < limit and page <= MAX_PAGE:
        query = replace(state.query, page=page, per_page=min(MAX_PER_PAGE, limit), facets=())
        result = await service.search(query)
        found = result["found"]
        hits = result["hits"][: limit - len(items)]
        if not hits:
            break
        uris = [h["document"]["uri"] for h in hits]
        marks = ", ".join("?" for _ in uris)
        rows = await request.app[NODE].db.fetch(
            f"SELECT uri, data, provenance FROM sheet WHERE uri IN ({marks}) AND deleted = ?", [*uris, False]
        )
        stored = {str(r["uri"]): r for r in rows}
        for hit in hits:
            row = stored.get(hit["document"]["uri"])
            if row is None or not row["data"]:
                continue  # deleted since it was indexed
            items.append(
                {
                    "doc": hit["document"],
                    "sheet": sheet_from_dict(json.loads(row["data"])),
                    "provenance": json.loads(row["provenance"]) if row["provenance"] else {},
                }
            )
        if page >= result["pages"]:
            break
        page += 1
    return items, found


def record(item: dict[str, Any], hub: str) -> dict[str, Any]:
    s, doc, prov = item["sheet"], item["doc"], item["provenance"]
    point = doc.get("location")
    return {
        "uri": s.id,
        "title": s.title,
        "summary": s.summary,
        "partner": s.partner.name,
        "url": s.url,
        "themes": list(s.themes),
        "subthemes": list(s.subthemes),
        "communes": doc.get("communes", []),
        "departements": doc.get("departement", []),
        "regions": doc.get("region", []),
        "lat": point[0] if point else None,
        "lon": point[1] if point else None,
        "stage": s.stage.value if s.stage else None,
        "created": format_datestamp(s.created) if s.created else None,
        "modified": format_datestamp(s.modified) if s.modified else None,
        "licence": s.licence,
        "provenance": {
            "hub": hub,
            "harvested_from": prov.get("baseURL"),
            "original_id": prov.get("sheetId"),
            "oai_identifier": prov.get("identifier"),
            "harvest_date": prov.get("harvestDate"),
        },
    }


def about(request: web.Request, state: State, found: int, count: int) -> dict[str, Any]:
    settings = front(request).settings
    return {
        "source": settings.base_url,
        "search": f"{settings.base_url}{state.url('/recherche')}",
        "generated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "found": found,
        "count": count,
        "truncated": count < found,
        "licence": "each item carries the licence its partner published it under (item.licence)",
    }


@routes.get("/recherche.{fmt:csv|json|geojson|atom}")
async def export(request: web.Request) -> web.StreamResponse:
    fmt = request.match_info["fmt"]
    try:
        state = parse_state(request.query)
        if fmt == "atom" and state.query.sort == "relevance" and not state.query.q:
            state = State(replace(state.query, sort="date"), state.params)
        items, found = await collect(request, state, ATOM_ENTRIES if fmt == "atom" else MAX_ROWS)
    except QueryError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    except SearchError:
        raise web.HTTPServiceUnavailable(text="search unavailable") from None
    hub = front(request).settings.base_url
    records = [record(i, hub) for i in items]
    meta = about(request, state, found, len(records))
    headers = {"X-Total-Count": str(found), "Access-Control-Allow-Origin": "*"}
    if fmt == "json":
        return web.json_response({**meta, "items": records}, headers=headers, dumps=_dumps)
    if fmt == "geojson":
        features = [
            {
                "type": "Feature",
                "id": r["uri"],
                "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]} if r["lat"] is not None else None,
                "properties": {k: v for k, v in r.items() if k not in ("lat", "lon")},
            }
            for r in records
        ]
        body = _dumps({"type": "FeatureCollection", "metadata": meta, "features": features})
        return web.Response(text=body, content_type="application/geo+json", headers=headers)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for r in records:
            prov = r["provenance"]
            flat = {
                **r,
                "harvested_from": prov["harvested_from"],
                "original_id": prov["original_id"],
                "harvest_date": prov["harvest_date"],
            }
            writer.writerow(
                [
                    "|".join(v) if isinstance(v, list) else ("" if v is None else v)
                    for v in (flat[c] for c in CSV_COLUMNS)
                ]
            )
        headers["Content-Disposition"] = 'attachment; filename="essaim-recherche.csv"'
        headers["X-Truncated"] = "true" if meta["truncated"] else "false"
        return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8", headers=headers)
    return web.Response(
        body=atom(request, state, items, meta), content_type="application/atom+xml", charset="utf-8", headers=headers
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def atom(request: web.Request, state: State, items: list[dict[str, Any]], meta: dict[str, Any]) -> bytes:
    label = labeller(language(request)).label
    E = lambda tag: etree.QName(ATOM, tag)  # noqa: E731
    feed = etree.Element(E("feed"), nsmap={None: ATOM})
    feed.set("{http://www.w3.org/XML/1998/namespace}lang", language(request))
    etree.SubElement(feed, E("id")).text = meta["search"].replace("/recherche", "/recherche.atom", 1)
    title = front(request).site_name + (f" — {state.query.q}" if state.query.q else "")
    etree.SubElement(feed, E("title")).text = title
    newest = max((i["sheet"].datestamp for i in items if i["sheet"].datestamp), default=None)
    etree.SubElement(feed, E("updated")).text = format_datestamp(newest) if newest else meta["generated"]
    etree.SubElement(feed, E("link"), rel="self", href=meta["search"].replace("/recherche", "/recherche.atom", 1))
    etree.SubElement(feed, E("link"), rel="alternate", type="text/html", href=meta["search"])
    etree.SubElement(feed, E("rights")).text = "Each entry: the licence of its partner (see its rights element)."
    etree.SubElement(feed, E("generator"), uri="https://essaim.org").text = "Essaim"
    for item in items:
        s, prov = item["sheet"], item["provenance"]
        entry = etree.SubElement(feed, E("entry"))
        etree.SubElement(entry, E("id")).text = s.id
        etree.SubElement(entry, E("title")).text = s.title
        etree.SubElement(entry, E("updated")).text = format_datestamp(s.datestamp or s.modified or datetime.now(UTC))
        if s.created:
            etree.SubElement(entry, E("published")).text = format_datestamp(s.created)
        etree.SubElement(entry, E("link"), rel="alternate", type="text/html", href=s.id)
        if s.url:
            etree.SubElement(entry, E("link"), rel="related", href=s.url)
        author = etree.SubElement(entry, E("author"))
        etree.SubElement(author, E("name")).text = s.partner.name
        if s.partner.url:
            etree.SubElement(author, E("uri")).text = s.partner.url
        for theme in s.themes:
            etree.SubElement(entry, E("category"), term=theme, label=label("themes", theme))
        if s.summary:
            etree.SubElement(entry, E("summary")).text = s.summary
        etree.SubElement(entry, E("rights")).text = s.licence
        if prov.get("baseURL"):
            source = etree.SubElement(entry, E("source"))
            etree.SubElement(source, E("id")).text = prov.get("sheetId") or prov["baseURL"]
            etree.SubElement(source, E("title")).text = s.partner.name
            etree.SubElement(source, E("link"), rel="via", href=prov["baseURL"])
            etree.SubElement(source, E("updated")).text = prov.get("harvestDate") or meta["generated"]
    return etree.tostring(feed, xml_declaration=True, encoding="utf-8")


__all__ = ["routes"]
