"""The server-rendered pages over HTTP, without a browser: the no-JavaScript path, escaping, errors, headers."""

from __future__ import annotations

import html
import re
from urllib.parse import urlencode

import aiohttp
import pytest

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
