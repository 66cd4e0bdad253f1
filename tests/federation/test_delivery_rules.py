"""Delivery rules against a real node: shared-inbox de-duplication, the give-up rules, signing as the sender."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.federation.conftest import Node, Peer, free_port, running_peer
from tests.federation.test_federation import activity


@pytest.fixture(scope="module")
def delivery_ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def node(delivery_ports: tuple[int, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(
        delivery_ports[0],
        tmp_path_factory.mktemp("delivery"),
        "theta",
        ",".join(map(str, delivery_ports)),
        federation={"max_attempts": 3, "retry_base": 0.2, "retry_max": 0.3},
    )
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
async def peer(delivery_ports: tuple[int, int]) -> AsyncIterator[Peer]:
    async with running_peer(delivery_ports[1]) as p:
        yield p


def of_sheet(peer: Peer, uri: str) -> list[dict[str, Any]]:
    return [
        r for r in peer.received if isinstance(r["body"].get("object"), dict) and r["body"]["object"].get("id") == uri
    ]


async def test_followers_sharing_an_inbox_get_one_delivery(node: Node, peer: Peer) -> None:
    bob = dataclasses.replace(peer, name="bob")  # a second actor on the same server (same shared inbox)
    for who in (peer, bob):
        assert (await who.post(f"{node.base}/inbox", activity(who, "Follow", node.actor)))[0] == 202
    state = await node.until(
        lambda s: len(s["ap_follower"]) == 2 and all(d["status"] == "done" for d in s["ap_delivery"])
    )
    accepts = [r for r in peer.received if r["body"]["type"] == "Accept"]
    assert sorted(r["path"] for r in accepts) == ["/users/bob/inbox", "/users/mallory/inbox"]  # to each actor
    created = await node.ctl("upsert", n=70)
    await node.until(lambda s: all(d["status"] == "done" for d in s["ap_delivery"]))
    creates = of_sheet(peer, created["uri"])
    assert [r["path"] for r in creates] == ["/inbox"]  # one POST to the shared inbox for both followers
    assert len(state["ap_delivery"]) == 2


async def test_give_up_rules(node: Node, peer: Peer) -> None:
    # a 4xx other than 408/425/429 is final: one attempt, then failed
    peer.answers[:] = [(410, {})]
    gone = await node.ctl("upsert", n=71)
    state = await node.until(lambda s: any(d["status"] == "failed" for d in s["ap_delivery"]))
    failed = [d for d in state["ap_delivery"] if d["status"] == "failed"]
    assert [(d["attempts"], d["last_error"]) for d in failed] == [(1, "HTTP 410")]
    assert len(of_sheet(peer, gone["uri"])) == 1
    # 429 is retried (here it then succeeds)
    peer.answers[:] = [(429, {"Retry-After": "0"})]
    limited = await node.ctl("upsert", n=72)
    await node.until(lambda s: all(d["status"] != "pending" for d in s["ap_delivery"]))
    assert len(of_sheet(peer, limited["uri"])) == 2
    # 5xx is retried until max_attempts (3 here), then given up
    peer.answers[:] = [(500, {})] * 3
    broken = await node.ctl("upsert", n=73)
    state = await node.until(lambda s: len([d for d in s["ap_delivery"] if d["status"] == "failed"]) == 2, timeout=15)
    last = [d for d in state["ap_delivery"] if d["status"] == "failed"][-1]
    assert (last["attempts"], last["last_error"]) == (3, "HTTP 500")
    assert len(of_sheet(peer, broken["uri"])) == 3


async def test_per_host_concurrency(node: Node, peer: Peer) -> None:
    """However many deliveries are due for one host, at most ``per_host`` (2) are in flight at once."""
    await node.until(lambda s: all(d["status"] != "pending" for d in s["ap_delivery"]))
    peer.delay = 0.3
    uris = [(await node.ctl("upsert", n=n))["uri"] for n in range(80, 86)]
    await node.until(lambda s: all(d["status"] != "pending" for d in s["ap_delivery"]), timeout=15)
    assert all(len(of_sheet(peer, uri)) == 1 for uri in uris)
    assert peer.busy[1] == 2
