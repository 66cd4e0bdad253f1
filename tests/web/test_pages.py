"""The server-rendered pages over HTTP, without a browser: the no-JavaScript path, escaping, errors, headers."""

from __future__ import annotations

import html
import re
from urllib.parse import urlencode

import aiohttp
import pytest

from protocol.sheet import Sheet
from tests.web.conftest import Hub
from tests.web.corpus import PARTNERS, SHARED_TITLE, XSS_TITLE

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def get(hub: Hub, path: str, **headers: str) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
    async with aiohttp.ClientSession(headers={"Accept-Language": "fr", **headers}) as session:
        async with session.get(hub.url + path, allow_redirects=False) as response:
            return response.status, await response.text(), response.headers


def found(text: str) -> int:
    match = re.search(r'<p class="found" id="found">([\d\u202f\xa0 ]+) projets?</p>', text)
    assert match, "no result count on the page"
    return int(re.sub(r"\D", "", match.group(1)))


async def test_search_page_filters_without_javascript(hub: Hub) -> None:
    status, text, headers = await get(hub, "/recherche")
    assert status == 200
    total = found(text)
    assert total == len(hub.sheets)
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    # A facet checkbox is a plain form field: submitting the form filters.
    status, text, _ = await get(hub, "/recherche?" + urlencode({"themes": "ENV"}))
    env = sum(1 for s in hub.sheets.values() if "ENV" in s.themes)
    assert status == 200 and found(text) == env
    assert 'name="themes" value="ENV" id="f-themes-' in text and "checked" in text
    # Disjunctive facets: a second theme widens, a région narrows.
    status, text, _ = await get(hub, "/recherche?" + urlencode([("themes", "ENV"), ("themes", "SOL")]))
    assert found(text) == sum(1 for s in hub.sheets.values() if {"ENV", "SOL"} & set(s.themes))
    status, text, _ = await get(hub, "/recherche?" + urlencode([("themes", "ENV"), ("region", "53")]))
    expected = sum(1 for s in hub.sheets.values() if "ENV" in s.themes and any(p.region == "53" for p in s.places))
    assert found(text) == expected
    # The chip removing the région is a link back to the theme alone.
    assert 'href="/recherche?themes=ENV"' in text


async def test_keyword_sort_and_pagination(hub: Hub) -> None:
    status, text, _ = await get(hub, "/recherche?q=repair")
    assert status == 200 and found(text) >= 2 and html.escape(SHARED_TITLE, quote=False).split(" ")[1] in text
    assert "<mark>" in text
    status, text, _ = await get(hub, "/recherche?sort=date&page=2")
    assert status == 200
    assert 'aria-current="page">2</a>' in text
    assert 'rel="prev"' in text and 'href="/recherche?sort=date&amp;page=3"' in text
    status, text, _ = await get(hub, "/recherche?sort=rotation")
    assert status == 200 and '<option value="rotation" selected>' in text


async def test_bad_parameters_are_named(hub: Hub) -> None:
    status, text, _ = await get(hub, "/recherche?page=zero")
    assert status == 400 and "page must be a whole number" in text
    status, text, _ = await get(hub, "/recherche?colour=red")
    assert status == 400 and "colour" in text


async def test_output_is_escaped(hub: Hub) -> None:
    status, text, _ = await get(hub, "/recherche?" + urlencode({"q": '<script>alert("q")</script>'}))
    assert status == 200 and '<script>alert("q")' not in text and "&lt;script&gt;" in text
    uri = next(u for u, s in hub.sheets.items() if s.title == XSS_TITLE)
    status, text, _ = await get(hub, uri.removeprefix(hub.url))
    assert status == 200
    assert '<script>alert("x")' not in text and "<script>alert(2)" not in text and "onclick" not in text
    assert "<img src=x" not in text  # in the JSON-LD block too, where "<" is written \u003c
    assert "<strong>gras</strong>" in text  # the partner's harmless HTML is kept


@pytest.mark.parametrize(
    "path",
    ["/", "/partenaires", "/partenaires/bretagne", "/themes", "/themes/ENV", "/territoires", "/territoires/region/53",
     "/territoires/departement/35", "/besoins-offres", "/tableaux-de-bord", "/carte"],
)  # fmt: skip
async def test_page_renders(hub: Hub, path: str) -> None:
    status, text, _ = await get(hub, path)
    assert status == 200, text[-3000:]


async def test_exports_carry_licence_and_provenance(hub: Hub) -> None:
    import csv
    import io
    import json

    from lxml import etree

    query = urlencode([("themes", "CON")])
    expected = {u for u, s in hub.sheets.items() if "CON" in s.themes}
    status, text, headers = await get(hub, f"/recherche.json?{query}")
    assert status == 200
    data = json.loads(text)
    assert {i["uri"] for i in data["items"]} == expected and data["found"] == len(expected) and not data["truncated"]
    item = data["items"][0]
    assert item["licence"].startswith("https://") and item["provenance"]["harvested_from"].endswith("/oai")
    assert item["provenance"]["original_id"].startswith("https://") and item["provenance"]["hub"] == hub.url
    status, text, headers = await get(hub, f"/recherche.csv?{query}")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert {r["uri"] for r in rows} == expected and all(r["licence"] and r["harvested_from"] for r in rows)
    status, text, headers = await get(hub, f"/recherche.geojson?{query}")
    geo = json.loads(text)
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(expected)
    # GeoJSON order: longitude first, each point one of its sheet's places (some are overseas).
    points = [f for f in geo["features"] if f["geometry"]]
    assert points
    for feature in points:
        lon, lat = feature["geometry"]["coordinates"]
        assert (lat, lon) in {(p.lat, p.lon) for p in hub.sheets[feature["id"]].places}, feature["id"]
    status, text, headers = await get(hub, f"/recherche.atom?{query}")
    assert status == 200 and headers["Content-Type"].startswith("application/atom+xml")
    feed = etree.fromstring(text.encode())
    ns = {"a": "http://www.w3.org/2005/Atom"}
    entries = feed.findall("a:entry", ns)
    assert {e.findtext("a:id", namespaces=ns) for e in entries} == expected
    assert all(e.findtext("a:rights", namespaces=ns) for e in entries)
    assert all(e.find("a:source/a:link[@rel='via']", ns) is not None for e in entries)


async def test_dashboard_figures_match_the_index(hub: Hub) -> None:
    import csv
    import io

    status, text, _ = await get(hub, "/tableaux-de-bord/themes-regions.csv")
    rows = {r["theme"]: r for r in csv.DictReader(io.StringIO(text))}
    assert status == 200
    assert int(rows["ENV"]["total"]) == sum(1 for s in hub.sheets.values() if "ENV" in s.themes)
    bretagne = "Bretagne"
    assert int(rows["ENV"][bretagne]) == sum(
        1 for s in hub.sheets.values() if "ENV" in s.themes and any(p.region == "53" for p in s.places)
    )
    status, text, _ = await get(hub, "/tableaux-de-bord/departements.csv")
    counts = {r["departement"]: int(r["projects"]) for r in csv.DictReader(io.StringIO(text))}
    assert counts["35"] == sum(1 for s in hub.sheets.values() if any(p.departement == "35" for p in s.places))
    assert len(counts) == 101
    status, text, _ = await get(hub, "/tableaux-de-bord/partners.csv")
    assert status == 200 and PARTNERS[0][1] in text
    status, text, _ = await get(hub, "/tableaux-de-bord/nope.csv")
    assert status == 404
    status, text, _ = await get(hub, "/tableaux-de-bord")
    assert status == 200 and text.count("<table") == 4 and text.count('.csv" download') == 4


async def test_choropleth_draws_every_departement(hub: Hub) -> None:
    """The map is SVG outlines from the server: one linked, titled path per département, shaded by its count."""
    from lxml import html as lhtml

    from web.dashboards import bins, shade

    status, text, _ = await get(hub, "/tableaux-de-bord")
    assert status == 200
    svg = lhtml.fromstring(text).cssselect("svg.choropleth")[0]
    paths = svg.cssselect("path.dep")
    codes = {p.get("data-code") for p in paths}
    assert len(codes) == 101 and {"2A", "2B", "971", "972", "973", "974", "976"} <= codes
    frames = {f: {p.get("data-code") for p in paths if p.get("data-frame") == f} for f in ("overseas", "inset")}
    assert frames == {"overseas": {"971", "972", "973", "974", "976"}, "inset": {"75", "92", "93", "94"}}
    expected = {d: sum(1 for s in hub.sheets.values() if any(p.departement == d for p in s.places)) for d in codes}
    top = max(expected.values())
    assert top > 0 and expected["35"] > 0
    for path in paths:
        code = path.get("data-code")
        assert re.fullmatch(r"(M[\d.]+ [\d.]+l[-\d. ]+z)+", path.get("d")), code
        assert path.getparent().get("href") == f"/territoires/departement/{code}"
        assert int(path.get("data-count")) == expected[code]
        assert f"heat-{shade(expected[code], top)}" in path.get("class").split()
        assert path.findtext("title").endswith(f"({code}) : {expected[code]}"), path.findtext("title")
    # The inset repeats Paris and its neighbours for the eye only: screen readers and Tab get each département once.
    assert all((a.get("aria-hidden") == "true") == (a[0].get("data-frame") == "inset") for a in svg.cssselect("a"))
    # Outlines, not squares: a large département has many vertices, Corsica's two are separate shapes.
    gironde = next(p for p in paths if p.get("data-code") == "33").get("d")
    assert len(re.findall(r"-?\d*\.?\d+", gironde)) > 60
    legend = lhtml.fromstring(text).cssselect("ul.legend li")
    assert len(legend) == 1 + len(bins(top))


async def test_board_lists_open_needs_and_offers(hub: Hub) -> None:
    status, text, _ = await get(hub, "/besoins-offres?match_kinds=lieu")
    assert status == 200
    with_lieu = sum(1 for s in hub.sheets.values() if any(m.kind.value == "lieu" for m in s.matches))
    assert f"{with_lieu} projet" in text
    status, text, _ = await get(hub, "/besoins-offres?match_kinds=lieu&themes=CON")
    assert "Une salle pour d&#39;autres ateliers" in text or "Une salle pour d'autres ateliers" in text
    status, text, _ = await get(hub, "/besoins-offres?partner=x")
    assert status == 400 and "partner" in text


async def test_sheet_page_links_duplicates_and_follows(hub: Hub, fediverse) -> None:
    uri = next(u for u, s in hub.sheets.items() if s.title == SHARED_TITLE and hub.sources[u] == "bretagne")
    status, text, _ = await get(hub, uri.removeprefix(hub.url))
    assert status == 200
    assert "Aussi référencé par" in text and PARTNERS[1][1] in text  # the other partner's listing
    assert f'<link rel="canonical" href="{uri}">' in text and 'property="og:title"' in text
    assert '"@type": "Project"' in text
    target = "https://bretagne.example/actor"
    status, _, headers = await get(
        hub, "/suivre?" + urlencode({"handle": f"@alice@{fediverse.host}", "target": target})
    )
    assert status == 303
    assert (
        headers["Location"]
        == f"http://{fediverse.host}/authorize_interaction?uri=https%3A%2F%2Fbretagne.example%2Factor"
    )
    status, text, _ = await get(hub, "/suivre?" + urlencode({"handle": "not a handle", "target": target}))
    assert status == 400 and "@nom@instance.example" in text
    status, text, _ = await get(hub, "/suivre?" + urlencode({"handle": f"bob@{fediverse.host}", "target": target}))
    assert status == 502 and target in text
    status, _, _ = await get(hub, "/sheets/does-not-exist")
    assert status == 404


async def test_language_switch_and_no_secret_reaches_the_browser(hub: Hub) -> None:
    status, _, headers = await get(hub, "/langue?l=en&next=//evil.example/")
    assert status == 303 and headers["Location"] == "/" and "essaim_lang=en" in headers["Set-Cookie"]
    status, text, _ = await get(hub, "/", Cookie="essaim_lang=en")
    assert status == 200 and '<html lang="en">' in text and "Latest projects" in text
    from search.service import SEARCH

    key = hub.app[SEARCH].client._key
    for path in ("/", "/recherche", "/carte", "/tableaux-de-bord", "/recherche/suggestions.json?q=re"):
        status, text, headers = await get(hub, path)
        assert key not in text and "frame-ancestors 'none'" in headers["Content-Security-Policy"]


async def test_board_filters_by_direction_with_exact_counts(hub: Hub) -> None:
    """Besoin / offre is a facet of the board; with a kind, it means one match of both (a need *of* a place)."""
    from lxml import html as lhtml

    from protocol.sheet import MatchStatus

    kinds = sorted({m.kind.value for s in hub.sheets.values() for m in s.matches})

    def having(directions: set[str], chosen_kinds: set[str]) -> int:
        return sum(
            1
            for s in hub.sheets.values()
            if any(m.status is MatchStatus.OPEN and m.direction.value in directions and m.kind.value in chosen_kinds
                   for m in s.matches)
        )  # fmt: skip

    def panel(doc, name: str) -> dict[str, int]:
        return {
            i.get("value"): int(re.sub(r"\D", "", i.getnext().findtext("span")))
            for i in doc.cssselect(f"#facet-{name} input[type=checkbox]")
        }

    both = {"need", "offer"}
    for directions, chosen in (([], []), (["need"], []), (["offer"], ["lieu"]), (["need"], ["lieu"]), ([], ["lieu"])):
        query = urlencode([("match_directions", d) for d in directions] + [("match_kinds", k) for k in chosen])
        status, text, _ = await get(hub, f"/besoins-offres?{query}")
        assert status == 200, text
        doc = lhtml.fromstring(text)
        wanted_d, wanted_k = set(directions) or both, set(chosen) or set(kinds)
        total = having(wanted_d, wanted_k)
        assert re.search(rf">{total} projets? avec un besoin ou une offre ouverts<", text), (query, total)
        assert panel(doc, "match_directions") == {
            d: n for d in sorted(both) if (n := having({d}, wanted_k)) or d in directions
        }, query
        assert panel(doc, "match_kinds") == {k: n for k in kinds if (n := having(wanted_d, {k})) or k in chosen}, query
        shown = [li.get("class").split()[1] for li in doc.cssselect("ul.matches li.match")]
        assert set(shown) <= wanted_d and (shown or total == 0), query
    # The shared repair café needs an electrician and offers a room: not a need of a place.
    status, text, _ = await get(hub, "/besoins-offres?match_directions=need&match_kinds=lieu")
    assert "Une salle pour d" not in text
    status, text, _ = await get(hub, "/besoins-offres?match_directions=offer&match_kinds=lieu")
    assert "Une salle pour d" in text and "Un électricien bénévole" not in text
    # The chip, the checked box and the English labels.
    assert 'class="chip" href="/besoins-offres?match_kinds=lieu"' in text
    status, text, _ = await get(hub, "/besoins-offres?match_directions=offer", **{"Accept-Language": "en"})
    doc = lhtml.fromstring(text)
    assert doc.cssselect("#facet-match_directions legend")[0].text == "Need or offer"
    labels = [lbl.text.strip() for lbl in doc.cssselect("#facet-match_directions label")]
    assert labels == ["Offer", "Need"] or labels == ["Need", "Offer"]
    status, text, _ = await get(hub, "/besoins-offres?match_directions=both")
    assert status == 400 and "match_directions must be one of need, offer" in text


async def test_server_clusters_add_up_to_the_list(hub: Hub) -> None:
    import json

    box = "42.0,-5.5,51.5,9.9"
    status, text, _ = await get(hub, f"/carte/clusters.json?themes=ENV&bbox={box}&zoom=6")
    data = json.loads(text)
    assert status == 200 and data["complete"] and data["precision"] == 3
    placed = [s for s in hub.sheets.values() if "ENV" in s.themes and s.places and s.places[0].lat is not None]
    inside = [s for s in placed if 42.0 <= s.places[0].lat <= 51.5 and -5.5 <= s.places[0].lon <= 9.9]
    assert sum(c["count"] for c in data["clusters"]) == data["found"] == len(inside)
    status, text, _ = await get(hub, f"/recherche/resultats?view=map&themes=ENV&bbox={box}")
    assert status == 200 and '<div id="results"' in text and f">{len(inside)} projets<" in text
    assert 'href="/carte?themes=ENV&amp;bbox=' in text or len(inside) <= 20
    status, text, _ = await get(hub, "/carte/clusters.json?zoom=6")
    assert status == 400 and "bbox is required" in text
    status, text, _ = await get(hub, f"/carte/clusters.json?bbox={box}&zoom=40")
    assert status == 400 and "zoom" in text


async def test_map_page_has_the_search_facets(hub: Hub) -> None:
    """The map filters by the same facets as the search page, with the same counts, chips and URL state."""
    from lxml import html as lhtml

    query = urlencode([("themes", "ENV"), ("region", "53")])
    status, text, _ = await get(hub, f"/carte?{query}")
    assert status == 200
    doc = lhtml.fromstring(text)
    status, listed, _ = await get(hub, f"/recherche?{query}")
    listing = lhtml.fromstring(listed)

    def panels(tree) -> dict[str, dict[str, str]]:
        return {
            f.get("id"): {i.get("value"): i.getnext().findtext("span") for i in f.cssselect("input[type=checkbox]")}
            for f in tree.cssselect("#facet-form fieldset.facet")
        }

    on_map = panels(doc)
    assert on_map == panels(listing)
    assert {"facet-themes", "facet-region", "facet-departement", "facet-partner", "facet-audiences", "facet-stage",
            "facet-engineering", "facet-match_kinds"} <= set(on_map)  # fmt: skip
    assert doc.cssselect("#facet-form")[0].get("action") == "/carte"
    assert {i.get("value") for i in doc.cssselect("#facet-form input:checked")} == {"ENV", "53"}
    chips = [a.get("href") for a in doc.cssselect("#map-chips a.chip")]
    assert chips == ["/carte?region=53", "/carte?themes=ENV"]
    assert doc.cssselect("#list-view a")[0].get("href") == f"/recherche?{query}"
    assert f'href="/carte?{html.escape(query)}"' in listed  # and back to the map with the same filters
    expected = sum(1 for s in hub.sheets.values() if "ENV" in s.themes and any(p.region == "53" for p in s.places))
    assert found(text) == expected
    # As the map moves, the counts follow the viewport: the fragment carries the panel, the chips and the links.
    box = "47.2,-5.2,48.95,-1.0"
    status, text, _ = await get(hub, f"/recherche/resultats?view=map&themes=ENV&bbox={box}")
    fragment = lhtml.fromstring(text)
    regions = panels(fragment)["facet-region"]
    assert status == 200 and "53" in regions and set(regions) <= {"53", "52"}  # Brittany, the edge of Pays de la Loire

    def placed_in_box(sheet: Sheet) -> bool:
        return any(p.lat is not None and 47.2 <= p.lat <= 48.95 and -5.2 <= p.lon <= -1.0 for p in sheet.places)

    in_box = [s for s in hub.sheets.values() if "ENV" in s.themes and placed_in_box(s)]
    assert int(regions["53"]) == sum(1 for s in in_box if any(p.region == "53" for p in s.places)) > 0
    assert fragment.cssselect("#facet-form input[name=bbox]")[0].get("value") == box
    assert fragment.cssselect("#list-view a")[0].get("href") == f"/recherche?themes=ENV&bbox={box.replace(',', '%2C')}"
    assert [a.get("href") for a in fragment.cssselect("#map-chips a.chip")] == [
        f"/carte?bbox={box.replace(',', '%2C')}",
        "/carte?themes=ENV",
    ]


async def test_metrics_count_the_cache(hub: Hub) -> None:
    await get(hub, "/themes/SAN")
    await get(hub, "/themes/SAN")
    status, text, _ = await get(hub, "/metrics")
    assert status == 200
    hits = int(re.search(r"^essaim_web_search_cache_hits_total (\d+)$", text, re.M).group(1))
    assert hits >= 1 and "essaim_web_search_cache_misses_total" in text


async def test_home_counts(hub: Hub) -> None:
    from protocol.sheet import MatchStatus

    status, text, _ = await get(hub, "/")
    assert status == 200
    open_ = sum(1 for s in hub.sheets.values() if any(m.status is MatchStatus.OPEN for m in s.matches))
    assert f'<strong>{open_}</strong> <a href="/besoins-offres">' in text
    assert f"<strong>{len(hub.sheets)}</strong> projets" in text and "<strong>3</strong> partenaires" in text
