"""Shared helpers of the node's HTTP tests: a real app on a temporary SQLite database, a
"simple"-mapping CSV writer, the admin sign-in, and a small checker of JSON bodies
against the schemas of ``node/http/openapi.json`` (the subset of JSON Schema it uses).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from essaim.app import build_app
from essaim.settings import Settings, load_settings
from node.auth import create_token, create_user
from node.context import NODE, NodeContext

REPO = Path(__file__).resolve().parents[1]
SPEC_PATH = REPO / "node" / "http" / "openapi.json"
BASE_URL = "http://noeud.essaim.test"
ADMIN_EMAIL = "camille@reseau.test"
ADMIN_PASSWORD = "correct horse battery"

# Every column of the built-in "simple" mapping, in the order of its template.
SIMPLE_COLUMNS = [
    "identifiant",
    "titre",
    "résumé",
    "description",
    "url",
    "porteur",
    "forme juridique",
    "siret",
    "thèmes",
    "sous-thèmes",
    "mots-clés",
    "publics",
    "stade",
    "ingénierie",
    "adresse",
    "code postal",
    "commune",
    "portée",
    "date de début",
    "date de fin",
    "contact",
    "courriel",
    "téléphone",
    "images",
    "liens",
]


def node_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings of a node whose data (SQLite database, secrets) live in ``data_dir``."""
    values = {"data_dir": str(data_dir), "base_url": BASE_URL, **overrides}
    return load_settings(environ={"ESSAIM_DATA_DIR": str(data_dir)}, overrides=values)


class Clock:
    """A settable clock for the sheet store (datestamps have second precision)."""

    def __init__(self, now: float = 1_700_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 10) -> None:
        self.now += seconds


@asynccontextmanager
async def node_client(settings: Settings) -> AsyncIterator[TestClient]:
    """The whole node app (``build_app``) served on a loopback port, with a cookie-keeping client."""
    client = TestClient(TestServer(build_app(settings), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def context(client: TestClient) -> NodeContext:
    return client.server.app[NODE]


async def bearer(client: TestClient, name: str = "tests") -> dict[str, str]:
    """A token made the way ``essaim token create`` makes it, as request headers."""
    token = await create_token(context(client).db, name)
    return {"Authorization": f"Bearer {token}"}


async def admin_user(client: TestClient, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> None:
    """A user made the way ``essaim admin create-user`` makes it (scrypt)."""
    await create_user(context(client).db, email, password)


_HIDDEN_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = _HIDDEN_CSRF.search(html)
    assert found, "no CSRF field in the page"
    return found.group(1)


async def sign_in(client: TestClient, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> str:
    """Sign in through the login form; returns the CSRF token of the admin's forms."""
    page = await client.get("/admin/login")
    assert page.status == 200
    response = await client.post(
        "/admin/login",
        data={"csrf": csrf_of(await page.text()), "email": email, "password": password, "next": "/admin"},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    home = await client.get("/admin")
    assert home.status == 200
    return csrf_of(await home.text())


def simple_csv(*rows: Mapping[str, str], columns: list[str] | None = None) -> bytes:
    """A CSV file in the layout of the "simple" mapping (missing cells are empty)."""
    columns = columns or SIMPLE_COLUMNS
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns])
    return buffer.getvalue().encode("utf-8")


GOOD_ROWS = [
    {
        "identifiant": "jardin-1",
        "titre": "Jardin partagé des Lices",
        "résumé": "Un jardin ouvert à tous",
        "description": "Des **bacs** cultivés ensemble.",
        "porteur": "Association Les Lices",
        "siret": "12345678901234",
        "sous-thèmes": "ALI",
        "publics": "habitants;seniors",
        "stade": "Expérimentation",
        "code postal": "35000",
        "commune": "Rennes",
        "liens": "https://lices.example/jardin",
    },
    {
        "identifiant": "repair-2",
        "titre": "Repair café de Brest",
        "thèmes": "ENV",
        "stade": "Essaimage",
        "commune": "Brest",
        "code postal": "29200",
    },
]


# --------------------------------------------------------------------------- OpenAPI


def load_spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


def response_schema(spec: dict[str, Any], path: str, method: str, status: int, media_type: str) -> dict[str, Any]:
    """The schema the spec declares for one answer (resolving a response ``$ref``)."""
    operation = spec["paths"][path][method.lower()]
    response = operation["responses"].get(str(status))
    assert response is not None, f"{method} {path}: status {status} is not documented"
    if "$ref" in response:
        response = resolve(spec, response["$ref"])
    content = response.get("content", {})
    assert media_type in content, f"{method} {path} {status}: {media_type} not documented (has {sorted(content)})"
    return content[media_type]["schema"]


def resolve(spec: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part]
    return node


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_errors(spec: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (the keywords the spec uses; unknown keywords are annotations)."""
    if "$ref" in schema:
        return schema_errors(spec, resolve(spec, schema["$ref"]), value, where)
    errors: list[str] = []
    for part in schema.get("allOf", []):
        errors += schema_errors(spec, part, value, where)
    kind = schema.get("type")
    if kind is not None and not _TYPES[kind](value):
        return [*errors, f"{where}: expected {kind}, got {value!r}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        checks = {"date-time": _DATE_TIME, "date": _DATE, "uri": _URI}
        fmt = schema.get("format")
        if fmt in checks and not checks[fmt].match(value):
            errors.append(f"{where}: {value!r} is not a {fmt}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} > {schema['maximum']}")
    if isinstance(value, dict):
        errors += [f"{where}: {name!r} is required" for name in schema.get("required", []) if name not in value]
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(spec, properties[name], item, f"{where}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(spec, schema["additionalProperties"], item, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unexpected member {name!r}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += schema_errors(spec, schema["items"], item, f"{where}[{i}]")
    return errors


async def assert_documented(spec: dict[str, Any], path: str, method: str, response: Any) -> Any:
    """The response's JSON body matches what the spec declares for its status and media type."""
    body = await response.json(content_type=None)
    media_type = response.content_type
    schema = response_schema(spec, path, method, response.status, media_type)
    errors = schema_errors(spec, schema, body)
    assert not errors, f"{method} {path} {response.status}: " + "; ".join(errors[:10])
    return body
