"""A real network on loopback: three node processes and a hub. A change on one node and a deletion
on another reach the hub on the next incremental harvest; the third node's run writes nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from harvesting.hub import Hub
from harvesting.transport import OaiTransport
from node.db import Database
from node.outbound import OutboundClient
from tests.harvesting.conftest import HUB_URL, NodeProcess, outbound_config, spawn_node

SIZES = (9, 15, 20)


@pytest.fixture(scope="module")
def three_nodes() -> Iterator[list[NodeProcess]]:
    with spawn_node() as a, spawn_node() as b, spawn_node() as c:
        yield [a, b, c]


async def test_change_and_deletion_reach_the_hub(three_nodes: list[NodeProcess], hub_db: Database) -> None:
    db = hub_db
    await db.execute("DELETE FROM harvest_source")
    for node, size in zip(three_nodes, SIZES, strict=True):
        await node.ctl("reset")
        await node.ctl("seed", count=size)
    await asyncio.sleep(1.05 - time.time() % 1)
    async with OutboundClient(outbound_config(*(n.port for n in three_nodes))) as client:
        hub = Hub(db, OaiTransport(client), hub_base_url=HUB_URL)
        keys = [(await hub.register(n.oai_url, key=f"noeud-{i}"))["key"] for i, n in enumerate(three_nodes)]
        runs = await hub.run_due(limit=3)  # the three claimed and harvested at once
        assert sorted(r.added for r in runs) == sorted(SIZES) and all(r.ok for r in runs)

        async def live(key: str) -> dict[str, str]:
            rows = await db.fetch("SELECT local_id, data FROM sheet WHERE source = ? AND deleted = ?", [key, False])
            return {r["local_id"]: json.loads(r["data"])["title"] for r in rows}

        assert [len(await live(k)) for k in keys] == list(SIZES)

        await three_nodes[1].ctl("update", n=3, title="Titre changé sur le nœud")
        await three_nodes[2].ctl("delete", n=5)
        await asyncio.sleep(1.05 - time.time() % 1)
        await db.execute("UPDATE harvest_source SET next_run = 0")
        runs = {r.source: r for r in await hub.run_due(limit=3)}
        assert all(r.ok and r.incremental_from for r in runs.values())
        assert (runs[keys[0]].added, runs[keys[0]].updated, runs[keys[0]].deleted) == (0, 0, 0)
        assert (runs[keys[1]].updated, runs[keys[2]].deleted) == (1, 1)
        assert (await live(keys[1]))["oai:noeud.essaim.test:projet-3"] == "Titre changé sur le nœud"
        gone = await db.fetchone(
            "SELECT deleted, data FROM sheet WHERE source = ? AND local_id = ?",
            [keys[2], "oai:noeud.essaim.test:projet-5"],
        )
        assert gone is not None and bool(gone["deleted"]) and gone["data"] is None  # a tombstone
        assert len(await live(keys[2])) == SIZES[2] - 1
