"""An independent implementation checks our node: fediverse-pasture (built on bovine) on loopback.

Its actor verifier fetches our actors, posts signed and unsigned activities to our
inboxes and checks the WebFinger round trip; its ``follower`` actor follows our
node actor and a feed actor, and its inbox only accepts what bovine's signature
checker verifies (fetching our key with a signed GET of its own).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.federation.conftest import REPO, Node, free_port

pytest.importorskip("fediverse_pasture", reason="fediverse-pasture is installed by the test extras")


@pytest.fixture(scope="module")
def pasture_ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def node(pasture_ports: tuple[int, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(
        pasture_ports[0],
        tmp_path_factory.mktemp("pasture-node"),
        "delta",
        ",".join(str(p) for p in pasture_ports),
        federation={"feeds": ["ENV"]},
    )
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture(scope="module")
def pasture(pasture_ports: tuple[int, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = pasture_ports[1]
    directory = tmp_path_factory.mktemp("pasture")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.federation.pasture_server", str(port), str(directory)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(_wait_ready(base, process))
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


async def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if process.poll() is not None:
                pytest.fail("the pasture server exited (see its stderr above)")
            try:
                async with session.get(f"{base}/ready") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail("the pasture server did not start")


async def call(method: str, url: str, **params: str) -> Any:
    async with aiohttp.ClientSession() as session, session.request(method, url, params=params) as r:
        assert r.status == 200, await r.text()
        return await r.json()


@pytest.mark.parametrize("who", ["node", "feed"])
async def test_pasture_verifies_our_actors(node: Node, pasture: str, who: str) -> None:
    handle = (
        f"acct:{node.username}@127.0.0.1:{node.port}"
        if who == "node"
        else f"acct:theme-environnement@127.0.0.1:{node.port}"
    )
    answer = await call("GET", f"{pasture}/verify", actor_uri=handle)
    result, log = answer["result"], answer["messages"]
    assert result["webfinger"] is True, log  # handle -> actor -> preferredUsername@host -> the same actor
    # alice posts unsigned: refused; bob and claire post signed (claire's key only with a signed GET): accepted
    assert result["alice"] == {"get_actor": True, "post_inbox": False}, log
    assert result["bob"] == {"get_actor": True, "post_inbox": True}, log
    assert result["claire"] == {"get_actor": True, "post_inbox": True}, log


async def test_pasture_follows_and_receives_create_update_delete(node: Node, pasture: str) -> None:
    follower = f"{pasture}/follower"
    for target, inbox in ((node.actor, f"{node.actor}/inbox"), (f"{node.base}/feeds/ENV", f"{node.base}/inbox")):
        answer = await call("POST", f"{pasture}/follow", object=target, inbox=inbox)
        assert answer["status"] == 202, answer
    state = await node.until(
        lambda s: (
            [r["actor"] for r in s["ap_follower"]] == [follower]
            and [r["actor"] for r in s["ap_feed_follower"]] == [follower]
        )
    )

    created = await node.ctl("upsert", n=50, themes="ENV")
    await node.ctl("upsert", n=50, themes="ENV", title="Titre revu")
    await node.ctl("delete", n=50)
    # every delivery was accepted at the first attempt by bovine's signature check (it answers 401 otherwise)
    state = await node.until(
        lambda s: len(s["ap_delivery"]) == 6 and all(d["status"] == "done" for d in s["ap_delivery"])
    )
    assert [d["attempts"] for d in state["ap_delivery"]] == [1] * 6
    items = (await call("GET", f"{pasture}/received"))["items"]
    kinds = [(i["type"], i["actor"].rsplit("/", 2)[-1]) for i in items]
    assert kinds.count(("Accept", "actor")) == 1 and kinds.count(("Accept", "ENV")) == 1
    by_type = {i["type"]: i for i in items if i["actor"] == node.actor}
    assert by_type["Create"]["object"]["id"] == created["uri"]
    assert "Titre revu" in by_type["Update"]["object"]["content"]
    assert by_type["Delete"]["object"]["type"] == "Tombstone"
    announce = next(i for i in items if i["type"] == "Announce")
    assert announce["object"] == created["uri"] and announce["actor"] == f"{node.base}/feeds/ENV"
