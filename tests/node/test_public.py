"""Public pages of a node (``node/http/public.py``): home, sheet pages, health, metrics, and the
security headers every answer carries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import lxml.html
import pytest
from aiohttp.test_utils import TestClient

from essaim.app import CSP
from node.editing import prepare_sheet
from protocol.sheet import Sheet, sheet_from_dict
from tests.node_support import BASE_URL, Clock, admin_user, context, node_client, node_settings

SECURITY = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
}


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[TestClient]:
    async with node_client(node_settings(tmp_path)) as client:
        context(client).store.clock = Clock()
        yield client


async def publish(client: TestClient, local_id: str, title: str, **extra: Any) -> Sheet:
    """A sheet written the way the API and the admin write one."""
    ctx = context(client)
    sheet = prepare_sheet(
        {"local_id": local_id, "title": title, **extra},
        partner=ctx.partner,
        licence=ctx.licence,
        resolver=ctx.resolver,
        description_format="markdown",
    )
    await ctx.store.upsert(sheet)
    stored = await ctx.store.get(local_id)
    assert isinstance(stored, Sheet)
    return stored


def page_path(sheet: Sheet) -> str:
    assert sheet.id.startswith(f"{BASE_URL}/sheets/")
    return urlsplit(sheet.id).path


def text_of(html: str) -> str:
    """The page's text, one space between elements (``<dt>Stade</dt><dd>Idée</dd>``: "Stade Idée")."""
    return " ".join(" ".join(t.split()) for t in lxml.html.fromstring(html).itertext() if t.strip())


async def test_home_lists_the_sheets_and_searches(client):
    garden = await publish(client, "jardin", "Jardin <partagé>")
    await publish(client, "repair", "Repair café")
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    html = await response.text()
    assert '<html lang="fr">' in html
    assert "Partenaire de démonstration : fiches projets" in text_of(html)
    assert "2 fiche(s)." in text_of(html)
    assert f'<a href="{garden.id}">Jardin &lt;partagé&gt;</a>' in html
    found = await (await client.get("/", params={"q": "repair"})).text()
    assert "1 fiche(s)." in text_of(found)
    assert "Jardin" not in text_of(found).split("fiche(s).")[1]


async def test_sheet_page_in_french(client):
    sheet = await publish(
        client,
        "jardin",
        "Jardin partagé",
        summary="Un jardin ouvert à tous",
        description="Des **bacs** cultivés ensemble.",
        subthemes=["ALI"],
        stage="experimentation",
        holder={"name": "Association Les Lices", "legal_form": "association"},
        places=[{"commune": "Rennes", "postcode": "35000"}],
        matches=[{"kind": "benevolat", "text": "Des bras pour bêcher"}],
        url="https://lices.example/jardin",
    )
    response = await client.get(page_path(sheet))
    assert response.status == 200
    html = await response.text()
    text = text_of(html)
    assert "<h1>Jardin partagé</h1>" in html
    assert "Publié par Partenaire de démonstration" in text
    assert "Porteur Association Les Lices (association)" in text
    assert "Thématiques Environnement" in text
    assert "Sous-thématiques Alimentation" in text
    assert "Stade Expérimentation" in text
    assert "Lieu 35000 Rennes (35)" in text
    assert "<strong>bacs</strong>" in html  # the sanitised description is rendered as HTML
    assert "Besoin — Bénévolat : Des bras pour bêcher" in text
    assert 'href="https://lices.example/jardin"' in html
    assert 'href="https://www.etalab.gouv.fr/licence-ouverte-open-licence"' in html


async def test_sheet_page_of_a_stored_sheet_with_unsafe_links_and_unknown_codes(client):
    """What another node sent (a hub stores harvested sheets as they come) is shown, never run."""
    ctx = context(client)
    uri = ctx.store.make_uri("ailleurs")
    data = {
        "id": uri,
        "local_id": "ailleurs",
        "title": "Fiche moissonnée",
        "partner": {"name": "Autre réseau"},
        "themes": ["ZZZ"],
        "url": "javascript:alert(1)",
        "licence": "Licence maison",
    }
    await ctx.store.upsert(sheet_from_dict(data))
    response = await client.get(urlsplit(uri).path)
    assert response.status == 200
    html = await response.text()
    assert "javascript:" not in html
    assert "Thématiques ZZZ" in text_of(html)
    assert "Licence : Licence maison" in text_of(html)


async def test_unknown_and_deleted_sheets(client):
    missing = await client.get("/sheets/00000000-0000-0000-0000-000000000000")
    assert missing.status == 404
    assert "Fiche introuvable" in await missing.text()
    assert missing.headers["X-Content-Type-Options"] == "nosniff"
    sheet = await publish(client, "jardin", "Jardin")
    await context(client).store.delete("jardin")
    gone = await client.get(page_path(sheet))
    assert gone.status == 410
    assert "Cette fiche a été supprimée" in await gone.text()


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_metrics(client):
    await publish(client, "un", "Un")
    await publish(client, "deux", "Deux")
    await publish(client, "trois", "Trois")
    await context(client).store.delete("trois")
    await admin_user(client)
    login = await client.get("/admin/login")
    csrf = lxml.html.fromstring(await login.text()).forms[0].fields["csrf"]
    await client.post("/admin/login", data={"csrf": csrf, "email": "x@y.z", "password": "nope nope nope"})

    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    lines = (await response.text()).splitlines()
    assert 'essaim_sheets{state="live"} 2' in lines
    assert 'essaim_sheets{state="deleted"} 1' in lines
    assert "# TYPE essaim_sheets gauge" in lines
    assert "# TYPE essaim_admin_login_failures_total counter" in lines
    assert "essaim_admin_login_failures_total 1" in lines
    # Every sample has its HELP and TYPE lines (the Prometheus text format).
    for line in lines:
        if line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            assert f"# TYPE {name}" in " ".join(lines), name


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/healthz",
        "/metrics",
        "/static/essaim.css",
        "/sheets/unknown",
        "/admin/login",
        "/admin",
        "/api/openapi.json",
        "/api/v1/sheets",
        "/oai?verb=Identify",
        "/nowhere",
    ],
)
async def test_security_headers_on_every_answer(client, path):
    response = await client.get(path, allow_redirects=False)
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, (path, response.status, name)


async def test_stylesheet_and_oai_are_served(client):
    css = await client.get("/static/essaim.css")
    assert css.status == 200
    assert css.content_type == "text/css"
    identify = await client.get("/oai", params={"verb": "Identify"})
    assert identify.status == 200
    body = await identify.text()
    assert f"<baseURL>{BASE_URL}/oai</baseURL>" in body
    assert "<repositoryName>Partenaire de démonstration</repositoryName>" in body
