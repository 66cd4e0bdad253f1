"""The matchmaking board: every open need and offer of the network, filterable by kind, theme and territory.

The index knows which sheets have an open need or offer of each kind
(``match_kinds``); the texts come from the stored sheets of the page shown.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from aiohttp import web

from node.context import NODE
from protocol.sheet import MatchStatus, sheet_from_dict
from protocol.taxonomy import default_taxonomy
from search.errors import QueryError, SearchError
from web.app import page, search
from web.search_pages import bad_request, context, unavailable
from web.state import parse_state

routes = web.RouteTableDef()
BOARD_FACETS = ("match_kinds", "themes", "region", "departement")


async def sheets_by_uri(request: web.Request, uris: list[str]) -> dict[str, Any]:
    if not uris:
        return {}
    marks = ", ".join("?" for _ in uris)
    rows = await request.app[NODE].db.fetch(
        f"SELECT uri, data FROM sheet WHERE uri IN ({marks}) AND deleted = ?", [*uris, False]
    )
    return {str(r["uri"]): sheet_from_dict(json.loads(r["data"])) for r in rows if r["data"]}


@routes.get("/besoins-offres")
async def board(request: web.Request) -> web.Response:
    try:
        state = parse_state(request.query)
        unknown = set(state.query.filters) - set(BOARD_FACETS)
        if unknown:
            raise QueryError(f"the board filters by {', '.join(BOARD_FACETS)} only, not {', '.join(sorted(unknown))}")
        kinds = state.query.filters.get("match_kinds") or tuple(default_taxonomy().match_kinds)
        # Without a chosen kind the board still lists only sheets with an open need or offer.
        query = replace(
            state.query,
            filters={**state.query.filters, "match_kinds": kinds},
            facets=BOARD_FACETS,
            sort="date" if state.query.sort == "relevance" and not state.query.q else state.query.sort,
        )
        result = await search(request, query)
    except QueryError as exc:
        return bad_request(request, exc)
    except SearchError:
        return unavailable(request)
    stored = await sheets_by_uri(request, [h["document"]["uri"] for h in result["hits"]])
    chosen = set(state.query.filters.get("match_kinds", ()))
    items = []
    for hit in result["hits"]:
        sheet = stored.get(hit["document"]["uri"])
        if sheet is None:
            continue
        matches = [m for m in sheet.matches if m.status is MatchStatus.OPEN and (not chosen or m.kind.value in chosen)]
        items.append({"sheet": sheet, "doc": hit["document"], "matches": matches})
    ctx = context(state, result, "/besoins-offres")
    ctx["panels"] = [p for p in ctx["panels"] if p["name"] in BOARD_FACETS]
    ctx["items"] = items
    return page(request, "board.html", ctx)
