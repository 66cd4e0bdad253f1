"""Sources without a node, served by small real aiohttp sites on loopback.

- a crawled site: robots.txt (Disallow, Sitemap), a sitemap index, pages with schema.org JSON-LD
  and microdata, broken pages; polite spacing, incremental re-crawl by ``lastmod``, tombstones;
- a site read with per-site extraction rules (CSS and XPath), and the rules file's own tests;
- a CSV file at a URL read with an import mapping: conditional GET, changes, deletions, bad rows.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from lxml import etree

from essaim.cli import main
from harvesting import normalise
from harvesting.hub import Hub, SourceError
from harvesting.transport import OaiTransport
from node.db import Database
from node.outbound import OutboundClient
from protocol.sheet import sheet_from_dict
from tests.harvesting.conftest import HUB_URL, outbound_config
from tests.oai_support import SCHEMA_DIR, assert_valid_oai, make_config, oai_app

SITES = Path(__file__).parent / "sites"

JSON_LD = """<html><head><script type="application/ld+json">{"@context": "https://schema.org", "@graph": [
 {"@type": "WebPage", "name": "Accueil"},
 {"@type": "Project", "name": "%s", "description": "Un jardin ouvert au quartier.",
  "keywords": "jardin, quartier", "founder": {"@type": "Organization", "name": "Association Les Lices"},
  "location": {"@type": "Place", "address": {"@type": "PostalAddress", "addressLocality": "Rennes",
  "postalCode": "35000"}}}]}</script></head><body><h1>Jardin</h1></body></html>"""

MICRODATA = """<html><body><div itemscope itemtype="https://schema.org/Project">
<h1 itemprop="name">Ressourcerie du port</h1><p itemprop="description">Donner une seconde vie aux objets.</p>
<div itemprop="founder" itemscope itemtype="https://schema.org/Organization"><span itemprop="name">Ressourcerie
Brestoise</span></div>
<div itemprop="location" itemscope itemtype="https://schema.org/Place"><div itemprop="address" itemscope
itemtype="https://schema.org/PostalAddress"><span itemprop="addressLocality">Brest</span></div></div>
<meta itemprop="keywords" content="réemploi"></div></body></html>"""


class Site:
    """A partner web site: pages, a sitemap, robots.txt, a CSV export; it logs every request."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, str, str]] = {}
        self.urls: list[tuple[str, str | None]] = []
        self.robots: str | None = None
        self.index = False
        self.csv = ""
        self.log: list[tuple[float, str, dict[str, str]]] = []
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def app(self) -> web.Application:
        async def any_path(request: web.Request) -> web.Response:
            path = request.path
            self.log.append((time.monotonic(), path, dict(request.headers)))
            if path == "/robots.txt":
                if self.robots is None:
                    raise web.HTTPNotFound()
                return web.Response(text=self.robots.replace("SITE", self.url))
            if path == "/sitemap-index.xml" and self.index:
                body = (
                    '<?xml version="1.0" encoding="UTF-8"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                    f"<sitemap><loc>{self.url}/sitemap-projets.xml</loc></sitemap></sitemapindex>"
                )
                return web.Response(text=body, content_type="application/xml")
            if path in ("/sitemap-projets.xml", "/sitemap.xml"):
                entries = "".join(
                    f"<url><loc>{loc if loc.startswith('http') else self.url + loc}</loc>"
                    + (f"<lastmod>{lastmod}</lastmod>" if lastmod else "")
                    + "</url>"
                    for loc, lastmod in self.urls
                )
                body = f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>'
                return web.Response(text=body, content_type="application/xml")
            if path == "/export.csv":
                etag = '"' + str(abs(hash(self.csv))) + '"'
                if request.headers.get("If-None-Match") == etag:
                    return web.Response(status=304)
                return web.Response(text=self.csv, content_type="text/csv", headers={"ETag": etag})
            if path in self.pages:
                status, ctype, body = self.pages[path]
                return web.Response(status=status, body=body.encode("utf-8"), headers={"Content-Type": ctype})
            raise web.HTTPNotFound()

        app = web.Application()
        app.router.add_get("/{tail:.*}", any_path)
        return app

    def requested(self) -> list[str]:
        return [path for _, path, _ in self.log]


@pytest.fixture
async def sites() -> AsyncIterator[tuple[Site, Site]]:
    pair = (Site(), Site())
    for site in pair:
        site.server = TestServer(site.app(), host="127.0.0.1")
        await site.server.start_server()
    try:
        yield pair
    finally:
        for site in pair:
            assert site.server is not None
            await site.server.close()


@asynccontextmanager
async def hub_for(db: Database, *sites: Site) -> AsyncIterator[Hub]:
    ports = [s.server.port for s in sites if s.server is not None]
    async with OutboundClient(outbound_config(*ports)) as client:
        yield Hub(db, OaiTransport(client), hub_base_url=HUB_URL)


async def sheets_of(db: Database, source: str) -> dict[str, Any]:
    rows = await db.fetch("SELECT local_id, deleted, data, provenance FROM sheet WHERE source = ?", [source])
    return {
        r["local_id"]: (None if r["deleted"] else sheet_from_dict(json.loads(r["data"])), json.loads(r["provenance"]))
        for r in rows
    }


async def test_crawl_schema_org_site(
    sites: tuple[Site, Site], sqlite_hub: Database, caplog: pytest.LogCaptureFixture
) -> None:
    site, _ = sites
    site.robots = (
        "User-agent: autre\nDisallow: /\n\n"  # another robot's group does not apply
        "User-agent: essaim\nDisallow: /prive/\nCrawl-delay: 0\n\nSitemap: SITE/sitemap-index.xml\n"
    )
    site.index = True
    site.urls = [
        ("/projets/1", "2026-11-01"),
        ("/projets/2", "2026-11-02"),
        ("/prive/3", None),
        ("/projets/4", None),
        ("/projets/5", None),
        ("https://ailleurs.example/projets/6", None),
    ]
    site.pages = {
        "/projets/1": (200, "text/html", JSON_LD % "Jardin partagé des Lices"),
        "/projets/2": (200, "text/html", MICRODATA),
        "/prive/3": (200, "text/html", JSON_LD % "Secret"),
        "/projets/4": (200, "text/html", "<html><body><p>Pas de données</p></body></html>"),
        "/projets/5": (500, "text/html", "<html>panne</html>"),
    }
    async with hub_for(sqlite_hub, site) as hub:
        row = await hub.register_crawl(site.url, key="site", delay=0.2)
        assert (row["kind"], json.loads(row["config"])["delay"]) == ("crawl", 0.2)
        progress: list[tuple[str, int, int | None]] = []
        with caplog.at_level(logging.WARNING, logger="essaim.harvest"):
            stats = await hub.harvest_now("site", lambda *p: progress.append(p))
        assert progress == [("site", 1, 4)] * 4  # the CLI's progress bar: pages of the sitemap
        assert (stats.added, stats.rejected, stats.deleted, stats.complete) == (2, 2, 0, True)
        assert not stats.ok and "2 page(s) rejected" in stats.errors[0]
        requested = site.requested()
        assert requested[:3] == ["/robots.txt", "/sitemap-index.xml", "/sitemap-projets.xml"]
        assert "/prive/3" not in requested and requested[3:] == ["/projets/1", "/projets/2", "/projets/4", "/projets/5"]
        times = [t for t, _, _ in site.log]
        assert all(b - a >= 0.19 for a, b in itertools.pairwise(times))  # polite spacing
        assert all(h.get("User-Agent", "").startswith("Essaim/") for _, _, h in site.log)
        rejected = [r for r in caplog.records if getattr(r, "event", "") == "harvest.page_rejected"]
        assert {r.url for r in rejected} == {f"{site.url}/projets/4", f"{site.url}/projets/5"}  # type: ignore[attr-defined]

        stored = await sheets_of(sqlite_hub, "site")
        jardin, prov = stored[f"{site.url}/projets/1"]
        assert jardin.title == "Jardin partagé des Lices" and jardin.holder.name == "Association Les Lices"
        assert (jardin.places[0].insee, jardin.places[0].postcode) == ("35238", "35000")
        assert [t.tag for t in jardin.tags] == ["jardin", "quartier"] and jardin.url == f"{site.url}/projets/1"
        assert prov["originalURL"] == f"{site.url}/projets/1" and prov["kind"] == "crawl" and prov["firstSeen"]
        ressourcerie, _ = stored[f"{site.url}/projets/2"]
        assert ressourcerie.title == "Ressourcerie du port" and ressourcerie.holder.name == "Ressourcerie Brestoise"
        assert ressourcerie.places[0].insee == "29019"

        # Again, nothing changed: pages with the same lastmod are not fetched; failed ones are.
        site.log.clear()
        site.pages["/projets/5"] = (200, "text/html", "<html><body>toujours rien</body></html>")
        stats = await hub.harvest_now("site")
        assert (stats.added, stats.updated, stats.deleted, stats.rejected) == (0, 0, 0, 2)
        assert site.requested()[3:] == ["/projets/4", "/projets/5"]

        # A changed page (new lastmod) is updated; a page gone from the sitemap becomes a tombstone.
        site.urls = [("/projets/1", "2026-11-20"), ("/projets/4", None)]
        site.pages["/projets/1"] = (200, "text/html", JSON_LD % "Jardin des Lices")
        stats = await hub.harvest_now("site")
        assert (stats.added, stats.updated, stats.deleted) == (0, 1, 1)
        stored = await sheets_of(sqlite_hub, "site")
        assert stored[f"{site.url}/projets/1"][0].title == "Jardin des Lices"
        assert stored[f"{site.url}/projets/2"][0] is None and stored[f"{site.url}/projets/2"][1]["deleted"]

        # Pages beyond max_pages are left for later, not taken for gone.
        config = json.dumps({"max_pages": 1, "delay": 0})
        await sqlite_hub.execute("UPDATE harvest_source SET config = ? WHERE key = ?", [config, "site"])
        site.urls = [("/projets/4", None), ("/projets/1", "2026-12-01")]
        stats = await hub.harvest_now("site")
        assert stats.deleted == 0 and "only the first 1 are crawled" in stats.errors[0]
        assert (await sheets_of(sqlite_hub, "site"))[f"{site.url}/projets/1"][0] is not None

    # The hub re-exposes the crawled sheets over its own OAI-PMH, with their provenance
    # (a provider lists the records of past seconds only).
    await asyncio.sleep(1.05 - time.time() % 1)
    server = TestServer(oai_app(sqlite_hub, make_config(hub=True)), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:
            query = {"verb": "ListRecords", "metadataPrefix": "oai_dc"}
            async with session.get(server.make_url("/oai"), params=query) as response:
                body = await response.read()
    finally:
        await server.close()
    if (SCHEMA_DIR / "OAI-PMH.xsd").exists():  # the official schemas, provenance.xsd included
        assert_valid_oai(body)
    root = etree.fromstring(body)
    origins = root.findall(".//{http://www.openarchives.org/OAI/2.0/provenance}originDescription")
    assert len(origins) == 1  # the live sheet (the tombstone has a header only)
    texts = {etree.QName(el).localname: el.text for el in origins[0]}
    assert texts["baseURL"] == site.url and texts["metadataNamespace"] == "https://schema.org/"
    assert texts["identifier"] == f"{site.url}/projets/1"


async def test_crawl_with_site_rules(
    sites: tuple[Site, Site], sqlite_hub: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, site = sites  # no robots.txt (404): no rules, everything may be fetched
    site.urls = [("/fiches/7", None), ("/autres/1", None)]
    site.pages = {
        "/fiches/7": (200, "text/html; charset=utf-8", (SITES / "exemple-fiche.html").read_text("utf-8")),
        "/autres/1": (200, "text/html", "<html></html>"),
    }
    rules = str(SITES / "exemple.toml")
    async with hub_for(sqlite_hub, site) as hub:
        await sqlite_hub.execute("DELETE FROM hub_unmapped_tag")
        with pytest.raises(SourceError, match=r"fields\.local_id"):
            bad = tmp_path / "bad.toml"
            bad.write_text('version = 1\n[fields]\ntitle = { css = "h1" }\nlocal_id = { css = "x" }\n', "utf-8")
            await hub.register_crawl(site.url, rules=str(bad))
        await hub.register_crawl(site.url, key="regles", rules=rules, delay=0)
        stats = await hub.harvest_now("regles")
        assert stats.ok and stats.added == 1, stats.errors
        assert "/autres/1" not in site.requested()
        ((fiche, prov),) = (await sheets_of(sqlite_hub, "regles")).values()
        assert fiche.title == "Atelier vélo solidaire" and fiche.summary == "Réparer ensemble plutôt que jeter."
        assert fiche.description == "<p>Un atelier <strong>ouvert</strong> à tous.</p>"
        assert fiche.holder.name == "Association Roue Libre"
        assert (fiche.places[0].insee, fiche.places[0].commune) == ("29019", "Brest")
        assert fiche.images[0].url == f"{site.url}/img/velo.jpg"
        assert prov["rulesVersion"] == 2 and prov["rules"] == "exemple.toml"
        queue = {r["tag"] for r in await normalise.unmapped(sqlite_hub, "regles")}
        assert queue == {"vélo", "réemploi"}

    # The rules file's own tests run from the command line.
    assert main(["hub", "rules", "check", rules]) == 0
    assert "1 test(s) passed" in capsys.readouterr().out
    broken = tmp_path / "exemple.toml"
    broken.write_text((SITES / "exemple.toml").read_text("utf-8").replace('"29200"', '"35000"'), "utf-8")
    (tmp_path / "exemple-fiche.html").write_bytes((SITES / "exemple-fiche.html").read_bytes())
    assert main(["hub", "rules", "check", str(broken)]) == 1
    assert "place_postcode is '29200', expected '35000'" in capsys.readouterr().out


MAPPING = """name = "partenaire"
format = "csv"
delimiter = ";"
[fields]
local_id = "id"
title = "nom"
holder_name = "porteur"
place_commune = "ville"
tags = { column = "mots", split = "," }
"""


async def test_csv_file_at_a_url(sites: tuple[Site, Site], sqlite_hub: Database, tmp_path: Path) -> None:
    site, _ = sites
    mapping = tmp_path / "partenaire.toml"
    mapping.write_text(MAPPING, "utf-8")
    site.csv = (
        "id;nom;porteur;ville;mots\n1;Épicerie solidaire;Asso A;Lyon;alimentation\n2;Café associatif;Asso B;Brest;\n"
    )
    async with hub_for(sqlite_hub, site) as hub:
        with pytest.raises(SourceError, match="no mapping"):
            await hub.register_file(f"{site.url}/export.csv", mapping="nope")
        with pytest.raises(SourceError, match="404"):
            await hub.register_file(f"{site.url}/absent.csv", mapping=str(mapping))
        await hub.register_file(f"{site.url}/export.csv", mapping=str(mapping), key="csv", partner="Réseau CSV")
        progress: list[tuple[str, int, int | None]] = []
        stats = await hub.harvest_now("csv", lambda *p: progress.append(p))
        assert progress == [("csv", 2, None)]
        assert stats.ok and stats.added == 2
        stored = await sheets_of(sqlite_hub, "csv")
        epicerie, prov = stored["1"]
        assert epicerie.partner.name == "Réseau CSV" and epicerie.places[0].insee == "69123"
        assert prov["originalURL"] is None and prov["baseURL"].endswith("/export.csv") and prov["kind"] == "file"

        # Unchanged: a conditional GET answered 304, nothing written.
        site.log.clear()
        stats = await hub.harvest_now("csv")
        assert stats.ok and (stats.added, stats.updated, stats.deleted) == (0, 0, 0)
        assert site.log[-1][2].get("If-None-Match")

        # A row changed and a row gone.
        site.csv = "id;nom;porteur;ville;mots\n1;Épicerie solidaire du centre;Asso A;Lyon;alimentation\n"
        stats = await hub.harvest_now("csv")
        assert stats.ok and (stats.added, stats.updated, stats.deleted) == (0, 1, 1)

        # A bad row is rejected and named; the others are stored; nothing is deleted on a partial read.
        site.csv = "id;nom;porteur;ville;mots\n3;;Asso C;Paris;\n4;Recyclerie;Asso D;Nantes;\n"
        stats = await hub.harvest_now("csv")
        assert (stats.added, stats.rejected, stats.deleted) == (1, 1, 0) and not stats.ok
        assert "rejected" in stats.errors[0]
        stored = await sheets_of(sqlite_hub, "csv")
        assert stored["1"][0] is not None and stored["4"][0].title == "Recyclerie"


async def test_json_file_at_a_url(sites: tuple[Site, Site], sqlite_hub: Database, tmp_path: Path) -> None:
    site, _ = sites
    mapping = tmp_path / "json.toml"
    mapping.write_text(
        'name = "json"\nformat = "json"\n[fields]\nlocal_id = "ref"\ntitle = "intitule"\ntags = "themes"\n'
        'place_postcode = "cp"\nplace_commune = "ville"\n',
        "utf-8",
    )
    items = [
        {
            "ref": "a1",
            "intitule": "Tiers-lieu rural",
            "themes": ["tiers-lieu", "ruralité"],
            "cp": "22000",
            "ville": "Saint-Brieuc",
        },
        {"ref": "a2", "intitule": "Cantine solidaire", "themes": [], "cp": "", "ville": ""},
    ]
    site.pages["/projets.json"] = (200, "application/json", json.dumps(items, ensure_ascii=False))
    async with hub_for(sqlite_hub, site) as hub:
        await hub.register_file(f"{site.url}/projets.json", mapping=str(mapping), key="json")
        stats = await hub.harvest_now("json")
        assert stats.ok and stats.added == 2
        stored = await sheets_of(sqlite_hub, "json")
        tiers, _ = stored["a1"]
        assert [t.tag for t in tiers.tags] == ["tiers-lieu", "ruralité"] and tiers.places[0].insee == "22278"
        assert stored["a2"][0].places == ()
        # Unchanged body (no validators here): recognised by its SHA-256, nothing written.
        stats = await hub.harvest_now("json")
        assert stats.ok and (stats.added, stats.updated, stats.deleted, stats.unchanged) == (0, 0, 0, 0)
