"""Arbitrary filter values against the real Typesense 0.24.1: they can only ever be matched text.

Each value is AND-ed with a clause no document satisfies: an escaped value that
smuggled in ``||`` would make hits appear, and one that broke the expression
would make Typesense answer 400.
"""

from __future__ import annotations

import json
import urllib.request

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.errors import FilterError
from search.filters import Filter, build_filter
from search.schema import ALIAS

_PIECES = [*"ab `\\&|(),[]:=!<>'’\"-*.%+#é\n", "||", "&&", " id:!=", "EDU", "Réseau A", ":(", "\\`", "created:>0"]
values = st.lists(st.sampled_from(_PIECES), max_size=12).map("".join) | st.text(max_size=30)


def _search(url: str, key: str, filter_by: str) -> dict:
    body = json.dumps(
        {
            "searches": [
                {
                    "collection": ALIAS,
                    "q": "*",
                    "query_by": "title",
                    "filter_by": filter_by,
                    "per_page": 50,
                    "include_fields": "local_id,partner",
                }
            ]
        }
    ).encode()
    req = urllib.request.Request(
        f"{url}/multi_search",
        data=body,
        method="POST",
        headers={"X-TYPESENSE-API-KEY": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())["results"][0]


def test_arbitrary_values_never_escape(typesense, collection, sheets) -> None:
    partner_a = {str(n) for n, s in sheets.items() if s.partner.name == "Réseau A"}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(values, min_size=1, max_size=3))
    def check(vals: list[str]) -> None:
        try:
            impossible = build_filter([Filter("partner", vals), Filter("created", [0])])
            with_known = build_filter([Filter("partner", [*vals, "Réseau A"])])
            both_ways = build_filter([Filter("themes", vals, negate=True), Filter("created", [0])])
        except FilterError:
            return  # a value with nothing searchable is refused before reaching Typesense
        for filter_by in (impossible, both_ways):
            result = _search(typesense.url, typesense.api_key, filter_by)
            assert "error" not in result, (filter_by, result)
            assert result["found"] == 0, filter_by
        result = _search(typesense.url, typesense.api_key, with_known)
        assert "error" not in result, (with_known, result)
        assert partner_a <= {h["document"]["local_id"] for h in result["hits"]}, with_known

    check()
