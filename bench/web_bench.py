"""The hub's search page under load: p50/p95 server time with N sheets indexed, 20 concurrent clients.

``bench/run web [--count 100000] [--clients 20] [--requests 2000]``

A real Typesense (the bundled server) holds ``count`` documents (5,000 generated sheets,
``node.demo.generate`` geolocated offline, replicated with fresh ids); the real hub app
(``essaim.app.build_app``, role hub) serves ``/recherche`` over loopback to ``clients``
concurrent aiohttp clients (in a process of their own) cycling through keyword, facet, sort
and page variants.
Server time is measured by a middleware around the handler, once with the front's
micro-cache off (every page asks the index) and once with it on (``[web] cache_ttl``).
The peer in the same run is
the search alone (``SearchService.search`` of the same queries, same concurrency): the
ratio says what rendering the page adds. Also printed: the gzipped size of the JavaScript
the pages load (Leaflet, its cluster plugin and the front's own files; tiles excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import ClientSession, web  # noqa: E402

from essaim.app import build_app  # noqa: E402
from essaim.settings import load_settings  # noqa: E402
from node.demo import generate  # noqa: E402
from node.geo.gazetteer import Gazetteer  # noqa: E402
from protocol.sheet import sheet_from_dict  # noqa: E402
from search.client import SearchClient  # noqa: E402
from search.schema import ALIAS, collection_name, collection_schema, document_from_sheet, document_id, rotation_key  # noqa: E402
from search.server import EmbeddedTypesense  # noqa: E402
from search.service import SearchService  # noqa: E402
from search.synonyms import install_synonyms  # noqa: E402
from web.app import FRONT  # noqa: E402
from web.state import parse_state  # noqa: E402

QUERIES = [
    "",
    "q=jardin",
    "q=mobilit%C3%A9+solidaire",
    "themes=ENV",
    "themes=ENV&themes=SOL",
    "themes=EDU&region=53",
    "region=11&sort=date",
    "q=repair&sort=rotation",
    "audiences=jeunes&stage=essaimage",
    "match_kinds=benevolat&departement=35",
    "q=emploi&page=3",
    "partner=R%C3%A9seau+1&sort=date&page=2",
]
JS = [
    "node_modules/leaflet/dist/leaflet.js",
    "node_modules/leaflet.markercluster/dist/leaflet.markercluster.js",
    "web/static/map.js",
    "web/static/search.js",
    "web/static/sheet.js",
]


def documents(count: int) -> list[dict]:
    gaz = Gazetteer.default()
    base = []
    for n, data in enumerate(generate(5000, seed=11)):
        data = {**data, "id": f"https://bench.example/sheets/{n}", "partner": {"name": f"Réseau {n % 7}"}}
        sheet = sheet_from_dict(data)
        base.append(document_from_sheet(replace(sheet, places=tuple(gaz.resolve_place(p) for p in sheet.places))))
    out = []
    for i in range(count):
        doc = dict(base[i % len(base)])
        uri = f"https://hub.bench/sheets/{i}"
        doc.update(id=document_id(uri), uri=uri, rotation=rotation_key(uri))
        out.append(doc)
    return out


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "max_ms": round(ordered[-1], 2),
    }


async def load(clients: int, total: int, call) -> list[float]:
    times: list[float] = []
    counter = iter(range(total))

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in counter:
            times.append(await call(rng.choice(QUERIES)))

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return times


async def clients_process(port: int, clients: int, requests: int) -> list[float]:
    """The load generator runs in its own process, so its CPU is not the server's event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--load", str(port), str(clients), str(requests), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with {proc.returncode}")
    return json.loads(out)


async def generate_load(port: int, clients: int, requests: int) -> None:
    async with ClientSession() as session:

        async def fetch(query: str) -> float:
            t0 = time.perf_counter()
            async with session.get(f"http://127.0.0.1:{port}/recherche?{query}") as response:
                await response.read()
                assert response.status == 200, (query, response.status)
            return (time.perf_counter() - t0) * 1000

        print(json.dumps(await load(clients, requests, fetch)))


async def main(args: argparse.Namespace) -> None:
    logging.getLogger("essaim.http").setLevel(logging.ERROR)  # "slow request" lines are the point here
    work = Path(tempfile.mkdtemp(prefix="essaim-web-bench-"))
    server = EmbeddedTypesense(work / "typesense")
    await server.start(ready_within=60)
    client = SearchClient(server.nodes, import_timeout=600)
    try:
        started = time.monotonic()
        docs = documents(args.count)
        name = collection_name()
        await client.create_collection(collection_schema(name))
        await install_synonyms(client, name)
        report = await client.import_documents(name, docs)
        assert report.imported == args.count, report
        await client.upsert_alias(ALIAS, name)
        print(
            json.dumps({"event": "indexed", "documents": args.count, "seconds": round(time.monotonic() - started, 1)})
        )
        del docs

        settings = load_settings(
            environ={},
            overrides={"role": "hub", "data_dir": str(work / "hub"), "port": args.port, "log_level": "WARNING",
                       "base_url": f"http://127.0.0.1:{args.port}"},
        )  # fmt: skip
        settings.hub.scheduler = False
        settings.federation.enabled = False
        # The hub's own search runtime must read this index: left embedded, it would start a second,
        # empty Typesense at startup and the pages would be measured over no sheet at all.
        settings.search.urls = list(server.nodes.urls)
        settings.search.api_key = server.nodes.api_key
        settings.search.indexer = False
        app = build_app(settings)
        service = SearchService(client)  # the peer: the same index, searched without the page
        server_times: list[float] = []

        @web.middleware
        async def timing(request: web.Request, handler):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            response = await handler(request)
            if request.path == "/recherche":
                server_times.append((time.perf_counter() - t0) * 1000)
            return response

        app.middlewares.insert(0, timing)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        async with ClientSession() as session, session.get(f"http://127.0.0.1:{args.port}/recherche") as response:
            page_found = int(re.sub(r"\D", "", re.search(r'id="found">([^<]*)<', await response.text()).group(1)))
        if page_found != args.count:
            raise RuntimeError(f"the search page counts {page_found} sheets, not the {args.count} indexed")
        runs = {}
        for mode, ttl in (("uncached", 0.0), ("cached", settings.web.cache_ttl)):
            # uncached: every page asks the index; cached: the front's micro-cache ([web] cache_ttl).
            app[FRONT].results.ttl = ttl
            await clients_process(args.port, args.clients, 100)  # warm-up
            server_times.clear()
            hits0, misses0 = app[FRONT].results.hits, app[FRONT].results.misses
            t0 = time.monotonic()
            client_times = await clients_process(args.port, args.clients, args.requests)
            elapsed = time.monotonic() - t0
            hits, misses = app[FRONT].results.hits - hits0, app[FRONT].results.misses - misses0
            runs[mode] = {
                "server": percentiles(server_times),
                "client": percentiles(client_times),
                "pages_per_s": round(args.requests / elapsed, 1),
                "cache_hit_ratio": round(hits / (hits + misses), 3) if hits + misses else None,
            }
        await runner.cleanup()

        from urllib.parse import parse_qsl

        from multidict import MultiDict

        parsed = {q: parse_state(MultiDict(parse_qsl(q))).query for q in QUERIES}

        async def search_only(query: str) -> float:
            t0 = time.perf_counter()
            await service.search(replace(parsed[query], per_page=20))
            return (time.perf_counter() - t0) * 1000

        await load(args.clients, 100, search_only)
        peer = await load(args.clients, args.requests, search_only)
        raw = percentiles(peer)
        for mode, run in runs.items():
            print(json.dumps({
                "event": "search_page", "mode": mode, "documents": args.count, "clients": args.clients,
                "requests": args.requests, **run, "target_p95_ms": 150, "meets_target": run["server"]["p95_ms"] <= 150,
            }))  # fmt: skip
        page = runs["uncached"]["server"]
        print(json.dumps({
            "event": "peer_search_only", "server": raw, "compared_with": "uncached",
            "ratio_p50": round(page["p50_ms"] / raw["p50_ms"], 2),
            "ratio_p95": round(page["p95_ms"] / raw["p95_ms"], 2),
        }))  # fmt: skip
        sizes = {p: len(gzip.compress((ROOT / p).read_bytes(), 9)) for p in JS if (ROOT / p).exists()}
        total = sum(sizes.values())
        print(json.dumps({"event": "javascript_gzip", "files": sizes, "total_bytes": total, "target_bytes": 200 * 1024,
                          "meets_target": total <= 200 * 1024}))  # fmt: skip
    finally:
        await client.close()
        await server.stop()
        shutil.rmtree(work, ignore_errors=True)  # ~300 MB of index for 100k documents


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--load":
        asyncio.run(generate_load(*(int(v) for v in sys.argv[2:])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8931)
    asyncio.run(main(parser.parse_args()))
