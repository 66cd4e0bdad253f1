"""Search benchmark: the hub's search API against the same queries sent straight to Typesense.

The hub is the real application (``essaim node serve`` with ``role = hub``) in its own
process, running its embedded Typesense 0.24.1. The corpus is 100,000 generated sheets
(``node.demo.generate``: plausible French sheets over real communes, five partners)
imported once through the real importer into a SQLite hub database; a larger size adds
copies of those sheet rows (own pk, URI and local id). Both are cached under
``var/bench/search/`` (``--rebuild`` builds them again). Each run copies the database,
starts the hub on an empty Typesense data directory and measures:

* ``index_drain``: the hub finds an empty index, queues every sheet and its index
  worker drains the queue (database read, document build with the French stemmer,
  import with every row checked); documents/s until Typesense holds them all. Peer: the
  same documents, exported from the hub's collection to a file, streamed straight into
  a fresh collection of the same Typesense (1,000 per request), and the ratio.
* ``write_to_searchable``: a burst of sheets written through ``SheetStore.upsert_many``
  (in this process, on the hub's database, as a harvest does) until ``/api/search``
  finds them all; sheets/s end to end.
* Queries at 1, 8 and 32 concurrent clients (``--seconds`` each): (a) keyword + 3
  facet filters, (b) keyword + radius, (c) map clusters of a regional viewport (zoom 8,
  computed per request) and of all of France (zoom 5, the hub's per-generation cache),
  (d) the home page's aggregates (``/api/search/overview``, cached). The direct peer
  sends the very Typesense requests the hub builds (``SearchQuery.searches``,
  ``cluster_params``, the overview search) to ``/multi_search``, uncached; the ratio
  hub/direct is reported for p50/p95/p99.
* ``mixed``: open-loop traffic at ``--qps`` (default 50) mixing (a)-(d) for
  ``--mixed-seconds``, against the hub and against Typesense directly.
* ``reindex``: ``essaim hub reindex`` beside the serving hub, one client searching.

    python bench/search_bench.py [--size 100000] [--seconds 5] [--qps 50] [--rebuild]
                                 [--steps burst,queries,reindex] [--corpus-only]

Figures are JSON lines on stdout (and in ``bench/results/search-<N>.jsonl``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = ROOT / "var" / "bench" / "search"
RESULTS = ROOT / "bench" / "results"
CORPUS_VERSION = 1
PARTNERS = 5
LICENCE = "https://www.etalab.gouv.fr/licence-ouverte-open-licence"
OUT: list[dict[str, Any]] = []


def emit(record: dict[str, Any]) -> None:
    OUT.append(record)
    print(json.dumps(record, ensure_ascii=False), flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return round(ordered[k] * 1000, 2)


# ------------------------------------------------------------------ corpus


async def build_corpus(size: int, path: Path) -> None:
    """N generated sheets through the real importer (validation, geocoding, storage)."""
    from node.db import Database
    from node.demo import write_demo_file
    from node.geocode import make_resolver
    from node.importer import Importer
    from node.mapping import load_mapping
    from node.storage import SheetStore
    from protocol.sheet import Partner

    for stale in path.parent.glob(path.name + "*"):
        stale.unlink()
    db = Database(f"sqlite:///{path}")
    await db.upgrade()
    await db.open()
    try:
        store = SheetStore(db, base_url="http://127.0.0.1", hub=True)
        per = size // PARTNERS
        for p in range(PARTNERS):
            file = WORK / f"corpus-{p}.jsonl"
            count = per if p < PARTNERS - 1 else size - per * (PARTNERS - 1)
            write_demo_file(file, count, seed=100 + p, with_handwritten=False, prefix=f"r{p}")
            importer = Importer(
                store,
                load_mapping("native"),
                partner=Partner(name=f"Réseau {p + 1}"),
                licence=LICENCE,
                resolver=make_resolver(),
            )
            report = await importer.run(file)
            assert report.created == count, report
            file.unlink()
        await db.execute("CREATE TABLE bench_corpus (size BIGINT, version INT)")
        await db.execute("INSERT INTO bench_corpus VALUES (?, ?)", [size, CORPUS_VERSION])
    finally:
        await db.close()


BASE_SIZE = 100_000  # sheets imported through the real importer; larger corpora replicate them


def replicate_corpus(base: Path, size: int, path: Path) -> None:
    """``size`` sheets from the ``base`` corpus: its rows, then copies of its ``sheet`` rows.

    Importing 1M sheets through the importer takes ~17 min here; a copy keeps the
    sheet's content (title, text, places, partner) and gets its own pk, URI and local
    id, substituted in the stored JSON. Only ``sheet`` rows are copied (the search
    index reads nothing else; the pre-rendered OAI formats exist for the base rows).
    """
    import sqlite3
    import uuid

    for stale in path.parent.glob(path.name + "*"):
        stale.unlink()
    tmp = path.with_name(path.name + ".tmp")
    shutil.copy(base, tmp)
    conn = sqlite3.connect(tmp)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # a build, not a durability test
    columns = "pk_id, uri, source, local_id, stamp, deleted, content_hash, title, data, sets, provenance"
    rows = conn.execute(f"SELECT {columns} FROM sheet ORDER BY pk_id").fetchall()
    pk = int(rows[-1][0])
    copy = 0
    with conn:
        while pk < size:
            copy += 1
            batch = []
            for row in rows:
                if pk >= size:
                    break
                pk += 1
                _, uri, source, local_id, stamp, deleted, content_hash, title, data, sets, provenance = row
                new_uri = f"http://127.0.0.1/sheets/{uuid.uuid5(uuid.NAMESPACE_URL, f'{uri}#{copy}')}"
                new_local = f"{local_id}-c{copy}"
                new_data = data.replace(json.dumps(uri), json.dumps(new_uri)).replace(
                    json.dumps(local_id), json.dumps(new_local)
                )
                if new_data == data:
                    raise RuntimeError(f"sheet {uri}: its id was not found in its stored JSON")
                batch.append(
                    (pk, new_uri, source, new_local, stamp, deleted, content_hash, title, new_data, sets, provenance)
                )
            conn.executemany(f"INSERT INTO sheet ({columns}) VALUES ({', '.join('?' * 11)})", batch)
        conn.execute("DELETE FROM bench_corpus")
        conn.execute("INSERT INTO bench_corpus VALUES (?, ?)", [size, CORPUS_VERSION])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    os.replace(tmp, path)


async def ensure_corpus(size: int, rebuild: bool) -> Path:
    """The cached corpus of ``size`` sheets (built, or replicated from the base, when missing)."""
    corpus = WORK / f"corpus-{size}.sqlite3"
    if not rebuild and corpus_ok(corpus, size):
        return corpus
    base = WORK / f"corpus-{min(size, BASE_SIZE)}.sqlite3"
    if rebuild or not corpus_ok(base, min(size, BASE_SIZE)):
        t = time.monotonic()
        await build_corpus(min(size, BASE_SIZE), base)
        emit(
            {
                "bench": "search",
                "step": "corpus_built",
                "sheets": min(size, BASE_SIZE),
                "seconds": round(time.monotonic() - t, 1),
            }
        )
    if size > BASE_SIZE:
        t = time.monotonic()
        await asyncio.to_thread(replicate_corpus, base, size, corpus)
        emit(
            {"bench": "search", "step": "corpus_replicated", "sheets": size, "seconds": round(time.monotonic() - t, 1)}
        )
    return corpus


def corpus_ok(path: Path, size: int) -> bool:
    import sqlite3

    if not path.exists():
        return False
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT size, version FROM bench_corpus").fetchone()
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return tuple(row or ()) == (size, CORPUS_VERSION)


# ------------------------------------------------------------------ the hub process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HubProcess:
    def __init__(self, data: Path, db_path: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (data / "essaim.toml").write_text(
            f'role = "hub"\ndata_dir = "{data}"\nbase_url = "{self.url}"\n'
            f'database_url = "sqlite:///{db_path}"\nlog_level = "WARNING"\n'
            "[hub]\nscheduler = false\n[federation]\nenabled = false\n"
            "[search]\npoll = 0.2\nready_within = 120\n",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.data / "hub.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "essaim.cli",
                "node",
                "serve",
                "--data-dir",
                str(self.data),
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    async def wait(self, session: aiohttp.ClientSession, within: float = 180) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}; see {self.data / 'hub.log'}")
            try:
                async with session.get(f"{self.url}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError("hub not up")

    def typesense(self) -> tuple[str, str]:
        ts = self.data / "typesense"
        port = json.loads((ts / "ports.json").read_text())["api"]
        return f"http://127.0.0.1:{port}", (ts / "api-key").read_text().strip()

    def rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():  # type: ignore[union-attr]
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
        return None

    def typesense_rss(self) -> dict[str, float] | None:
        """Resident and peak resident MB of the hub's Typesense child (``VmRSS``, ``VmHWM``)."""
        assert self.proc is not None
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) != self.proc.pid or "typesense" not in stat.read_text():
                    continue
                status = dict(
                    line.split(":", 1) for line in (stat.parent / "status").read_text().splitlines() if ":" in line
                )
            except (OSError, IndexError, ValueError):
                continue
            return {k: round(int(status[k].split()[0]) / 1024, 1) for k in ("VmRSS", "VmHWM")}
        return None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


async def direct_import(ts_url: str, key: str, file: Path, batch: int = 1000) -> float:
    """Documents/s of a raw JSONL import of the hub's own documents into a fresh collection."""
    from search.schema import ALIAS, collection_schema

    headers = {"X-TYPESENSE-API-KEY": key}
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as s:
        async with s.get(f"{ts_url}/collections/{ALIAS}/documents/export") as r:
            r.raise_for_status()
            with file.open("wb") as out:
                async for chunk in r.content.iter_chunked(1 << 20):
                    out.write(chunk)
        async with s.post(f"{ts_url}/collections", json=collection_schema("bench_direct")) as r:
            r.raise_for_status()
        imported = 0
        url = f"{ts_url}/collections/bench_direct/documents/import"

        async def send(lines: list[bytes]) -> None:
            nonlocal imported
            params = {"action": "upsert", "batch_size": str(len(lines))}
            async with s.post(url, params=params, data=b"\n".join(lines)) as r:
                body = await r.text()
            results = body.splitlines()
            ok = sum(1 for line in results if json.loads(line).get("success") is True)
            if r.status != 200 or ok != len(lines):
                raise RuntimeError(f"direct import: {len(lines) - ok} rows refused, HTTP {r.status}: {body[:300]}")
            imported += ok

        t = time.perf_counter()
        with file.open("rb") as f:
            lines: list[bytes] = []
            for line in f:
                lines.append(line.rstrip(b"\n"))
                if len(lines) == batch:
                    await send(lines)
                    lines = []
            if lines:
                await send(lines)
        rate = imported / (time.perf_counter() - t)
        async with s.delete(f"{ts_url}/collections/bench_direct") as r:
            r.raise_for_status()
    file.unlink()
    return rate


async def documents(session: aiohttp.ClientSession, ts_url: str, key: str) -> int:
    """Documents of the collection behind the ``sheets`` alias (0 before it exists)."""
    async with session.get(f"{ts_url}/collections/sheets", headers={"X-TYPESENSE-API-KEY": key}) as r:
        return int((await r.json())["num_documents"]) if r.status == 200 else 0


async def metrics(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(f"{url}/metrics") as r:
        text = await r.text()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# ------------------------------------------------------------------ load generation


async def closed_loop(call: Callable[[int], Awaitable[None]], clients: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def one() -> None:
        while time.monotonic() < stop:
            i = next(counter)
            t = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(one() for _ in range(clients)))
    return latencies


async def open_loop(call: Callable[[int], Awaitable[None]], qps: float, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    tasks = []
    start = time.perf_counter()
    n = int(qps * seconds)

    async def one(i: int, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        t = time.perf_counter()
        await call(i)
        # Open loop: latency counts from the scheduled time (queueing included).
        latencies.append(time.perf_counter() - min(t, at))

    for i in range(n):
        tasks.append(asyncio.create_task(one(i, start + i / qps)))
    await asyncio.gather(*tasks)
    return latencies, n


# ------------------------------------------------------------------ the queries


class Workload:
    def __init__(self, words: list[str], facets: dict[str, list[str]], points: list[tuple[float, float]]) -> None:
        self.words = words
        self.facets = facets
        self.points = points

    def params(self, kind: str, i: int) -> dict[str, str]:
        rng = random.Random(i)
        if kind == "keyword_3_facets":
            return {
                "q": rng.choice(self.words),
                "themes": rng.choice(self.facets["themes"]),
                "audiences": rng.choice(self.facets["audiences"]),
                "stage": rng.choice(self.facets["stage"]),
            }
        if kind == "keyword_radius":
            lat, lon = rng.choice(self.points)
            return {"q": rng.choice(self.words), "near": f"{lat},{lon},30"}
        if kind == "clusters_region":
            lat, lon = rng.choice(self.points)
            return {"bbox": f"{lat - 1},{lon - 1.5},{lat + 1},{lon + 1.5}", "zoom": "8"}
        if kind == "clusters_france":
            return {"bbox": "41.2,-5.6,51.2,9.7", "zoom": "5"}
        if kind == "home":
            return {}
        raise ValueError(kind)

    def hub_path(self, kind: str) -> str:
        return {
            "keyword_3_facets": "/api/search",
            "keyword_radius": "/api/search",
            "clusters_region": "/api/search/clusters",
            "clusters_france": "/api/search/clusters",
            "home": "/api/search/overview",
        }[kind]

    def direct_searches(self, kind: str, i: int) -> list[dict[str, Any]]:
        from search.clusters import cluster_params
        from search.geo import BBox
        from search.query import SearchQuery
        from search.service import OVERVIEW_FACETS

        params = self.params(kind, i)
        if kind.startswith("clusters"):
            box = BBox(*(float(v) for v in params["bbox"].split(",")))
            _, p = cluster_params(box, int(params["zoom"]), None)
            return [{"collection": "sheets", **p}]
        if kind == "home":
            q = SearchQuery(per_page=0, facets=OVERVIEW_FACETS, max_facet_values=100)
            return q.searches("sheets")
        return SearchQuery.from_params({k: [v] for k, v in params.items()}).searches("sheets")


KINDS = ("keyword_3_facets", "keyword_radius", "clusters_region", "clusters_france", "home")


async def run_queries(hub: HubProcess, work: Workload, seconds: float, qps: float, mixed_seconds: float) -> None:
    ts_url, key = hub.typesense()
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        errors = {"hub": 0, "direct": 0}

        def hub_call(kind: str) -> Callable[[int], Awaitable[None]]:
            path = hub.url + work.hub_path(kind)

            async def call(i: int) -> None:
                async with session.get(path, params=work.params(kind, i)) as r:
                    await r.read()
                    if r.status != 200:
                        errors["hub"] += 1

            return call

        def direct_call(kind: str) -> Callable[[int], Awaitable[None]]:
            headers = {"X-TYPESENSE-API-KEY": key, "Content-Type": "application/json"}

            async def call(i: int) -> None:
                body = json.dumps({"searches": work.direct_searches(kind, i)}, ensure_ascii=False)
                async with session.post(f"{ts_url}/multi_search", data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors["direct"] += 1

            return call

        # Warm both (the hub's caches for the cached kinds, Typesense's page cache for all).
        for kind in KINDS:
            for i in range(5):
                await hub_call(kind)(i)
                await direct_call(kind)(i)
        for kind in KINDS:
            for clients in (1, 8, 32):
                row: dict[str, Any] = {"bench": "search", "query": kind, "clients": clients}
                for target, make in (("hub", hub_call), ("direct", direct_call)):
                    lat = await closed_loop(make(kind), clients, seconds)
                    row[target] = {
                        "n": len(lat),
                        "qps": round(len(lat) / seconds, 1),
                        "p50_ms": pct(lat, 50),
                        "p95_ms": pct(lat, 95),
                        "p99_ms": pct(lat, 99),
                    }
                for p in ("p50_ms", "p95_ms", "p99_ms"):
                    row[f"ratio_{p[:3]}"] = round(row["hub"][p] / row["direct"][p], 2) if row["direct"][p] else None
                row["errors"] = dict(errors)
                emit(row)

        def mixed(
            make: Callable[[str], Callable[[int], Awaitable[None]]], kinds: tuple[str, ...]
        ) -> Callable[[int], Awaitable[None]]:
            calls = [make(k) for k in kinds]

            async def call(i: int) -> None:
                await calls[i % len(calls)](i)

            return call

        # "mixed": what a search page sends (the home page included: cached by the hub, not by
        # Typesense); "mixed_uncached": only per-request queries, the hub's own overhead.
        for name, kinds in (
            ("mixed", ("keyword_3_facets", "keyword_radius", "clusters_region", "home")),
            ("mixed_uncached", ("keyword_3_facets", "keyword_radius", "clusters_region")),
        ):
            row = {"bench": "search", "query": name, "kinds": list(kinds), "target_qps": qps, "seconds": mixed_seconds}
            for target, make in (("hub", hub_call), ("direct", direct_call)):
                lat, n = await open_loop(mixed(make, kinds), qps, mixed_seconds)
                row[target] = {"n": n, "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99)}
            row["ratio_p50"] = round(row["hub"]["p50_ms"] / row["direct"]["p50_ms"], 2)
            row["ratio_p99"] = round(row["hub"]["p99_ms"] / row["direct"]["p99_ms"], 2)
            row["target_met"] = row["hub"]["p99_ms"] <= 200
            row["errors"] = dict(errors)
            emit(row)


# ------------------------------------------------------------------ main


async def bench(
    size: int, seconds: float, qps: float, mixed_seconds: float, burst: int, rebuild: bool, steps: set[str]
) -> None:

    WORK.mkdir(parents=True, exist_ok=True)
    corpus = await ensure_corpus(size, rebuild)
    run_dir = WORK / f"run-{size}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    db_path = run_dir / "hub.sqlite3"
    shutil.copy(corpus, db_path)
    hub = HubProcess(run_dir, db_path)
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        hub.start()
        try:
            await hub.wait(session)
            up = time.monotonic()
            # index_drain: the hub found an empty index and queued every sheet.
            # Polled on Typesense, not on the hub's /metrics: that counts the sheet table with a
            # full scan (~2 s at 1M sheets, holding the hub's one SQLite connection meanwhile).
            ts_url, key = hub.typesense()
            while await documents(session, ts_url, key) < size:
                await asyncio.sleep(0.25)
            drained = time.monotonic()
            hub_rate = size / (drained - started)
            for _ in range(60):  # the last acknowledgement may still be under way
                m = await metrics(session, hub.url)
                if m.get("essaim_index_pending_operations") == 0 and m.get("essaim_index_documents") == size:
                    break
                await asyncio.sleep(0.5)
            else:
                raise RuntimeError(f"index not drained: {m}")

            ts_rss_drain = hub.typesense_rss()
            # Peer: the very documents the hub indexed (exported from its collection to a file,
            # untimed), streamed from that file straight into a fresh collection of the same
            # server, 1,000 JSON lines per request, every row result checked.
            direct_rate = await direct_import(ts_url, key, run_dir / "docs.jsonl")
            emit(
                {
                    "bench": "search",
                    "step": "index_drain",
                    "sheets": size,
                    "hub_docs_per_s": round(hub_rate, 1),
                    "hub_seconds_from_process_start": round(drained - started, 1),
                    "hub_seconds_after_http_up": round(drained - up, 1),
                    "hub_docs_per_s_after_http_up": round(size / (drained - up), 1),
                    "direct_docs_per_s": round(direct_rate, 1),
                    "ratio": round(hub_rate / direct_rate, 2),
                    "target_met": hub_rate >= 2000,
                    "typesense_rss_mb": ts_rss_drain,
                    "load": os.getloadavg(),
                }
            )
            if "burst" in steps:
                await write_burst(hub, session, db_path, burst)

            # Vocabulary, facet values and points from the index itself.
            async with session.get(f"{hub.url}/api/search/overview") as r:
                overview = await r.json()
            facets = {name: [c["value"] for c in overview["facets"][name]] for name in ("themes", "audiences", "stage")}
            async with session.get(f"{hub.url}/api/search", params={"per_page": "50", "sort": "rotation"}) as r:
                hits = (await r.json())["hits"]
            words = sorted({w for h in hits for w in h["document"]["title"].lower().split() if len(w) > 4})
            sample = await _points(ts_url, key)
            work = Workload(words, facets, sample)
            if "queries" in steps:
                await run_queries(hub, work, seconds, qps, mixed_seconds)
            emit(
                {
                    "bench": "search",
                    "step": "hub_rss",
                    "peak_rss_mb": hub.rss_mb(),
                    "typesense_rss_mb": hub.typesense_rss(),
                    "load": os.getloadavg(),
                }
            )
            if "reindex" in steps:
                await run_reindex(hub, work, session, size)
        finally:
            hub.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"search-{size}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in OUT))


async def write_burst(hub: HubProcess, session: aiohttp.ClientSession, db_path: Path, burst: int) -> None:
    """A burst of sheets written through ``SheetStore.upsert_many`` until the hub's search finds them."""
    from dataclasses import replace

    from node.db import Database
    from node.storage import SheetStore
    from protocol.sheet import sheet_from_dict
    from search.indexer import install_queue

    db = Database(f"sqlite:///{db_path}")
    await db.open()

    # write_to_searchable: a burst written through the SheetStore (as a harvest writes).
    install_queue(db)
    store = SheetStore(db, base_url=hub.url, source="bench-burst", hub=True)
    template = await db.fetch("SELECT data FROM sheet WHERE deleted = ? LIMIT ?", [False, burst])
    sheets = [
        replace(sheet_from_dict(json.loads(r["data"])), id="", local_id=f"burst-{i}", title=f"Rafale {i}")
        for i, r in enumerate(template)
    ]
    t = time.monotonic()
    async with db.transaction() as tx:
        await store.upsert_many(sheets, tx=tx)
    committed = time.monotonic()
    while True:
        async with session.get(f"{hub.url}/api/search", params={"q": "rafale", "per_page": "0"}) as r:
            if r.status == 200 and (await r.json())["found"] == len(sheets):
                break
        await asyncio.sleep(0.05)
    done = time.monotonic()
    await db.close()
    emit(
        {
            "bench": "search",
            "step": "write_to_searchable",
            "sheets": len(sheets),
            "write_s": round(committed - t, 2),
            "commit_to_searchable_s": round(done - committed, 2),
            "sheets_per_s_end_to_end": round(len(sheets) / (done - t), 1),
        }
    )


async def run_reindex(hub: HubProcess, work: Workload, session: aiohttp.ClientSession, size: int) -> None:
    """``essaim hub reindex`` beside the running hub, one client searching all along."""
    latencies: list[float] = []
    errors = 0
    done = asyncio.Event()

    async def searching() -> None:
        nonlocal errors
        i = 0
        while not done.is_set():
            t = time.perf_counter()
            async with session.get(hub.url + "/api/search", params=work.params("keyword_3_facets", i)) as r:
                await r.read()
                errors += r.status != 200
            latencies.append(time.perf_counter() - t)
            i += 1

    searcher = asyncio.create_task(searching())
    command = [sys.executable, "-m", "essaim.cli", "hub", "reindex", "--data-dir", str(hub.data)]
    t = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    seconds = time.monotonic() - t
    done.set()
    await searcher
    if proc.returncode != 0:
        raise RuntimeError(f"reindex failed ({proc.returncode}): {err.decode()[-2000:]}")
    report = json.loads(out.decode().strip().splitlines()[-1])
    emit(
        {
            "bench": "search",
            "step": "reindex",
            "sheets": size,
            "seconds": round(seconds, 1),
            "documents": report["documents"],
            "refused": report["refused_count"],
            "docs_per_s": round(report["documents"] / seconds, 1),
            "target_met": seconds <= 600,
            "searches_during": len(latencies),
            "search_errors_during": errors,
            "search_p95_ms_during": pct(latencies, 95),
            "typesense_rss_mb": hub.typesense_rss(),
            "load": os.getloadavg(),
        }
    )


async def _points(ts_url: str, key: str) -> list[tuple[float, float]]:
    headers = {"X-TYPESENSE-API-KEY": key}
    params = {"q": "*", "query_by": "title", "per_page": "100", "include_fields": "location"}
    async with (
        aiohttp.ClientSession(headers=headers) as s,
        s.get(f"{ts_url}/collections/sheets/documents/search", params=params) as r,
    ):
        hits = (await r.json())["hits"]
    points = [tuple(h["document"]["location"]) for h in hits if "location" in h["document"]]
    return points or [(48.11, -1.68)]  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per query kind, concurrency and target")
    parser.add_argument("--qps", type=float, default=50.0)
    parser.add_argument("--mixed-seconds", type=float, default=20.0)
    parser.add_argument("--burst", type=int, default=5000, help="sheets of the write-to-searchable burst")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--steps",
        default="burst,queries,reindex",
        help="after index_drain (always measured): any of burst, queries, reindex (comma-separated)",
    )
    parser.add_argument("--corpus-only", action="store_true", help="build or replicate the corpus, then stop")
    args = parser.parse_args()
    steps = {s for s in args.steps.split(",") if s}
    unknown = steps - {"burst", "queries", "reindex"}
    if unknown:
        parser.error(f"unknown steps: {', '.join(sorted(unknown))}")
    if args.corpus_only:
        WORK.mkdir(parents=True, exist_ok=True)
        asyncio.run(ensure_corpus(args.size, args.rebuild))
        return
    asyncio.run(bench(args.size, args.seconds, args.qps, args.mixed_seconds, args.burst, args.rebuild, steps))


if __name__ == "__main__":
    main()
