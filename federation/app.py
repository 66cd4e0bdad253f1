"""Wiring of federation into the node app: routes, the sheet negotiation middleware, the worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from federation import admin, feedpages
from federation.config import FederationSettings, Identity
from federation.delivery import DeliveryWorker
from federation.http import routes, sheet_negotiation
from federation.metrics import metrics_source
from federation.outbox import make_listener
from federation.service import FEDERATION, Federation
from node.context import NODE
from node.keys import ensure_actor_key
from node.outbound import OutboundClient, OutboundConfig

WORKER = web.AppKey("federation_worker", DeliveryWorker)


def setup_federation(
    app: web.Application, conf: FederationSettings, identity: Identity, outbound: OutboundConfig, data_dir: Path
) -> None:
    """Call after the ``cleanup_ctx`` that opens the database (this one needs ``app[NODE]``).

    ``data_dir`` holds the actor's key pair (``keys/actor.pem``, created on first start).
    """
    if not conf.enabled:
        return
    app.middlewares.append(sheet_negotiation)
    app.add_routes(feedpages.routes)
    app.add_routes(routes)
    app.add_routes(admin.routes)

    async def federation(app: web.Application) -> AsyncIterator[None]:
        ctx = app[NODE]
        private_pem, public_pem = ensure_actor_key(data_dir)
        client = OutboundClient(outbound)
        fed = Federation(
            conf=conf,
            identity=identity,
            db=ctx.db,
            client=client,
            private_pem=private_pem.decode("ascii"),
            public_pem=public_pem.decode("ascii"),
        )
        app[FEDERATION] = fed
        ctx.store.listeners.append(make_listener(fed, ctx.store.source))
        ctx.metrics.append(metrics_source(fed))
        ctx.extra["federation_nav"] = True
        worker = DeliveryWorker(fed)
        app[WORKER] = worker
        task = asyncio.create_task(worker.run(), name="federation-delivery")
        yield
        await worker.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()

    app.cleanup_ctx.append(federation)
