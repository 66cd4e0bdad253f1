"""An external 3-node Typesense cluster (Typesense's own Raft): the hub keeps searching and
indexing when one node is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import aiohttp

from node.context import NODE
from search.server import EmbeddedTypesense, raft_nodes_line
from tests.oai_support import make_sheet
from tests.search.hub_support import eventually, found, hub_client, hub_settings, runtime, skip_without_typesense

KEY = "cluster-test-key-0123456789"


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


async def node_state(url: str) -> int | None:
    """Raft state from ``/debug``: 1 is the leader, 4 a follower."""
    try:
        async with (
            aiohttp.ClientSession(headers={"X-TYPESENSE-API-KEY": KEY}) as session,
            session.get(f"{url}/debug", timeout=aiohttp.ClientTimeout(total=2)) as r,
        ):
            return int((await r.json()).get("state")) if r.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def test_three_node_cluster_survives_the_loss_of_one(tmp_path) -> None:
    skip_without_typesense()
    ports = free_ports(6)
    peers = [("127.0.0.1", ports[2 * i + 1], ports[2 * i]) for i in range(3)]
    line = raft_nodes_line(peers)
    servers = [
        EmbeddedTypesense(
            tmp_path / f"ts{i}", port=api, api_key=KEY, peering_port=peering, raft_nodes=line, thread_pool_size=2
        )
        for i, (_, peering, api) in enumerate(peers)
    ]
    try:
        # Started side by side: a node is healthy only once the cluster has elected a leader.
        await asyncio.gather(*(s.start(ready_within=90) for s in servers))
        urls = [s.url for s in servers]

        async def has_leader() -> bool:
            return 1 in await asyncio.gather(*(node_state(u) for u in urls))

        await eventually(has_leader, within=60, every=0.5)
        settings = hub_settings(tmp_path / "hub", urls=urls, api_key=KEY, embedded=False, timeout=2.0)
        async with hub_client(settings) as client:
            ctx = client.server.app[NODE]
            rt = runtime(client)
            assert rt.server is None  # external: the hub started nothing
            async with ctx.db.transaction() as tx:
                await ctx.store.upsert_many([make_sheet(n, id="") for n in range(100)], tx=tx)
            await eventually(lambda: _is(found(client, q="projet"), 100), within=20)

            # Kill the leader: the two others elect a new one; searches and indexing go on.
            states = await asyncio.gather(*(node_state(u) for u in urls))
            leader = states.index(1)
            servers[leader]._stopping = True  # its supervisor must not bring it back: the node is lost
            os.kill(servers[leader].pid, signal.SIGKILL)
            killed_at = time.monotonic()
            survivors = [u for i, u in enumerate(urls) if i != leader]

            async with ctx.db.transaction() as tx:
                await ctx.store.upsert_many([make_sheet(n, id="") for n in range(100, 150)], tx=tx)
            await ctx.store.delete("projet-0")

            statuses: list[int] = []

            async def searching() -> bool:
                response = await client.get("/api/search", params={"q": "projet", "per_page": "0"})
                statuses.append(response.status)
                return response.status == 200 and (await response.json())["found"] == 149

            took = await eventually(searching, within=30, every=0.2)
            recovered = time.monotonic() - killed_at
            # Both survivors converge on the same documents (a follower applies the log a little later).
            for url in survivors:
                await eventually(lambda url=url: _documents_are(url, 149), within=20, every=0.2)
            # Once the survivors agree, every search answers the same, whichever node serves it.
            for _ in range(20):
                assert await found(client, q="projet", per_page="0") == 149
            # No search failed while the cluster re-elected (they saw the old documents meanwhile).
            assert set(statuses) == {200}, statuses
            assert took < 30 and recovered < 40
    finally:
        for s in servers:
            await s.stop(grace=5)


async def _is(awaitable, value) -> bool:
    return (await awaitable) == value


async def _documents_are(url: str, n: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession(headers={"X-TYPESENSE-API-KEY": KEY}) as session,
            session.get(f"{url}/collections/sheets") as r,
        ):
            return r.status == 200 and (await r.json())["num_documents"] == n
    except aiohttp.ClientError:
        return False
