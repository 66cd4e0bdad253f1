"""The front in headless Chromium: the journey, no console errors, axe-core on every page type, screenshots.

Screenshots land in ``tests/artifacts/`` (git-ignored). axe-core is the npm package
installed by ``./run setup``, injected from ``node_modules``.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio

from tests.web.conftest import ARTIFACTS, Hub
from tests.web.corpus import SHARED_TITLE

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.browser]
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"


@pytest_asyncio.fixture(loop_scope="package")
async def context(browser, hub: Hub):
    ctx = await browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 900})
    yield ctx
    await ctx.close()


class Console:
    """Collects console errors, page errors and failed requests of one page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"requestfailed: {r.url} {r.failure}"))
        page.on("response", lambda r: self.errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)


async def axe(page) -> list[dict]:
    if not AXE.exists():
        pytest.skip(f"axe-core is not installed at {AXE} (./run setup runs npm ci)")
    await page.add_script_tag(path=str(AXE))
    tags = "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']"
    result = await page.evaluate(f"async () => await axe.run(document, {{runOnly: {{type: 'tag', values: {tags}}}}})")
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


def summary(violations: list[dict]) -> str:
    return json.dumps(
        [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"][:5]]} for v in violations],
        indent=1,
    )


async def test_journey_search_facet_map_sheet_back(context, hub: Hub) -> None:
    page = await context.new_page()
    console = Console(page)
    await page.goto(hub.url + "/recherche?q=repair")
    assert await page.locator(".hit h3 a", has_text=SHARED_TITLE).count() >= 1
    # A facet: the checkbox submits the form by itself with JavaScript.
    first = page.locator("#facet-themes input[type=checkbox]").first
    value = await first.get_attribute("value")
    async with page.expect_navigation():
        await first.check()
    assert parse_qs(urlsplit(page.url).query)["themes"] == [value]
    assert await page.locator(".chip").count() == 2  # the keyword and the theme
    # The map keeps the search; its clusters come from the server.
    async with page.expect_navigation():
        await page.get_by_role("link", name="Voir sur la carte").click()
    assert urlsplit(page.url).path == "/carte" and "themes=" in page.url
    await page.wait_for_selector(".cluster-icon", timeout=10_000)
    total = sum(int(t) for t in await page.locator(".cluster-icon").all_inner_texts())
    found = await page.locator("#found").inner_text()
    assert total >= 1 and str(total) in found.replace("\u202f", "")
    # The list follows the map: the URL and the list carry the viewport.
    await page.wait_for_function("location.search.includes('bbox=')")
    assert "zoom=" in page.url
    # The sheet page, then back to the map.
    link = page.locator("#results .hit h3 a").first
    title = await link.inner_text()
    async with page.expect_navigation():
        await link.click()
    assert await page.locator("h1").inner_text() == title
    assert await page.locator("script[type='application/ld+json']").count() == 1
    assert await page.locator("meta[property='og:title']").get_attribute("content") == title
    await page.go_back()
    assert urlsplit(page.url).path == "/carte"
    await page.wait_for_selector("#results .hit")
    assert console.errors == []


async def test_map_viewport_filters_the_list(context, hub: Hub) -> None:
    page = await context.new_page()
    console = Console(page)
    # Brittany only: the list shrinks to the sheets placed there.
    await page.goto(hub.url + "/carte?bbox=47.2,-5.2,48.95,-1.0")
    await page.wait_for_selector(".cluster-icon", timeout=10_000)
    count = int("".join(ch for ch in await page.locator("#found").inner_text() if ch.isdigit()))
    assert 0 < count < len(hub.sheets)
    await page.locator(".cluster-icon").first.click()  # zooms in on the cluster
    await page.wait_for_function("!location.search.includes('bbox=47.2,-5.2,48.95,-1.0')")
    assert console.errors == []


async def test_map_facets_follow_the_viewport_and_keep_the_filters(context, hub: Hub) -> None:
    page = await context.new_page()
    console = Console(page)
    await page.goto(hub.url + "/carte?bbox=47.2,-5.2,48.95,-1.0")
    await page.wait_for_selector(".cluster-icon", timeout=10_000)
    # The panel was swapped in for the viewport: its checkboxes still submit by themselves.
    await page.wait_for_function("location.search.includes('zoom=')")
    await page.wait_for_load_state("networkidle")  # the fragment of the viewport is in
    region = page.locator("#facet-region input[type=checkbox]").first
    value = await region.get_attribute("value")
    async with page.expect_navigation():
        await region.check()
    query = parse_qs(urlsplit(page.url).query)
    assert urlsplit(page.url).path == "/carte" and query["region"] == [value] and "bbox" in query
    count = int("".join(ch for ch in await page.locator("#found").inner_text() if ch.isdigit()))
    assert await page.locator("#facet-region input:checked").count() == 1
    # Map -> list -> map keeps the filters.
    async with page.expect_navigation():
        await page.get_by_role("link", name="Voir en liste avec les filtres").click()
    assert urlsplit(page.url).path == "/recherche" and parse_qs(urlsplit(page.url).query)["region"] == [value]
    assert int("".join(ch for ch in await page.locator("#found").inner_text() if ch.isdigit())) == count
    async with page.expect_navigation():
        await page.get_by_role("link", name="Voir sur la carte").click()
    assert urlsplit(page.url).path == "/carte" and parse_qs(urlsplit(page.url).query)["region"] == [value]
    await page.wait_for_selector(".cluster-icon", timeout=10_000)
    # A removed chip drops its filter on the map too.
    async with page.expect_navigation():
        await page.locator("#map-chips .chip").filter(has_not_text="Zone de la carte").first.click()
    assert "region=" not in page.url
    assert console.errors == []


async def test_suggestions_by_keyboard(context, hub: Hub) -> None:
    page = await context.new_page()
    await page.goto(hub.url + "/recherche")
    await page.locator("#q").press_sequentially("repa", delay=30)
    await page.wait_for_selector("#suggestions li")
    await page.keyboard.press("ArrowDown")
    assert await page.locator("#q").get_attribute("aria-activedescendant") == "sugg-0"
    title = (await page.locator("#sugg-0").inner_text()).strip()
    assert "repa" in title.lower()
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert await page.locator("h1").inner_text() == title


PAGE_TYPES = {
    "home": "/",
    "search": "/recherche?themes=ENV&sort=date",
    "map": "/carte",
    "sheet": None,  # filled in from the corpus
    "partners": "/partenaires",
    "partner": "/partenaires/bretagne",
    "theme": "/themes/ENV",
    "territory": "/territoires/region/53",
    "departement": "/territoires/departement/35",
    "board": "/besoins-offres",
    "dashboards": "/tableaux-de-bord",
}


@pytest.mark.parametrize("kind", list(PAGE_TYPES))
async def test_page_type_accessible_without_console_errors(browser, hub: Hub, kind: str) -> None:
    path = PAGE_TYPES[kind] or next(u for u, s in hub.sheets.items() if s.title == SHARED_TITLE).removeprefix(hub.url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, viewport in (("desktop", {"width": 1280, "height": 900}), ("phone", {"width": 375, "height": 740})):
        # axe is injected as a script: only the desktop pass lets the test bypass the CSP to do it.
        ctx = await browser.new_context(locale="fr-FR", viewport=viewport, bypass_csp=name == "desktop")
        try:
            page = await ctx.new_page()
            console = Console(page)
            response = await page.goto(hub.url + path)
            assert response is not None and response.status == 200
            if kind == "map":
                await page.wait_for_selector(".cluster-icon", timeout=10_000)
            await page.screenshot(path=str(ARTIFACTS / f"{kind}-{name}.png"), full_page=name == "desktop")
            if name == "desktop":
                violations = await axe(page)
                assert violations == [], summary(violations)
                # The page is usable by keyboard: the first Tab reaches the skip link.
                await page.keyboard.press("Tab")
                assert await page.evaluate("document.activeElement.className") == "skip"
            else:
                # Responsive: nothing wider than the phone's screen.
                width = await page.evaluate("document.documentElement.scrollWidth")
                assert width <= 375 + 1, f"{kind} is {width}px wide on a phone"
            assert console.errors == []
        finally:
            await ctx.close()


async def test_no_javascript_path_still_searches_and_filters(browser, hub: Hub) -> None:
    ctx = await browser.new_context(locale="fr-FR", java_script_enabled=False)
    try:
        page = await ctx.new_page()
        await page.goto(hub.url + "/recherche")
        await page.fill("#q", "repair")
        async with page.expect_navigation():
            await page.locator("#search-form button[type=submit]").click()
        assert "q=repair" in page.url
        await page.locator("#facet-region input[type=checkbox]").first.check()
        async with page.expect_navigation():
            await page.get_by_role("button", name="Appliquer les filtres").click()
        assert "region=" in page.url and "q=repair" in page.url
        assert await page.locator(".hit").count() >= 1
        # A chip removes its filter by a plain link.
        async with page.expect_navigation():
            await page.locator(".chip", has_text="repair").click()
        assert "q=" not in page.url and "region=" in page.url
        # The map page without JavaScript still lists the sheets, and its facet panel filters them.
        await page.goto(hub.url + "/carte")
        assert await page.locator("#results .hit").count() > 0
        await page.locator("#facet-themes input[type=checkbox]").first.check()
        async with page.expect_navigation():
            await page.get_by_role("button", name="Appliquer les filtres").click()
        assert urlsplit(page.url).path == "/carte" and "themes=" in page.url
        assert await page.locator("#map-chips .chip").count() == 1
        await page.screenshot(path=str(ARTIFACTS / "map-nojs.png"))
    finally:
        await ctx.close()


async def test_english(browser, hub: Hub) -> None:
    ctx = await browser.new_context(locale="en-GB")
    try:
        page = await ctx.new_page()
        await page.goto(hub.url + "/recherche")
        assert await page.locator("h1").inner_text() == "Search projects"
        assert await page.get_attribute("html", "lang") == "en"
        async with page.expect_navigation():
            await page.get_by_role("link", name="Français").click()
        assert await page.locator("h1").inner_text() == "Rechercher des projets"
        assert urlsplit(page.url).path == "/recherche"
    finally:
        await ctx.close()
