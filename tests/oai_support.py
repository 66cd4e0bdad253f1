"""Shared helpers of the OAI-PMH tests: schema validation, factories, databases, a real server.

The official OAI-PMH schemas are not part of the repository: they are read from
``$ESSAIM_OAI_SCHEMAS`` or ``../shared/schemas/oai-pmh`` next to the checkout,
and every test that validates skips with the reason when they are absent.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import sqlite3
import tempfile
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from lxml import etree

from node.db import Database
from node.oai import make_oai_handler, make_schema_handler
from protocol.oai.config import OaiConfig
from protocol.oai.namespaces import DC, ESSAIM, FRIENDS, OAI, OAI_DC, OAI_IDENTIFIER, PROVENANCE
from protocol.sheet import (
    Award,
    Contact,
    Holder,
    Image,
    Link,
    Match,
    MatchKind,
    Partner,
    Place,
    Precision,
    Sheet,
    Stage,
    TagMapping,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMA_DIR = Path(os.environ.get("ESSAIM_OAI_SCHEMAS", REPO.parent / "shared" / "schemas" / "oai-pmh"))
NATIVE_XSD = REPO / "protocol" / "oai" / "schemas" / "essaim-sheet-1.0.xsd"
PG_URL = os.environ.get("ESSAIM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
# Databases of this test process alone on the PostgreSQL server (named after the pid), so two runs
# at once never truncate each other's tables; those of dead processes are dropped on first use.
PG_PREFIX = "essaim_test_"
PG_DATABASE = f"{PG_PREFIX}{os.getpid()}"

NS = {"o": OAI, "dc": DC, "oai_dc": OAI_DC, "e": ESSAIM, "prov": PROVENANCE}
SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
SECRET = b"test-secret-0123456789abcdef"
BASE_URL = "https://noeud.essaim.test/oai"
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z

# Remote locations the official schemas import, mapped to the local copies.
_REMOTE = {
    "http://dublincore.org/schemas/xmls/simpledc20021212.xsd": "simpledc20021212.xsd",
    "http://www.w3.org/2001/03/xml.xsd": "xml.xsd",
    "http://www.w3.org/2001/xml.xsd": "xml.xsd",
}


class _LocalSchemas(etree.Resolver):
    def resolve(self, system_url: str, public_id: str, context: Any) -> Any:
        name = _REMOTE.get(system_url) or (system_url.rsplit("/", 1)[-1] if "openarchives.org" in system_url else None)
        if name and (SCHEMA_DIR / name).exists():
            return self.resolve_filename(str(SCHEMA_DIR / name), context)
        if system_url.startswith(("http://", "https://")):
            raise AssertionError(f"schema import of {system_url} has no local copy")
        return None


@cache
def _schema() -> etree.XMLSchema:
    imports = [
        (OAI, SCHEMA_DIR / "OAI-PMH.xsd"),
        (OAI_DC, SCHEMA_DIR / "oai_dc.xsd"),
        (PROVENANCE, SCHEMA_DIR / "provenance.xsd"),
        (OAI_IDENTIFIER, SCHEMA_DIR / "oai-identifier.xsd"),
        (FRIENDS, SCHEMA_DIR / "friends.xsd"),
        (ESSAIM, NATIVE_XSD),
    ]
    xs = "http://www.w3.org/2001/XMLSchema"
    driver = etree.Element(f"{{{xs}}}schema", nsmap={"xs": xs})
    for namespace, path in imports:
        etree.SubElement(driver, f"{{{xs}}}import", namespace=namespace, schemaLocation=path.as_uri())
    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(_LocalSchemas())
    doc = etree.fromstring(etree.tostring(driver), parser, base_url=(SCHEMA_DIR / "driver.xsd").as_uri())
    return etree.XMLSchema(doc)


def oai_schema() -> etree.XMLSchema:
    if not (SCHEMA_DIR / "OAI-PMH.xsd").exists():
        pytest.skip(f"official OAI-PMH schemas not found in {SCHEMA_DIR} (set ESSAIM_OAI_SCHEMAS)")
    return _schema()


_STRICT = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def assert_valid_oai(xml: bytes) -> etree._Element:
    """Parse strictly, validate against the official schemas (oai_dc, provenance, oai-identifier,
    friends, and our native format), and check what the schemas let through: every date of the
    envelope at seconds granularity, no fractional seconds (spec §3.3.1)."""
    root = etree.fromstring(xml, _STRICT)
    schema = oai_schema()
    if not schema.validate(root):
        raise AssertionError(f"invalid OAI-PMH response: {schema.error_log}\n{xml.decode()[:3000]}")
    dates = root.xpath(
        "o:responseDate/text() | //o:header/o:datestamp/text() | //o:earliestDatestamp/text()", namespaces=NS
    )
    for value in dates:
        assert SECONDS.match(value), f"datestamp {value!r} is not at seconds granularity"
    for token in root.xpath("//o:resumptionToken", namespaces=NS):
        assert "cursor" in token.attrib and "completeListSize" in token.attrib, "token lacks cursor/completeListSize"
    return root


def error_code(root: etree._Element) -> str | None:
    codes = root.xpath("o:error/@code", namespaces=NS)
    return str(codes[0]) if codes else None


def request_attrs(root: etree._Element) -> dict[str, str]:
    return dict(root.find(f"{{{OAI}}}request").attrib)


# --------------------------------------------------------------------------- factories


def make_config(**overrides: Any) -> OaiConfig:
    values: dict[str, Any] = {
        "repository_name": "Banque de l'innovation sociale — nœud de test",
        "base_url": BASE_URL,
        "admin_emails": ("admin@essaim.test",),
        "token_secret": SECRET,
        "page_size": 7,
        "token_ttl": 3600,
    }
    values.update(overrides)
    return OaiConfig(**values)


def make_sheet(n: int, **overrides: Any) -> Sheet:
    """A varied, complete sheet: themes, places, a stage, nested records, HTML description."""
    themes = (("SOL", "GRA"), ("ENV", "ALI"), ("EDU", "INN"), ("NUM", "NUM"))[n % 4]
    departements = ("35", "29", "75", "2A", "971")
    sheet = Sheet(
        id=f"https://noeud.essaim.test/sheets/{n}",
        local_id=f"projet-{n}",
        title=f"Projet n°{n} : jardin & <partage>",
        partner=Partner(name="Réseau Test", url="https://reseau.test", id="https://reseau.test/actor"),
        summary=f"Résumé du projet {n}",
        description=f"<p>Un <strong>projet</strong> {n}.</p><ul><li>un</li><li>deux</li></ul>",
        url=f"https://reseau.test/projets/{n}",
        holder=Holder(name=f"Association {n}", legal_form="association", siret="12345678901234"),
        themes=(themes[0],),
        subthemes=(themes[1],),
        tags=(TagMapping("jardin partagé", ("ENV", "ALI")), TagMapping("inclassable")),
        audiences=("jeunes",),
        stage=tuple(Stage)[n % len(Stage)],
        places=(
            Place(commune="Rennes", departement=departements[n % 5], lat=48.11, lon=-1.68, precision=Precision.COMMUNE),
        ),
        start_date=date(2020, 1 + n % 12, 1),
        created=datetime(2020, 1, 1, tzinfo=UTC),
        awards=(Award("Prix de l'innovation", 2021),),
        contact=Contact(name="Camille", email="camille@reseau.test"),
        images=(Image("https://reseau.test/img.png", alt="photo"),),
        links=(Link("https://reseau.test/doc.pdf", "Dossier", "document"),),
        matches=(Match(MatchKind.BENEVOLAT, "Bénévoles recherchés", start=date(2024, 1, 1)),),
    )
    return replace(sheet, **overrides)


class Clock:
    """A settable clock (epoch seconds), injected into storage and the endpoint."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1) -> None:
        self.now += seconds


# --------------------------------------------------------------------------- databases


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _pg_reachable() -> str | None:
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed"
    try:
        conn = await asyncio.wait_for(asyncpg.connect(PG_URL), 3)
    except Exception as exc:
        return f"PostgreSQL at {PG_URL} is unreachable: {exc}"
    try:
        for name in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", PG_PREFIX + "%"):
            owner = name["datname"][len(PG_PREFIX) :].split("_")[0]
            if owner.isdigit() and not _alive(int(owner)):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name["datname"]}" WITH (FORCE)')
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    finally:
        await conn.close()
    return None


def _pg_test_url() -> str:
    parts = urlsplit(PG_URL)
    return urlunsplit(parts._replace(path="/" + PG_DATABASE))


@asynccontextmanager
async def open_database(kind: str) -> AsyncIterator[Database]:
    """A migrated, empty database of ``kind`` ('sqlite' or 'postgres'), closed afterwards."""
    if kind == "postgres":
        reason = await _pg_reachable()
        if reason:
            pytest.skip(reason)
        db = Database(_pg_test_url())
        await db.upgrade()
        await db.open()
        # Test-only cleanup: this database belongs to these tests alone.
        await db.execute("TRUNCATE sheet, sheet_set, sheet_format RESTART IDENTITY")
        try:
            yield db
        finally:
            await db.close()
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/essaim.sqlite3")
        await db.upgrade()
        await db.open()
        try:
            yield db
        finally:
            await db.close()


async def sqlite_migrated_to(path: Path, target: str, sheets: Sequence[tuple[int, str, str, str]]) -> None:
    """An SQLite database at ``path`` migrated up to ``target`` only, holding bare rows of ``sheets``
    (pk, uri, source, local id): the state a later migration finds."""
    from tortoise import Tortoise
    from tortoise.migrations.api.migrate import migrate

    from node.db import tortoise_config

    await migrate(config=tortoise_config(f"sqlite:///{path}"), target=target)
    await Tortoise.close_connections()
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO sheet (pk_id, uri, source, local_id, stamp, deleted, content_hash, title, sets)"
            " VALUES (?, ?, ?, ?, 0, 0, '', '', '')",
            sheets,
        )


def oai_app(
    db: Database, config: OaiConfig, clock: Clock | None = None, capture: list[bytes] | None = None
) -> web.Application:
    """The endpoint as the lead mounts it; ``capture`` collects every body sent, for validation."""

    @web.middleware
    async def keep_body(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        if capture is not None and isinstance(response, web.Response) and request.path == "/oai":
            assert isinstance(response.body, bytes)
            coding = response.headers.get("Content-Encoding")  # the endpoint compresses on request
            decode = {"gzip": gzip.decompress, "deflate": zlib.decompress}.get(coding or "", bytes)
            capture.append(decode(response.body))
        return response

    app = web.Application(middlewares=[keep_body])
    app.router.add_route("*", "/oai", make_oai_handler(db, config, clock))
    app.router.add_get("/schemas/{name}", make_schema_handler())
    return app


@asynccontextmanager
async def oai_server(
    db: Database, config: OaiConfig, clock: Clock | None = None, capture: list[bytes] | None = None
) -> AsyncIterator[TestServer]:
    server = TestServer(oai_app(db, config, clock, capture), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def query(verb: str | None = None, **arguments: str | Sequence[str]) -> Mapping[str, Sequence[str]]:
    """Multi-valued arguments as a GET query yields them (``from_`` for the reserved word)."""
    out: dict[str, list[str]] = {}
    if verb is not None:
        out["verb"] = [verb]
    for name, value in arguments.items():
        key = name.rstrip("_")
        out[key] = [value] if isinstance(value, str) else list(value)
    return out
