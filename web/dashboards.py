"""Dashboards: projects by theme × région, over time, by partner, and a choropleth by département
(outlines from :mod:`web.choropleth`).

Every figure comes from facet counts of the index (one small search per row,
run concurrently), never from a scan of the database. Each chart is drawn on the
server (SVG or a shaded table, so no JavaScript is needed), comes with its data as
an HTML table, and as CSV at ``/tableaux-de-bord/{chart}.csv``. Figures are kept
for ``CACHE_SECONDS``: dashboards are read far more often than the index changes.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from node.geo.build import BuildError
from protocol.taxonomy import default_taxonomy
from search.errors import SearchError
from search.query import SearchQuery
from web import choropleth
from web.app import front, page, search
from web.labels import gazetteer, labeller
from web.render import language
from web.search_pages import unavailable

routes = web.RouteTableDef()
log = logging.getLogger(__name__)
CACHE_SECONDS = 60.0
FIRST_YEAR = 2010
CHARTS = ("themes-regions", "years", "partners", "departements")
MAP_SIZE = (choropleth.WIDTH, choropleth.HEIGHT)


async def _count(request: web.Request, **kw: Any) -> dict[str, Any]:
    return await search(request, SearchQuery(per_page=0, **kw))


async def themes_regions(request: web.Request) -> dict[str, Any]:
    codes = list(default_taxonomy().themes)
    results = await asyncio.gather(
        *(_count(request, filters={"themes": (c,)}, facets=("region",), max_facet_values=100) for c in codes)
    )
    rows = {
        c: {v["value"]: v["count"] for v in r["facets"].get("region", [])} for c, r in zip(codes, results, strict=True)
    }
    regions = sorted({reg for row in rows.values() for reg in row}, key=lambda r: gazetteer().region_name(r) or r)
    top = max((n for row in rows.values() for n in row.values()), default=0)
    return {
        "themes": codes,
        "regions": regions,
        "rows": rows,
        "max": top,
        "totals": {c: r["found"] for c, r in zip(codes, results, strict=True)},
    }


async def years(request: web.Request) -> dict[str, Any]:
    last = datetime.now(UTC).year
    spans = [
        (y, int(datetime(y, 1, 1, tzinfo=UTC).timestamp()), int(datetime(y + 1, 1, 1, tzinfo=UTC).timestamp()) - 1)
        for y in range(FIRST_YEAR, last + 1)
    ]
    results = await asyncio.gather(
        *(_count(request, created_from=lo, created_to=hi, facets=()) for _, lo, hi in spans),
        _count(request, created_to=spans[0][1] - 1, facets=()),
    )
    points = [(y, r["found"]) for (y, _, _), r in zip(spans, results, strict=False)]
    return {"points": points, "before": results[-1]["found"], "max": max((n for _, n in points), default=0)}


async def partners(request: web.Request) -> dict[str, Any]:
    result = await _count(request, facets=("partner",), max_facet_values=100)
    points = [(c["value"], c["count"]) for c in result["facets"].get("partner", [])]
    return {"points": points, "max": max((n for _, n in points), default=0)}


async def departements(request: web.Request) -> dict[str, Any]:
    gaz = gazetteer()
    regions = sorted(gaz.regions)
    # One search per région keeps every département under Typesense's facet value cap.
    results = await asyncio.gather(
        *(_count(request, filters={"region": (r,)}, facets=("departement",), max_facet_values=100) for r in regions)
    )
    found: dict[str, int] = {}
    for r in results:
        for c in r["facets"].get("departement", []):
            found[c["value"]] = max(found.get(c["value"], 0), c["count"])
    counts = {d: found.get(d, 0) for d in sorted(gaz.departements)}
    top = max(counts.values(), default=0)
    return {"counts": counts, "max": top, "bins": bins(top)}


def shade(n: int, top: int) -> int:
    """Class 1..5 of a count on a square-root scale (counts are very skewed); 0 for none."""
    if n <= 0 or top <= 0:
        return 0
    return min(5, max(1, math.ceil(5 * (n / top) ** 0.5)))


def bins(top: int) -> list[tuple[int, int, int]]:
    """``(class, low, high)`` of the legend: exactly the counts ``shade`` puts in each class."""
    out = []
    for k in range(1, 6):
        low = math.floor(((k - 1) / 5) ** 2 * top) + 1
        high = math.floor((k / 5) ** 2 * top)
        if low <= high:
            out.append((k, low, high))
    return out


BUILDERS: dict[str, Callable[[web.Request], Awaitable[dict[str, Any]]]] = {
    "themes-regions": themes_regions,
    "years": years,
    "partners": partners,
    "departements": departements,
}


async def figures(request: web.Request, chart: str) -> dict[str, Any]:
    cache = front(request).cache
    hit = cache.get(chart)
    if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    data = await BUILDERS[chart](request)
    cache[chart] = (time.monotonic(), data)
    return data


def csv_rows(chart: str, data: dict[str, Any], lang: str) -> list[list[Any]]:
    label = labeller(lang).label
    if chart == "themes-regions":
        header = ["theme", "theme_label", *(label("region", r) for r in data["regions"]), "total"]
        return [header] + [
            [t, label("themes", t), *(data["rows"][t].get(r, 0) for r in data["regions"]), data["totals"][t]]
            for t in data["themes"]
        ]
    if chart == "years":
        return [["year", "projects"], [f"< {FIRST_YEAR}", data["before"]], *([y, n] for y, n in data["points"])]
    if chart == "partners":
        return [["partner", "projects"], *([p, n] for p, n in data["points"])]
    return [["departement", "name", "projects"], *([d, label("departement", d), n] for d, n in data["counts"].items())]


def _map() -> choropleth.Layout | None:
    """The map's outlines, or None (the page then shows the table alone) when they cannot be built here."""
    try:
        return choropleth.layout()
    except BuildError as exc:
        log.warning("dashboard map unavailable: %s", exc)
        return None


@routes.get("/tableaux-de-bord")
async def dashboards(request: web.Request) -> web.Response:
    try:
        charts = dict(zip(CHARTS, await asyncio.gather(*(figures(request, c) for c in CHARTS)), strict=True))
    except SearchError:
        return unavailable(request)
    return page(
        request,
        "dashboards.html",
        {"charts": charts, "first_year": FIRST_YEAR, "shade": shade, "map": _map(), "map_size": MAP_SIZE},
    )


@routes.get("/tableaux-de-bord/{chart}.csv")
async def dashboard_csv(request: web.Request) -> web.StreamResponse:
    chart = request.match_info["chart"]
    if chart not in BUILDERS:
        raise web.HTTPNotFound(text=f"unknown chart {chart!r}: one of {', '.join(CHARTS)}")
    try:
        data = await figures(request, chart)
    except SearchError:
        raise web.HTTPServiceUnavailable(text="search unavailable") from None
    out = io.StringIO()
    csv.writer(out).writerows(csv_rows(chart, data, language(request)))
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="essaim-{chart}.csv"'},
    )
