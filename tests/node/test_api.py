"""The node's JSON API (``node/http/api.py``) over HTTP, against a real app and SQLite database,
and the OpenAPI document that describes it (``node/http/openapi.json``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from essaim.app import build_app
from node.auth import create_token, revoke_token
from tests.node_support import (
    BASE_URL,
    GOOD_ROWS,
    REPO,
    SIMPLE_COLUMNS,
    Clock,
    assert_documented,
    bearer,
    context,
    load_spec,
    node_client,
    node_settings,
    resolve,
    schema_errors,
    simple_csv,
)

SPEC = load_spec()
SHEETS = "/api/v1/sheets"
ONE = "/api/v1/sheets/{local_id}"


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[TestClient]:
    async with node_client(node_settings(tmp_path)) as client:
        context(client).store.clock = Clock()
        yield client


@pytest.fixture
async def auth(client: TestClient) -> dict[str, str]:
    return await bearer(client)


def sheet_body(local_id: str = "jardin-1", **extra: Any) -> dict[str, Any]:
    return {
        "local_id": local_id,
        "title": "Jardin partagé des Lices",
        "summary": "Un jardin ouvert à tous",
        "description": "Des **bacs** cultivés ensemble.",
        "subthemes": ["ALI"],
        "audiences": ["habitants"],
        "stage": "experimentation",
        "places": [{"commune": "Rennes", "postcode": "35000"}],
        "holder": {"name": "Association Les Lices", "siret": "123 456 789 01234"},
        "links": [{"url": "https://lices.example/jardin", "label": "Le site"}],
        **extra,
    }


async def live_count(client: TestClient) -> int:
    return await context(client).store.count()


# --------------------------------------------------------------------------- the OpenAPI document


def test_every_api_route_is_documented_and_every_documented_route_exists(tmp_path):
    app = build_app(node_settings(tmp_path))
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/") and route.method != "HEAD"
    }
    methods = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
    documented = {(method, path) for path, item in SPEC["paths"].items() for method in item if method in methods}
    assert served == documented
    assert len(served) == 8


def test_the_document_is_openapi_31_with_bearer_auth_and_resolvable_references():
    assert SPEC["openapi"].startswith("3.1.")
    assert SPEC["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": SPEC["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert SPEC["security"] == [{"bearerAuth": []}]
    assert SPEC["paths"]["/api/openapi.json"]["get"]["security"] == []

    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(SPEC)
    assert refs
    for ref in refs:
        assert resolve(SPEC, ref) is not None, ref
    operations = [op for item in SPEC["paths"].values() for op in item.values() if isinstance(op, dict)]
    operation_ids = [op["operationId"] for op in operations]
    assert len(operation_ids) == len(set(operation_ids)) == 8
    # Every error answer of every operation is a problem document (a tombstone, 410, is a representation).
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for status, response in op["responses"].items():
                if int(status) >= 400 and status != "410":
                    response = resolve(SPEC, response["$ref"]) if "$ref" in response else response
                    assert list(response["content"]) == ["application/problem+json"], (method, path, status)


async def test_openapi_is_served_without_a_token_with_this_node_as_server(client):
    response = await client.get("/api/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["servers"] == [{"url": BASE_URL}]
    assert document["paths"] == SPEC["paths"]


# --------------------------------------------------------------------------- authentication


async def test_no_token_is_401_problem_json(client):
    response = await client.get("/api/v1/sheets")
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = await assert_documented(SPEC, SHEETS, "GET", response)
    assert body["status"] == 401
    assert "essaim token create" in body["detail"]


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "essaim_abc"])
async def test_malformed_authorization_is_401(client, header):
    response = await client.get("/api/v1/sheets", headers={"Authorization": header})
    assert response.status == 401
    assert response.content_type == "application/problem+json"


async def test_unknown_and_revoked_tokens_are_401_and_a_cli_token_works(client):
    db = context(client).db
    unknown = await client.get("/api/v1/sheets", headers={"Authorization": "Bearer essaim_not-a-real-token"})
    assert unknown.status == 401
    assert (await unknown.json())["title"] == "unknown or revoked token"

    token = await create_token(db, "partner-site")  # what `essaim token create partner-site` does
    assert token.startswith("essaim_")
    ok = await client.get("/api/v1/sheets", headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 200
    row = await db.fetchone("SELECT last_used, token_hash FROM api_token WHERE name = ?", ["partner-site"])
    assert row["last_used"] is not None
    assert token not in json.dumps(row)  # only the hash is stored

    assert await revoke_token(db, "partner-site")
    revoked = await client.get("/api/v1/sheets", headers={"Authorization": f"Bearer {token}"})
    assert revoked.status == 401
    assert revoked.content_type == "application/problem+json"

    # The name of a revoked token can be given to a new one; the old secret stays dead.
    again = await create_token(db, "partner-site")
    assert (await client.get("/api/v1/sheets", headers={"Authorization": f"Bearer {again}"})).status == 200
    assert (await client.get("/api/v1/sheets", headers={"Authorization": f"Bearer {token}"})).status == 401
    with pytest.raises(ValueError, match="already exists"):
        await create_token(db, "partner-site")


async def test_unknown_api_route_and_wrong_method_are_problem_json(client, auth):
    missing = await client.get("/api/v1/nothing-here", headers=auth)
    assert missing.status == 404
    assert missing.content_type == "application/problem+json"
    assert (await missing.json())["status"] == 404
    wrong = await client.patch("/api/v1/sheets", headers=auth)
    assert wrong.status == 405
    assert wrong.content_type == "application/problem+json"
    assert "POST" in wrong.headers["Allow"]


# --------------------------------------------------------------------------- sheets CRUD


async def test_create_get_and_geocoding(client, auth):
    response = await client.post(SHEETS, json=sheet_body(), headers=auth, params={"description_format": "markdown"})
    assert response.status == 201
    body = await assert_documented(SPEC, SHEETS, "POST", response)
    assert body["status"] == "created"
    sheet = body["sheet"]
    assert sheet["id"].startswith(f"{BASE_URL}/sheets/")
    assert sheet["local_id"] == "jardin-1"
    assert sheet["partner"]["name"] == context(client).partner.name
    assert sheet["themes"] == ["ENV"] and sheet["subthemes"] == ["ALI"]  # the sub-theme brought its theme
    assert sheet["description"] == "<p>Des <strong>bacs</strong> cultivés ensemble.</p>"
    assert sheet["holder"]["siret"] == "12345678901234"
    place = sheet["places"][0]
    assert (place["insee"], place["departement"], place["region"], place["precision"]) == (
        "35238",
        "35",
        "53",
        "commune",
    )
    assert 48 < place["lat"] < 48.2 and -1.8 < place["lon"] < -1.6
    assert sheet["datestamp"] == "2023-11-14T22:13:20Z"

    got = await client.get("/api/v1/sheets/jardin-1", headers=auth)
    assert got.status == 200
    assert await assert_documented(SPEC, ONE, "GET", got) == sheet

    again = await client.post(SHEETS, json=sheet_body(), headers=auth)
    assert again.status == 409
    assert again.content_type == "application/problem+json"
    await assert_documented(SPEC, SHEETS, "POST", again)


async def test_partner_id_and_datestamp_from_the_client_are_ignored(client, auth):
    body = sheet_body(
        id="https://evil.example/sheets/1", partner={"name": "Quelqu'un d'autre"}, datestamp="2001-01-01T00:00:00Z"
    )
    sheet = (await (await client.post(SHEETS, json=body, headers=auth)).json())["sheet"]
    assert sheet["id"].startswith(f"{BASE_URL}/sheets/")
    assert sheet["partner"]["name"] == context(client).partner.name
    assert sheet["datestamp"] == "2023-11-14T22:13:20Z"


async def test_update_moves_the_datestamp_only_when_the_content_changes(client, auth):
    clock = context(client).store.clock
    created = await (await client.post(SHEETS, json=sheet_body(), headers=auth)).json()
    stamp = created["sheet"]["datestamp"]

    clock.tick(60)
    same = await client.put("/api/v1/sheets/jardin-1", json=sheet_body(), headers=auth)
    assert same.status == 200
    body = await assert_documented(SPEC, ONE, "PUT", same)
    assert body["status"] == "unchanged"
    assert body["sheet"]["datestamp"] == stamp

    clock.tick(60)
    changed = await client.put("/api/v1/sheets/jardin-1", json=sheet_body(title="Jardin des Lices"), headers=auth)
    body = await assert_documented(SPEC, ONE, "PUT", changed)
    assert (changed.status, body["status"]) == (200, "updated")
    assert body["sheet"]["title"] == "Jardin des Lices"
    assert body["sheet"]["datestamp"] == "2023-11-14T22:15:20Z"
    assert body["sheet"]["created"] == created["sheet"]["created"]  # creation date survives updates

    # PUT replaces the whole sheet; the local_id may come from the URL alone.
    replaced = await client.put(
        "/api/v1/sheets/jardin-1", json={"title": "Jardin des Lices", "themes": ["ENV"]}, headers=auth
    )
    sheet = (await replaced.json())["sheet"]
    assert sheet["local_id"] == "jardin-1"
    assert "places" not in sheet and "holder" not in sheet


async def test_put_on_a_missing_sheet_is_404_unless_upsert(client, auth):
    missing = await client.put("/api/v1/sheets/nouveau", json=sheet_body("nouveau"), headers=auth)
    assert missing.status == 404
    await assert_documented(SPEC, ONE, "PUT", missing)
    assert await live_count(client) == 0

    created = await client.put(
        "/api/v1/sheets/nouveau", json=sheet_body("nouveau"), headers=auth, params={"upsert": "true"}
    )
    assert created.status == 201
    assert (await assert_documented(SPEC, ONE, "PUT", created))["status"] == "created"
    updated = await client.put(
        "/api/v1/sheets/nouveau", json=sheet_body("nouveau", title="Autre"), headers=auth, params={"upsert": "1"}
    )
    assert updated.status == 200
    assert (await updated.json())["status"] == "updated"


async def test_put_local_id_must_match_the_url(client, auth):
    await client.post(SHEETS, json=sheet_body(), headers=auth)
    response = await client.put("/api/v1/sheets/jardin-1", json=sheet_body("autre"), headers=auth)
    assert response.status == 422
    body = await assert_documented(SPEC, ONE, "PUT", response)
    assert [e["field"] for e in body["errors"]] == ["local_id"]


async def test_delete_leaves_a_tombstone_then_404(client, auth):
    created = await (await client.post(SHEETS, json=sheet_body(), headers=auth)).json()
    context(client).store.clock.tick(30)
    deleted = await client.delete("/api/v1/sheets/jardin-1", headers=auth)
    assert deleted.status == 200
    assert await assert_documented(SPEC, ONE, "DELETE", deleted) == {
        "status": "deleted",
        "id": created["sheet"]["id"],
    }

    gone = await client.get("/api/v1/sheets/jardin-1", headers=auth)
    assert gone.status == 410
    assert await assert_documented(SPEC, ONE, "GET", gone) == {
        "id": created["sheet"]["id"],
        "local_id": "jardin-1",
        "datestamp": "2023-11-14T22:13:50Z",
        "deleted": True,
    }
    twice = await client.delete("/api/v1/sheets/jardin-1", headers=auth)
    assert twice.status == 404
    await assert_documented(SPEC, ONE, "DELETE", twice)
    never = await client.get("/api/v1/sheets/never-existed", headers=auth)
    assert never.status == 404
    await assert_documented(SPEC, ONE, "GET", never)
    listed = await (await client.get(SHEETS, headers=auth)).json()
    assert listed["total"] == 0

    # The same local id can be created again: same URI, live again.
    revived = await client.post(SHEETS, json=sheet_body(), headers=auth)
    assert revived.status == 201
    assert (await revived.json())["sheet"]["id"] == created["sheet"]["id"]


async def test_list_pages_newest_first_and_filters(client, auth):
    clock = context(client).store.clock
    for n in range(5):
        await client.post(SHEETS, json=sheet_body(f"projet-{n}", title=f"Projet numéro {n}"), headers=auth)
        clock.tick(5)
    await client.post(SHEETS, json=sheet_body("autre", title="Ressourcerie"), headers=auth)

    first = await client.get(SHEETS, headers=auth, params={"limit": "2"})
    body = await assert_documented(SPEC, SHEETS, "GET", first)
    assert (body["total"], body["limit"], body["offset"]) == (6, 2, 0)
    assert [i["local_id"] for i in body["items"]] == ["autre", "projet-4"]
    second = await (await client.get(SHEETS, headers=auth, params={"limit": "2", "offset": "2"})).json()
    assert [i["local_id"] for i in second["items"]] == ["projet-3", "projet-2"]
    last = await (await client.get(SHEETS, headers=auth, params={"limit": "2", "offset": "5"})).json()
    assert [i["local_id"] for i in last["items"]] == ["projet-0"]
    assert last["items"][0]["datestamp"] == "2023-11-14T22:13:20Z"

    found = await (await client.get(SHEETS, headers=auth, params={"q": "NUMÉRO"})).json()
    assert found["total"] == 5
    by_id = await (await client.get(SHEETS, headers=auth, params={"q": "autre"})).json()
    assert [i["title"] for i in by_id["items"]] == ["Ressourcerie"]

    capped = await (await client.get(SHEETS, headers=auth, params={"limit": "5000"})).json()
    assert capped["limit"] == 200
    for bad in ({"limit": "0"}, {"limit": "-1"}, {"offset": "-3"}, {"limit": "deux"}):
        response = await client.get(SHEETS, headers=auth, params=bad)
        assert response.status == 400, bad
        await assert_documented(SPEC, SHEETS, "GET", response)


# --------------------------------------------------------------------------- validation


async def test_validation_errors_name_every_bad_field(client, auth):
    body = {
        "local_id": "x",
        "stage": "bientôt",
        "holder": {"name": "Asso", "siret": "123"},
        "places": [{"commune": "Rennes", "lat": 123}],
        "themes": ["ZZZ"],
        "url": "javascript:alert(1)",
    }
    response = await client.post(SHEETS, json=body, headers=auth)
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await assert_documented(SPEC, SHEETS, "POST", response)
    fields = {e["field"]: e["message"] for e in problem["errors"]}
    assert {"title", "stage", "holder.siret", "places[0].lat"} <= set(fields)
    assert "is required" in fields["title"]
    assert "must be 14 digits" in fields["holder.siret"]
    assert await live_count(client) == 0

    # Field-level checks that need a structurally valid sheet come next.
    second = await client.post(
        SHEETS, json={"local_id": "x", "title": "T", "themes": ["ZZZ"], "url": "javascript:alert(1)"}, headers=auth
    )
    fields = {e["field"]: e["message"] for e in (await second.json())["errors"]}
    assert fields.keys() == {"themes", "url"}
    assert "ZZZ" in fields["themes"]
    assert "http(s)" in fields["url"]
    body = {"local_id": "x", "title": "T", "links": [{"url": "https://ok.example"}, {"url": "ftp://x"}]}
    links = await client.post(SHEETS, json=body, headers=auth)
    assert [e["field"] for e in (await links.json())["errors"]] == ["links[1].url"]


async def test_a_body_that_is_not_a_json_object_is_refused(client, auth):
    not_json = await client.post(SHEETS, data=b"{title: oops", headers={**auth, "Content-Type": "application/json"})
    assert not_json.status == 400
    assert not_json.content_type == "application/problem+json"
    assert "not JSON" in (await assert_documented(SPEC, SHEETS, "POST", not_json))["title"]
    array = await client.post(SHEETS, json=[sheet_body()], headers=auth)
    assert array.status == 422
    assert (await array.json())["errors"][0]["field"] == ""
    bad_format = await client.post(SHEETS, json=sheet_body(), headers=auth, params={"description_format": "rtf"})
    assert bad_format.status == 422
    assert [e["field"] for e in (await bad_format.json())["errors"]] == ["description_format"]


# --------------------------------------------------------------------------- import


async def test_import_a_simple_csv_then_again_then_dry_run(client, auth):
    response = await client.post(
        "/api/v1/import",
        data=simple_csv(*GOOD_ROWS),
        headers={**auth, "Content-Type": "text/csv"},
        params={"mapping": "simple", "filename": "projets.csv"},
    )
    assert response.status == 200, await response.text()
    report = await assert_documented(SPEC, "/api/v1/import", "POST", response)
    assert report["ok"] is True
    assert report["file"] == "projets.csv"
    assert (report["rows"], report["sheets"], report["created"], report["updated"]) == (2, 2, 2, 0)
    assert report["geocoding"] == {"commune": 2}

    garden = await (await client.get("/api/v1/sheets/jardin-1", headers=auth)).json()
    assert garden["title"] == "Jardin partagé des Lices"
    assert garden["stage"] == "experimentation"
    assert garden["audiences"] == ["habitants", "seniors"]
    assert garden["description"] == "<p>Des <strong>bacs</strong> cultivés ensemble.</p>"
    assert garden["places"][0]["insee"] == "35238"
    assert garden["holder"] == {"name": "Association Les Lices", "siret": "12345678901234"}

    context(client).store.clock.tick(100)
    again = await (
        await client.post("/api/v1/import", data=simple_csv(*GOOD_ROWS), headers=auth, params={"mapping": "simple"})
    ).json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 2)
    garden_again = await (await client.get("/api/v1/sheets/jardin-1", headers=auth)).json()
    assert garden_again["datestamp"] == garden["datestamp"]

    third = {"identifiant": "troisieme", "titre": "Troisième projet", "commune": "Lorient"}
    dry = await client.post(
        "/api/v1/import",
        data=simple_csv(*GOOD_ROWS, third),
        headers=auth,
        params={"mapping": "simple", "dry_run": "true"},
    )
    report = await assert_documented(SPEC, "/api/v1/import", "POST", dry)
    assert (report["dry_run"], report["created"], report["unchanged"]) == (True, 1, 2)
    assert await live_count(client) == 2
    assert (await client.get("/api/v1/sheets/troisieme", headers=auth)).status == 404


async def test_import_as_a_multipart_form(client, auth):
    form = FormData()
    form.add_field("file", simple_csv(GOOD_ROWS[1]), filename="brest.csv", content_type="text/csv")
    response = await client.post("/api/v1/import", data=form, headers=auth, params={"mapping": "simple"})
    assert response.status == 200
    report = await response.json()
    assert (report["file"], report["created"]) == ("brest.csv", 1)


async def test_a_broken_import_is_422_names_line_field_column_and_writes_nothing(client, auth):
    rows = [
        GOOD_ROWS[0],
        {"identifiant": "sans-titre", "commune": "Brest"},
        {"identifiant": "siret", "titre": "Mauvais SIRET", "porteur": "Asso", "siret": "42"},
        {"identifiant": "stade", "titre": "Mauvais stade", "stade": "Bientôt"},
    ]
    response = await client.post(
        "/api/v1/import", data=simple_csv(*rows), headers=auth, params={"mapping": "simple", "filename": "a.csv"}
    )
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await assert_documented(SPEC, "/api/v1/import", "POST", response)
    assert problem["ok"] is False
    assert problem["error_count"] == 3
    found = {(e["line"], e["field"], e["column"]) for e in problem["errors"]}
    assert found == {(3, "title", "titre"), (4, "holder.siret", "siret"), (5, "stage", "stade")}
    assert await live_count(client) == 0  # not even the good first row


async def test_import_request_errors(client, auth):
    no_mapping = await client.post("/api/v1/import", data=simple_csv(*GOOD_ROWS), headers=auth)
    assert no_mapping.status == 400
    assert "simple" in (await assert_documented(SPEC, "/api/v1/import", "POST", no_mapping))["mappings"]

    unknown = await client.post("/api/v1/import", data=simple_csv(*GOOD_ROWS), headers=auth, params={"mapping": "nope"})
    assert unknown.status == 400
    problem = await assert_documented(SPEC, "/api/v1/import", "POST", unknown)
    assert "nope" in problem["error"]

    # Over HTTP a mapping is a built-in one, never a path on the server.
    path = await client.post(
        "/api/v1/import",
        data=simple_csv(*GOOD_ROWS),
        headers=auth,
        params={"mapping": str(REPO / "node" / "mappings" / "simple.toml")},
    )
    assert path.status == 400
    assert (await path.json())["mappings"] == ["apcis", "native", "simple"]

    columns = [c for c in SIMPLE_COLUMNS if c not in ("titre", "commune")]
    wrong_header = await client.post(
        "/api/v1/import",
        data=simple_csv(*GOOD_ROWS, columns=columns),
        headers=auth,
        params={"mapping": "simple"},
    )
    assert wrong_header.status == 422
    problem = await assert_documented(SPEC, "/api/v1/import", "POST", wrong_header)
    assert "'titre'" in problem["error"] and "'commune'" in problem["error"]
    assert await live_count(client) == 0


async def test_an_upload_over_the_size_limit_is_413(client, auth):
    context(client).max_upload = 1000
    response = await client.post("/api/v1/import", data=b"x" * 5000, headers=auth, params={"mapping": "simple"})
    assert response.status == 413
    assert response.content_type == "application/problem+json"
    await assert_documented(SPEC, "/api/v1/import", "POST", response)


# --------------------------------------------------------------------------- export


@pytest.fixture
async def two_sheets(client, auth) -> list[dict[str, Any]]:
    first = sheet_body(title='=HYPERLINK("https://evil.example")')
    second = sheet_body("sans-lieu", title="Projet sans lieu", places=[])
    return [(await (await client.post(SHEETS, json=body, headers=auth)).json())["sheet"] for body in (first, second)]


async def test_export_csv(client, auth, two_sheets):
    response = await client.get("/api/v1/export", headers=auth, params={"format": "csv"})
    assert response.status == 200
    assert response.content_type == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="essaim-export.csv"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert [r["local_id"] for r in rows] == ["jardin-1", "sans-lieu"]
    assert rows[0]["title"] == '\'=HYPERLINK("https://evil.example")'  # neutralised for spreadsheets
    assert (rows[0]["insee"], rows[0]["commune"]) == ("35238", "Rennes")
    assert rows[0]["id"] == two_sheets[0]["id"]


async def test_export_json_is_the_sheets(client, auth, two_sheets):
    response = await client.get("/api/v1/export", headers=auth)  # json by default
    assert response.status == 200
    sheets = await assert_documented(SPEC, "/api/v1/export", "GET", response)
    assert sheets == two_sheets


async def test_export_jsonl_is_one_sheet_per_line(client, auth, two_sheets):
    response = await client.get("/api/v1/export", headers=auth, params={"format": "jsonl"})
    assert response.content_type == "application/x-ndjson"
    lines = (await response.text()).splitlines()
    assert [json.loads(line) for line in lines] == two_sheets


async def test_export_geojson_has_one_point_per_located_place(client, auth, two_sheets):
    response = await client.get("/api/v1/export", headers=auth, params={"format": "geojson"})
    assert response.content_type == "application/geo+json"
    collection = await assert_documented(SPEC, "/api/v1/export", "GET", response)
    assert collection["metadata"]["source"] == BASE_URL
    [feature] = collection["features"]
    place = two_sheets[0]["places"][0]
    assert feature["geometry"] == {"type": "Point", "coordinates": [place["lon"], place["lat"]]}
    assert feature["properties"]["sheet"] == two_sheets[0]["id"]
    assert feature["properties"]["insee"] == "35238"


async def test_export_unknown_format_is_400(client, auth):
    response = await client.get("/api/v1/export", headers=auth, params={"format": "xlsx"})
    assert response.status == 400
    await assert_documented(SPEC, "/api/v1/export", "GET", response)


def test_schema_checker_catches_mismatches():
    """The checker the tests above rely on does fail on a wrong body."""
    sheet = {"$ref": "#/components/schemas/Sheet"}
    assert schema_errors(SPEC, sheet, {"id": "https://x/sheets/1", "local_id": "a", "title": "t"})
    bad_place = {
        "id": "https://x/sheets/1",
        "local_id": "a",
        "title": "t",
        "partner": {"name": "p"},
        "datestamp": "2024-01-01T00:00:00Z",
        "places": [{"lat": "48", "precision": "street"}],
    }
    errors = schema_errors(SPEC, sheet, bad_place)
    assert any("places[0].lat" in e for e in errors) and any("places[0].precision" in e for e in errors)
    assert not schema_errors(SPEC, sheet, {**bad_place, "places": [{"lat": 48.1, "precision": "commune"}]})
