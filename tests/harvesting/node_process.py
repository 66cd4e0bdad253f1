"""A real Essaim node in its own process, for the harvest tests: ``python -m tests.harvesting.node_process DIR``.

It opens a SQLite database under DIR, serves the real OAI-PMH endpoint
(``tests.oai_support.oai_app``) on a loopback port and prints ``{"port": N}``.
The node runs apart from the hub under test because a process holds one Tortoise
database context: the hub's database lives in the test process. Test-only
``/ctl/*`` routes change the node's sheets through ``SheetStore`` (the node's own
write path) and switch on a failure mode that answers the OAI requests after the
first ``after`` ones with ``mode`` (500, or a connection cut mid-body), slow every
OAI answer down (``/ctl/slow?delay=S``) and list the OAI requests served
(``/ctl/requests``, cleared by ``reset``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from typing import Any

from aiohttp import web

from node.db import Database
from node.storage import SheetStore
from protocol.sheet import TagMapping
from tests.oai_support import make_config, make_sheet, oai_app

PAGE_SIZE = 7


async def main(directory: str) -> None:
    db = await Database(f"sqlite:///{directory}/node.sqlite3").open()
    await db.upgrade()
    store = SheetStore(db, base_url="https://noeud.essaim.test")
    failure: dict[str, Any] = {"after": None, "mode": "500", "served": 0, "delay": 0.0}
    requests: list[dict[str, str]] = []

    @web.middleware
    async def failing(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/oai":
            requests.append(dict(request.query))
            if failure["delay"]:
                await asyncio.sleep(failure["delay"])
            failure["served"] += 1
            after = failure["after"]
            if after is not None and failure["served"] > after:
                if failure["mode"] == "cut":
                    response = web.StreamResponse(headers={"Content-Type": "text/xml; charset=utf-8"})
                    response.content_length = 10_000
                    await response.prepare(request)
                    await response.write(b'<?xml version="1.0" encoding="UTF-8"?><OAI-PMH xmlns="http://www.openar')
                    assert request.transport is not None
                    request.transport.close()
                    return response
                raise web.HTTPInternalServerError(text="node crashed")
        return await handler(request)

    app = oai_app(db, make_config(page_size=PAGE_SIZE))
    app.middlewares.append(failing)

    async def seed(request: web.Request) -> web.Response:
        count = int(request.query["count"])
        async with db.transaction() as tx:
            await store.upsert_many([make_sheet(i) for i in range(count)], tx=tx)
        return web.json_response({"ok": True})

    async def update(request: web.Request) -> web.Response:
        n = int(request.query["n"])
        sheet = replace(make_sheet(n), title=request.query["title"])
        if "tags" in request.query:  # the partner's raw tags, mapped by nothing
            sheet = replace(sheet, tags=tuple(TagMapping(tag=t) for t in request.query["tags"].split(",")))
        result = await store.upsert(sheet)
        return web.json_response({"status": result.status})

    async def delete(request: web.Request) -> web.Response:
        result = await store.delete(f"projet-{int(request.query['n'])}")
        return web.json_response({"status": result.status})

    async def reset(request: web.Request) -> web.Response:
        for table in ("sheet_set", "sheet_format", "sheet"):
            await db.execute(f"DELETE FROM {table}")
        failure.update(after=None, mode="500", served=0, delay=0.0)
        requests.clear()
        return web.json_response({"ok": True})

    async def fail(request: web.Request) -> web.Response:
        after = request.query.get("after")
        failure.update(after=int(after) if after else None, mode=request.query.get("mode", "500"), served=0)
        return web.json_response({"ok": True})

    async def slow(request: web.Request) -> web.Response:
        failure["delay"] = float(request.query["delay"])
        return web.json_response({"ok": True})

    async def served(request: web.Request) -> web.Response:
        return web.json_response(requests)

    async def live(request: web.Request) -> web.Response:
        rows = await db.fetch("SELECT local_id, deleted, data FROM sheet ORDER BY local_id")
        return web.json_response(
            [{"local_id": r["local_id"], "deleted": bool(r["deleted"]), "data": r["data"]} for r in rows]
        )

    app.router.add_post("/ctl/seed", seed)
    app.router.add_post("/ctl/update", update)
    app.router.add_post("/ctl/delete", delete)
    app.router.add_post("/ctl/reset", reset)
    app.router.add_post("/ctl/fail", fail)
    app.router.add_get("/ctl/sheets", live)
    app.router.add_post("/ctl/slow", slow)
    app.router.add_get("/ctl/requests", served)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(json.dumps({"port": port}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await db.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
