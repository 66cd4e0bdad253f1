"""Complete harvests by two independent OAI-PMH clients, Sickle and oaipmh-scythe, over loopback.

Both run synchronously, so they run in a thread while the aiohttp server runs in
the event loop. Every body the server sent is validated against the official
schemas afterwards. Runs on SQLite and on PostgreSQL (skipped, with the reason,
when the server is unreachable).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
from aiohttp.test_utils import TestServer
from oaipmh_scythe import HTTPConfig, Scythe
from sickle import Sickle
from sickle.oaiexceptions import NoRecordsMatch

from node.storage import SheetStore
from tests.oai_support import Clock, assert_valid_oai, make_config, make_sheet, oai_server, open_database

COUNT = 45
DELETED = {"projet-3", "projet-17", "projet-44"}


@dataclass
class Harvestable:
    server: TestServer
    bodies: list[bytes]
    clock: Clock

    @property
    def url(self) -> str:
        return str(self.server.make_url("/oai"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def harvestable(request: pytest.FixtureRequest) -> AsyncIterator[Harvestable]:
    clock = Clock()
    bodies: list[bytes] = []
    async with open_database(request.param) as db:
        store = SheetStore(db, base_url="https://noeud.essaim.test", clock=clock)
        for i in range(COUNT):
            await store.upsert(make_sheet(i))
            if i % 4 == 3:
                clock.tick()
        for local_id in sorted(DELETED):
            await store.delete(local_id)
        await store.upsert(replace(make_sheet(5), title="modifié"))
        clock.tick(5)
        async with oai_server(db, make_config(page_size=7), clock, bodies) as server:
            yield Harvestable(server, bodies, clock)
    for body in bodies:
        assert_valid_oai(body)


def expected() -> dict[str, bool]:
    return {f"oai:noeud.essaim.test:projet-{i}": f"projet-{i}" in DELETED for i in range(COUNT)}


async def test_sickle_harvests_everything_once(harvestable: Harvestable) -> None:
    def run() -> list[tuple[str, bool, str | None]]:
        client = Sickle(harvestable.url, max_retries=0, timeout=10)
        out = []
        for record in client.ListRecords(metadataPrefix="essaim", ignore_deleted=False):
            title = record.xml.xpath(".//*[local-name()='sheet']/*[local-name()='title']/text()")
            out.append((record.header.identifier, record.header.deleted, title[0] if title else None))
        return out

    records = await asyncio.to_thread(run)
    ids = [r[0] for r in records]
    assert len(ids) == len(set(ids)) == COUNT
    assert {i: d for i, d, _ in records} == expected()
    assert all(title is None for _, deleted, title in records if deleted)
    assert dict((i, t) for i, _, t in records)["oai:noeud.essaim.test:projet-5"] == "modifié"
    assert len(harvestable.bodies) == 7  # ceil(45 / 7) pages


async def test_sickle_identifiers_and_sets(harvestable: Harvestable) -> None:
    def run() -> tuple[list[str], list[str], str]:
        client = Sickle(harvestable.url, max_retries=0, timeout=10)
        headers = [h.identifier for h in client.ListIdentifiers(metadataPrefix="oai_dc", set="theme:ENV:ALI")]
        sets = [s.setSpec for s in client.ListSets()]
        name = client.Identify().repositoryName
        try:
            list(client.ListIdentifiers(metadataPrefix="oai_dc", set="stage:nope"))
        except NoRecordsMatch:
            pass
        else:
            raise AssertionError("noRecordsMatch expected")
        return headers, sets, name

    headers, sets, name = await asyncio.to_thread(run)
    assert sorted(headers) == sorted(f"oai:noeud.essaim.test:projet-{i}" for i in range(COUNT) if i % 4 == 1)
    assert "theme:ENV:ALI" in sets and name.startswith("Banque")


async def test_scythe_harvests_everything_once(harvestable: Harvestable) -> None:
    def run() -> tuple[list[tuple[str, bool]], list[str]]:
        with Scythe(harvestable.url, http_config=HTTPConfig(timeout=10)) as client:
            records = [(r.header.identifier, r.header.deleted) for r in client.list_records(metadata_prefix="oai_dc")]
            headers = [h.identifier for h in client.list_identifiers(metadata_prefix="essaim", from_="2023-11-14")]
        return records, headers

    records, headers = await asyncio.to_thread(run)
    assert len(records) == len({i for i, _ in records}) == COUNT
    assert dict(records) == expected()
    assert sorted(headers) == sorted(expected())
