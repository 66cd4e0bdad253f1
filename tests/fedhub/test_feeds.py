"""Hub feed actors (theme, région, saved search) followed by an independent fediverse user: fediverse-pasture's
``follower`` (bovine checks every signature) receives exactly the new matching projects, once each."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
from lxml import etree

from federation.hubpush import sync_follows
from tests.federation.conftest import REPO, Node, free_port
from tests.federation.test_pasture import _wait_ready, call
from tests.fedhub.support import hub_settings, running_hub
from tests.search.hub_support import eventually

pytest.importorskip("fediverse_pasture", reason="fediverse-pasture is installed by the test extras")


@pytest.fixture
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("a", "b", "hub", "pasture")}


@pytest.fixture
def nodes(ports: dict[str, int], tmp_path: Path) -> Iterator[list[Node]]:
    started = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            node = Node(ports[name], tmp_path / name, f"noeud{name}", str(ports["hub"]))
            node.start()
            started.append(node)
        yield started
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def pasture(ports: dict[str, int], tmp_path: Path) -> Iterator[str]:
    (tmp_path / "pasture").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.federation.pasture_server", str(ports["pasture"]), str(tmp_path / "pasture")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    base = f"http://127.0.0.1:{ports['pasture']}"
    try:
        asyncio.run(_wait_ready(base, process))
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


async def test_pasture_follows_theme_and_saved_search_feeds(
    nodes: list[Node], pasture: str, ports: dict[str, int], tmp_path: Path
) -> None:
    a, b = nodes
    await a.ctl("upsert", n=9, themes="ENV", region="53", title="Ancien verger, déjà là")  # before anyone follows
    settings = hub_settings(
        tmp_path / "hub",
        ports["hub"],
        [ports["a"], ports["b"], ports["pasture"]],
        federation={"feeds": ["ENV"]},
        fedhub={"regions": ["53"]},
    )
    async with running_hub(settings) as hub:
        for node in nodes:
            key = (await hub.hub.register(node.base))["key"]
            await sync_follows(hub.fed, key)
            await node.until(lambda s: bool(s["ap_follower"]))
            await hub.hub.harvest_now(key)
        # The search page links to the saved-search form with its own query string.
        page = await hub.client.get("/recherche", params={"q": "alimentation durable", "region": "53"})
        html_text = await page.text()
        assert page.status == 200 and "Suivre cette recherche sur le fédivers" in html_text
        link = re.search(r'href="(/feeds/searches/new\?[^"]+)"', html_text)
        assert link is not None
        form = await hub.client.get(unescape(link.group(1)))
        assert form.status == 200 and "alimentation durable" in await form.text()
        # A saved search, from the search page's query string (the presentation parameters are dropped)
        response = await hub.client.post(
            "/feeds/searches", json={"query": "q=alimentation+durable&region=53&sort=date&page=2"}
        )
        assert response.status == 201, await response.text()
        saved = await response.json()
        assert saved["query"] == "q=alimentation+durable&region=53"
        assert saved["name"].endswith("alimentation durable · Bretagne"), saved
        again = await hub.client.post("/feeds/searches", json={"query": "region=53&q=alimentation+durable"})
        assert again.status == 200 and (await again.json())["code"] == saved["code"]  # the same search
        bad = await hub.client.post("/feeds/searches", json={"query": "colour=blue"})
        assert bad.status == 400 and "colour" in (await bad.json())["error"]

        theme_feed, search_feed = f"{hub.fed.base_url}/feeds/ENV", saved["actor"]
        for target in (theme_feed, search_feed):
            answer = await call("POST", f"{pasture}/follow", object=target, inbox=f"{hub.fed.base_url}/inbox")
            assert answer["status"] == 202, answer

        async def following() -> bool:
            rows = await hub.ctx.db.fetch("SELECT feed FROM ap_feed_follower WHERE status = 'accepted'")
            return sorted(r["feed"] for r in rows) == sorted(["ENV", saved["code"]])

        await eventually(following, within=15)

        one = await a.ctl("upsert", n=1, themes="ENV", region="84", title="Composteur collectif")  # theme only
        two = await a.ctl("upsert", n=2, themes="SOL", region="53", title="Alimentation durable à Lorient")  # search
        three = await b.ctl("upsert", n=3, themes="ENV", region="53", title="Alimentation durable et vergers")  # both
        await b.ctl("upsert", n=4, themes="EDU", region="84", title="Alimentation durable à Lyon")  # neither
        await b.ctl("upsert", n=3, themes="ENV", region="53", title="Alimentation durable et vergers (revu)")
        await a.ctl("upsert", n=9, themes="ENV", region="53", title="Ancien verger, revu")  # announced before

        async def announces() -> list[tuple[str, str]]:
            items = (await call("GET", f"{pasture}/received"))["items"]
            return sorted((i["actor"], i["object"]) for i in items if i.get("type") == "Announce")

        expected = sorted(
            [
                (theme_feed, one["uri"]),
                (theme_feed, three["uri"]),
                (search_feed, two["uri"]),
                (search_feed, three["uri"]),
            ]
        )
        await eventually(lambda: _eq(announces(), expected), within=20)
        for node in nodes:  # the next harvest confirms the pushed sheets: nothing is announced again
            await hub.hub.harvest_now((await hub.hub.registry.all())[nodes.index(node)]["key"])
        await asyncio.sleep(1.5)
        assert await announces() == expected  # exactly the new matching projects, once each

        # each feed's page has the handle and a follow button; its Atom equivalent lists the same sheets
        page = await hub.client.get(f"/feeds/{saved['code']}", headers={"Accept": "text/html"})
        html = await page.text()
        assert saved["handle"] in html and "/follow" in html and "/atom" in html
        atom = await hub.client.get(f"/feeds/{saved['code']}/atom")
        assert atom.content_type == "application/atom+xml"
        root = etree.fromstring(await atom.read())
        titles = sorted(t.text for t in root.iter("{http://www.w3.org/2005/Atom}title"))[:-1]
        assert titles == ["Alimentation durable et vergers (revu)", "Alimentation durable à Lorient"], titles
        listing = await (await hub.client.get("/feeds")).text()
        assert "region-bretagne@" in listing and saved["handle"] in listing
        follow = await hub.client.get(
            f"/feeds/{saved['code']}/follow", params={"instance": "@moi@mastodon.example"}, allow_redirects=False
        )
        assert follow.status == 302
        assert follow.headers["Location"].startswith("https://mastodon.example/authorize_interaction?uri=")


async def _eq(value, expected) -> bool:  # type: ignore[no-untyped-def]
    got = await value
    return got == expected
