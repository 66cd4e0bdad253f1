"""The hub harvests a real Essaim node (its own process, SQLite) into its own database (SQLite, PostgreSQL).

Every record arrives once; a change and a deletion on the node reach the hub on the
next incremental harvest; a re-harvest without change writes nothing; a node that
crashes after two pages and comes back is resumed from the checkpoint, without
duplicate or missing sheets.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from harvesting.harvester import Source
from harvesting.normalise import Normaliser
from node.db import Database
from node.storage import SheetStore
from protocol.sheet import Sheet, Tombstone, sheet_from_dict, sheet_to_dict
from tests.harvesting.conftest import HUB_URL, NodeProcess, harvester_for, node_source

COUNT = 45  # 7 pages of 7 on the node
PAGES = 7


async def next_second() -> None:
    """The node lists records up to the second before its responseDate (a record may still change during
    the current second): a change is visible to a harvest that starts in a later second."""
    await asyncio.sleep(1.05 - time.time() % 1)


def store_of(db: Database, source: Source) -> SheetStore:
    return SheetStore(db, base_url=HUB_URL, source=source.key, hub=True)


async def hub_rows(db: Database, source: Source) -> dict[str, dict[str, Any]]:
    rows = await db.fetch(
        "SELECT local_id, uri, stamp, deleted, content_hash, data, provenance FROM sheet WHERE source = ?",
        [source.key],
    )
    return {str(r["local_id"]): r for r in rows}


def visible(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("id", "local_id", "datestamp")}


def normalised(data: str) -> dict[str, Any]:
    """What the hub makes of a node's sheet: tag codes joined to the themes, places completed offline."""
    return sheet_to_dict(Normaliser().sheet(sheet_from_dict(json.loads(data))).sheet)


async def assert_same_as_node(node: NodeProcess, db: Database, source: Source) -> None:
    """The hub's live sheets are exactly the node's once normalised, field by field, each once."""
    node_rows = await node.ctl("sheets")
    expected = {f"oai:noeud.essaim.test:{r['local_id']}": r for r in node_rows if not r["deleted"]}
    rows = await hub_rows(db, source)
    live = {k: r for k, r in rows.items() if not r["deleted"]}
    assert sorted(live) == sorted(expected)
    for identifier, row in live.items():
        assert visible(json.loads(row["data"])) == visible(normalised(expected[identifier]["data"]))
        assert row["uri"].startswith(f"{HUB_URL}/sheets/")


@pytest.fixture
async def seeded(node: NodeProcess) -> NodeProcess:
    await node.ctl("reset")
    await node.ctl("seed", count=COUNT)
    await node.ctl("delete", n=44)  # a tombstone the hub never saw alive
    await next_second()
    return node


@pytest.mark.parametrize("processes", [0, 2], ids=["in-process", "worker-processes"])
async def test_full_then_incremental_harvest(seeded: NodeProcess, hub_db: Database, processes: int) -> None:
    node, source = seeded, node_source(seeded)
    async with harvester_for(hub_db, node.port, processes=processes) as harvester:
        first = await harvester.harvest(source)
        assert first.ok, first.errors
        assert (first.pages, first.added, first.updated, first.deleted, first.rejected) == (PAGES, COUNT - 1, 0, 0, 0)
        assert first.unchanged == 1  # the tombstone of a sheet the hub never had: nothing to write
        assert first.incremental_from is None and not first.resumed
        await assert_same_as_node(node, hub_db, source)
        state = await harvester.state(source)
        assert state["token"] is None and state["next_from"] is not None and state["last_error"] is None

        # Provenance: where each sheet came from, in the shape the hub's OAI endpoint re-exports.
        rows = await hub_rows(hub_db, source)
        prov = json.loads(rows["oai:noeud.essaim.test:projet-3"]["provenance"])
        # Pages are stamped as they are written: projet-7's page may be a second after projet-3's.
        seen7 = json.loads(rows["oai:noeud.essaim.test:projet-7"]["provenance"])["firstSeen"]
        assert prov["baseURL"] == node.oai_url
        assert prov["identifier"] == "oai:noeud.essaim.test:projet-3"
        assert prov["metadataNamespace"] == "https://essaim.org/ns/sheet/1.0"
        assert prov["sheetId"] == "https://noeud.essaim.test/sheets/3"
        assert prov["originalURL"] == "https://reseau.test/projets/3"
        assert prov["firstSeen"] == prov["lastSeen"] == prov["harvestDate"]
        assert prov["altered"] is False and prov["datestamp"].endswith("Z")

        # No change on the node: nothing is written.
        before = await hub_rows(hub_db, source)
        again = await harvester.harvest(source)
        assert again.ok, again.errors
        assert again.incremental_from == state["next_from"]
        assert (again.added, again.updated, again.deleted) == (0, 0, 0)
        assert await hub_rows(hub_db, source) == before

        # A change and a deletion on the node reach the hub on the next incremental harvest.
        assert (await node.ctl("update", n=5, title="Titre modifié"))["status"] == "updated"
        assert (await node.ctl("delete", n=7))["status"] == "deleted"
        await next_second()
        third = await harvester.harvest(source)
        assert third.ok, third.errors
        assert (third.added, third.updated, third.deleted, third.rejected) == (0, 1, 1, 0)
        assert third.pages == 1  # incremental: only what changed since the last run began
        store = store_of(hub_db, source)
        changed = await store.get("oai:noeud.essaim.test:projet-5")
        assert isinstance(changed, Sheet) and changed.title == "Titre modifié"
        assert isinstance(await store.get("oai:noeud.essaim.test:projet-7"), Tombstone)
        await assert_same_as_node(node, hub_db, source)
        rows = await hub_rows(hub_db, source)
        prov7 = json.loads(rows["oai:noeud.essaim.test:projet-7"]["provenance"])
        assert prov7["deleted"] is True and prov7["firstSeen"] == seen7
        # A sheet that reappears on the node comes back under the same hub URI.
        uri = rows["oai:noeud.essaim.test:projet-7"]["uri"]
        assert (await node.ctl("update", n=7, title="De retour"))["status"] == "created"
        await next_second()
        fourth = await harvester.harvest(source)
        assert fourth.ok and fourth.added == 1
        assert (await hub_rows(hub_db, source))["oai:noeud.essaim.test:projet-7"]["uri"] == uri


async def test_the_next_page_is_read_while_one_is_written(seeded: NodeProcess, sqlite_hub: Database) -> None:
    """Page n + 1 is fetched while page n is written. When a write fails, the page read ahead is
    dropped (nothing of it is stored), the checkpoint stays on the last committed page, and the next
    run resumes from there without a duplicate or a missing sheet."""
    node, source = seeded, node_source(seeded)
    events: list[tuple[str, int]] = []
    async with harvester_for(sqlite_hub, node.port) as harvester:
        fetch, commit = harvester.transport.list_records, harvester._commit_page
        fetches = 0

        async def list_records(url: str, arguments: dict[str, str], **options: Any) -> Any:
            nonlocal fetches
            fetches += 1
            page = fetches
            page_read = await fetch(url, arguments, **options)
            events.append(("fetched", page))
            return page_read

        async def commit_page(*args: Any) -> None:
            pages = args[4]
            await asyncio.sleep(0.3)  # a slow disk: the next page arrives meanwhile
            if pages == 3:
                raise OSError("disk full")
            await commit(*args)
            events.append(("written", pages))

        harvester.transport.list_records = list_records  # type: ignore[method-assign]
        harvester._commit_page = commit_page  # type: ignore[method-assign]
        with pytest.raises(OSError, match="disk full"):
            await harvester.harvest(source)
        assert events.index(("fetched", 2)) < events.index(("written", 1))
        assert events.index(("fetched", 3)) < events.index(("written", 2))
        assert ("written", 3) not in events
        assert ("fetched", 4) in events  # read while page 3 was being written, then dropped
        assert len(await hub_rows(sqlite_hub, source)) == 14  # pages 1 and 2 only
        state = await harvester.state(source)
        assert state["token"] and state["run_pages"] == 2

        harvester._commit_page = commit  # type: ignore[method-assign]
        resumed = await harvester.harvest(source)
        assert resumed.ok and resumed.resumed and resumed.complete, resumed.errors
        assert resumed.pages == PAGES - 2 and resumed.added == COUNT - 1 - 14
        await assert_same_as_node(node, sqlite_hub, source)


@pytest.mark.parametrize("mode", ["500", "cut"])
async def test_crash_mid_harvest_resumes_from_checkpoint(seeded: NodeProcess, sqlite_hub: Database, mode: str) -> None:
    node, source = seeded, node_source(seeded)
    await node.ctl("fail", after=2, mode=mode)
    async with harvester_for(sqlite_hub, node.port) as harvester:
        crashed = await harvester.harvest(source)
        assert not crashed.ok and not crashed.complete
        assert crashed.pages == 2 and crashed.added == 14
        assert node.oai_url in crashed.errors[0]
        state = await harvester.state(source)
        assert state["token"] and state["run_pages"] == 2 and state["next_from"] is None
        assert "transport" in state["last_error"] or "http" in state["last_error"]
        assert len(await hub_rows(sqlite_hub, source)) == 14  # the committed pages stay

        await node.ctl("fail")  # the node is back
        resumed = await harvester.harvest(source)
        assert resumed.ok and resumed.resumed, resumed.errors
        assert resumed.pages == PAGES - 2
        assert resumed.added == COUNT - 1 - 14 and resumed.updated == 0
        await assert_same_as_node(node, sqlite_hub, source)
        ids = [sheet_to_dict(s)["local_id"] async for s in store_of(sqlite_hub, source).iter_sheets()]
        assert len(ids) == len(set(ids)) == COUNT - 1
        assert (await harvester.state(source))["last_error"] is None


async def test_oai_dc_records_are_mapped(seeded: NodeProcess, sqlite_hub: Database) -> None:
    node = seeded
    source = Source(key="noeud-dc", base_url=node.oai_url, prefix="oai_dc", name="Nœud DC")
    async with harvester_for(sqlite_hub, node.port) as harvester:
        stats = await harvester.harvest(source)
    assert stats.ok and stats.added == COUNT - 1, stats.errors
    sheet = await store_of(sqlite_hub, source).get("oai:noeud.essaim.test:projet-2")
    assert isinstance(sheet, Sheet)
    assert sheet.title == "Projet n°2 : jardin & <partage>"
    assert sheet.partner.name == "Réseau Test"  # dc:publisher
    assert sheet.holder is not None and sheet.holder.name == "Association 2"
    assert sheet.summary == "Résumé du projet 2"
    assert sheet.description is not None and "projet</p>" not in sheet.description and "<p>" in sheet.description
    assert "jardin partagé" in [t.tag for t in sheet.tags]
    assert sheet.url == "https://reseau.test/projets/2"
    assert sheet.places and sheet.places[0].address and sheet.places[0].address.startswith("Rennes")
    assert [link.url for link in sheet.links] == ["https://reseau.test/doc.pdf"]
    row = (await hub_rows(sqlite_hub, source))["oai:noeud.essaim.test:projet-2"]
    prov = json.loads(row["provenance"])
    assert prov["altered"] is True and prov["metadataNamespace"] == "http://www.openarchives.org/OAI/2.0/oai_dc/"


HUB_TABLES = {
    "sheet": "SELECT uri, source, local_id, stamp, deleted, content_hash, title, data, sets, provenance FROM sheet",
    "sheet_set": "SELECT s.uri, t.spec, t.stamp FROM sheet_set t JOIN sheet s ON s.pk_id = t.sheet_pk",
    "sheet_format": "SELECT s.uri, f.prefix, f.xml FROM sheet_format f JOIN sheet s ON s.pk_id = f.sheet_pk",
    "hub_sheet_match": "SELECT uri, source, block, title_key, cluster FROM hub_sheet_match",
    "hub_unmapped_tag": "SELECT source, tag_key, tag, occurrences, example FROM hub_unmapped_tag",
}


async def hub_tables(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for name, sql in HUB_TABLES.items():
        out[name] = sorted(tuple(str(v) for v in row.values()) for row in await db.fetch(sql))
    return out


@pytest.mark.parametrize("prefix", ["essaim", "oai_dc"])
async def test_worker_processes_write_the_same_rows(seeded: NodeProcess, sqlite_hub: Database, prefix: str) -> None:
    """Pages decoded by worker processes leave the hub's tables byte for byte as in-process decoding
    does: sheets, sets, provenance, duplicate keys, unmapped tags."""
    node, db = seeded, sqlite_hub
    source = node_source(node, prefix)
    await node.ctl("update", n=3, title="Projet n°3", tags="étiquette inconnue")
    await next_second()
    tables = []
    for processes in (0, 2):
        for table in ("sheet_set", "sheet_format", "sheet", "hub_sheet_match", "hub_unmapped_tag", "harvest_state"):
            await db.execute(f"DELETE FROM {table}")  # the same harvest again, from nothing
        async with harvester_for(db, node.port, processes=processes, clock=lambda: 1_800_000_000.0) as harvester:
            stats = await harvester.harvest(source)
            assert stats.ok and stats.added == COUNT - 1 and stats.pages == PAGES, stats.errors
            assert stats.unmapped_tags > 0
            again = await harvester.harvest(source)  # nothing changed: nothing written, either way
            assert again.ok and (again.added, again.updated, again.deleted) == (0, 0, 0)
        tables.append(await hub_tables(db))
    # A hub stores no OAI fragments (its provider renders them when serving).
    assert tables[0]["sheet"] and not tables[0]["sheet_format"] and tables[0]["hub_unmapped_tag"]
    for name in HUB_TABLES:
        assert tables[1][name] == tables[0][name], name
