"""The OAI-PMH endpoint over HTTP, on SQLite, with sheets written by the real SheetStore.

Every response is validated against the official schemas by ``assert_valid_oai``.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from lxml import etree

from node.db import Database
from node.oai import OaiExecutor, ReadAhead, content_coding, respond
from node.storage import SheetStore
from protocol.oai.namespaces import ESSAIM, OAI
from protocol.oai.native import parse_native
from protocol.oai.requests import ListQuery
from tests.oai_support import (
    NS,
    T0,
    Clock,
    assert_valid_oai,
    error_code,
    make_config,
    make_sheet,
    oai_server,
    open_database,
    query,
    request_attrs,
)

NODE = "https://noeud.essaim.test"


class Node:
    """A node under test: database, store, clock and a running server."""

    def __init__(self, db: Database, server: TestServer, clock: Clock, store: SheetStore) -> None:
        self.db, self.server, self.clock, self.store = db, server, clock, store
        self.session = ClientSession()

    @property
    def url(self) -> str:
        return str(self.server.make_url("/oai"))

    async def get(self, **params: str) -> Any:
        async with self.session.get(self.url, params=_params(params)) as response:
            assert response.status == 200
            assert response.content_type == "text/xml" and response.charset == "utf-8"
            return assert_valid_oai(await response.read())

    async def post(self, **params: str) -> Any:
        async with self.session.post(self.url, data=_params(params)) as response:
            assert response.status == 200
            return assert_valid_oai(await response.read())

    async def harvest(self, verb: str = "ListRecords", **params: str) -> tuple[list[Any], list[Any]]:
        """All items of a list, following tokens; returns (items, resumptionToken elements)."""
        items: list[Any] = []
        tokens: list[Any] = []
        root = await self.get(verb=verb, **params)
        while True:
            if error_code(root) == "noRecordsMatch":
                return items, tokens
            assert error_code(root) is None, root
            body = root.find(f"{{{OAI}}}{verb}")
            items.extend(body.findall(f"{{{OAI}}}record" if verb == "ListRecords" else f"{{{OAI}}}header"))
            token = body.find(f"{{{OAI}}}resumptionToken")
            if token is None:
                return items, tokens
            tokens.append(token)
            if not token.text:
                return items, tokens
            root = await self.get(verb=verb, resumptionToken=token.text)


def _params(params: dict[str, str]) -> dict[str, str]:
    return {k.rstrip("_"): v for k, v in params.items()}


def identifier(local_id: str) -> str:
    return f"oai:noeud.essaim.test:{local_id}"


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    clock = Clock()
    async with open_database("sqlite") as db, oai_server(db, make_config(), clock) as server:
        n = Node(db, server, clock, SheetStore(db, base_url=NODE, clock=clock))
        try:
            yield n
        finally:
            await n.session.close()


async def fill(node: Node, count: int, *, per_second: int = 3) -> None:
    for i in range(count):
        await node.store.upsert(make_sheet(i))
        if i % per_second == per_second - 1:
            node.clock.tick()
    node.clock.tick(2)


# --------------------------------------------------------------------------- verbs


async def test_identify(node: Node) -> None:
    await fill(node, 2)
    root = await node.get(verb="Identify")
    body = root.find(f"{{{OAI}}}Identify")
    assert body.findtext(f"{{{OAI}}}protocolVersion") == "2.0"
    assert body.findtext(f"{{{OAI}}}earliestDatestamp") == "2023-11-14T22:13:20Z"
    assert body.findtext(f"{{{OAI}}}deletedRecord") == "persistent"
    assert body.findtext(f"{{{OAI}}}granularity") == "YYYY-MM-DDThh:mm:ssZ"
    assert [c.text for c in body.findall(f"{{{OAI}}}compression")] == ["gzip", "deflate"]
    assert root.xpath("//*[local-name()='repositoryIdentifier']/text()") == ["noeud.essaim.test"]
    assert request_attrs(root) == {"verb": "Identify"}


async def test_get_and_post_give_the_same_answer(node: Node) -> None:
    await fill(node, 3)
    for params in (
        {"verb": "Identify"},
        {"verb": "ListRecords", "metadataPrefix": "oai_dc"},
        {"verb": "GetRecord", "identifier": identifier("projet-1"), "metadataPrefix": "essaim"},
        {"verb": "ListRecords", "metadataPrefix": "oai_dc", "from": "not-a-date"},
    ):
        by_get = await node.get(**params)
        by_post = await node.post(**params)
        assert etree.tostring(by_get) == etree.tostring(by_post)


async def test_post_with_another_content_type_is_refused(node: Node) -> None:
    async with node.session.post(node.url, json={"verb": "Identify"}) as response:
        assert response.status == 415


async def test_compression_on_request(node: Node) -> None:
    await fill(node, 5)
    for coding, decode in (("gzip", gzip.decompress), ("deflate", zlib.decompress)):
        async with node.session.get(
            node.url,
            params={"verb": "ListRecords", "metadataPrefix": "essaim"},
            headers={"Accept-Encoding": coding},
            auto_decompress=False,
        ) as response:
            assert response.headers["Content-Encoding"] == coding
            raw = await response.read()
        assert_valid_oai(decode(raw))
    async with node.session.get(
        node.url, params={"verb": "Identify"}, headers={"Accept-Encoding": "identity"}, auto_decompress=False
    ) as response:
        assert "Content-Encoding" not in response.headers
        assert response.headers["Vary"] == "Accept-Encoding"
        assert_valid_oai(await response.read())
    # Quality values count: gzip refused with q=0, deflate taken through "*".
    async with node.session.get(
        node.url, params={"verb": "Identify"}, headers={"Accept-Encoding": "gzip;q=0, *"}, auto_decompress=False
    ) as response:
        assert response.headers["Content-Encoding"] == "deflate"
        assert_valid_oai(zlib.decompress(await response.read()))


async def test_a_large_page_is_compressed_whole(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    # A page over the inline limit (64 KiB) is compressed in a thread: the same bytes come out of it.
    monkeypatch.setattr("node.oai._COMPRESS_INLINE", 4096)
    await fill(node, 10)
    params = {"verb": "ListRecords", "metadataPrefix": "essaim"}
    async with node.session.get(node.url, params=params, headers={"Accept-Encoding": "identity"}) as response:
        plain = await response.read()
    assert len(plain) > 4096
    async with node.session.get(
        node.url, params=params, headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    ) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await response.read()) == plain


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        ("", None),
        ("identity", None),
        ("gzip, deflate, br", "gzip"),
        ("GZIP", "gzip"),
        ("deflate", "deflate"),
        ("br;q=1.0, gzip;q=0.5", "gzip"),
        ("gzip;q=0", None),
        ("gzip;q=0, deflate;q=0.1", "deflate"),
        ("*", "gzip"),
        ("*;q=0", None),
        ("gzip;q=0, *;q=0.3", "deflate"),
        ("gzip;q=nonsense", None),
        ("x-gzip", "gzip"),
    ],
)
def test_content_coding_follows_accept_encoding(header: str, coding: str | None) -> None:
    assert content_coding(header) == coding


async def test_get_record_in_both_formats_and_native_round_trip(node: Node) -> None:
    await fill(node, 2)
    root = await node.get(verb="GetRecord", identifier=identifier("projet-1"), metadataPrefix="essaim")
    sheet_el = root.find(f".//{{{ESSAIM}}}sheet")
    stored = await node.store.get("projet-1")
    assert parse_native(sheet_el) == stored
    root = await node.get(verb="GetRecord", identifier=identifier("projet-1"), metadataPrefix="oai_dc")
    assert root.xpath("//dc:title/text()", namespaces=NS) == ["Projet n°1 : jardin & <partage>"]
    assert request_attrs(root) == {
        "verb": "GetRecord",
        "identifier": identifier("projet-1"),
        "metadataPrefix": "oai_dc",
    }
    header = root.find(f".//{{{OAI}}}header")
    assert "theme:ENV:ALI" in [s.text for s in header.findall(f"{{{OAI}}}setSpec")]


async def test_get_record_errors(node: Node) -> None:
    await fill(node, 1)
    root = await node.get(verb="GetRecord", identifier=identifier("absent"), metadataPrefix="oai_dc")
    assert error_code(root) == "idDoesNotExist"
    assert request_attrs(root)["identifier"] == identifier("absent")  # echoed: the request was valid
    root = await node.get(verb="GetRecord", identifier="oai:elsewhere.test:projet-0", metadataPrefix="oai_dc")
    assert error_code(root) == "idDoesNotExist"
    root = await node.get(verb="GetRecord", identifier=identifier("projet-0"), metadataPrefix="marc21")
    assert error_code(root) == "cannotDisseminateFormat"
    assert request_attrs(root)["metadataPrefix"] == "marc21"


async def test_deleted_record_is_a_deleted_header_without_metadata(node: Node) -> None:
    await fill(node, 3)
    await node.store.delete("projet-1")
    node.clock.tick(2)
    root = await node.get(verb="GetRecord", identifier=identifier("projet-1"), metadataPrefix="essaim")
    record = root.find(f".//{{{OAI}}}record")
    assert record.find(f"{{{OAI}}}header").get("status") == "deleted"
    assert record.find(f"{{{OAI}}}metadata") is None
    records, _ = await node.harvest(metadataPrefix="oai_dc")
    status = {r.findtext(f".//{{{OAI}}}identifier"): r.find(f"{{{OAI}}}header").get("status") for r in records}
    assert status == {identifier("projet-0"): None, identifier("projet-1"): "deleted", identifier("projet-2"): None}
    # A selective harvest learns the deletion too (the tombstone keeps its set rows).
    headers, _ = await node.harvest("ListIdentifiers", metadataPrefix="essaim", set="theme:ENV")
    assert [(h.findtext(f"{{{OAI}}}identifier"), h.get("status")) for h in headers] == [
        (identifier("projet-1"), "deleted")
    ]
    root = await node.get(verb="ListMetadataFormats", identifier=identifier("projet-1"))
    assert len(root.findall(f".//{{{OAI}}}metadataFormat")) == 2


async def test_list_metadata_formats(node: Node) -> None:
    await fill(node, 1)
    root = await node.get(verb="ListMetadataFormats")
    formats = {
        f.findtext(f"{{{OAI}}}metadataPrefix"): f.findtext(f"{{{OAI}}}schema")
        for f in root.findall(f".//{{{OAI}}}metadataFormat")
    }
    assert formats == {
        "oai_dc": "http://www.openarchives.org/OAI/2.0/oai_dc.xsd",
        "essaim": f"{NODE}/schemas/essaim-sheet-1.0.xsd",
    }
    root = await node.get(verb="ListMetadataFormats", identifier=identifier("projet-0"))
    assert len(root.findall(f".//{{{OAI}}}metadataFormat")) == 2
    root = await node.get(verb="ListMetadataFormats", identifier=identifier("nope"))
    assert error_code(root) == "idDoesNotExist"


async def test_a_sheet_without_stored_fragments_is_served_rendered_from_its_json(node: Node) -> None:
    """How a hub serves every sheet (its storage keeps no fragments): the same bytes as stored ones."""
    await fill(node, 7)
    await node.store.delete("projet-3")
    node.clock.tick(2)

    async def served() -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for prefix in ("oai_dc", "essaim"):
            records, _ = await node.harvest(metadataPrefix=prefix, set="theme")
            whole, _ = await node.harvest(metadataPrefix=prefix)
            one = await node.get(verb="GetRecord", identifier=identifier("projet-5"), metadataPrefix=prefix)
            formats = await node.get(verb="ListMetadataFormats", identifier=identifier("projet-5"))
            out[prefix] = [
                *(etree.tostring(r) for r in [*records, *whole, *one.findall(f".//{{{OAI}}}record")]),
                *(etree.tostring(f) for f in formats.findall(f".//{{{OAI}}}metadataFormat")),
            ]
        return out

    stored = await served()
    assert (await node.db.fetchone("SELECT COUNT(*) AS n FROM sheet_format"))["n"] == 12
    await node.db.execute("DELETE FROM sheet_format")
    node.clock.tick(6)  # new lists (another "until"): no page read ahead before the deletion is reused
    assert await served() == stored
    assert len(stored["essaim"]) == 6 + 8 + 1 + 2  # the set, the whole list (tombstone included), one, formats


async def test_a_hub_store_keeps_no_fragments_and_serves_every_format(node: Node) -> None:
    hub = SheetStore(node.db, base_url=NODE, source="reseau", hub=True, clock=node.clock)
    async with node.db.transaction() as tx:
        await hub.upsert_many([make_sheet(i) for i in range(4)], tx=tx)
    node.clock.tick(2)
    assert (await node.db.fetchone("SELECT COUNT(*) AS n FROM sheet_format"))["n"] == 0
    for prefix in ("oai_dc", "essaim"):
        records, _ = await node.harvest(metadataPrefix=prefix)
        assert len(records) == 4
        assert all(r.find(f"{{{OAI}}}metadata") is not None for r in records)
    records, _ = await node.harvest(metadataPrefix="essaim")
    sheets = [parse_native(r.find(f"{{{OAI}}}metadata")[0]) for r in records]
    assert sorted(s.title for s in sheets) == sorted(make_sheet(i).title for i in range(4))


async def test_list_sets(node: Node) -> None:
    root = await node.get(verb="ListSets")
    specs = root.xpath("//o:setSpec/text()", namespaces=NS)
    assert {
        "theme",
        "theme:SOL",
        "theme:SOL:GRA",
        "region:53",
        "departement:35",
        "departement:2A",
        "stage:idee",
    } <= set(specs)
    assert not any(s.startswith("partner") for s in specs)
    assert "Solidarité" in root.xpath("//o:setName/text()", namespaces=NS)
    root = await node.get(verb="ListSets", resumptionToken="whatever")
    assert error_code(root) == "badResumptionToken"


async def test_schema_and_stylesheet_are_served(node: Node) -> None:
    async with node.session.get(node.server.make_url("/schemas/essaim-sheet-1.0.xsd")) as response:
        assert response.status == 200
        assert b'targetNamespace="https://essaim.org/ns/sheet/1.0"' in await response.read()
    async with node.session.get(node.server.make_url("/schemas/essaim-oai.xsl")) as response:
        assert response.status == 200 and response.content_type == "text/xsl"
    async with node.session.get(node.server.make_url("/schemas/../secret")) as response:
        assert response.status == 404


# --------------------------------------------------------------------------- paging


async def test_paging_returns_every_record_once_with_a_final_empty_token(node: Node) -> None:
    await fill(node, 30)
    records, tokens = await node.harvest(metadataPrefix="essaim")
    ids = [r.findtext(f".//{{{OAI}}}identifier") for r in records]
    assert sorted(ids) == sorted(identifier(f"projet-{i}") for i in range(30))
    assert len(set(ids)) == 30
    assert [t.get("cursor") for t in tokens] == ["0", "7", "14", "21", "28"]
    assert {t.get("completeListSize") for t in tokens} == {"30"}
    assert tokens[-1].text is None and all(t.text for t in tokens[:-1])
    assert all(t.get("expirationDate") for t in tokens[:-1]) and tokens[-1].get("expirationDate") is None
    stamps = [r.findtext(f".//{{{OAI}}}datestamp") for r in records]
    assert stamps == sorted(stamps)


async def test_a_single_page_list_has_no_token(node: Node) -> None:
    await fill(node, 7)
    root = await node.get(verb="ListIdentifiers", metadataPrefix="oai_dc")
    assert len(root.findall(f".//{{{OAI}}}header")) == 7
    assert root.find(f".//{{{OAI}}}resumptionToken") is None


async def test_replayed_token_gives_the_same_page(node: Node) -> None:
    await fill(node, 20)
    first = await node.get(verb="ListIdentifiers", metadataPrefix="oai_dc")
    token = first.findtext(f".//{{{OAI}}}resumptionToken")
    a = await node.get(verb="ListIdentifiers", resumptionToken=token)
    node.clock.tick(30)
    b = await node.get(verb="ListIdentifiers", resumptionToken=token)
    ids = lambda root: root.xpath("//o:header/o:identifier/text()", namespaces=NS)  # noqa: E731
    assert ids(a) == ids(b) and len(ids(a)) == 7
    assert set(ids(a)).isdisjoint(ids(first))


async def test_token_errors_over_http(node: Node) -> None:
    await fill(node, 20)
    first = await node.get(verb="ListRecords", metadataPrefix="oai_dc")
    token = first.findtext(f".//{{{OAI}}}resumptionToken")
    body, _, mac = token.partition(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    for bad in (tampered, "garbage", token + "x"):
        root = await node.get(verb="ListRecords", resumptionToken=bad)
        assert error_code(root) == "badResumptionToken"
        assert request_attrs(root) == {"verb": "ListRecords", "resumptionToken": bad}
    root = await node.get(verb="ListIdentifiers", resumptionToken=token)
    assert error_code(root) == "badResumptionToken"  # issued for ListRecords
    node.clock.tick(3601)
    root = await node.get(verb="ListRecords", resumptionToken=token)
    assert error_code(root) == "badResumptionToken"
    assert "expired" in root.findtext(f"{{{OAI}}}error")


async def test_changes_during_a_harvest_are_not_duplicated_and_reach_the_next_harvest(node: Node) -> None:
    await fill(node, 21)
    start = node.clock.now
    first = await node.get(verb="ListRecords", metadataPrefix="essaim")
    response_date = first.findtext(f"{{{OAI}}}responseDate")
    seen = first.xpath("//o:header/o:identifier/text()", namespaces=NS)
    token = first.findtext(f".//{{{OAI}}}resumptionToken")
    # During the harvest: one already harvested and one not yet harvested are changed,
    # one is deleted, one is created, all in the very second of the first response.
    await node.store.upsert(replace(make_sheet(0), title="changé 0"))
    await node.store.upsert(replace(make_sheet(20), title="changé 20"))
    await node.store.delete("projet-10")
    await node.store.upsert(make_sheet(99))
    while token:
        node.clock.tick()
        root = await node.get(verb="ListRecords", resumptionToken=token)
        seen += root.xpath("//o:header/o:identifier/text()", namespaces=NS)
        token = root.findtext(f".//{{{OAI}}}resumptionToken")
    assert len(seen) == len(set(seen)), "a record was sent twice in one harvest"
    assert identifier("projet-99") not in seen
    assert node.clock.now > start
    node.clock.tick(2)
    records, _ = await node.harvest(metadataPrefix="essaim", from_=response_date)
    after = {r.findtext(f".//{{{OAI}}}identifier"): r for r in records}
    assert set(after) == {identifier(f"projet-{i}") for i in (0, 10, 20, 99)}
    assert after[identifier("projet-10")].find(f"{{{OAI}}}header").get("status") == "deleted"
    assert after[identifier("projet-0")].xpath(".//e:title/text()", namespaces=NS) == ["changé 0"]
    # Everything ever listed: each identifier of the first harvest plus the changes, no loss.
    assert set(seen) | set(after) == {identifier(f"projet-{i}") for i in [*range(21), 99]}


async def test_from_until_are_inclusive_at_both_granularities(node: Node) -> None:
    await fill(node, 9)  # stamps T0, T0+1, T0+2, three sheets each
    t1 = "2023-11-14T22:13:21Z"
    headers, _ = await node.harvest("ListIdentifiers", metadataPrefix="oai_dc", from_=t1, until=t1)
    assert len(headers) == 3 and {h.findtext(f"{{{OAI}}}datestamp") for h in headers} == {t1}
    headers, _ = await node.harvest("ListIdentifiers", metadataPrefix="oai_dc", until="2023-11-14T22:13:20Z")
    assert len(headers) == 3
    headers, _ = await node.harvest("ListIdentifiers", metadataPrefix="oai_dc", from_="2023-11-14", until="2023-11-14")
    assert len(headers) == 9
    root = await node.get(verb="ListIdentifiers", metadataPrefix="oai_dc", until="2023-11-13")
    assert error_code(root) == "noRecordsMatch"
    assert request_attrs(root)["until"] == "2023-11-13"


async def test_argument_errors_over_http_echo_nothing(node: Node) -> None:
    cases = [
        ({"verb": "ListRecords", "metadataPrefix": "oai_dc", "from": "2023-11-14T22:13:21.5Z"}, "badArgument"),
        (
            {"verb": "ListRecords", "metadataPrefix": "oai_dc", "from": "2023-11-14", "until": "2023-11-15T00:00:00Z"},
            "badArgument",
        ),
        (
            {"verb": "ListRecords", "metadataPrefix": "oai_dc", "from": "2023-11-15", "until": "2023-11-14"},
            "badArgument",
        ),
        ({"verb": "Frobnicate"}, "badVerb"),
        ({}, "badVerb"),
    ]
    for params, code in cases:
        root = await node.get(**params)
        assert error_code(root) == code, params
        assert request_attrs(root) == {}
    async with node.session.get(node.url + "?verb=Identify&verb=Identify") as response:
        root = assert_valid_oai(await response.read())
    assert error_code(root) == "badVerb" and request_attrs(root) == {}


async def test_selective_harvest_by_set_pages_by_keyset(node: Node) -> None:
    await fill(node, 40)
    headers, tokens = await node.harvest("ListIdentifiers", metadataPrefix="oai_dc", set="theme:SOL")
    expected = {identifier(f"projet-{i}") for i in range(40) if i % 4 == 0}
    got = [h.findtext(f"{{{OAI}}}identifier") for h in headers]
    assert sorted(got) == sorted(expected) and len(got) == len(expected)
    assert all("theme:SOL" in [s.text for s in h.findall(f"{{{OAI}}}setSpec")] for h in headers)
    assert tokens[0].get("completeListSize") == "10"
    root = await node.get(verb="ListIdentifiers", metadataPrefix="oai_dc", set="theme:NOPE")
    assert error_code(root) == "noRecordsMatch"


async def test_empty_repository(node: Node) -> None:
    root = await node.get(verb="ListRecords", metadataPrefix="oai_dc")
    assert error_code(root) == "noRecordsMatch"
    root = await node.get(verb="Identify")
    assert root.findtext(f".//{{{OAI}}}earliestDatestamp") == "2023-11-14T22:13:20Z"
    assert T0 == node.clock.now


# --------------------------------------------------------------------------- read-ahead


async def _list_all(executor: OaiExecutor, clock: Clock, verb: str, prefix: str) -> list[bytes]:
    """Every page body of a list, through the executor as the handler calls it."""
    bodies = [await respond(executor, query(verb, metadataPrefix=prefix), int(clock()))]
    while True:
        token = assert_valid_oai(bodies[-1]).findtext(f".//{{{OAI}}}resumptionToken")
        if not token:
            return bodies
        bodies.append(await respond(executor, query(verb, resumptionToken=token), int(clock())))


def _without_response_date(body: bytes) -> bytes:
    root = etree.fromstring(body)
    root.find(f"{{{OAI}}}responseDate").text = ""
    return etree.tostring(root)


@pytest.mark.parametrize("verb", ["ListRecords", "ListIdentifiers"])
async def test_pages_read_ahead_are_the_pages_read_on_request(verb: str) -> None:
    clock = Clock()
    async with open_database("sqlite") as db:
        store = SheetStore(db, base_url=NODE, clock=clock)
        for i in range(30):
            await store.upsert(make_sheet(i))
        clock.tick(2)
        eager = OaiExecutor(db, make_config(), ReadAhead())
        plain = OaiExecutor(db, make_config(), ReadAhead(capacity=0))
        for prefix in ("oai_dc", "essaim"):
            ahead = await _list_all(eager, clock, verb, prefix)
            fresh = await _list_all(plain, clock, verb, prefix)
            assert len(ahead) == 5  # 30 records, 7 per page
            assert [_without_response_date(b) for b in ahead] == [_without_response_date(b) for b in fresh]
        assert eager.read_ahead.hits == 8  # every page but the first of each list
        assert plain.read_ahead.hits == 0


async def test_a_write_drops_the_pages_read_ahead() -> None:
    clock = Clock()
    async with open_database("sqlite") as db:
        store = SheetStore(db, base_url=NODE, clock=clock)
        for i in range(14):
            await store.upsert(make_sheet(i))
        clock.tick(2)
        executor = OaiExecutor(db, make_config(), ReadAhead())
        first = assert_valid_oai(
            await respond(executor, query("ListIdentifiers", metadataPrefix="oai_dc"), int(clock()))
        )
        token = first.findtext(f".//{{{OAI}}}resumptionToken")
        await asyncio.sleep(0.05)  # the second page is read ahead by now
        # A sheet of the second page changes: its datestamp moves past the list's frozen
        # 'until', so a page read on request no longer holds it; the read-ahead one would.
        clock.tick()
        await store.upsert(replace(make_sheet(9), title="changé"))
        second = assert_valid_oai(
            await respond(executor, query("ListIdentifiers", resumptionToken=token), int(clock()))
        )
        ids = second.xpath("//o:header/o:identifier/text()", namespaces=NS)
        assert identifier("projet-9") not in ids and len(ids) == 6
        assert executor.read_ahead.hits == 0


async def test_a_page_read_ahead_expires() -> None:
    now = [0.0]
    ahead = ReadAhead(ttl=5.0, clock=lambda: now[0])
    reads: list[ListQuery] = []

    async def read(q: ListQuery) -> tuple[list[Any], str | None]:
        reads.append(q)
        return [], ""

    fresh = ListQuery("ListRecords", "oai_dc", None, None, 100, after=(1, 1))
    stale = ListQuery("ListRecords", "oai_dc", None, None, 100, after=(2, 2))
    ahead.start(fresh, read)
    ahead.start(stale, read)
    now[0] = 4.0
    assert await ahead.take(fresh) == ([], "")
    assert await ahead.take(fresh) is None  # used once
    now[0] = 5.5
    assert await ahead.take(stale) is None
    assert ahead.hits == 1 and len(reads) == 2


async def test_read_ahead_holds_at_most_capacity_lists() -> None:
    ahead = ReadAhead(capacity=2)

    async def read(q: ListQuery) -> tuple[list[Any], str | None]:
        return [], str(q.after)

    queries = [ListQuery("ListRecords", "oai_dc", None, None, 100, after=(i, i)) for i in range(3)]
    for q in queries:
        ahead.start(q, read)
    assert await ahead.take(queries[0]) is None  # the oldest went first
    assert await ahead.take(queries[2]) == ([], "(2, 2)")
