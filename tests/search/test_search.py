"""French search behaviour, facets, filters and geo queries on the real server."""

from __future__ import annotations

import pytest

from search.client import SearchClient
from search.errors import QueryError
from search.geo import BBox
from search.query import MAX_PAGE, SearchQuery, run_search
from search.suggest import suggest
from tests.search.corpus import BAIT_PARTNER, BREST, NANTES, RENNES, ids

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def find(client: SearchClient, **kw: object) -> dict:
    return await run_search(client, SearchQuery(**kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "q,expected",
    [
        ("ecole", {"1"}),  # accent-insensitive
        ("École", {"1"}),
        ("l’ecole", {"1"}),  # typographic apostrophe in the query
        ("l'école", {"1"}),
        ("atelier", {"2"}),  # apostrophe in the title splits "l’atelier"
        ("l’atelier", {"2"}),
        ("l'atelier velo", {"2"}),
        ("jardins", {"1"}),  # plural via the stemmed field
        ("jardin potager", {"1"}),
        ("cheval", {"4"}),  # "chevaux" in the title
        ("insertion activite economique", {"5"}),
        ("numerique", {"6"}),
        ("tiers lieu", {"6"}),  # hyphen is a separator
        ("aide alimentaire", {"3"}),  # found in the HTML description
    ],
)
async def test_french_text_queries(client, collection, q: str, expected: set[str]) -> None:
    result = await find(client, q=q)
    assert ids(result) == expected, q


@pytest.mark.parametrize(
    "q,expected",
    [
        ("bicyclette", "2"),
        ("ESS", "8"),
        ("economie sociale et solidaire", "8"),
        ("handicap", "7"),
        ("situation de handicap", "7"),
        ("digital", "6"),
    ],
)
async def test_synonyms(client, collection, q: str, expected: str) -> None:
    assert expected in ids(await find(client, q=q))


async def test_highlights_are_escaped_html(client, collection) -> None:
    result = await find(client, q="ecole")
    hit = result["hits"][0]
    assert "<mark>" in hit["highlights"]["title"]
    assert "stemmed" not in hit["document"] and "description" not in hit["document"]
    result = await find(client, q="ferme")
    assert all("<script" not in h for hit in result["hits"] for h in hit["highlights"].values())


async def test_every_facet_filter(client, collection, sheets) -> None:
    cases = {
        "themes": ("ENV", {"1", "2", "4"}),
        "subthemes": ("AGR", {"1", "4"}),
        "audiences": ("enfants", {"1", "9"}),
        "stage": ("developpement", {"2", "6", "7"}),
        "engineering": ("numerique", {"6"}),
        "match_kinds": ("benevolat", {"1"}),
        "match_directions": ("offer", {"5"}),
        "match_pairs": ("need:financement", {"2"}),
        "partner": ("Réseau C", {"5", "7"}),
        "insee": ("35238", {"1", "7", "9"}),
        "departement": ("44", {"2", "10", "11"}),
        "region": ("53", {"1", "6", "7", "9"}),
        "duplicate_cluster": ("cluster-repair", {"10", "11"}),
    }
    for facet, (value, expected) in cases.items():
        result = await find(client, filters={facet: (value,)}, per_page=50)
        assert ids(result) == expected, facet
    # A fulfilled need is not an open match kind.
    assert ids(await find(client, filters={"match_kinds": ("emploi",)})) == set()
    assert ids(await find(client, filters={"match_pairs": ("need:emploi", "offer:financement")})) == set()
    assert ids(await find(client, filters={"match_directions": ("need",)}, per_page=50)) == {"1", "2"}
    # OR inside a facet, AND across facets.
    both = await find(client, filters={"themes": ("EDU", "SOL"), "region": ("53",)}, per_page=50)
    assert ids(both) == {"1", "7", "9"}


async def test_disjunctive_facet_counts(client, collection) -> None:
    result = await find(client, filters={"themes": ("ENV",), "stage": ("idee",)}, per_page=50)
    assert ids(result) == {"4"}
    themes = {c["value"]: c for c in result["facets"]["themes"]}
    # Theme counts ignore the theme filter but keep the stage filter: idee = sheets 4 and 9.
    assert themes["ENV"]["count"] == 1 and themes["ENV"]["selected"]
    assert themes["EDU"]["count"] == 1 and not themes["EDU"]["selected"]
    stages = {c["value"]: c["count"] for c in result["facets"]["stage"]}
    # Stage counts ignore the stage filter but keep the theme filter: ENV = 1, 2, 4.
    assert stages == {"experimentation": 1, "developpement": 1, "idee": 1}
    # A non-active facet counts within the full selection.
    assert {c["value"]: c["count"] for c in result["facets"]["subthemes"]} == {"AGR": 1}
    # Each facet is counted once: the active ones by their own search only.
    searches = SearchQuery(filters={"themes": ("ENV",), "stage": ("idee",)}).searches()
    assert [s["facet_by"] for s in searches[1:]] == ["themes", "stage"]
    assert not {"themes", "stage"} & set(searches[0]["facet_by"].split(","))
    assert len(searches[0]["facet_by"].split(",")) == len(SearchQuery().facets) - 2


async def test_selected_value_without_hits_stays_listed(client, collection) -> None:
    result = await find(client, filters={"themes": ("PAT",)})
    assert result["found"] == 0
    assert {"value": "PAT", "count": 0, "selected": True} in result["facets"]["themes"]


async def test_radius_bbox_polygon_and_distance_sort(client, collection) -> None:
    near_rennes = await find(client, near=(*RENNES, 10.0), per_page=50)
    assert ids(near_rennes) == {"1", "7", "9"}
    # The second place of sheet 6 (Brest) is found by radius.
    assert ids(await find(client, near=(*BREST, 5.0))) == {"6"}
    west = BBox(south=46.5, west=-5.0, north=49.0, east=-1.0)
    assert ids(await find(client, bbox=west, per_page=50)) == {"1", "2", "6", "7", "9", "10", "11"}
    triangle = ((46.8, -1.2), (47.8, -1.2), (47.8, -2.2))
    assert ids(await find(client, polygon=triangle, per_page=50)) == {"2", "10", "11"}
    by_distance = await find(client, near=(*NANTES, 200.0), sort="distance", per_page=50)
    order = [h["document"]["local_id"] for h in by_distance["hits"]]
    assert set(order[:3]) == {"2", "10", "11"} and set(order[3:]) == {"1", "7", "9"}
    assert by_distance["hits"][0]["distance_m"] < 1000


async def test_sorts_and_paging(client, collection, sheets) -> None:
    by_date = await find(client, sort="date", per_page=50)
    created = [sheets[int(h["document"]["local_id"])].created for h in by_date["hits"]]
    assert created == sorted(created, reverse=True)
    rotation = await find(client, sort="rotation", per_page=50)
    keys = [h["document"]["rotation"] for h in rotation["hits"]]
    assert keys == sorted(keys) and len(keys) == len(sheets)
    page2 = await find(client, sort="rotation", per_page=4, page=2)
    assert [h["document"]["id"] for h in page2["hits"]] == [h["document"]["id"] for h in rotation["hits"][4:8]]
    assert page2["pages"] == 3
    with pytest.raises(QueryError):
        SearchQuery(page=MAX_PAGE + 1)
    with pytest.raises(QueryError):
        SearchQuery(per_page=1000)
    with pytest.raises(QueryError):
        SearchQuery(sort="distance")


async def test_created_range(client, collection) -> None:
    result = await find(client, created_from=1577836800, created_to=1640995200, per_page=50)  # 2020 to 2022-01-01
    assert ids(result) == {"2", "4", "7"}  # both bounds inclusive: sheet 4 is 2022-01-01


INJECTIONS = [
    "`",
    "EDU` || themes:!=`EDU",
    "EDU\\` || id:!=x || themes:=\\`EDU",
    "x:(1,2,3 km) || id:!=x",
    "EDU) || (id:!=x",
    "EDU], [ENV",
    "EDU && stage:=idee",
    "*",
    "' OR 1=1 --",
]


@pytest.mark.parametrize("payload", INJECTIONS)
async def test_injection_through_every_parameter(client, collection, payload: str) -> None:
    # Free text: whatever it is, it is only text to match.
    result = await find(client, q=payload)
    assert isinstance(result["found"], int)
    # Filter values: either refused up front, or matched as a value (no sheet has it).
    for facet in ("themes", "partner", "stage", "insee", "duplicate_cluster"):
        try:
            query = SearchQuery(filters={facet: (payload,)})
        except QueryError:
            continue
        assert (await run_search(client, query))["found"] == 0, (facet, payload)
    # Names and enumerations are whitelisted.
    for params in ({"facets": (payload,)}, {"sort": payload}, {"filters": {payload: ("EDU",)}}):
        with pytest.raises(QueryError):
            SearchQuery(**params)  # type: ignore[arg-type]
    for name in ("page", "per_page", "near", "bbox", "created_from", payload):
        with pytest.raises(QueryError):
            SearchQuery.from_params({name: [payload]})


async def test_bait_partner_value_matches_only_itself(client, collection) -> None:
    result = await find(client, filters={"partner": (BAIT_PARTNER,)})
    assert ids(result) == {"9"}


async def test_from_params(client, collection) -> None:
    query = SearchQuery.from_params(
        {
            "q": ["jardins"],
            "themes": ["EDU", "ENV"],
            "near": ["48.1173,-1.6778,10"],
            "sort": ["distance"],
            "page": ["1"],
            "per_page": ["5"],
        }
    )
    assert ids(await run_search(client, query)) == {"1"}
    with pytest.raises(QueryError):
        SearchQuery.from_params({"q": ["a", "b"]})
    with pytest.raises(QueryError):
        SearchQuery.from_params({"bbox": ["49,0,47,1"]})


async def test_suggestions(client, collection) -> None:
    result = await suggest(client, "jard")
    assert [t["title"] for t in result["titles"]] == ["École des jardins partagés"]
    assert "<mark>" in result["titles"][0]["html"]
    assert [c["value"] for c in (await suggest(client, "nan"))["communes"]] == ["Nantes"]
    assert {p["value"] for p in (await suggest(client, "rés"))["partners"]} >= {"Réseau A", "Réseau B"}
    hostile = await suggest(client, "`) || partner:(x")
    assert isinstance(hostile["titles"], list)
