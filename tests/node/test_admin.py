"""The server-rendered admin (``node/http/admin.py``), in French, driven like a browser would:
real forms parsed from the pages, the session and CSRF cookies kept by the client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import lxml.html
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from node.auth import SessionSigner
from node.editing import prepare_sheet
from node.http.admin import SESSION
from protocol.sheet import Sheet, Tombstone
from tests.node_support import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    GOOD_ROWS,
    Clock,
    admin_user,
    context,
    csrf_of,
    node_client,
    node_settings,
    sign_in,
    simple_csv,
)

ADMIN_PAGES = [
    "/admin",
    "/admin/sheets",
    "/admin/sheets/new",
    "/admin/sheets/jardin-1",
    "/admin/import",
    "/admin/imports/1",
    "/admin/import/simple.csv",
    "/admin/export?format=csv",
]


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[TestClient]:
    async with node_client(node_settings(tmp_path)) as client:
        context(client).store.clock = Clock()
        await admin_user(client)
        yield client


@pytest.fixture
async def csrf(client) -> str:
    return await sign_in(client)


def form_of(html: str, action: str) -> list[tuple[str, str]]:
    """What a browser submits from the form posting to ``action``: every named field, checked
    boxes only, the selected (or first) option of each list; no file or button."""
    page = lxml.html.fromstring(html)
    forms = [f for f in page.forms if f.get("action") == action]
    assert forms, f"no form posting to {action}"
    values: list[tuple[str, str]] = []
    for field in forms[0].xpath(".//input[@name] | .//textarea[@name] | .//select[@name]"):
        name = field.get("name")
        if field.tag == "textarea":
            values.append((name, field.text or ""))
        elif field.tag == "select":
            options = field.xpath(".//option")
            chosen = [o for o in options if o.get("selected") is not None] or options[:1]
            values += [(name, o.get("value", o.text_content())) for o in chosen]
        elif field.get("type") in ("checkbox", "radio"):
            if field.get("checked") is not None:
                values.append((name, field.get("value", "on")))
        elif field.get("type") not in ("file", "submit", "button", "image", "reset"):
            values.append((name, field.get("value", "")))
    return values


def replace_field(values: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    assert any(n == name for n, _ in values), f"no field {name}"
    return [(n, value if n == name else v) for n, v in values]


def text_of(html: str) -> str:
    return " ".join(lxml.html.fromstring(html).text_content().split())


async def add_sheet(client: TestClient, local_id: str, title: str, **extra: Any) -> Sheet:
    """A sheet written the way the API writes one (validated, geocoded, the node as partner)."""
    ctx = context(client)
    data = {"local_id": local_id, "title": title, **extra}
    await ctx.store.upsert(prepare_sheet(data, partner=ctx.partner, licence=ctx.licence, resolver=ctx.resolver))
    stored = await ctx.store.get(local_id)
    assert isinstance(stored, Sheet)
    return stored


# --------------------------------------------------------------------------- sessions


@pytest.mark.parametrize("path", ADMIN_PAGES)
async def test_every_admin_page_redirects_to_the_login_without_a_session(client, path):
    response = await client.get(path, allow_redirects=False)
    assert response.status == 303
    location = response.headers["Location"]
    assert location.startswith("/admin/login?next=")
    assert response.headers["X-Frame-Options"] == "DENY"  # security headers on redirects too
    login = await client.get(location)
    assert login.status == 200
    html = await login.text()
    assert '<html lang="fr">' in html
    assert "Connexion à l'administration" in html
    assert lxml.html.fromstring(html).forms[0].fields["next"] == path


async def test_admin_posts_without_a_session_redirect_and_write_nothing(client):
    await add_sheet(client, "jardin-1", "Jardin")
    response = await client.post("/admin/sheets/jardin-1/delete", data={"csrf": "x"}, allow_redirects=False)
    assert response.status == 303
    assert isinstance(await context(client).store.get("jardin-1"), Sheet)


async def test_sign_in_with_a_cli_created_user(client):
    page = await client.get("/admin/login")
    assert page.cookies["essaim_login_csrf"]["httponly"]
    response = await client.post(
        "/admin/login",
        data={"csrf": csrf_of(await page.text()), "email": " Camille@Reseau.TEST ", "password": ADMIN_PASSWORD},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == "/admin"
    session = response.cookies[SESSION]
    assert session["httponly"] and session["path"] == "/admin" and session["samesite"] == "Lax"
    assert not session["secure"]  # the test node is served over http
    home = await client.get("/admin")
    assert home.status == 200
    assert home.headers["Cache-Control"] == "no-store"
    html = await home.text()
    assert "Mes fiches projets" in html and "Se déconnecter" in html


@pytest.mark.parametrize(
    ("email", "password"), [(ADMIN_EMAIL, "wrong password!"), ("personne@reseau.test", ADMIN_PASSWORD)]
)
async def test_a_wrong_password_or_email_fails_with_a_french_message(client, email, password):
    page = await client.get("/admin/login")
    response = await client.post(
        "/admin/login",
        data={"csrf": csrf_of(await page.text()), "email": email, "password": password},
        allow_redirects=False,
    )
    assert response.status == 401
    assert "Adresse ou mot de passe incorrect." in await response.text()
    assert SESSION not in response.cookies
    again = await client.get("/admin", allow_redirects=False)
    assert again.status == 303


async def test_login_without_its_csrf_token_is_403(client):
    await client.get("/admin/login")
    response = await client.post("/admin/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert response.status == 403
    assert "Jeton CSRF invalide" in await response.text()
    forged = await client.post(
        "/admin/login", data={"csrf": "forged", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert forged.status == 403


async def test_login_never_redirects_off_the_admin(client):
    page = await client.get("/admin/login")
    response = await client.post(
        "/admin/login",
        data={
            "csrf": csrf_of(await page.text()),
            "email": ADMIN_EMAIL,
            "password": ADMIN_PASSWORD,
            "next": "https://evil.example/admin",
        },
        allow_redirects=False,
    )
    assert response.headers["Location"] == "/admin"


async def test_login_returns_to_the_page_asked_for(client):
    await add_sheet(client, "jardin-1", "Jardin")
    first = await client.get("/admin/sheets/jardin-1")  # followed to the login page
    form = form_of(await first.text(), "/admin/login")
    form = replace_field(form, "email", ADMIN_EMAIL)
    form = replace_field(form, "password", ADMIN_PASSWORD)
    response = await client.post("/admin/login", data=form, allow_redirects=False)
    assert response.headers["Location"] == "/admin/sheets/jardin-1"


async def test_forged_and_expired_sessions_are_refused(client):
    signer: SessionSigner = context(client).signer
    client.session.cookie_jar.update_cookies({SESSION: "1.9999999999.not-a-signature"})
    assert (await client.get("/admin", allow_redirects=False)).status == 303
    expired = SessionSigner(signer.key, ttl=-10).issue(1)
    client.session.cookie_jar.update_cookies({SESSION: expired})
    assert (await client.get("/admin", allow_redirects=False)).status == 303
    valid = signer.issue(1)
    client.session.cookie_jar.update_cookies({SESSION: valid})
    assert (await client.get("/admin", allow_redirects=False)).status == 200


@pytest.mark.parametrize(
    "action", ["/admin/sheets/new", "/admin/sheets/jardin-1", "/admin/sheets/jardin-1/delete", "/admin/logout"]
)
async def test_posts_without_the_csrf_token_are_403(client, csrf, action):
    await add_sheet(client, "jardin-1", "Jardin")
    for data in ({"local_id": "pirate", "title": "Pirate"}, {"csrf": "0" * 64, "local_id": "p", "title": "P"}):
        response = await client.post(action, data=data, allow_redirects=False)
        assert response.status == 403
        assert "Jeton CSRF invalide" in await response.text()
    assert (await context(client).store.get("jardin-1")).title == "Jardin"
    assert await context(client).store.get("pirate") is None
    assert (await client.get("/admin", allow_redirects=False)).status == 200  # still signed in


async def test_import_upload_without_the_csrf_token_is_403(client, csrf):
    form = FormData()
    form.add_field("mapping", "simple")
    form.add_field("file", simple_csv(*GOOD_ROWS), filename="projets.csv", content_type="text/csv")
    response = await client.post("/admin/import", data=form, allow_redirects=False)
    assert response.status == 403
    assert await context(client).store.count() == 0


async def test_logout(client, csrf):
    response = await client.post("/admin/logout", data={"csrf": csrf}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/admin/login"
    assert response.cookies[SESSION].value == ""
    assert (await client.get("/admin", allow_redirects=False)).status == 303


async def test_session_cookies_are_secure_on_an_https_node(tmp_path):
    async with node_client(node_settings(tmp_path, base_url="https://noeud.essaim.test")) as client:
        page = await client.get("/admin/login")
        assert page.cookies["essaim_login_csrf"]["secure"]


# --------------------------------------------------------------------------- list and search


async def test_list_search_and_pages(client, csrf):
    clock = context(client).store.clock
    for n in range(52):
        await add_sheet(client, f"projet-{n:02d}", f"Projet solidaire {n:02d}")
        clock.tick(1)
    await add_sheet(client, "repair", "Repair café <Brest>")
    html = await (await client.get("/admin")).text()
    assert "Mes fiches projets (53)" in text_of(html)
    assert "Fiches 1 à 50 sur 53" in text_of(html)
    assert "Repair café &lt;Brest&gt;" in html  # escaped
    assert 'href="/admin/sheets/repair"' in html
    assert "Page 1 / 2" in text_of(html)

    second = text_of(await (await client.get("/admin", params={"page": "2"})).text())
    assert "Fiches 51 à 53 sur 53" in second
    assert "Projet solidaire 00" in second

    found = await (await client.get("/admin", params={"q": "repair"})).text()
    assert "Mes fiches projets (1)" in text_of(found)
    assert "Projet solidaire" not in found
    none = await (await client.get("/admin", params={"q": "introuvable"})).text()
    assert "Aucune fiche ne correspond à « introuvable »." in text_of(none)
    alias = await client.get("/admin/sheets", params={"q": "repair"}, allow_redirects=False)
    assert alias.headers["Location"] == "/admin?q=repair"


# --------------------------------------------------------------------------- create, edit, delete


async def test_create_a_sheet_with_the_form_and_geolocate_its_place(client, csrf):
    page = await (await client.get("/admin/sheets/new")).text()
    assert "Nouvelle fiche" in page
    form = form_of(page, "/admin/sheets/new")
    form = replace_field(form, "local_id", "jardin-1")
    form = replace_field(form, "title", "Jardin partagé")
    form = replace_field(form, "description", "Des **bacs** partagés.\n\nEt des [outils](https://outils.example).")
    form = replace_field(form, "place-0-commune", "Rennes")
    form = replace_field(form, "place-0-postcode", "35000")
    form = replace_field(form, "match-0-text", "Des bras pour bêcher")
    form = replace_field(form, "links", "https://jardin.example\r\nhttps://jardin.example/agenda")
    form += [("codes", "ALI"), ("audiences", "habitants")]
    response = await client.post("/admin/sheets/new", data=form, allow_redirects=False)
    assert response.status == 303, text_of(await response.text())
    assert response.headers["Location"] == "/admin/sheets/jardin-1?saved=1"

    sheet = await context(client).store.get("jardin-1")
    assert isinstance(sheet, Sheet)
    assert sheet.title == "Jardin partagé"
    assert (sheet.themes, sheet.subthemes, sheet.audiences) == (("ENV",), ("ALI",), ("habitants",))
    assert sheet.description == (
        "<p>Des <strong>bacs</strong> partagés.</p>\n"
        '<p>Et des <a href="https://outils.example" rel="nofollow noopener">outils</a>.</p>'
    )
    [place] = sheet.places
    assert (place.insee, place.departement, place.region, place.precision.value) == ("35238", "35", "53", "commune")
    assert place.lat is not None and place.lon is not None
    assert sheet.matches[0].text == "Des bras pour bêcher"
    assert [link.url for link in sheet.links] == ["https://jardin.example", "https://jardin.example/agenda"]

    saved = await (await client.get(response.headers["Location"])).text()
    assert "Fiche enregistrée." in saved
    assert "INSEE 35238, département 35, région 53" in text_of(saved)
    assert f'href="{sheet.id}"' in saved  # link to the public page


async def test_edit_a_sheet_through_its_form(client, csrf):
    await add_sheet(client, "jardin-1", "Jardin")
    page = await (await client.get("/admin/sheets/jardin-1")).text()
    assert "Modifier « Jardin »" in page
    form = form_of(page, "/admin/sheets/jardin-1")
    form = replace_field(form, "title", "Jardin des Lices")
    form = replace_field(form, "place-0-commune", "Brest")
    form = replace_field(form, "place-0-postcode", "29200")
    response = await client.post("/admin/sheets/jardin-1", data=form, allow_redirects=False)
    assert response.status == 303
    sheet = await context(client).store.get("jardin-1")
    assert sheet.title == "Jardin des Lices"
    assert (sheet.places[0].commune, sheet.places[0].insee, sheet.places[0].departement) == ("Brest", "29019", "29")


async def test_saving_an_untouched_form_keeps_the_sheet_and_its_datestamp(client, csrf):
    """The form shows part of a sheet: what it cannot show (tags, coordinates, link labels,
    award years...) survives a save, and a save without changes is no change."""
    original = await add_sheet(
        client,
        "riche",
        "Fiche complète",
        description="<p>Première ligne</p><p>Deuxième ligne</p>",
        themes=["EDU"],
        subthemes=["ALI"],
        tags=[{"tag": "jardinage", "codes": ["ALI"]}],
        licence="https://creativecommons.org/licenses/by/4.0/",
        places=[
            {"commune": "Rennes", "postcode": "35000", "lat": 48.1, "lon": -1.67, "scope": "regional"},
            {"commune": "Brest", "postcode": "29200"},
            {"commune": "Lorient"},
            {"commune": "Vannes"},
        ],
        links=[{"url": "https://riche.example", "label": "Le site", "rel": "website"}],
        images=[{"url": "https://riche.example/photo.jpg", "alt": "Le jardin"}],
        awards=[{"name": "Prix de l'innovation", "year": 2021}],
        contact={"name": "Camille", "url": "https://riche.example/contact"},
        matches=[{"kind": "benevolat", "text": "Des bras", "start": "2024-01-01"}],
    )
    context(client).store.clock.tick(100)
    page = await (await client.get("/admin/sheets/riche")).text()
    form = form_of(page, "/admin/sheets/riche")
    assert ("codes", "EDU") in form  # a theme without sub-theme has its own box
    response = await client.post("/admin/sheets/riche", data=form, allow_redirects=False)
    assert response.status == 303, text_of(await response.text())
    after = await context(client).store.get("riche")
    assert after == original

    form = replace_field(form, "summary", "Un résumé")
    await client.post("/admin/sheets/riche", data=form, allow_redirects=False)
    changed = await context(client).store.get("riche")
    assert changed.summary == "Un résumé"
    assert changed.datestamp > original.datestamp
    assert (changed.tags, changed.places, changed.links, changed.awards) == (
        original.tags,
        original.places,
        original.links,
        original.awards,
    )


async def test_an_invalid_form_is_shown_again_with_french_errors(client, csrf):
    page = await (await client.get("/admin/sheets/new")).text()
    form = form_of(page, "/admin/sheets/new")
    form = replace_field(form, "local_id", "incomplete")
    form = replace_field(form, "summary", "Un résumé gardé")
    form = replace_field(form, "holder-name", "Asso")
    form = replace_field(form, "holder-siret", "123")
    response = await client.post("/admin/sheets/new", data=form, allow_redirects=False)
    assert response.status == 422
    html = await response.text()
    text = text_of(html)
    assert "La fiche n'a pas été enregistrée" in text
    assert "title" in text and "holder.siret" in text
    assert "Un résumé gardé" in html  # what was typed is kept
    assert await context(client).store.get("incomplete") is None


async def test_a_used_identifier_is_refused_for_a_new_sheet(client, csrf):
    await add_sheet(client, "jardin-1", "Jardin")
    form = form_of(await (await client.get("/admin/sheets/new")).text(), "/admin/sheets/new")
    form = replace_field(form, "local_id", "jardin-1")
    form = replace_field(form, "title", "Un autre")
    response = await client.post("/admin/sheets/new", data=form, allow_redirects=False)
    assert response.status == 409
    assert "L'identifiant « jardin-1 » est déjà utilisé." in text_of(await response.text())
    assert (await context(client).store.get("jardin-1")).title == "Jardin"


async def test_delete_a_sheet(client, csrf):
    await add_sheet(client, "jardin-1", "Jardin")
    page = await (await client.get("/admin/sheets/jardin-1")).text()
    form = form_of(page, "/admin/sheets/jardin-1/delete")
    response = await client.post("/admin/sheets/jardin-1/delete", data=form, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/admin"
    assert isinstance(await context(client).store.get("jardin-1"), Tombstone)
    gone = await client.get("/admin/sheets/jardin-1")
    assert gone.status == 404
    assert "Fiche introuvable" in await gone.text()
    assert "Mes fiches projets (0)" in text_of(await (await client.get("/admin")).text())


# --------------------------------------------------------------------------- import and export


async def upload(client: TestClient, csrf: str, content: bytes, *, dry_run: bool, mapping: str = "simple") -> str:
    form = FormData()
    form.add_field("csrf", csrf)
    form.add_field("mapping", mapping)
    if dry_run:
        form.add_field("dry_run", "on")
    form.add_field("file", content, filename="projets.csv", content_type="text/csv")
    response = await client.post("/admin/import", data=form, allow_redirects=False)
    assert response.status == 303, await response.text()
    location = response.headers["Location"]
    assert re.fullmatch(r"/admin/imports/\d+", location)
    return location


async def test_import_a_file_and_read_its_report(client, csrf):
    page = await (await client.get("/admin/import")).text()
    assert "Importer des fiches" in page
    assert '<option value="simple">' in page

    dry = await upload(client, csrf, simple_csv(*GOOD_ROWS), dry_run=True)
    report = text_of(await (await client.get(dry)).text())
    assert "Rapport : projets.csv (essai à blanc)" in report
    assert "Rien n'a été écrit (essai)" in report
    assert "2 lignes, 2 fiches — 2 créées, 0 modifiées, 0 inchangées" in report
    assert await context(client).store.count() == 0

    real = await upload(client, csrf, simple_csv(*GOOD_ROWS), dry_run=False)
    report = text_of(await (await client.get(real)).text())
    assert "Import réussi : 2 lignes, 2 fiches — 2 créées" in report
    assert "commune : 2" in report  # geocoding summary
    assert await context(client).store.count() == 2
    assert (await context(client).store.get("jardin-1")).places[0].insee == "35238"

    history = await (await client.get("/admin/import")).text()
    assert history.count('href="/admin/imports/') == 2
    assert "réussi (essai)" in text_of(history)


async def test_a_refused_import_report_names_line_field_and_column(client, csrf):
    broken = simple_csv(GOOD_ROWS[0], {"identifiant": "x", "titre": "Mauvais SIRET", "porteur": "A", "siret": "42"})
    location = await upload(client, csrf, broken, dry_run=False)
    html = await (await client.get(location)).text()
    text = text_of(html)
    assert "Import refusé : rien n'a été écrit. 1 erreur(s)" in text
    cells = [td.text_content() for td in lxml.html.fromstring(html).xpath("//table//tbody//td")]
    assert cells[:3] == ["3", "holder.siret", "siret"]
    assert await context(client).store.count() == 0


async def test_an_unknown_mapping_is_reported(client, csrf):
    location = await upload(client, csrf, simple_csv(*GOOD_ROWS), dry_run=False, mapping="inconnu")
    text = text_of(await (await client.get(location)).text())
    assert "Import refusé" in text and "no mapping 'inconnu'" in text
    assert (await client.get("/admin/imports/999")).status == 404


async def test_the_spreadsheet_template_imports_as_is(client, csrf):
    response = await client.get("/admin/import/simple.csv")
    assert response.status == 200
    assert response.content_type == "text/csv"
    body = await response.read()
    assert body.startswith("\ufeffidentifiant,titre,".encode())
    assert (await client.get("/admin/import/native.csv")).status == 404
    # The template plus one row is a valid import.
    filled = body + "modele-1,Depuis le modèle,,,,,,,,,,,,,,,,,,,,,,,\r\n".encode()
    location = await upload(client, csrf, filled, dry_run=False)
    assert "1 créées" in text_of(await (await client.get(location)).text())


async def test_admin_export(client, csrf):
    await add_sheet(client, "jardin-1", "Jardin")
    response = await client.get("/admin/export", params={"format": "csv"})
    assert response.status == 200
    assert response.content_type == "text/csv"
    lines = (await response.text()).splitlines()
    assert lines[0].startswith("id,local_id,title")
    assert "jardin-1" in lines[1]
