"""Type-ahead suggestions: title prefixes, commune and partner names.

Titles come from a prefix search; communes and partners from facet queries, which
search inside facet values and return each value once with its count.
"""

from __future__ import annotations

from typing import Any

from search.client import SearchClient
from search.query import MARK_END, MARK_START, mark_html
from search.schema import ALIAS
from search.text import clean_text

MAX_PREFIX_CHARS = 100


def _facet_prefix(prefix: str) -> str:
    # A facet_query is "field:value"; Typesense splits on the first colon, but the
    # value is still cleaned of characters that are never indexed.
    return " ".join("".join(ch if ch.isalnum() or ch in " '-" else " " for ch in prefix).split())


def suggestion_searches(prefix: str, limit: int = 5, collection: str = ALIAS) -> list[dict[str, Any]]:
    text = clean_text(prefix)[:MAX_PREFIX_CHARS]
    facet_text = _facet_prefix(text)
    searches: list[dict[str, Any]] = [
        {
            "collection": collection,
            "q": text or "*",
            "query_by": "title",
            "prefix": True,
            "per_page": limit,
            "include_fields": "id,uri,title",
            "highlight_fields": "title",
            "highlight_start_tag": MARK_START,
            "highlight_end_tag": MARK_END,
        }
    ]
    for name in ("communes", "partner"):
        search: dict[str, Any] = {
            "collection": collection,
            "q": "*",
            "query_by": "title",
            "facet_by": name,
            "max_facet_values": limit,
            "per_page": 0,
        }
        if facet_text:
            search["facet_query"] = f"{name}:{facet_text}"
        searches.append(search)
    return searches


async def suggest(client: SearchClient, prefix: str, limit: int = 5, collection: str = ALIAS) -> dict[str, Any]:
    if not 1 <= limit <= 20:
        raise ValueError("limit must be between 1 and 20")
    titles, communes, partners = await client.multi_search(suggestion_searches(prefix, limit, collection))

    def values(result: dict[str, Any]) -> list[dict[str, Any]]:
        facet_counts: list[dict[str, Any]] = result.get("facet_counts", [])
        counts = facet_counts[0].get("counts", []) if facet_counts else []
        return [{"value": c["value"], "count": int(c["count"])} for c in counts]

    return {
        "titles": [
            {
                "id": h["document"]["id"],
                "uri": h["document"].get("uri"),
                "title": h["document"]["title"],
                "html": mark_html(
                    next(
                        (x["snippet"] for x in h.get("highlights", []) if x["field"] == "title"), h["document"]["title"]
                    )
                ),
            }
            for h in titles.get("hits", [])
        ],
        "communes": values(communes),
        "partners": values(partners),
    }
