"""Actor and collection shapes checked by ``activitypub-testing`` (the socialweb.coop test cases, npm).

The CLI runs its "test actor" suite against a live node on loopback, for the node
actor and a feed actor. Tests not applicable to a server without client-to-server
posting (outbox POST) or without ``likes``/``liked`` collections are reported
``inapplicable`` by the tool; none may fail, and the shape tests must pass.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator

import pytest

from tests.federation.conftest import REPO, Node, free_port

CLI = REPO / "node_modules" / "activitypub-testing" / "src" / "cli.js"
MUST_PASS = {
    "actor-objects-must-have-inbox-outbox-properties",
    "actor-must-serve-as2-object-to-get",
    "inbox-must-be-an-orderedcollection",
    "outbox-must-be-an-orderedcollection",
    "followers-collection-must-be-a-collection",
    "following-collection-must-be-a-collection",
}

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not installed: ./run setup needs npm"),
    pytest.mark.skipif(not CLI.exists(), reason="activitypub-testing is not installed: run ./run setup (npm ci)"),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    port = free_port()
    n = Node(port, tmp_path_factory.mktemp("aptesting"), "zeta", str(port), federation={"feeds": ["ENV"]})
    n.start()
    try:
        yield n
    finally:
        n.stop()


async def run_actor_suite(actor: str) -> dict[str, dict[str, str]]:
    process = await asyncio.create_subprocess_exec(
        shutil.which("node") or "node",
        str(CLI),
        "test",
        "actor",
        actor,
        "--output=json-seq",  # the plain "json" output compacts against a remote context (no network here)
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    results = {}
    for line in out.decode().splitlines():
        line = line.strip().lstrip("\x1e")
        if line:
            record = json.loads(line)
            results[record["test"]["slug"]] = record["result"]
    return results


@pytest.mark.parametrize("path", ["/actor", "/feeds/ENV"])
async def test_actor_and_collection_shapes(node: Node, path: str) -> None:
    await node.ctl("upsert", n=60, themes="ENV")  # non-empty outbox and featured
    results = await run_actor_suite(node.base + path)
    failed = {slug: r for slug, r in results.items() if r["outcome"] == "failed"}
    assert not failed, failed
    assert MUST_PASS <= set(results), sorted(results)
    for slug in MUST_PASS:
        assert results[slug]["outcome"] == "passed", (slug, results[slug])
