"""The matchmaking board: every open need and offer of the network, filterable by direction (need or offer),
kind, theme and territory.

The index knows which sheets have an open match of each kind, each direction, and each (direction, kind)
pair (``match_kinds``, ``match_directions``, ``match_pairs``); the texts come from the stored sheets of
the page shown.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from aiohttp import web

from node.context import NODE
from protocol.sheet import MatchDirection, MatchStatus, sheet_from_dict
from protocol.taxonomy import default_taxonomy
from search.errors import QueryError, SearchError
from search.query import SearchQuery
from web.app import page, search
from web.search_pages import bad_request, context, unavailable
from web.state import parse_state

routes = web.RouteTableDef()
BOARD_FACETS = ("match_directions", "match_kinds", "themes", "region", "departement")
DIRECTIONS = tuple(d.value for d in MatchDirection)
PLACE_FACETS = ("themes", "region", "departement")


async def sheets_by_uri(request: web.Request, uris: list[str]) -> dict[str, Any]:
    if not uris:
        return {}
    marks = ", ".join("?" for _ in uris)
    rows = await request.app[NODE].db.fetch(
        f"SELECT uri, data FROM sheet WHERE uri IN ({marks}) AND deleted = ?", [*uris, False]
    )
    return {str(r["uri"]): sheet_from_dict(json.loads(r["data"])) for r in rows if r["data"]}


def pairs(directions: tuple[str, ...], kinds: tuple[str, ...]) -> tuple[str, ...]:
    """``match_pairs`` values (as indexed by search.schema): a sheet with an open match of one of these."""
    return tuple(f"{d}:{k}" for d in directions for k in kinds)


def counted(values: dict[str, int], chosen: tuple[str, ...]) -> list[dict[str, Any]]:
    """Facet values as the search layer gives them: by count, chosen ones kept even at zero."""
    items = [(v, n) for v, n in values.items() if n or v in chosen]
    return [{"value": v, "count": n} for v, n in sorted(items, key=lambda item: (-item[1], item[0]))]


async def match_counts(
    request: web.Request, query: SearchQuery, directions: tuple[str, ...], kinds: tuple[str, ...]
) -> tuple[dict[str, int], dict[str, int]]:
    """Exact counts of the direction and kind facets, each without its own filter but with the other's.

    A count is of sheets with one open match of that direction *and* of a chosen kind (or of that
    kind and a chosen direction), as the list shows them: ``match_pairs`` holds the two together.
    """
    all_kinds = tuple(default_taxonomy().match_kinds)
    others = {k: v for k, v in query.filters.items() if k in PLACE_FACETS}

    def counting(filter_pairs: tuple[str, ...], facets: tuple[str, ...]) -> SearchQuery:
        return replace(
            query, filters={**others, "match_pairs": filter_pairs}, facets=facets, per_page=0, page=1,
            max_facet_values=100,
        )  # fmt: skip

    by_direction = [search(request, counting(pairs((d,), kinds), ())) for d in DIRECTIONS]
    by_kind = search(request, counting(pairs(directions, all_kinds), ("match_pairs", "match_kinds")))
    *found, kind_result = await asyncio.gather(*by_direction, by_kind)
    direction_counts = {d: r["found"] for d, r in zip(DIRECTIONS, found, strict=True)}
    facets = kind_result["facets"]
    if len(directions) == 1:  # one direction: the pairs of that direction count each kind exactly
        pair_counts = {c["value"]: c["count"] for c in facets.get("match_pairs", [])}
        kind_counts = {k: pair_counts.get(f"{directions[0]}:{k}", 0) for k in all_kinds}
    else:  # both: any open match of the kind
        kind_counts = {c["value"]: c["count"] for c in facets.get("match_kinds", [])}
    return direction_counts, kind_counts


@routes.get("/besoins-offres")
async def board(request: web.Request) -> web.Response:
    try:
        state = parse_state(request.query)
        unknown = set(state.query.filters) - set(BOARD_FACETS)
        if unknown:
            raise QueryError(f"the board filters by {', '.join(BOARD_FACETS)} only, not {', '.join(sorted(unknown))}")
        chosen_kinds = state.query.filters.get("match_kinds", ())
        chosen_directions = state.query.filters.get("match_directions", ())
        bad = [d for d in chosen_directions if d not in DIRECTIONS]
        if bad:
            raise QueryError(f"match_directions must be one of {', '.join(DIRECTIONS)}, not {', '.join(bad)}")
        kinds = chosen_kinds or tuple(default_taxonomy().match_kinds)
        directions = chosen_directions or DIRECTIONS
        # Without a chosen kind or direction the board still lists only sheets with an open need or offer;
        # a kind and a direction together mean one match of both (a need of a place, not a need and a place).
        place_filters = {k: v for k, v in state.query.filters.items() if k in PLACE_FACETS}
        query = replace(
            state.query,
            filters={**place_filters, "match_pairs": pairs(directions, kinds)},
            facets=PLACE_FACETS,
            sort="date" if state.query.sort == "relevance" and not state.query.q else state.query.sort,
        )
        result, (direction_counts, kind_counts) = await asyncio.gather(
            search(request, query), match_counts(request, query, directions, kinds)
        )
    except QueryError as exc:
        return bad_request(request, exc)
    except SearchError:
        return unavailable(request)
    result = {
        **result,
        "facets": {
            **result["facets"],
            "match_directions": counted(direction_counts, chosen_directions),
            "match_kinds": counted(kind_counts, chosen_kinds),
        },
    }
    stored = await sheets_by_uri(request, [h["document"]["uri"] for h in result["hits"]])
    items = []
    for hit in result["hits"]:
        sheet = stored.get(hit["document"]["uri"])
        if sheet is None:
            continue
        matches = [
            m
            for m in sheet.matches
            if m.status is MatchStatus.OPEN and m.kind.value in kinds and m.direction.value in directions
        ]
        items.append({"sheet": sheet, "doc": hit["document"], "matches": matches})
    ctx = context(state, result, "/besoins-offres")
    ctx["panels"] = sorted(
        (p for p in ctx["panels"] if p["name"] in BOARD_FACETS), key=lambda p: BOARD_FACETS.index(p["name"])
    )
    ctx["items"] = items
    return page(request, "board.html", ctx)
