"""A real Essaim node (``build_app``) in its own process.

``python -m tests.federation.node_process DIR PORT ALLOW USER [JSON [DATABASE_URL]]``.

``ALLOW`` is a comma-separated list of loopback ports the outbound client may reach;
``JSON`` (optional) overrides ``[federation]`` settings.
Test-only ``/ctl/*`` routes write sheets through the node's ``SheetStore``, make the
node actor follow a handle, and dump the federation tables. Prints ``{"port": N}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace

from aiohttp import web

from essaim.app import build_app
from essaim.settings import load_settings
from federation.follow import follow
from federation.service import FEDERATION
from node.auth import create_user
from node.context import NODE
from tests.oai_support import make_sheet

# région code → a commune in it (the hub's gazetteer completes the rest)
COMMUNES = {
    "53": ("Lorient", "56", 47.75, -3.37),
    "84": ("Lyon", "69", 45.76, 4.84),
    "52": ("Nantes", "44", 47.22, -1.55),
}

TABLES = (
    "ap_activity",
    "ap_delivery",
    "ap_follower",
    "ap_following",
    "ap_inbox",
    "ap_message",
    "ap_feed_follower",
    "ap_feed_item",
    "ap_domain",
)


async def main(
    directory: str, port: int, allow: str, username: str, federation: str = "{}", database_url: str = ""
) -> None:
    settings = load_settings(
        environ={"ESSAIM_DATA_DIR": directory},
        overrides={
            "data_dir": directory,
            "database_url": database_url,
            "base_url": f"http://127.0.0.1:{port}",
            "port": port,
            "log_format": "text",
            "partner": {"username": username, "name": f"Nœud {username}"},
            "outbound": {
                "allow": [f"127.0.0.1:{p}" for p in allow.split(",") if p],
                "connect_timeout": 1.0,
                "total_timeout": 3.0,
            },
            "federation": {
                "retry_base": 0.2,
                "poll": 0.1,
                "lease": 5,
                "max_inbox_body": 64 * 1024,
                "signature_max_age": 300,
                "page_size": 5,
                **json.loads(federation),
            },
        },
    )
    app = build_app(settings)

    def sheet(n: int, title: str | None = None, themes: str | None = None, region: str | None = None):  # type: ignore[no-untyped-def]
        ctx = app[NODE]
        base = make_sheet(n)
        if themes is not None:
            base = replace(base, themes=tuple(t for t in themes.split(",") if t), subthemes=())
        if region is not None:  # one place in that région, and no tags (the hub would map them to themes)
            commune, departement, lat, lon = COMMUNES[region]
            place = replace(base.places[0], commune=commune, departement=departement, region=region, lat=lat, lon=lon)
            base = replace(base, places=(place,), tags=())
        return replace(
            base, id=ctx.store.make_uri(base.local_id), partner=ctx.partner, title=title or f"Projet {n} de {username}"
        )

    async def upsert(request: web.Request) -> web.Response:
        query = request.query
        made = sheet(int(query["n"]), query.get("title"), query.get("themes"), query.get("region"))
        result = await app[NODE].store.upsert(made)
        return web.json_response({"status": result.status, "uri": result.uri})

    async def delete(request: web.Request) -> web.Response:
        result = await app[NODE].store.delete(f"projet-{int(request.query['n'])}")
        return web.json_response({"status": result.status, "uri": result.uri})

    async def do_follow(request: web.Request) -> web.Response:
        return web.json_response({"follow": await follow(app[FEDERATION], request.query["handle"])})

    async def admin_user(request: web.Request) -> web.Response:
        await create_user(app[NODE].db, request.query["email"], request.query["password"])
        return web.json_response({"created": request.query["email"]})

    async def state(request: web.Request) -> web.Response:
        db = app[NODE].db
        return web.json_response({t: await db.fetch(f"SELECT * FROM {t} ORDER BY id") for t in TABLES})

    app.router.add_post("/ctl/upsert", upsert)
    app.router.add_post("/ctl/delete", delete)
    app.router.add_post("/ctl/follow", do_follow)
    app.router.add_post("/ctl/admin_user", admin_user)
    app.router.add_get("/ctl/state", state)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(json.dumps({"port": port}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:2], int(sys.argv[2]), *sys.argv[3:]))
