"""The hub as a program: ``essaim hub sources|harvest`` against a real node process, the scheduler,
and claims that never hand one source to two workers (PostgreSQL: two hub processes at once)."""

from __future__ import annotations

import asyncio
import html
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from essaim.cli import main
from essaim.settings import load_settings
from harvesting.hub import SourceRegistry, run_scheduler
from node.db import Database
from tests.harvesting.conftest import REPO, NodeProcess
from tests.oai_support import _pg_reachable, _pg_test_url, open_database

COUNT = 30


def hub_dir(tmp_path: Path, *ports: int) -> Path:
    data = tmp_path / "hub"
    data.mkdir()
    allow = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
    (data / "essaim.toml").write_text(
        f'role = "hub"\nbase_url = "http://127.0.0.1:8999"\ndata_dir = "{data}"\n'
        f"[outbound]\nallow = [{allow}]\ntotal_timeout = 10.0\n"
        "[hub]\nharvest_interval = 600\npoll = 0.2\n",
        encoding="utf-8",
    )
    return data


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
async def seeded(node: NodeProcess) -> NodeProcess:
    await node.ctl("reset")
    await node.ctl("seed", count=COUNT)
    await asyncio.sleep(1.05 - time.time() % 1)  # the node lists records of past seconds only
    return node


def test_cli_add_list_harvest_remove(seeded: NodeProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(hub_dir(tmp_path, seeded.port))
    code, out, err = run(capsys, "hub", "sources", "add", f"http://127.0.0.1:{seeded.port}", "--data-dir", data)
    assert code == 0, err
    assert "added banque-de-l-innovation-sociale-noeud-de-test" in out
    key = "banque-de-l-innovation-sociale-noeud-de-test"
    # The same endpoint twice is refused; a dead endpoint is refused with the reason.
    code, _, err = run(capsys, "hub", "sources", "add", seeded.oai_url, "--data-dir", data)
    assert code == 1 and "already registered" in err
    code, _, err = run(capsys, "hub", "sources", "add", "http://127.0.0.1:9/", "--data-dir", data)
    assert code == 1 and "127.0.0.1:9" in err

    code, out, _ = run(capsys, "hub", "sources", "list", "--json", "--data-dir", data)
    (row,) = json.loads(out)
    assert (row["key"], row["kind"], row["prefix"], row["interval"], row["last_run"]) == (
        key,
        "essaim",
        "essaim",
        600,
        None,
    )
    assert row["name"] == "Banque de l'innovation sociale — nœud de test"

    code, out, err = run(capsys, "hub", "harvest", key, "--json", "--data-dir", data)
    assert code == 0, err
    stats = json.loads(out)
    assert (stats["added"], stats["updated"], stats["deleted"], stats["rejected"], stats["errors"]) == (
        COUNT,
        0,
        0,
        0,
        [],
    )

    code, out, _ = run(capsys, "hub", "harvest", "--all", "--data-dir", data)
    assert code == 0 and f"{key}: 1 pages, 0 added" in out  # incremental: nothing new

    code, out, _ = run(capsys, "hub", "sources", "list", "--data-dir", data)
    header, line = out.strip().splitlines()
    assert header.split()[:3] == ["key", "name", "last"]
    assert line.startswith(key) and " 0 " in line

    code, out, _ = run(capsys, "hub", "sources", "list", "--json", "--data-dir", data)
    (row,) = json.loads(out)
    assert row["stats"]["complete"] and row["last_error"] is None and row["next_run"] >= time.time() + 590

    code, out, _ = run(capsys, "hub", "sources", "remove", key, "--data-dir", data)
    assert code == 0
    code, _, err = run(capsys, "hub", "sources", "remove", key, "--data-dir", data)
    assert code == 1 and "no source" in err
    code, _, err = run(capsys, "hub", "harvest", key, "--data-dir", data)
    assert code == 1 and "no source" in err


async def test_scheduler_harvests_due_source(seeded: NodeProcess, tmp_path: Path) -> None:
    from essaim.hub import open_hub

    settings = load_settings(hub_dir(tmp_path, seeded.port) / "essaim.toml", environ={})
    async with open_database("sqlite") as db:
        counters: dict[str, int] = {}

        def count(name: str, by: int) -> None:
            counters[name] = counters.get(name, 0) + by

        async with open_hub(settings, db, count=count) as hub:
            row = await hub.register(seeded.oai_url, interval=120)
            assert row["next_run"] <= time.time()  # a new source is due at once
            task = asyncio.create_task(run_scheduler(hub, workers=2, poll=0.1))
            try:
                for _ in range(100):
                    await asyncio.sleep(0.1)
                    done = await hub.registry.get(row["key"])
                    if done and done["last_run"]:
                        break
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        assert done and done["last_run"]
        assert json.loads(done["last_stats"])["added"] == COUNT
        assert done["next_run"] >= done["last_run"] + 120
        assert (done["running_by"], done["claimed_until"]) == (None, 0)
        live = await db.fetchone(
            "SELECT COUNT(*) AS n FROM sheet WHERE source = ? AND deleted = ?", [row["key"], False]
        )
        assert live and live["n"] == COUNT
        assert counters["harvest_runs_total"] == 1 and counters["harvest_added_total"] == COUNT


async def test_sqlite_claims_are_exclusive() -> None:
    async with open_database("sqlite") as db:
        registry = SourceRegistry(db)
        for n in range(5):
            await registry.add(base_url=f"https://n{n}.example/oai", name=f"N{n}")
        first = await registry.claim_due("a", ttl=60, limit=3)
        second = await registry.claim_due("b", ttl=60, limit=5)
        assert len(first) == 3 and len(second) == 2
        assert not {r["key"] for r in first} & {r["key"] for r in second}
        assert await registry.claim_due("c", ttl=60, limit=5) == []


CLAIMER = """
import asyncio, json, sys
from harvesting.hub import SourceRegistry
from node.db import Database

async def main(url, worker):
    db = Database(url)
    await db.open()
    registry = SourceRegistry(db)
    got = []
    for _ in range(40):
        got += [r["key"] for r in await registry.claim_due(worker, ttl=600, limit=1)]
    print(json.dumps(got))
    await db.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.postgres
async def test_postgres_two_claimers_never_share_a_source() -> None:
    reason = await _pg_reachable()
    if reason:
        pytest.skip(reason)
    async with open_database("postgres") as db:
        await db.execute("DELETE FROM harvest_source")
        registry = SourceRegistry(db)
        for n in range(30):
            await registry.add(base_url=f"https://n{n}.example/oai", name=f"N{n}")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", CLAIMER, _pg_test_url(), f"w{i}", cwd=REPO, env=env, stdout=subprocess.PIPE
            )
            for i in range(2)
        ]
        outs = [json.loads((await p.communicate())[0]) for p in procs]
        assert all(p.returncode == 0 for p in procs)
        assert not set(outs[0]) & set(outs[1])
        assert sorted(outs[0] + outs[1]) == sorted(f"n{n}" for n in range(30))
        rows = await db.fetch("SELECT key, running_by FROM harvest_source")
        owner = {k: f"w{i}" for i, keys in enumerate(outs) for k in keys}
        assert all(owner[r["key"]] == r["running_by"] for r in rows)
        await db.execute("DELETE FROM harvest_source")


async def test_hub_server_runs_the_scheduler(seeded: NodeProcess, tmp_path: Path) -> None:
    """``essaim node serve`` of a hub: the scheduler harvests a due source; /metrics counts it."""
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer

    from essaim.app import build_app
    from essaim.hub import open_hub

    settings = load_settings(hub_dir(tmp_path, seeded.port) / "essaim.toml", environ={})
    db = Database(settings.effective_database_url)
    await db.upgrade()
    await db.open()
    try:
        async with open_hub(settings, db) as hub:
            await hub.register(seeded.oai_url)
    finally:
        await db.close()
    server = TestServer(build_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:
            text = ""
            for _ in range(100):
                async with session.get(server.make_url("/metrics")) as response:
                    text = await response.text()
                if "essaim_harvest_added_total" in text:
                    break
                await asyncio.sleep(0.1)
            assert f"essaim_harvest_added_total {COUNT}" in text and "essaim_harvest_runs_total 1" in text
            # The harvested sheets reach the hub's own index (queue + embedded Typesense) and its front.
            found = -1
            for _ in range(200):
                async with session.get(server.make_url("/api/search"), params={"q": ""}) as response:
                    found = int((await response.json())["found"]) if response.status == 200 else -1
                if found == COUNT:
                    break
                await asyncio.sleep(0.1)
            assert found == COUNT
            async with session.get(server.make_url("/")) as response:
                assert response.status == 200
            from node.context import NODE

            row = await server.app[NODE].db.fetchone("SELECT uri, title FROM sheet WHERE deleted = ? LIMIT 1", [False])
            path = row["uri"].removeprefix(settings.base_url)
            async with session.get(server.make_url(path)) as response:
                page = await response.text()
                assert response.status == 200
            assert html.escape(row["title"], quote=False) in page and 'href="/partenaires/' in page
    finally:
        await server.close()


def test_cli_crosswalk(seeded: NodeProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(hub_dir(tmp_path, seeded.port))
    assert run(capsys, "hub", "sources", "add", seeded.oai_url, "--key", "n", "--data-dir", data)[0] == 0
    code, _, err = run(capsys, "hub", "harvest", "n", "--progress", "--data-dir", data)
    assert code == 0 and "n: 100%" in err and f"{COUNT}/{COUNT}" in err  # the progress bar
    code, out, _ = run(capsys, "hub", "crosswalk", "unmapped", "--json", "--data-dir", data)
    assert code == 0 and [(r["source"], r["tag"], r["occurrences"]) for r in json.loads(out)] == [
        ("n", "inclassable", COUNT)
    ]
    code, _, err = run(capsys, "hub", "crosswalk", "set", "n", "inclassable", "XYZ", "--data-dir", data)
    assert code == 1 and "unknown taxonomy code(s): XYZ" in err
    code, _, err = run(capsys, "hub", "crosswalk", "set", "nope", "inclassable", "EDU", "--data-dir", data)
    assert code == 1 and "no source 'nope'" in err
    code, out, _ = run(capsys, "hub", "crosswalk", "set", "n", "Inclassable", "--ignore", "--data-dir", data)
    assert code == 0 and "(ignored)" in out and "full one" in out
    code, out, _ = run(capsys, "hub", "crosswalk", "list", "--data-dir", data)
    assert out.split() == ["n", "Inclassable", "→", "(ignored)"]
    assert run(capsys, "hub", "crosswalk", "unmapped", "--data-dir", data)[1] == ""
    code, out, _ = run(capsys, "hub", "harvest", "n", "--json", "--data-dir", data)
    stats = json.loads(out)
    assert code == 0 and stats["unchanged"] == COUNT and stats["unmapped_tags"] == 0  # a full run, nothing new
    assert run(capsys, "hub", "crosswalk", "remove", "n", "inclassable", "--data-dir", data)[0] == 0
    code, _, err = run(capsys, "hub", "crosswalk", "remove", "n", "inclassable", "--data-dir", data)
    assert code == 1 and "no rule" in err


async def test_register_a_provider_whose_endpoint_is_not_slash_oai(seeded: NodeProcess) -> None:
    """Any OAI-PMH provider: its base URL as given (here ``/depot/request``, relaying a real node)."""
    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer

    from harvesting.hub import Hub
    from harvesting.transport import HarvestError, OaiTransport
    from node.outbound import OutboundClient
    from tests.harvesting.conftest import HUB_URL, outbound_config

    async def relay(request: web.Request) -> web.Response:
        async with ClientSession() as session, session.get(seeded.oai_url, params=request.query) as upstream:
            body = await upstream.read()
            return web.Response(body=body, headers={"Content-Type": upstream.headers["Content-Type"]})

    app = web.Application()
    app.router.add_get("/depot/request", relay)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with open_database("sqlite") as db, OutboundClient(outbound_config(server.port)) as client:
            hub = Hub(db, OaiTransport(client), hub_base_url=HUB_URL)
            row = await hub.register(f"http://127.0.0.1:{server.port}/depot/request/")
            assert row["base_url"] == f"http://127.0.0.1:{server.port}/depot/request" and row["kind"] == "essaim"
            info = json.loads(row["info"])
            assert "error" in info["nodeinfo"] and info["formats"] == ["oai_dc", "essaim"]
            stats = await hub.harvest_now(row["key"])
            assert stats.ok and stats.added == COUNT
            with pytest.raises(HarvestError, match=r"HTTP 404 \(http://127\.0\.0\.1:\d+/ailleurs\?verb=Identify"):
                await hub.register(f"http://127.0.0.1:{server.port}/ailleurs")
    finally:
        await server.close()
