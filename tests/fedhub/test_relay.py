"""Hub to hub: three nodes push to a regional hub, whose relay actor a national hub follows. A node's create,
update and deletion reach both hubs' search; the national hub holds each record once, under the key its
OAI-PMH harvest of the regional hub uses (its next harvest confirms them), with the provenance chain."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.hubpush import sync_follows
from tests.federation.conftest import REPO, Node, free_port
from tests.fedhub.support import hub_settings, running_hub
from tests.search.hub_support import eventually, skip_without_typesense


class HubProcess:
    def __init__(self, directory: Path, port: int, allow: list[int]) -> None:
        self.directory, self.port, self.allow = directory, port, allow
        self.process: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fedhub.hub_process",
                str(self.directory),
                str(self.port),
                ",".join(map(str, self.allow)),
                "{}",
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 90)
        if not ready or not self.process.stdout.readline():
            pytest.fail("the hub process did not start (see its stderr above)")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    async def request(self, method: str, path: str, **params: str) -> Any:
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, self.base + path, params=params) as r,
        ):
            assert r.status == 200, await r.text()
            return await r.json()

    async def found(self, q: str) -> int:
        return int((await self.request("GET", "/api/search", q=q))["found"])


@pytest.fixture
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("a", "b", "c", "regional", "national")}


@pytest.fixture
def nodes(ports: dict[str, int], tmp_path: Path) -> Iterator[list[Node]]:
    started = []
    try:
        for name in ("a", "b", "c"):
            (tmp_path / name).mkdir()
            node = Node(ports[name], tmp_path / name, f"noeud{name}", str(ports["regional"]))
            node.start()
            started.append(node)
        yield started
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def national(ports: dict[str, int], tmp_path: Path) -> Iterator[HubProcess]:
    skip_without_typesense()
    hub = HubProcess(tmp_path / "national", ports["national"], [ports["regional"]])
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


async def test_regional_hub_relays_to_the_national_hub(
    nodes: list[Node], national: HubProcess, ports: dict[str, int], tmp_path: Path
) -> None:
    a, b, c = nodes
    await b.ctl("upsert", n=1, title="Bibliothèque d'outils de Vannes")
    await c.ctl("upsert", n=1, title="Café associatif de Redon")
    settings = hub_settings(tmp_path / "regional", ports["regional"], [ports[n] for n in ("a", "b", "c", "national")])
    async with running_hub(settings) as regional:
        for node in nodes:
            key = (await regional.hub.register(node.base))["key"]
            await sync_follows(regional.fed, key)
            await node.until(lambda s: bool(s["ap_follower"]))
            assert (await regional.hub.harvest_now(key)).ok
        registered = await national.request("POST", "/ctl/register", url=regional.fed.base_url)
        assert [f["actor"] for f in registered["followed"]] == [f"{regional.fed.base_url}/feeds/relay"]
        assert registered["followed"][0]["kind"] == "relay"

        async def relay_followed() -> bool:
            rows = await regional.ctx.db.fetch("SELECT actor FROM ap_feed_follower WHERE feed = 'relay'")
            return [r["actor"] for r in rows] == [f"{national.base}/actor"]

        await eventually(relay_followed, within=15)

        async def initial_load() -> bool:
            # the two records, harvested (or already relayed, if the regional worker was quicker); the
            # provider leaves out records of the current second, which the next run brings
            assert (await national.request("POST", "/ctl/harvest", key=registered["key"]))["ok"]
            return len(await national.request("GET", "/ctl/sheets")) == 2

        await eventually(initial_load, within=15, every=1.0)

        # a create, an update, a deletion on three nodes: both hubs' search
        await a.ctl("upsert", n=5, title="Conserverie solidaire de Pontivy")
        await b.ctl("upsert", n=1, title="Bibliothèque d'outils de Vannes et d'Auray")
        await c.ctl("delete", n=1)
        for hub_found in (regional.found, national.found):
            await eventually(lambda f=hub_found: _is(f(q="Pontivy"), 1), within=15)
            await eventually(lambda f=hub_found: _is(f(q="Auray"), 1), within=15)
            await eventually(lambda f=hub_found: _is(f(q="Redon"), 0), within=15)

        sheets = await national.request("GET", "/ctl/sheets")
        assert len(sheets) == 3  # one row per record: a:5, b:1, c:1 (a tombstone)
        assert sorted(bool(s["deleted"]) for s in sheets) == [False, False, True]
        pontivy = next(s for s in sheets if s["title"] == "Conserverie solidaire de Pontivy")
        provenance = json.loads(pontivy["provenance"])
        # keyed by the regional hub's OAI identifier: source key and the node's identifier inside it
        source_key = registered["key"]
        regional_source = next(
            s["source"]
            for s in await regional.ctx.db.fetch(
                "SELECT source FROM sheet WHERE title = ?", ["Conserverie solidaire de Pontivy"]
            )
        )
        assert pontivy["source"] == source_key
        assert (
            pontivy["local_id"] == f"oai:localhost.localdomain:{regional_source}:oai%3Alocalhost.localdomain%3Aprojet-5"
        )
        assert provenance["via"] == "activitypub" and provenance["baseURL"] == f"{regional.fed.base_url}/oai"
        origin = provenance["originDescription"]  # the regional hub's provenance: the node, its identifier
        assert origin["baseURL"] == f"{a.base}/oai" and origin["identifier"] == "oai:localhost.localdomain:projet-5"
        assert origin["sheetId"].startswith(a.base)

        # the national hub's next harvest of the regional hub confirms what the relay delivered
        again = await national.request("POST", "/ctl/harvest", key=registered["key"])
        assert again["ok"] and (again["added"], again["updated"], again["deleted"]) == (0, 0, 0), again
        assert len(await national.request("GET", "/ctl/sheets")) == 3


async def _is(value, expected) -> bool:  # type: ignore[no-untyped-def]
    return (await value) == expected
