"""Real-time ingest: the hub follows a registered node; its Create / Update / Delete reach the hub's search
within seconds, under the very key the OAI-PMH harvest uses; a hub down during a push catches up through
the next harvest, and the source's health shows what the harvest repaired."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.hubpush import push_status, sync_follows
from harvesting.push import divergence
from tests.federation.conftest import Node, database_for, free_port
from tests.fedhub.support import hub_settings, running_hub
from tests.search.hub_support import eventually

OAI_ID = "oai:localhost.localdomain:projet-"  # the node's identifiers (Identify's repositoryIdentifier)


@pytest.fixture
def ports() -> dict[str, int]:
    return {"node": free_port(), "hub": free_port()}


@pytest.fixture
def node(ports: dict[str, int], tmp_path: Path) -> Iterator[Node]:
    # One attempt per delivery: a push the hub missed is never retried, only the harvest can bring it.
    n = Node(ports["node"], tmp_path / "node", "alpha", str(ports["hub"]), federation={"max_attempts": 1})
    n.directory.mkdir()
    n.start()
    try:
        yield n
    finally:
        n.stop()


async def _rows(running, source: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return await running.ctx.db.fetch(
        "SELECT local_id, title, deleted, provenance FROM sheet WHERE source = ? ORDER BY local_id", [source]
    )


@pytest.fixture(params=["sqlite", "postgres"])
def hub_database(request: pytest.FixtureRequest) -> Iterator[str]:
    with database_for(request.param, "fedhub") as url:
        yield url


async def test_push_reaches_search_and_the_harvest_confirms_it(
    node: Node, ports: dict[str, int], tmp_path: Path, hub_database: str
) -> None:
    await node.ctl("upsert", n=1, title="Ruche pédagogique de Kerbrat")
    settings = hub_settings(tmp_path / "hub", ports["hub"], [ports["node"]], database_url=hub_database)
    async with running_hub(settings) as hub:
        source = await hub.hub.register(node.base)
        key = source["key"]
        followed = await sync_follows(hub.fed, key)  # what `essaim hub sources add` does right away
        assert [f["actor"] for f in followed] == [node.actor]
        assert followed[0]["repo_id"] == "localhost.localdomain"  # from the node's Identify
        await node.until(lambda s: [r["actor"] for r in s["ap_follower"]] == [hub.fed.actor_id])
        first = await hub.hub.harvest_now(key)
        assert first.ok and first.added == 1

        # Create: searchable within seconds, keyed by the node's OAI identifier, one row only
        await node.ctl("upsert", n=2, title="Jardin partagé de Kermoal")
        await eventually(lambda: _eq(hub.found(q="Kermoal"), 1), within=10)
        rows = await _rows(hub, key)
        assert [r["local_id"] for r in rows] == [f"{OAI_ID}1", f"{OAI_ID}2"]
        pushed = json.loads(rows[1]["provenance"])
        assert pushed["via"] == "activitypub" and pushed["sheetId"].startswith(node.base)

        # Update and Delete
        await node.ctl("upsert", n=2, title="Verger partagé de Kermoal")
        await eventually(lambda: _eq(hub.found(q="Verger"), 1), within=10)
        assert await hub.found(q="Jardin") == 0
        await node.ctl("delete", n=1)
        await eventually(lambda: _eq(hub.found(q="Kerbrat"), 0), within=10)

        # The next incremental harvest confirms what push delivered: nothing to write
        again = await hub.hub.harvest_now(key)
        assert again.ok and (again.added, again.updated, again.deleted) == (0, 0, 0), again
        assert len(await _rows(hub, key)) == 2
        status = await push_status(hub.fed, divergence)
        assert status[0]["follow"] == "accepted" and status[0]["pushed"] == 3
        assert status[0]["repaired_by_harvest"] == 0, status


async def test_hub_down_during_a_push_catches_up_through_the_harvest(
    node: Node, ports: dict[str, int], tmp_path: Path
) -> None:
    settings = hub_settings(tmp_path / "hub", ports["hub"], [ports["node"]])
    async with running_hub(settings) as hub:
        key = (await hub.hub.register(node.base))["key"]
        await sync_follows(hub.fed, key)
        await node.until(lambda s: bool(s["ap_follower"]))
        await hub.hub.harvest_now(key)
        await node.ctl("upsert", n=1, title="Atelier vélo de Quimperlé")
        await eventually(lambda: _eq(hub.found(q="Quimperlé"), 1), within=10)

    # The hub is stopped: the node's pushes fail (one attempt each, given up)
    await node.ctl("upsert", n=2, title="Épicerie solidaire de Landerneau")
    await node.ctl("upsert", n=1, title="Atelier vélo de Morlaix")
    await node.until(lambda s: len([d for d in s["ap_delivery"] if d["status"] == "failed"]) == 2, timeout=15)

    async with running_hub(settings) as hub:
        assert await hub.found(q="Landerneau") == 0  # nothing came while it was down
        stats = await hub.hub.harvest_now(key)
        assert stats.ok and stats.added == 1 and stats.updated == 1, stats
        await eventually(lambda: _eq(hub.found(q="Landerneau"), 1), within=10)
        await eventually(lambda: _eq(hub.found(q="Morlaix"), 1), within=10)
        assert await hub.found(q="Quimperlé") == 0
        assert len(await _rows(hub, key)) == 2  # nothing lost, nothing doubled
        status = await push_status(hub.fed, divergence)
        assert status[0]["repaired_by_harvest"] == 2, status
        assert sorted(status[0]["repaired"]) == [f"{OAI_ID}1", f"{OAI_ID}2"]
        # push works again after the restart
        await node.ctl("upsert", n=3, title="Recyclerie de Brest")
        await eventually(lambda: _eq(hub.found(q="Recyclerie"), 1), within=10)


async def _eq(value, expected) -> bool:  # type: ignore[no-untyped-def]
    return (await value) == expected
