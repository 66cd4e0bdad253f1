"""The search state lives in the URL: parsing it into a ``SearchQuery`` and building links that change it.

Every link of the search page (a facet value, a chip's removal, a sort, a page, the
map, an export) is the current query string with one change, so a copied URL gives
the same page, with or without JavaScript.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from multidict import MultiDictProxy

from search.errors import FilterError, QueryError
from search.query import SearchQuery

# Parameters of the pages themselves, never passed to the search layer.
PAGE_PARAMS = ("lang", "zoom", "view")
SEARCH_PARAMS = ("q", "sort", "page", "per_page", "near", "bbox", "created_from", "created_to")


@dataclass(frozen=True)
class State:
    """The parsed search and the raw parameters it came from (order kept, empty values dropped)."""

    query: SearchQuery
    params: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.params if k == name]

    def first(self, name: str, default: str = "") -> str:
        found = self.values(name)
        return found[0] if found else default

    def url(
        self,
        path: str,
        *,
        add: Iterable[tuple[str, str]] = (),
        remove: Iterable[tuple[str, str | None]] = (),
        keep_page: bool = False,
    ) -> str:
        """``path`` with the current parameters, minus ``remove`` (``(name, None)``: every value), plus ``add``.

        Changing anything but the page goes back to page 1.
        """
        drop = list(remove)
        if not keep_page:
            drop.append(("page", None))
        out = [(k, v) for k, v in self.params if not any(k == n and (x is None or x == v) for n, x in drop)]
        out += [(k, v) for k, v in add if (k, v) not in out]
        return f"{path}?{urlencode(out)}" if out else path

    def with_param(self, path: str, name: str, value: str) -> str:
        return self.url(path, remove=[(name, None)], add=[(name, value)], keep_page=name == "page")

    @property
    def query_string(self) -> str:
        return urlencode(self.params)


def clean_params(
    query: Mapping[str, str] | MultiDictProxy[str], *, allowed: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """The request's parameters without the pages' own and without empty values (as HTML forms send them)."""
    keep = set(allowed)
    return [(k, v.strip()) for k, v in query.items() if (k not in PAGE_PARAMS or k in keep) and v.strip()]


def parse_state(query: Mapping[str, str] | MultiDictProxy[str], **defaults: object) -> State:
    """A validated ``State``; raises :class:`search.errors.QueryError` naming the bad parameter.

    ``defaults`` are ``SearchQuery`` fields a page sets itself (e.g. ``per_page=0``);
    they replace what the URL says.
    """
    params = clean_params(query)
    grouped: dict[str, list[str]] = {}
    for k, v in params:
        grouped.setdefault(k, []).append(v)
    try:
        parsed = SearchQuery.from_params(grouped)
        if defaults:
            from dataclasses import replace

            parsed = replace(parsed, **defaults)  # type: ignore[arg-type]
    except FilterError as exc:
        raise QueryError(str(exc)) from None
    return State(parsed, tuple(params))
