"""Conversations: a fediverse user who sees a sheet through a hub feed actor and replies to it reaches the
partner node that owns the sheet (the hub announces the node's own object, so the reply is addressed to it)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from federation.hubpush import sync_follows
from tests.federation.conftest import AP, KEYS, Node, Peer, free_port
from tests.fedhub.support import hub_settings, running_hub
from tests.search.hub_support import eventually


@pytest.fixture
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("node", "hub", "peer")}


@pytest.fixture
def node(ports: dict[str, int], tmp_path: Path) -> Iterator[Node]:
    (tmp_path / "node").mkdir()
    n = Node(ports["node"], tmp_path / "node", "gamma", f"{ports['hub']},{ports['peer']}")
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
async def peer(ports: dict[str, int]) -> AsyncIterator[Peer]:
    p = Peer(ports["peer"], KEYS, name="zoe")
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def test_reply_to_a_hub_feed_post_reaches_the_owning_node(
    node: Node, peer: Peer, ports: dict[str, int], tmp_path: Path
) -> None:
    settings = hub_settings(tmp_path / "hub", ports["hub"], [ports["node"], ports["peer"]], fedhub={"regions": ["52"]})
    async with running_hub(settings) as hub:
        key = (await hub.hub.register(node.base))["key"]
        await sync_follows(hub.fed, key)
        await node.until(lambda s: bool(s["ap_follower"]))
        feed = f"{hub.fed.base_url}/feeds/region-52"
        follow = {"id": f"{peer.actor}/follows/1", "type": "Follow", "actor": peer.actor, "object": feed}
        status, text = await peer.post(f"{hub.fed.base_url}/inbox", follow)
        assert status == 202, text
        created = await node.ctl("upsert", n=7, themes="SOL", region="52", title="Tiers-lieu de Nantes")

        def announce() -> dict | None:
            return next((r["body"] for r in peer.received if r["body"].get("type") == "Announce"), None)

        async def announced() -> bool:
            return announce() is not None

        await eventually(announced, within=15)
        post = announce()
        assert post is not None and post["actor"] == feed and post["object"] == created["uri"]
        # The user's server fetches the announced object: the node's own Note, attributed to the node's actor
        async with aiohttp.ClientSession() as session, session.get(post["object"], headers={"Accept": AP}) as r:
            note = json.loads(await r.text())
        assert note["attributedTo"] == node.actor
        reply = {
            "id": f"{peer.actor}/activities/{uuid.uuid4()}",
            "type": "Create",
            "actor": peer.actor,
            "object": {
                "id": f"{peer.actor}/notes/{uuid.uuid4()}",
                "type": "Note",
                "attributedTo": peer.actor,
                "content": "Nous aimerions venir vous voir",
                "inReplyTo": note["id"],
                "to": [node.actor],
            },
        }
        status, text = await peer.post(f"{node.actor}/inbox", reply)
        assert status == 202, text
        state = await node.until(lambda s: bool(s["ap_message"]))
        assert [(m["actor"], m["content"]) for m in state["ap_message"]] == [
            (peer.actor, "Nous aimerions venir vous voir")
        ]
