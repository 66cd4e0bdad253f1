"""The hub's search API model: a typed ``SearchQuery`` → Typesense searches → a plain result dict.

Facets are disjunctive: values of one facet are OR-ed, facets are AND-ed, and the
counts shown for an active facet come from a search without that facet's own
filter (otherwise choosing "Santé" would hide the count of every other theme).
The main search and one search per active facet go in one ``multi_search``.

The query is stemmed (Snowball French) for every text field: the ``stemmed``
shadow field matches it exactly, and the original fields still match by prefix or
typo tolerance, since French stems are mostly prefixes of their words.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from search.client import SearchClient
from search.errors import FilterError, QueryError
from search.filters import Clause, Filter, GeoPolygon, GeoRadius, Range, build_filter
from search.geo import BBox
from search.schema import ALIAS, FACET_FIELDS
from search.text import stem_query

SORTS = {
    "relevance": "_text_match:desc,rotation:asc",
    "date": "created:desc,rotation:asc",
    "rotation": "rotation:asc",
    # "distance" is built from the query's point, see SearchQuery.sort_by()
}
DEFAULT_FACETS = (
    "themes",
    "subthemes",
    "audiences",
    "stage",
    "engineering",
    "match_kinds",
    "match_directions",
    "partner",
    "region",
    "departement",
)
MAX_PAGE = 50  # deep pages cost the server and serve only scrapers: the API refuses them
MAX_PER_PAGE = 50
MAX_Q_CHARS = 200
MAX_FACET_VALUES = 100
QUERY_BY = "stemmed,title,summary,description"
QUERY_BY_WEIGHTS = "2,4,2,1"
HIGHLIGHT_FIELDS = "title,summary,description"
HIDDEN_FIELDS = "stemmed,description,locations"

# Typesense returns highlighted text raw; private-use markers let us HTML-escape the
# text and then turn the markers into <mark> tags.
MARK_START, MARK_END = "\ue000", "\ue001"


def one_param(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The single value of ``name`` in a parsed query string (absent: None; repeated: QueryError)."""
    values = params.get(name) or []
    if len(values) > 1:
        raise QueryError(f"{name} given more than once")
    return values[0] if values else None


def whole_param(raw: str | None, name: str, default: int | None) -> int | None:
    """``raw`` as a whole number (absent or empty: ``default``)."""
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise QueryError(f"{name} must be a whole number") from None


@dataclass(frozen=True)
class SearchQuery:
    """One search request of the hub's API, validated at construction."""

    q: str = ""
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    created_from: int | None = None  # epoch seconds, inclusive
    created_to: int | None = None
    near: tuple[float, float, float] | None = None  # (lat, lon, km)
    bbox: BBox | None = None
    polygon: tuple[tuple[float, float], ...] | None = None
    sort: str = "relevance"
    page: int = 1
    per_page: int = 20
    facets: tuple[str, ...] = DEFAULT_FACETS
    max_facet_values: int = 30

    def __post_init__(self) -> None:
        if not isinstance(self.q, str) or len(self.q) > MAX_Q_CHARS:
            raise QueryError(f"q must be text of at most {MAX_Q_CHARS} characters")
        for name in self.filters:
            if name not in FACET_FIELDS:
                raise QueryError(f"unknown filter {name!r}")
        for name in self.facets:
            if name not in FACET_FIELDS:
                raise QueryError(f"unknown facet {name!r}")
        if self.sort not in SORTS and self.sort != "distance":
            raise QueryError(f"sort must be one of relevance, date, distance, rotation, not {self.sort!r}")
        if self.sort == "distance" and self.point is None:
            raise QueryError("sort=distance needs near or bbox")
        for name, value, lo, hi in (
            ("page", self.page, 1, MAX_PAGE),
            ("per_page", self.per_page, 0, MAX_PER_PAGE),
            ("max_facet_values", self.max_facet_values, 1, MAX_FACET_VALUES),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise QueryError(f"{name} must be a whole number between {lo} and {hi}")
        # Build the filter once now so a bad value is a QueryError at the edge.
        self.filter_by()

    @property
    def point(self) -> tuple[float, float] | None:
        if self.near is not None:
            return (self.near[0], self.near[1])
        if self.bbox is not None:
            return ((self.bbox.south + self.bbox.north) / 2, (self.bbox.west + self.bbox.east) / 2)
        return None

    def clauses(self, *, without: str | None = None) -> list[Clause]:
        out: list[Clause] = [
            Filter(name, values) for name, values in self.filters.items() if values and name != without
        ]
        if self.created_from is not None or self.created_to is not None:
            out.append(Range("created", self.created_from, self.created_to))
        if self.near is not None:
            out.append(GeoRadius(*self.near))
        if self.bbox is not None:
            out.append(GeoPolygon.from_bbox(self.bbox))
        if self.polygon is not None:
            out.append(GeoPolygon(tuple(self.polygon)))
        return out

    def filter_by(self, *, without: str | None = None) -> str:
        clauses = self.clauses(without=without)
        return build_filter(clauses) if clauses else ""

    def sort_by(self) -> str:
        if self.sort == "distance":
            lat, lon = self.point  # type: ignore[misc]
            return f"location({lat:.7f}, {lon:.7f}):asc,rotation:asc"
        return SORTS[self.sort]

    @property
    def active_facets(self) -> list[str]:
        return [name for name in self.facets if self.filters.get(name)]

    # ------------------------------------------------------------------ parsing

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]]) -> SearchQuery:
        """From a query string parsed as ``{name: [values]}`` (``near=lat,lon,km``, ``bbox=s,w,n,e``)."""

        def one(name: str) -> str | None:
            return one_param(params, name)

        def whole(name: str, default: int | None) -> int | None:
            return whole_param(one(name), name, default)

        def numbers(name: str, count: int) -> tuple[float, ...] | None:
            raw = one(name)
            if raw is None or raw == "":
                return None
            try:
                values = tuple(float(v) for v in raw.split(","))
            except ValueError:
                raise QueryError(f"{name} must be {count} comma-separated numbers") from None
            if len(values) != count or not all(math.isfinite(v) for v in values):
                raise QueryError(f"{name} must be {count} comma-separated numbers")
            return values

        def polygon() -> tuple[tuple[float, float], ...] | None:
            raw = one("polygon")
            if raw is None or raw == "":
                return None
            message = "polygon must be lat,lon pairs (3 to 50 points), comma-separated"
            try:
                values = [float(v) for v in raw.split(",")]
            except ValueError:
                raise QueryError(message) from None
            if len(values) % 2 or not 6 <= len(values) <= 100 or not all(math.isfinite(v) for v in values):
                raise QueryError(message)
            return tuple((values[i], values[i + 1]) for i in range(0, len(values), 2))

        known = {"q", "sort", "page", "per_page", "near", "bbox", "polygon", "created_from", "created_to", "facets"}
        unknown = set(params) - known - set(FACET_FIELDS)
        if unknown:
            raise QueryError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        # An empty value (``?themes=``) means "no filter", as HTML forms send it.
        filters = {name: tuple(v for v in params.get(name) or () if v.strip()) for name in FACET_FIELDS}
        filters = {name: values for name, values in filters.items() if values}
        near = numbers("near", 3)
        box = numbers("bbox", 4)
        facets_raw = one("facets")
        try:
            return cls(
                q=one("q") or "",
                filters=filters,
                created_from=whole("created_from", None),
                created_to=whole("created_to", None),
                near=near,  # type: ignore[arg-type]
                bbox=BBox(*box) if box else None,
                polygon=polygon(),
                sort=one("sort") or "relevance",
                page=whole("page", 1),  # type: ignore[arg-type]
                per_page=whole("per_page", 20),  # type: ignore[arg-type]
                facets=tuple(f for f in facets_raw.split(",") if f) if facets_raw is not None else DEFAULT_FACETS,
            )
        except FilterError:
            raise
        except ValueError as exc:
            raise QueryError(str(exc)) from None

    # ------------------------------------------------------------------ Typesense

    def base_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "q": stem_query(self.q),
            "query_by": QUERY_BY,
            "query_by_weights": QUERY_BY_WEIGHTS,
        }
        filter_by = self.filter_by()
        if filter_by:
            params["filter_by"] = filter_by
        return params

    def constraints_key(self, *, without: str | None = None) -> str:
        """What a search's matches depend on: the text and every constraint (``without`` one facet's
        values); not the sort, the page or the facets counted. Keys of the service's caches."""
        return json.dumps(
            [
                self.q,
                sorted((k, sorted(v)) for k, v in self.filters.items() if v and k != without),
                self.created_from,
                self.created_to,
                self.near,
                self.polygon,
                self.bbox and [self.bbox.south, self.bbox.west, self.bbox.north, self.bbox.east],
            ],
            ensure_ascii=False,
        )

    def counts_key(self, name: str) -> str:
        """What the counts of facet ``name`` depend on: the text and every constraint but ``name``'s own.

        Not the sort, the page, and not the facet's own chosen values (its counts are
        disjunctive): choosing « Santé » on the home page reads the theme counts the home
        page itself counted.
        """
        return f"{name} {self.max_facet_values} {self.constraints_key(without=name)}"

    def searches(self, collection: str = ALIAS, counted: Collection[str] | None = None) -> list[dict[str, Any]]:
        """The main search followed by one facet-count search per active facet.

        ``counted`` limits the counting to those facets (the caller knows the others'
        counts already); by default every facet of the query is counted.
        """
        counting = [n for n in self.facets if counted is None or n in counted]
        active = [n for n in self.active_facets if n in counting]
        main = {
            "collection": collection,
            **self.base_params(),
            "sort_by": self.sort_by(),
            "page": self.page,
            "per_page": self.per_page,
            "highlight_fields": HIGHLIGHT_FIELDS,
            "highlight_start_tag": MARK_START,
            "highlight_end_tag": MARK_END,
            "highlight_affix_num_tokens": 12,
            "exclude_fields": HIDDEN_FIELDS,
        }
        # An active facet's counts come from its own search below: the main search need not count it.
        in_main = [name for name in counting if name not in self.active_facets]
        if in_main:
            main["facet_by"] = ",".join(in_main)
            main["max_facet_values"] = self.max_facet_values
        out = [main]
        for name in active:
            side = {
                "collection": collection,
                **self.base_params(),
                "facet_by": name,
                "per_page": 0,
                "max_facet_values": self.max_facet_values,
            }
            side.pop("filter_by", None)
            rest = self.filter_by(without=name)
            if rest:
                side["filter_by"] = rest
            out.append(side)
        return out

    def counts(
        self, responses: Sequence[Mapping[str, Any]], counted: Collection[str] | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """The facet counts in the answers to :meth:`searches` (same ``counted``), as Typesense gave them."""
        counting = [n for n in self.facets if counted is None or n in counted]
        active = [n for n in self.active_facets if n in counting]
        facets = {fc["field_name"]: _counts(fc) for fc in responses[0].get("facet_counts", [])}
        for name, response in zip(active, responses[1:], strict=True):
            for fc in response.get("facet_counts", []):
                if fc["field_name"] == name:
                    facets[name] = _counts(fc)
        for name in counting:
            facets.setdefault(name, [])
        return facets

    def result(
        self,
        responses: Sequence[Mapping[str, Any]],
        counted: Collection[str] | None = None,
        known: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    ) -> dict[str, Any]:
        """The API's result of the answers to :meth:`searches` (same ``counted``).

        ``known`` holds the counts of the facets that were not counted (copied, never changed).
        """
        main = responses[0]
        facets = self.counts(responses, counted)
        for name, values in (known or {}).items():
            facets[name] = [{"value": c["value"], "count": c["count"]} for c in values]
        facets = {name: facets[name] for name in self.facets if name in facets}
        for name in self.active_facets:
            # A chosen value stays visible (with its count) even when it is not in the top values.
            present = {c["value"] for c in facets.get(name, [])}
            facets.setdefault(name, []).extend(
                {"value": v, "count": 0, "selected": True} for v in self.filters.get(name, ()) if v not in present
            )
            for c in facets[name]:
                c["selected"] = c["value"] in self.filters.get(name, ())
        found = int(main.get("found", 0))
        return {
            "found": found,
            "page": self.page,
            "per_page": self.per_page,
            "pages": min(MAX_PAGE, math.ceil(found / self.per_page)) if self.per_page else 0,
            "hits": [_hit(h) for h in main.get("hits", [])],
            "facets": facets,
            "search_time_ms": sum(int(r.get("search_time_ms", 0)) for r in responses),
        }

    def with_page(self, page: int) -> SearchQuery:
        return replace(self, page=page)


def _counts(facet_count: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"value": c["value"], "count": int(c["count"])} for c in facet_count.get("counts", [])]


def mark_html(text: str) -> str:
    """HTML of a Typesense highlight: the text escaped, the matches in ``<mark>``."""
    return html.escape(text, quote=False).replace(MARK_START, "<mark>").replace(MARK_END, "</mark>")


def _hit(hit: Mapping[str, Any]) -> dict[str, Any]:
    doc = dict(hit["document"])
    highlights: dict[str, str] = {}
    for h in hit.get("highlights", []):
        text = h.get("snippet") if "snippet" in h else None
        if text is None and h.get("snippets"):
            text = " … ".join(h["snippets"])
        if text is not None:
            highlights[h["field"]] = mark_html(text)
    out = {"document": doc, "highlights": highlights}
    if "geo_distance_meters" in hit:
        out["distance_m"] = hit["geo_distance_meters"].get("location")
    return out


async def run_search(
    client: SearchClient, query: SearchQuery, collection: str = ALIAS, *, api_key: str | None = None
) -> dict[str, Any]:
    """Run a query (main search + disjunctive facet searches in one round trip)."""
    responses = await client.multi_search(query.searches(collection), api_key=api_key)
    return query.result(responses)
