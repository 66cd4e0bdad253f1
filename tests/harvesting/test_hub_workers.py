"""Hub processes that die and hub processes that share work.

- ``kill -9`` of ``essaim hub harvest`` in the middle of a harvest, then a restart: the
  run resumes from the last committed page; no duplicate, no missing sheet.
- Two hub workers (processes running the scheduler) on one PostgreSQL database: every
  source page is requested from the provider exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from essaim.cli import main
from tests.harvesting.conftest import REPO, NodeProcess
from tests.oai_support import _pg_reachable, _pg_test_url, open_database

COUNT = 63  # 9 pages of 7 on the test node


def hub_dir(tmp_path: Path, port: int, claim_ttl: int = 2) -> Path:
    data = tmp_path / "hub"
    data.mkdir()
    (data / "essaim.toml").write_text(
        f'role = "hub"\nbase_url = "http://127.0.0.1:8999"\ndata_dir = "{data}"\n'
        f'[outbound]\nallow = ["127.0.0.1:{port}"]\ntotal_timeout = 10.0\n'
        f"[hub]\nharvest_interval = 600\npoll = 0.2\nclaim_ttl = {claim_ttl}\n",
        encoding="utf-8",
    )
    return data


def ctl(node: NodeProcess, action: str, **params: object) -> object:
    return asyncio.run(node.ctl(action, **params))


def hub_state(data: Path) -> dict[str, object]:
    with sqlite3.connect(data / "essaim.sqlite3", timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT token, run_pages FROM harvest_state").fetchone()
        live = conn.execute("SELECT COUNT(*), COUNT(DISTINCT local_id) FROM sheet WHERE deleted = 0").fetchone()
        ids = {r[0] for r in conn.execute("SELECT local_id FROM sheet WHERE deleted = 0")}
    return {
        "token": row["token"] if row else None,
        "pages": row["run_pages"] if row else 0,
        "live": live[0],
        "distinct": live[1],
        "ids": ids,
    }


def test_kill_9_mid_harvest_then_restart_resumes(
    node: NodeProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctl(node, "reset")
    ctl(node, "seed", count=COUNT)
    time.sleep(1.05 - time.time() % 1)
    data = hub_dir(tmp_path, node.port)
    assert main(["hub", "sources", "add", node.oai_url, "--key", "noeud", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    ctl(node, "slow", delay=0.4)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    harvest = subprocess.Popen(
        [sys.executable, "-m", "essaim.cli", "hub", "harvest", "noeud", "--data-dir", str(data)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            time.sleep(0.05)
            if (data / "essaim.sqlite3").exists() and int(hub_state(data)["pages"] or 0) >= 3:  # type: ignore[call-overload]
                break
        harvest.send_signal(signal.SIGKILL)
        harvest.wait(10)
    finally:
        if harvest.poll() is None:
            harvest.kill()
    assert harvest.returncode == -signal.SIGKILL
    killed = hub_state(data)
    assert killed["token"] and 3 <= killed["pages"] < 9  # type: ignore[operator]
    assert killed["live"] == killed["distinct"] == 7 * int(killed["pages"])  # type: ignore[call-overload]
    before = len(ctl(node, "requests"))

    ctl(node, "slow", delay=0)
    # The killed worker's claim lapses by itself after claim_ttl (2 s here): no manual unlock.
    code = main(["hub", "harvest", "noeud", "--json", "--data-dir", str(data)])
    _, err = capsys.readouterr()
    assert code == 1 and "being harvested" in err
    time.sleep(3.1)  # claim_ttl, plus the second of rounding of the epoch-second clock
    assert main(["hub", "harvest", "noeud", "--json", "--data-dir", str(data)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["resumed"] and stats["complete"] and stats["errors"] == []
    assert stats["added"] == COUNT - killed["live"] and stats["pages"] == 9 - killed["pages"]  # type: ignore[operator]
    # The restart asked for the checkpointed page first, not for the beginning again.
    resumed = (ctl(node, "requests"))[before]
    assert resumed == {"verb": "ListRecords", "resumptionToken": killed["token"]}
    final = hub_state(data)
    assert final["live"] == final["distinct"] == COUNT and final["token"] is None
    assert final["ids"] == {f"oai:noeud.essaim.test:projet-{n}" for n in range(COUNT)}


WORKER = """
import asyncio, json, sys
from harvesting.hub import Hub, run_scheduler
from harvesting.transport import OaiTransport
from node.db import Database
from node.outbound import OutboundClient, OutboundConfig

async def main(url, port, seconds):
    db = Database(url)
    await db.open()
    config = OutboundConfig(allow_list=frozenset([f"127.0.0.1:{port}"]), total_timeout=10.0)
    async with OutboundClient(config) as client:
        runs = {}
        count = lambda name, by: runs.__setitem__(name, runs.get(name, 0) + by)
        hub = Hub(db, OaiTransport(client), hub_base_url="http://hub.test", claim_ttl=60, count=count)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(float(seconds), stop.set)
        await run_scheduler(hub, workers=2, poll=0.05, stop=stop)
        print(json.dumps({"worker": hub.worker, "runs": runs.get("harvest_runs_total", 0)}))
    await db.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""

SETS = ("", "theme:SOL", "theme:ENV", "theme:EDU", "theme:NUM", "departement:35")


@pytest.mark.postgres
async def test_two_workers_on_postgres_never_harvest_a_page_twice(node: NodeProcess) -> None:
    reason = await _pg_reachable()
    if reason:
        pytest.skip(reason)
    await node.ctl("reset")
    await node.ctl("seed", count=COUNT)
    await asyncio.sleep(1.05 - time.time() % 1)
    await node.ctl("slow", delay=0.1)  # so that both workers are busy at the same time
    async with open_database("postgres") as db:
        for table in ("harvest_source", "harvest_state", "hub_sheet_match", "hub_unmapped_tag"):
            await db.execute(f"DELETE FROM {table}")
        from harvesting.hub import SourceRegistry

        registry = SourceRegistry(db)
        keys = []
        for prefix in ("essaim", "oai_dc"):
            for spec in SETS:
                row = await registry.add(
                    base_url=node.oai_url, name="N", kind="essaim", prefix=prefix, set_spec=spec, interval=3600
                )
                keys.append(row["key"])
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WORKER,
                _pg_test_url(),
                str(node.port),
                "6",
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        workers = [json.loads((await p.communicate())[0]) for p in procs]
        assert all(p.returncode == 0 for p in procs)
        requests = [json.dumps(r, sort_keys=True) for r in await node.ctl("requests")]
        assert len(requests) == len(set(requests)), "a page was requested twice"
        rows = await db.fetch("SELECT key, last_stats, running_by FROM harvest_source")
        assert len(rows) == len(keys)
        for row in rows:
            stats = json.loads(row["last_stats"])
            assert stats["complete"] and stats["errors"] == [] and row["running_by"] is None
        # Both processes did part of the work, and the sheets are there once per source.
        by = await db.fetch("SELECT source, COUNT(*) AS n, COUNT(DISTINCT local_id) AS d FROM sheet GROUP BY source")
        assert {r["source"] for r in by} == set(keys)
        assert all(r["n"] == r["d"] for r in by)
        whole = {r["source"]: r["n"] for r in by}
        assert whole[keys[0]] == whole[keys[len(SETS)]] == COUNT
        assert workers[0]["worker"] != workers[1]["worker"]
        assert workers[0]["runs"] + workers[1]["runs"] == len(keys)
        assert workers[0]["runs"] > 0 and workers[1]["runs"] > 0
    await node.ctl("slow", delay=0)
