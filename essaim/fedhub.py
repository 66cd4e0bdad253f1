"""Wiring of the hub on the fediverse (``role = hub``, federation enabled): live ingest, hub feed actors.

Only the shell may join :mod:`harvesting` and :mod:`federation` (peers in the layering): the
inbox gets :class:`harvesting.push.PushIngest` as its content handler, and a background task
keeps the hub following every registered Essaim node (:func:`federation.hubpush.run_follow_loop`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from federation.hubpush import run_follow_loop
from federation.service import FEDERATION
from harvesting.push import PushIngest
from node.context import NODE


async def fedhub_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx`` after the federation's and the search index's (it needs ``app[FEDERATION]``)."""
    from essaim.app import SETTINGS

    settings = app[SETTINGS]
    conf = settings.fedhub
    task = None
    if FEDERATION in app and conf.push:
        fed = app[FEDERATION]
        ctx = app[NODE]
        fed.content_handler = PushIngest(ctx.db, hub_base_url=settings.base_url, count=ctx.count)
        task = asyncio.create_task(run_follow_loop(fed, conf.follow_interval), name="hub follows its sources")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
