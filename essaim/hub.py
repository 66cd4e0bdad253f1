"""Wiring of the hub from its settings: the outbound client, the strict transport, the scheduler task."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from essaim.settings import Settings, SettingsError
from harvesting.admin import HUB
from harvesting.duplicates import clusters_of
from harvesting.hub import Hub, run_scheduler
from harvesting.pipeline import HarvestPipeline, HubSpec
from harvesting.transport import OaiTransport
from node.context import NODE
from node.db import Database
from node.outbound import OutboundClient
from search.client import SearchClient
from search.indexer import IndexerConfig
from search.lifecycle import SearchConfig
from search.server import EmbeddedTypesense, TypesenseNodes


def search_config(settings: Settings, **overrides: Any) -> SearchConfig:
    """The search runtime's settings, from ``[search]`` (external when ``urls`` is set)."""
    conf = settings.search
    urls = tuple(u.strip().rstrip("/") for u in conf.urls if u.strip())
    if urls and not conf.api_key:
        raise SettingsError("[search] urls is set: api_key (the Typesense admin key) is required too")
    if not urls and not conf.embedded:
        raise SettingsError("[search] embedded = false needs urls (and api_key) of an external Typesense")
    values: dict[str, Any] = {
        "urls": urls,
        "api_key": conf.api_key,
        "data_dir": conf.data_dir or str(settings.data_path / "typesense"),
        "port": conf.port,
        "ready_within": conf.ready_within,
        "indexer": conf.indexer,
        "timeout": conf.timeout,
        "wide_zoom": conf.wide_zoom,
        "cache_stale": conf.cache_stale,
        "counts_cache": conf.counts_cache,
        "counts_stale": conf.counts_stale,
        "search_key_ttl": conf.search_key_ttl,
        "clusters": clusters_of,  # the hub's duplicate detection (harvesting/duplicates.py)
        "indexer_config": IndexerConfig(
            batch_size=conf.batch_size,
            poll=conf.poll,
            lease=conf.lease,
            retry_base=conf.retry_base,
            retry_max=conf.retry_max,
            max_attempts=conf.max_attempts,
        ),
    }
    values.update(overrides)
    return SearchConfig(**values)


@asynccontextmanager
async def open_hub(
    settings: Settings, db: Database, *, count: Callable[[str, int], None] | None = None
) -> AsyncIterator[Hub]:
    """A :class:`Hub` on ``db`` whose outbound client follows ``[outbound]``, with its harvest worker
    processes when ``[hub] harvest_processes`` asks for them; closed on exit."""
    from essaim.app import outbound_config

    pipeline = None
    if settings.hub.harvest_processes > 0:
        pipeline = HarvestPipeline(HubSpec(settings.base_url), settings.hub.harvest_processes)
    try:
        async with OutboundClient(outbound_config(settings)) as client:
            yield Hub(
                db,
                OaiTransport(client),
                hub_base_url=settings.base_url,
                claim_ttl=settings.hub.claim_ttl,
                count=count,
                pipeline=pipeline,
            )
    finally:
        if pipeline is not None:
            await asyncio.to_thread(pipeline.close)


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx`` of a hub: the scheduler runs as a background task while the server runs."""
    from essaim.app import SETTINGS

    settings = app[SETTINGS]
    ctx = app[NODE]
    async with open_hub(settings, ctx.db, count=ctx.count) as hub:
        app[HUB] = hub
        task = None
        if settings.hub.scheduler:
            task = asyncio.create_task(
                run_scheduler(hub, workers=max(1, settings.hub.workers), poll=settings.hub.poll), name="hub scheduler"
            )
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def open_search(settings: Settings) -> AsyncIterator[SearchClient]:
    """A client of the hub's Typesense for a command run beside (or without) the hub's server.

    External: the configured nodes. Embedded: the server the running hub started (its
    port and key are kept in the data directory); when the hub is not running, this
    command starts the embedded server itself for its duration.
    """
    conf = search_config(settings)
    if conf.urls:
        async with SearchClient(TypesenseNodes(conf.urls, conf.api_key), timeout=conf.timeout) as client:
            yield client
        return
    data = Path(conf.data_dir)
    ports, key_file = data / "ports.json", data / "api-key"
    if ports.exists() and key_file.exists():
        port = int(json.loads(ports.read_text())["api"])
        nodes = TypesenseNodes((f"http://127.0.0.1:{port}",), key_file.read_text(encoding="ascii").strip())
        async with SearchClient(nodes, timeout=conf.timeout) as client:
            if await client.health():
                yield client
                return
    server = EmbeddedTypesense(data, port=conf.port or None)
    await server.start(ready_within=conf.ready_within)
    try:
        async with SearchClient(server.nodes, timeout=conf.timeout) as client:
            yield client
    finally:
        await server.stop()
