"""A real hub for the front's tests: its database holds harvested sheets, its own Typesense indexes them.

The sheets are written the way a harvest writes them (``SheetStore`` of each source, provenance,
duplicate clusters), and the hub's own pipeline (index queue, worker, embedded Typesense) indexes
them. Everything is package-scoped: one hub server and one browser for every test of ``tests/web``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from essaim.app import build_app
from essaim.settings import load_settings
from harvesting import duplicates
from node.context import NODE
from node.storage import SheetStore
from protocol.sheet import Sheet
from search.indexer import IndexerConfig, IndexQueue
from search.service import SEARCH
from tests.web.corpus import PARTNERS, PER_PARTNER, partner_sheets, special_sheets

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@dataclass
class Hub:
    url: str
    app: web.Application
    sheets: dict[str, Sheet]  # uri -> stored sheet
    sources: dict[str, str]  # uri -> source key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def needs_typesense() -> None:
    from search.errors import ServerError
    from search.server import bundled_binary

    try:
        bundled_binary()
    except (ServerError, OSError) as exc:
        pytest.skip(f"the bundled Typesense binary cannot be installed here: {exc}")


@dataclass
class Fediverse:
    """A small real instance on loopback: WebFinger with a remote-follow (subscribe) template."""

    host: str
    looked_up: list[str]


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def fediverse() -> AsyncIterator[Fediverse]:
    port = free_port()
    host = f"127.0.0.1:{port}"
    seen: list[str] = []

    async def webfinger(request: web.Request) -> web.Response:
        resource = request.query.get("resource", "")
        seen.append(resource)
        if resource != f"acct:alice@{host}":
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(
            {
                "subject": resource,
                "links": [
                    {"rel": "self", "type": "application/activity+json", "href": f"http://{host}/users/alice"},
                    {
                        "rel": "http://ostatus.org/schema/1.0/subscribe",
                        "template": f"http://{host}/authorize_interaction?uri={{uri}}",
                    },
                ],
            },
            content_type="application/jrd+json",
        )

    app = web.Application()
    app.router.add_get("/.well-known/webfinger", webfinger)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield Fediverse(host=host, looked_up=seen)
    await runner.cleanup()


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def hub(fediverse: Fediverse, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hub]:
    needs_typesense()
    port = free_port()
    data = tmp_path_factory.mktemp("web-hub")
    settings = load_settings(
        environ={},
        overrides={
            "role": "hub",
            "data_dir": str(data),
            "base_url": f"http://127.0.0.1:{port}",
            "port": port,
            "log_level": "WARNING",
        },
    )
    settings.partner.name = "Hub de test"
    settings.partner.username = "hub"
    settings.hub.scheduler = False
    settings.federation.enabled = False
    settings.outbound.allow = [fediverse.host]
    settings.search.counts_stale = 0.0  # the pages' counts are those of the index the fixture filled
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    ctx = app[NODE]
    stored: dict[str, Sheet] = {}
    sources: dict[str, str] = {}
    by_source: dict[str, list[Sheet]] = {}
    for n, (key, name, base) in enumerate(PARTNERS):
        await ctx.db.execute(
            "INSERT INTO harvest_source (key, base_url, kind, prefix, set_spec, name, granularity, interval, enabled,"
            " next_run, last_run, last_stats, last_error, claimed_until, created)"
            " VALUES (?, ?, 'essaim', 'essaim', '', ?, 'seconds', 3600, ?, 0, ?, ?, ?, 0, 0)",
            [
                key,
                base,
                name,
                True,
                1_760_000_000,
                '{"pages": 3, "added": 80, "rejected": 0}',
                "HTTP 503 from the provider" if n == 2 else None,
            ],
        )
        by_source[key] = partner_sheets(key, name, PER_PARTNER, seed=7 * (n + 1))
    for key, sheet in special_sheets():
        by_source[key].append(sheet)
    for key, items in by_source.items():
        store = SheetStore(ctx.db, base_url=settings.base_url, source=key, hub=True)
        base = next(b for k, _, b in PARTNERS if k == key)
        async with ctx.db.transaction() as tx:
            results = await store.upsert_many(items, tx=tx)
            await duplicates.update(ctx.db, key, [(r.uri, s) for r, s in zip(results, items, strict=True)], tx=tx)
            await store.set_provenance(
                {
                    s.local_id: {
                        "baseURL": base,
                        "identifier": f"oai:{key}.example:{s.local_id}",
                        "sheetId": f"https://{key}.example/sheets/{s.local_id}",
                        "harvestDate": "2026-11-30T12:00:00Z",
                    }
                    for s in items
                },
                tx=tx,
            )
        async for sheet in store.iter_sheets():
            stored[sheet.id] = sheet
            sources[sheet.id] = key
    # The hub's index worker drains the queue the writes filled (documents with their clusters).
    service, queue = app[SEARCH], IndexQueue(ctx.db, IndexerConfig())
    for _ in range(600):
        if (await queue.counts())["pending"] == 0 and await service.count() == len(stored):
            break
        await asyncio.sleep(0.1)
    assert await service.count() == len(stored), "the hub's index worker did not index the corpus"
    try:
        yield Hub(url=f"http://127.0.0.1:{port}", app=app, sheets=stored, sources=sources)
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"headless browser tests need Debian's chromium at {CHROMIUM} (./run setup installs it)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("the playwright package is missing (pip install -e '.[test]')")
    async with async_playwright() as p:
        instance = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        await instance.close()
