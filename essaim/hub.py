"""Wiring of the hub from its settings: the outbound client, the strict transport, the scheduler task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from essaim.settings import Settings
from harvesting.admin import HUB
from harvesting.duplicates import also_listed_by
from harvesting.hub import Hub, run_scheduler
from harvesting.transport import OaiTransport
from node.context import NODE
from node.db import Database
from node.outbound import OutboundClient


@asynccontextmanager
async def open_hub(
    settings: Settings, db: Database, *, count: Callable[[str, int], None] | None = None
) -> AsyncIterator[Hub]:
    """A :class:`Hub` on ``db`` whose outbound client follows ``[outbound]``; closed on exit."""
    from essaim.app import outbound_config

    async with OutboundClient(outbound_config(settings)) as client:
        yield Hub(
            db,
            OaiTransport(client),
            hub_base_url=settings.base_url,
            claim_ttl=settings.hub.claim_ttl,
            count=count,
        )


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx`` of a hub: the scheduler runs as a background task while the server runs."""
    from essaim.app import SETTINGS

    settings = app[SETTINGS]
    ctx = app[NODE]
    async with open_hub(settings, ctx.db, count=ctx.count) as hub:
        app[HUB] = hub
        # The hub's sheet pages list the other sources' sheets of the same project (node/http/public.py).
        ctx.extra["also_listed_by"] = lambda uri: also_listed_by(ctx.db, uri)
        task = None
        if settings.hub.scheduler:
            task = asyncio.create_task(
                run_scheduler(hub, workers=max(1, settings.hub.workers), poll=settings.hub.poll), name="hub scheduler"
            )
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
