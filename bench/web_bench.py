"""The hub's search page under load: p50/p95 server time with N sheets indexed, 20 concurrent clients.

``bench/run web [--count 100000] [--clients 20] [--requests 2000]``

A real Typesense (the bundled server) holds ``count`` documents (5,000 generated sheets,
``node.demo.generate`` geolocated offline, replicated with fresh ids); the real hub app
(``essaim.app.build_app``, role hub) serves ``/recherche`` over loopback to ``clients``
concurrent aiohttp clients (in a process of their own). Server time is measured by a
middleware around the handler. Two query mixes:

- ``fixed``: the twelve searches of ``QUERIES`` (keyword, facet, sort and page variants)
  drawn at random, as measured since the first web bench;
- ``zipf``: searches drawn from a population of ``--states`` distinct ones (a keyword from
  the corpus's titles for half of them, zero to three facet values, a sort, a page), the
  simplest most popular, with Zipf popularity (exponent 1: the home search is about a
  tenth of the traffic, most searches are asked once), a fresh warm-up sequence first.

Each mix runs ``cold`` (every cache off: each page has Typesense count every facet), then
with the hub's defaults (the facet-count cache of ``[search] counts_cache`` and the pages'
micro-cache of ``[web] cache_ttl``), reporting both caches' hit ratios. The peer in the same
run is the search alone (``SearchService.search`` of the fixed queries with every cache off,
same concurrency): the ratio to the cold pages says what rendering a page adds. Also printed:
the gzipped size of the JavaScript the pages load (Leaflet, its cluster plugin and the
front's own files; tiles excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import ClientSession, web  # noqa: E402

from essaim.app import build_app  # noqa: E402
from essaim.settings import load_settings  # noqa: E402
from node.demo import generate  # noqa: E402
from node.geo.gazetteer import Gazetteer  # noqa: E402
from protocol.sheet import sheet_from_dict  # noqa: E402
from search.client import SearchClient  # noqa: E402
from search.lifecycle import SEARCH_RUNTIME  # noqa: E402
from search.query import SearchQuery  # noqa: E402
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


def fixed_sequence(total: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(QUERIES) for _ in range(total)]


def zipf_population(states: int, words: list[str], facets: dict[str, list[str]], seed: int = 5) -> list[str]:
    """``states`` distinct search URLs, simplest first (the order of their popularity)."""
    rng = random.Random(seed)
    fields = ["themes", "region", "departement", "audiences", "stage", "partner", "match_kinds", "engineering"]
    weights = [30, 20, 10, 10, 10, 10, 5, 5]
    found: dict[str, int] = {"": 0}
    while len(found) < states:
        params: list[tuple[str, str]] = []
        if rng.random() < 0.5:
            params.append(("q", rng.choice(words)))
        for name in set(rng.choices(fields, weights, k=rng.choice((0, 1, 1, 1, 2, 2, 3)))):
            values = facets.get(name) or []
            if values:  # popular values more often: the facet's values come sorted by count
                params.append((name, values[min(len(values) - 1, int(rng.expovariate(0.4)))]))
        sort = rng.choices(["relevance", "date", "rotation"], [70, 20, 10])[0]
        if sort != "relevance":
            params.append(("sort", sort))
        page = rng.choices([1, 2, 3, 4, 5], [75, 15, 5, 3, 2])[0]
        if page > 1:
            params.append(("page", str(page)))
        found.setdefault(urlencode(params), len(params))
    return sorted(found, key=lambda q: found[q])  # stable: among equals, the order they were drawn


def zipf_sequence(population: list[str], total: int, seed: int, exponent: float = 1.0) -> list[str]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** exponent for rank in range(len(population))]
    return rng.choices(population, weights, k=total)


async def load(clients: int, sequence: list[str], call) -> list[float]:
    times: list[float] = []
    queue = iter(sequence)

    async def worker() -> None:
        for query in queue:
            times.append(await call(query))

    await asyncio.gather(*(worker() for _ in range(clients)))
    return times


async def clients_process(port: int, clients: int, sequence: list[str]) -> list[float]:
    """The load generator runs in its own process, so its CPU is not the server's event loop."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(sequence) + "\n")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--load", str(port), str(clients), handle.name, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
    finally:
        Path(handle.name).unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with {proc.returncode}")
    return json.loads(out)


async def generate_load(port: int, clients: int, file: str) -> None:
    sequence = Path(file).read_text(encoding="utf-8").split("\n")[:-1]
    async with ClientSession() as session:

        async def fetch(query: str) -> float:
            t0 = time.perf_counter()
            async with session.get(f"http://127.0.0.1:{port}/recherche?{query}") as response:
                await response.read()
                assert response.status == 200, (query, response.status)
            return (time.perf_counter() - t0) * 1000

        print(json.dumps(await load(clients, sequence, fetch)))


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
        # The zipf mix's vocabulary and facet values come from the index itself (values by count).
        overview = await service.overview()
        facets = {name: [c["value"] for c in counts] for name, counts in overview["facets"].items()}
        titles = await service.search(SearchQuery(per_page=50, sort="rotation", facets=()))
        words = sorted({w for h in titles["hits"] for w in h["document"]["title"].lower().split() if len(w) > 4})
        population = zipf_population(args.states, words, facets)
        mixes = {
            "fixed": (fixed_sequence(100, 1), fixed_sequence(args.requests, 2)),
            "zipf": (zipf_sequence(population, args.warmup, 3), zipf_sequence(population, args.requests, 4)),
        }
        front, search_runtime = app[FRONT], app[SEARCH_RUNTIME]
        runs = []
        for mix, (warmup, sequence) in mixes.items():
            for mode in ("cold", "defaults"):
                cold = mode == "cold"
                front.results.ttl = 0.0 if cold else settings.web.cache_ttl
                front.results.entries.clear()
                counts = search_runtime.service
                counts.counts_size = 0 if cold else settings.search.counts_cache
                counts._counts.clear()
                await clients_process(args.port, args.clients, warmup)
                server_times.clear()
                before = (front.results.hits, front.results.misses, counts.counts_hits, counts.counts_misses)
                t0 = time.monotonic()
                client_times = await clients_process(args.port, args.clients, sequence)
                elapsed = time.monotonic() - t0
                hits, misses, c_hits, c_misses = (
                    a - b
                    for a, b in zip(
                        (front.results.hits, front.results.misses, counts.counts_hits, counts.counts_misses),
                        before,
                        strict=True,
                    )
                )
                runs.append({
                    "event": "search_page", "mix": mix, "mode": mode, "documents": args.count,
                    "clients": args.clients, "requests": len(sequence), "distinct": len(set(sequence)),
                    "server": percentiles(server_times), "client": percentiles(client_times),
                    "pages_per_s": round(len(sequence) / elapsed, 1),
                    "page_cache_hit_ratio": round(hits / (hits + misses), 3) if hits + misses else None,
                    "counts_cache_hit_ratio": round(c_hits / (c_hits + c_misses), 3) if c_hits + c_misses else None,
                    "target_p95_ms": 150, "meets_target": percentiles(server_times)["p95_ms"] <= 150,
                    "load": [round(v, 2) for v in os.getloadavg()],
                })  # fmt: skip
                print(json.dumps(runs[-1]), flush=True)
        await runner.cleanup()

        from urllib.parse import parse_qsl

        from multidict import MultiDict

        parsed = {q: parse_state(MultiDict(parse_qsl(q))).query for q in QUERIES}
        peer_service = SearchService(client, counts_size=0)

        async def search_only(query: str) -> float:
            t0 = time.perf_counter()
            await peer_service.search(replace(parsed[query], per_page=20))
            return (time.perf_counter() - t0) * 1000

        await load(args.clients, fixed_sequence(100, 1), search_only)
        peer = await load(args.clients, fixed_sequence(args.requests, 2), search_only)
        raw = percentiles(peer)
        page = next(r for r in runs if r["mix"] == "fixed" and r["mode"] == "cold")["server"]
        print(json.dumps({
            "event": "peer_search_only", "server": raw, "compared_with": "fixed cold",
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
        asyncio.run(generate_load(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--states", type=int, default=5000, help="distinct searches of the zipf mix")
    parser.add_argument("--warmup", type=int, default=500, help="requests of the zipf mix before measuring")
    parser.add_argument("--port", type=int, default=8931)
    asyncio.run(main(parser.parse_args()))
