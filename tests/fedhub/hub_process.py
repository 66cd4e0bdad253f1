"""A real hub (``build_app``, role hub, embedded Typesense) in its own process: a second hub in a test
(a process holds one Tortoise database context, so two hubs cannot share the test process).

``python -m tests.fedhub.hub_process DIR PORT ALLOW JSON`` (``ALLOW``: comma-separated loopback ports
the outbound client may reach; ``JSON``: settings sections). Test-only ``/ctl/*`` routes register and
harvest a source, follow the registered nodes and hubs, and list the hub's sheets. Prints ``{"port": N}``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from aiohttp import web

from essaim.app import build_app
from federation.hubpush import sync_follows
from federation.service import FEDERATION
from harvesting.admin import HUB
from node.context import NODE
from tests.fedhub.support import hub_settings


async def main(directory: str, port: int, allow: str, sections: str) -> None:
    settings = hub_settings(directory, port, [int(p) for p in allow.split(",") if p], **json.loads(sections))
    app = build_app(settings)

    async def register(request: web.Request) -> web.Response:
        row = await app[HUB].register(request.query["url"])
        followed = await sync_follows(app[FEDERATION], str(row["key"]))
        return web.json_response({"key": row["key"], "followed": [dict(f) for f in followed]})

    async def harvest(request: web.Request) -> web.Response:
        stats = await app[HUB].harvest_now(request.query["key"])
        return web.json_response(
            {"ok": stats.ok, "added": stats.added, "updated": stats.updated, "deleted": stats.deleted}
        )

    async def sheets(request: web.Request) -> web.Response:
        rows = await app[NODE].db.fetch(
            "SELECT source, local_id, title, deleted, provenance FROM sheet ORDER BY source, local_id"
        )
        return web.json_response(rows)

    async def following(request: web.Request) -> web.Response:
        return web.json_response(await app[NODE].db.fetch("SELECT * FROM ap_following ORDER BY id"))

    app.router.add_post("/ctl/register", register)
    app.router.add_post("/ctl/harvest", harvest)
    app.router.add_get("/ctl/sheets", sheets)
    app.router.add_get("/ctl/following", following)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    # SIGTERM ends the wait, so the cleanup runs and stops the hub's embedded Typesense (no orphan)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    print(json.dumps({"port": port}), flush=True)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "{}"))
