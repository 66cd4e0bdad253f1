"""Fixtures of the harvester tests: a real node process, hub databases, a harvester wired for loopback."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harvesting.harvester import HarvestConfig, Harvester, Source
from harvesting.pipeline import HarvestPipeline, HubSpec
from harvesting.transport import OaiTransport, TransportConfig
from node.db import Database
from node.outbound import OutboundClient, OutboundConfig
from tests.oai_support import open_database

REPO = Path(__file__).resolve().parents[2]
HUB_URL = "https://hub.essaim.test"


@dataclass
class NodeProcess:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def oai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oai"

    async def ctl(self, action: str, **params: Any) -> Any:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{self.port}/ctl/{action}"
            query = {k: str(v) for k, v in params.items()}
            method = session.get if action in ("sheets", "requests") else session.post
            async with method(url, params=query) as response:
                response.raise_for_status()
                return await response.json()


@contextmanager
def spawn_node() -> Iterator[NodeProcess]:
    """A real Essaim node (SQLite) in its own process, stopped on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.harvesting.node_process", tmp],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 30)
            line = process.stdout.readline() if ready else b""
            if not line:
                pytest.fail("the node process did not start (see its stderr above)")
            yield NodeProcess(json.loads(line)["port"], process)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    """One real Essaim node (SQLite) in its own process for the module; tests reset it."""
    with spawn_node() as process:
        yield process


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def hub_db(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """The hub's database: SQLite, and PostgreSQL (skipped with the reason when unreachable)."""
    async with open_database(request.param) as db:
        for table in ("harvest_state", "harvest_source", "hub_crosswalk", "hub_unmapped_tag", "hub_sheet_match"):
            await db.execute(f"DELETE FROM {table}")  # a PostgreSQL test database outlives one test
        yield db


@pytest.fixture
async def sqlite_hub() -> AsyncIterator[Database]:
    async with open_database("sqlite") as db:
        yield db


def outbound_config(*ports: int, **overrides: Any) -> OutboundConfig:
    values: dict[str, Any] = {
        "allow_list": frozenset(f"127.0.0.1:{p}" for p in ports),
        "connect_timeout": 1.0,
        "read_timeout": 1.0,
        "total_timeout": 3.0,
        "max_body_bytes": 2 * 1024 * 1024,
    }
    values.update(overrides)
    return OutboundConfig(**values)


@asynccontextmanager
async def harvester_for(
    db: Database,
    *ports: int,
    transport: TransportConfig | None = None,
    config: HarvestConfig | None = None,
    processes: int = 0,
    clock: Callable[[], float] | None = None,
    **outbound: Any,
) -> AsyncIterator[Harvester]:
    """A hub harvester whose outbound client may reach only the given loopback ports; with
    ``processes``, its pages are decoded by that many worker processes (harvesting.pipeline)."""
    pipeline = HarvestPipeline(HubSpec(HUB_URL), processes) if processes else None
    try:
        async with OutboundClient(outbound_config(*ports, **outbound)) as client:
            oai = OaiTransport(client, transport or TransportConfig(max_retries=2, retry_after_cap=0.2))
            yield Harvester(db, oai, hub_base_url=HUB_URL, config=config, pipeline=pipeline, clock=clock or time.time)
    finally:
        if pipeline is not None:
            await asyncio.to_thread(pipeline.close)


def node_source(node: NodeProcess, prefix: str = "essaim") -> Source:
    return Source(key="noeud-test", base_url=node.oai_url, prefix=prefix, name="Nœud de test")
