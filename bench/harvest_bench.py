"""Harvest benchmark: a complete ListRecords harvest of an N-sheet node over HTTP, SQLite and PostgreSQL.

The node is the real application (``essaim node serve``, i.e. ``essaim.app.build_app``)
in its own process on a loopback port; the harvester runs in this process with
aiohttp, follows resumption tokens to the end, asserts that it received exactly N
distinct records, and reports records/s, page latencies (first, last, p50, p95)
and the node's peak RSS (``VmHWM`` of ``/proc/PID/status``, read before it stops).

A *peer* is measured in the same run on the same rows: pyoai (the OAI-PMH server
library on PyPI) with a minimal backend reading the same tables (the same
pre-rendered ``sheet_format`` fragments), behind the same bare aiohttp front, at
the same page size, harvested by the same client. The ratio essaim/peer is much
less sensitive to the machine than the absolute figures.

The corpus. Importing 1M sheets takes ~15 min, so the corpus is built in two steps:
a few thousand distinct sheets (``node.demo.generate``) go through the real write
path once (the importer: validation, geocoding, ``SheetStore.upsert_many``, which
pre-renders both formats and the set memberships), then their rows of ``sheet``,
``sheet_format`` and ``sheet_set`` are replicated to N rows by a bulk insert
(``sqlite3.executemany`` in one transaction; asyncpg ``copy_records_to_table``):
every copy gets its own pk, local id, URI and datestamp, substituted into the JSON
and into the pre-rendered XML, so every record of the harvest is distinct.
Datestamps are spread over ~2.4 years, four sheets per second-stamp (ties exercise
the ``(stamp, pk)`` keyset). The built corpora are cached (SQLite files under
``var/bench/harvest/``; PostgreSQL databases ``essaim_harvest_bench_<N>``),
marked complete by a ``bench_corpus`` table; ``--rebuild`` builds them again.

    python bench/harvest_bench.py [--sizes 100000,1000000] [--backends sqlite,postgres]
                                  [--formats oai_dc,essaim] [--no-peer] [--rebuild]

The peer needs pyoai (``pip install pyoai``; ``bench/run harvest`` installs it);
without it the peer is skipped with a message. pyoai 2.5 calls ``cgi.parse_qs``,
removed in Python 3.8, to read its resumption tokens: the peer adds that alias.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = ROOT / "var" / "bench" / "harvest"
PG_URL = os.environ.get("ESSAIM_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
PG_PREFIX = "essaim_harvest_bench"
CORPUS_VERSION = 1
T0 = 1_500_000_000  # 2017-07-14: first datestamp of the corpus
STEP = 300  # seconds between two datestamps
TIES = 4  # sheets sharing one datestamp
LICENCE = "https://www.etalab.gouv.fr/licence-ouverte-open-licence"
OAI_NS = "http://www.openarchives.org/OAI/2.0/"


def _iso(stamp: int) -> str:
    return datetime.fromtimestamp(stamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------ corpus: templates through the real code path


async def _templates(count: int) -> Path:
    """``count`` generated sheets imported once through the real importer into a small SQLite file."""
    path = WORK / f"templates-{count}.sqlite3"
    if path.exists() and _marked(sqlite3.connect(path), count):
        return path
    from node.db import Database
    from node.demo import write_demo_file
    from node.geocode import make_resolver
    from node.importer import Importer
    from node.mapping import load_mapping
    from node.storage import SheetStore
    from protocol.sheet import Partner

    for stale in WORK.glob(f"templates-{count}.sqlite3*"):
        stale.unlink()
    file = WORK / f"templates-{count}.jsonl"
    write_demo_file(file, count, seed=11, partner="Bench", with_handwritten=False)
    db = Database(f"sqlite:///{path}")
    await db.upgrade()
    await db.open()
    try:
        store = SheetStore(db, base_url="https://bench.example")
        importer = Importer(
            store, load_mapping("native"), partner=Partner(name="Bench"), licence=LICENCE, resolver=make_resolver()
        )
        report = await importer.run(file)
        assert report.created == count, report
    finally:
        await db.close()
    conn = sqlite3.connect(path)
    _mark(conn, count)
    conn.close()
    file.unlink()
    return path


def _marked(conn: Any, size: int) -> bool:
    try:
        row = conn.execute("SELECT size, version FROM bench_corpus").fetchone()
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return tuple(row or ()) == (size, CORPUS_VERSION)


def _mark(conn: sqlite3.Connection, size: int) -> None:
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_corpus (size BIGINT, version INT)")
        conn.execute("DELETE FROM bench_corpus")
        conn.execute("INSERT INTO bench_corpus VALUES (?, ?)", (size, CORPUS_VERSION))


def _read_templates(path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    out = []
    for row in conn.execute("SELECT * FROM sheet ORDER BY pk_id"):
        item = dict(row)
        item["formats"] = {
            r["prefix"]: r["xml"]
            for r in conn.execute("SELECT prefix, xml FROM sheet_format WHERE sheet_pk = ?", [row["pk_id"]])
        }
        item["specs"] = [
            r["spec"] for r in conn.execute("SELECT spec FROM sheet_set WHERE sheet_pk = ?", [row["pk_id"]])
        ]
        item["iso"] = _iso(int(row["stamp"]))
        out.append(item)
    conn.close()
    return out


def _swap(template: dict[str, Any], text: str, uri: str, local_id: str, iso: str) -> str:
    """The template's URI, local id and datestamp replaced by the copy's, in its JSON or XML."""
    return text.replace(template["uri"], uri).replace(template["local_id"], local_id).replace(template["iso"], iso)


def _replicas(
    templates: list[dict[str, Any]], size: int
) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """For each of ``size`` sheets: its sheet row, its sheet_format rows, its sheet_set rows."""
    set_id = 0
    for i in range(size):
        t = templates[i % len(templates)]
        pk = i + 1
        stamp = T0 + (i // TIES) * STEP
        local_id = f"bench-{i:08d}"
        uri = f"https://bench.example/sheets/{uuid.UUID(int=pk)}"
        iso = _iso(stamp)

        sheet = (
            pk,
            uri,
            "",
            local_id,
            stamp,
            False,
            t["content_hash"],
            t["title"],
            _swap(t, t["data"], uri, local_id, iso),
            t["sets"],
            None,
        )
        formats = [
            (2 * i + n + 1, pk, prefix, _swap(t, xml, uri, local_id, iso))
            for n, (prefix, xml) in enumerate(sorted(t["formats"].items()))
        ]
        sets = []
        for spec in t["specs"]:
            set_id += 1
            sets.append((set_id, pk, spec, stamp))
        yield sheet, formats, sets


SHEET_COLUMNS = (
    "pk_id",
    "uri",
    "source",
    "local_id",
    "stamp",
    "deleted",
    "content_hash",
    "title",
    "data",
    "sets",
    "provenance",
)


async def _schema(url: str) -> None:
    from node.db import Database

    db = Database(url)
    await db.upgrade()
    await db.close()


def _build_sqlite(path: Path, templates: list[dict[str, Any]], size: int) -> None:
    for stale in path.parent.glob(path.name + "*"):
        stale.unlink()
    asyncio.run(_schema(f"sqlite:///{path}"))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # a build, not a durability test
    conn.execute("PRAGMA cache_size=-524288")
    chunk = 20_000
    sheets: list[tuple[Any, ...]] = []
    formats: list[tuple[Any, ...]] = []
    sets: list[tuple[Any, ...]] = []

    def flush() -> None:
        conn.executemany(f"INSERT INTO sheet ({', '.join(SHEET_COLUMNS)}) VALUES ({', '.join('?' * 11)})", sheets)
        conn.executemany("INSERT INTO sheet_format (id, sheet_pk, prefix, xml) VALUES (?, ?, ?, ?)", formats)
        conn.executemany("INSERT INTO sheet_set (id, sheet_pk, spec, stamp) VALUES (?, ?, ?, ?)", sets)
        sheets.clear(), formats.clear(), sets.clear()

    with conn:  # one transaction
        for sheet, fmt, st in _replicas(templates, size):
            sheets.append(sheet)
            formats.extend(fmt)
            sets.extend(st)
            if len(sheets) == chunk:
                flush()
        flush()
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _mark(conn, size)
    conn.close()


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_url(size: int) -> str:
    return PG_URL.rsplit("/", 1)[0] + f"/{PG_PREFIX}_{size}"


async def _pg_marked(size: int) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(_pg_url(size))
    except Exception:
        return False
    try:
        row = await conn.fetchrow("SELECT size, version FROM bench_corpus")
    except Exception:
        return False
    finally:
        await conn.close()
    return row is not None and tuple(row) == (size, CORPUS_VERSION)


async def _build_postgres(templates: list[dict[str, Any]], size: int) -> None:
    import asyncpg

    await _pg_admin(f"DROP DATABASE IF EXISTS {PG_PREFIX}_{size} WITH (FORCE)")
    await _pg_admin(f"CREATE DATABASE {PG_PREFIX}_{size}")
    await _schema(_pg_url(size))
    conn = await asyncpg.connect(_pg_url(size))
    try:
        chunk = 20_000
        async with conn.transaction():
            sheets: list[tuple[Any, ...]] = []
            formats: list[tuple[Any, ...]] = []
            sets: list[tuple[Any, ...]] = []

            async def flush() -> None:
                await conn.copy_records_to_table("sheet", records=sheets, columns=SHEET_COLUMNS)
                await conn.copy_records_to_table(
                    "sheet_format", records=formats, columns=("id", "sheet_pk", "prefix", "xml")
                )
                await conn.copy_records_to_table("sheet_set", records=sets, columns=("id", "sheet_pk", "spec", "stamp"))
                sheets.clear(), formats.clear(), sets.clear()

            set_rows = 0
            for sheet, fmt, st in _replicas(templates, size):
                sheets.append(sheet)
                formats.extend(fmt)
                sets.extend(st)
                set_rows += len(st)
                if len(sheets) == chunk:
                    await flush()
            await flush()
            for table, column, last in (
                ("sheet", "pk_id", size),
                ("sheet_format", "id", 2 * size),
                ("sheet_set", "id", set_rows),
            ):
                await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), {max(last, 1)})")
        # What autovacuum does soon on a live node; the visibility map lets COUNT(*) scan the index only.
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CREATE TABLE bench_corpus (size BIGINT, version INT)")
        await conn.execute("INSERT INTO bench_corpus VALUES ($1, $2)", size, CORPUS_VERSION)
    finally:
        await conn.close()


def corpus(backend: str, size: int, templates: int, rebuild: bool) -> str:
    """The database URL of a built N-sheet corpus (built, or taken from the cache)."""
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if backend == "sqlite":
        path = WORK / f"corpus-{size}.sqlite3"
        url = f"sqlite:///{path}"
        if not rebuild and path.exists() and _marked(sqlite3.connect(path), size):
            return url
        rows = _read_templates(asyncio.run(_templates(templates)))
        _build_sqlite(path, rows, size)
    else:
        url = _pg_url(size)
        if not rebuild and asyncio.run(_pg_marked(size)):
            return url
        rows = _read_templates(asyncio.run(_templates(templates)))
        asyncio.run(_build_postgres(rows, size))
    print(f"built {backend} corpus of {size} sheets in {time.perf_counter() - started:.0f} s", flush=True)
    return url


# ------------------------------------------------------------------ servers


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_essaim(url: str, port: int, page_size: int | None) -> subprocess.Popen[bytes]:
    data_dir = WORK / "node-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ESSAIM_DATABASE_URL": url,
        "ESSAIM_BASE_URL": f"http://127.0.0.1:{port}",
        "ESSAIM_LOG_LEVEL": "WARNING",
    }
    env.pop("ESSAIM_CONFIG", None)
    if page_size:
        env["ESSAIM_OAI_PAGE_SIZE"] = str(page_size)
    else:
        env.pop("ESSAIM_OAI_PAGE_SIZE", None)
    cmd = [str(Path(sys.executable).parent / "essaim"), "node", "serve", "--data-dir", str(data_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-migrate"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _start_peer(backend: str, url: str, port: int, page_size: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--serve-peer", backend, url, str(port), str(page_size)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _status(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")[-2000:]


def serve_peer(backend: str, url: str, port: int, page_size: int) -> None:
    """pyoai's BatchingServer over the same rows, behind a bare aiohttp app (the peer's process)."""
    import cgi
    import urllib.parse
    from concurrent.futures import ThreadPoolExecutor

    if not hasattr(cgi, "parse_qs"):  # pyoai 2.5 reads its tokens with a function Python 3.8 removed
        cgi.parse_qs = urllib.parse.parse_qs  # type: ignore[attr-defined]
    from aiohttp import web
    from lxml import etree
    from oaipmh import common, error, metadata, server

    repo = "localhost.localdomain"
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pool = ThreadPoolExecutor(1)  # pyoai is synchronous: it runs in one thread, the loop serves HTTP
    query: Callable[[str, list[Any]], list[Any]]
    if backend == "sqlite":
        conn = sqlite3.connect(url[len("sqlite://") :], check_same_thread=False)
        conn.execute("PRAGMA query_only=1")

        def query(sql: str, params: list[Any]) -> list[Any]:
            return conn.execute(sql, params).fetchall()
    else:
        import asyncpg

        pg = loop.run_until_complete(asyncpg.create_pool(url, min_size=1, max_size=2))

        def query(sql: str, params: list[Any]) -> list[Any]:
            n = iter(range(1, 100))
            sql = "".join(f"${next(n)}" if c == "?" else c for c in sql)
            return asyncio.run_coroutine_threadsafe(pg.fetch(sql, *params), loop).result()

    class Backend:
        """The IBatchingOAIPMH interface of pyoai; remembers the keyset position reached at each cursor
        (pyoai's tokens carry an offset), so a sequential harvest never pays an OFFSET scan."""

        def __init__(self) -> None:
            self.positions: dict[tuple[str, int], tuple[int, int]] = {}

        def identify(self) -> Any:
            return common.Identify(
                repositoryName="Bench peer",
                baseURL=f"http://127.0.0.1:{port}/oai",
                protocolVersion="2.0",
                adminEmails=["admin@example.org"],
                earliestDatestamp=datetime.fromtimestamp(T0, tz=UTC).replace(tzinfo=None),
                deletedRecord="persistent",
                granularity="YYYY-MM-DDThh:mm:ssZ",
                compression=["identity"],
            )

        def listMetadataFormats(self, identifier: str | None = None) -> list[tuple[str, str, str]]:
            return [
                (
                    "oai_dc",
                    "http://www.openarchives.org/OAI/2.0/oai_dc.xsd",
                    "http://www.openarchives.org/OAI/2.0/oai_dc/",
                ),
                ("essaim", "http://127.0.0.1/schemas/essaim-sheet-1.0.xsd", "https://essaim.org/ns/sheet/1.0"),
            ]

        def listSets(self, cursor: int = 0, batch_size: int = 10) -> Any:
            raise error.NoSetHierarchyError("no sets in the peer")

        def listRecords(
            self,
            metadataPrefix: str,
            set: str | None = None,
            from_: datetime | None = None,
            until: datetime | None = None,
            cursor: int = 0,
            batch_size: int = 10,
        ) -> list[Any]:
            cursor = int(cursor)
            where, params = ["f.prefix = ?"], [metadataPrefix]
            if from_ is not None:
                where.append("s.stamp >= ?")
                params.append(int(from_.replace(tzinfo=UTC).timestamp()))
            if until is not None:
                where.append("s.stamp <= ?")
                params.append(int(until.replace(tzinfo=UTC).timestamp()))
            position = self.positions.get((metadataPrefix, cursor)) if cursor else None
            offset = ""
            if position is not None:
                where.append("(s.stamp, s.pk_id) > (?, ?)")
                params.extend([position[0], position[1]])
            elif cursor:
                offset = f" OFFSET {cursor}"
            rows = query(
                "SELECT s.pk_id, s.local_id, s.stamp, s.sets, f.xml FROM sheet s"
                " JOIN sheet_format f ON f.sheet_pk = s.pk_id"
                f" WHERE {' AND '.join(where)} ORDER BY s.stamp, s.pk_id LIMIT {int(batch_size)}{offset}",
                params,
            )
            if len(rows) > page_size:
                last = rows[page_size - 1]
                self.positions[(metadataPrefix, cursor + page_size)] = (int(last[2]), int(last[0]))
            return [
                (
                    common.Header(
                        None,
                        f"oai:{repo}:{local_id}",
                        datetime.fromtimestamp(stamp, tz=UTC).replace(tzinfo=None),
                        sets.split(),
                        False,
                    ),
                    xml,
                    None,
                )
                for _pk, local_id, stamp, sets, xml in rows
            ]

    def write_fragment(element: Any, xml: str) -> None:
        element.append(etree.fromstring(xml))

    registry = metadata.MetadataRegistry()
    registry.registerWriter("oai_dc", write_fragment)
    registry.registerWriter("essaim", write_fragment)
    oai = server.BatchingServer(Backend(), metadata_registry=registry, resumption_batch_size=page_size)

    async def handler(request: web.Request) -> web.Response:
        arguments = dict(request.query)
        body = await loop.run_in_executor(pool, oai.handleRequest, arguments)
        return web.Response(body=body, content_type="text/xml", charset="utf-8")

    app = web.Application()
    app.router.add_get("/oai", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)


# ------------------------------------------------------------------ harvester


# The light client reads a page's identifiers and token with these (the XML is parsed on a sample).
# Written for any provider's serialisation (namespace prefixes, attributes, whitespace between
# elements: pyoai indents its output), not only Essaim's.
_IDENTIFIER = re.compile(rb"<(?:[\w.-]+:)?header\b[^>]*>\s*<(?:[\w.-]+:)?identifier>([^<]*)</")
_TOKEN = re.compile(rb"<(?:[\w.-]+:)?resumptionToken\b[^>]*>([^<]*)</(?:[\w.-]+:)?resumptionToken>")
SAMPLE = 100  # the light client parses one page in this many with lxml


def _strict_page(body: bytes) -> tuple[list[str], str]:
    from lxml import etree

    o = f"{{{OAI_NS}}}"
    root = etree.fromstring(body)
    err = root.find(f"{o}error")
    if err is not None:
        raise RuntimeError(f"OAI error {err.get('code')}: {err.text}")
    records = root.findall(f"{o}ListRecords/{o}record")
    identifiers = [record.findtext(f"{o}header/{o}identifier") or "" for record in records]
    return identifiers, (root.findtext(f"{o}ListRecords/{o}resumptionToken") or "").strip()


def _unescape(raw: bytes) -> str:
    """Element text as lxml reads it (pyoai's tokens hold ``&amp;``)."""
    text = raw.decode()
    return html.unescape(text) if "&" in text else text


def _light_page(body: bytes, n: int) -> tuple[list[str], str]:
    if b"<error " in body[:2000]:
        return _strict_page(body)  # raises with the code
    identifiers = [_unescape(i) for i in _IDENTIFIER.findall(body)]
    found = _TOKEN.search(body)
    token = _unescape(found.group(1)).strip() if found else ""
    if n % SAMPLE == 0 and (strict := _strict_page(body)) != (identifiers, token):
        raise RuntimeError(
            f"page {n}: the light client read {len(identifiers)} identifiers and token {token!r}, "
            f"lxml {len(strict[0])} and {strict[1]!r}"
        )
    return identifiers, token


async def harvest(base_url: str, prefix: str, expected: int, client: str = "light") -> dict[str, Any]:
    """ListRecords to the end of the resumption tokens; every record's identifier is checked distinct.

    ``client``: ``light`` reads identifiers and tokens with regular expressions (and parses one
    page in ``SAMPLE`` with lxml, checking they agree), so that the figure is the server's, not
    this process's XML parsing on the same two cores (parsing a 195 KB oai_dc page with lxml
    takes about as long as serving it); ``strict`` parses every page with lxml, as a harvester
    that stores the records does.
    """
    import aiohttp

    read_page = _light_page if client == "light" else (lambda body, _: _strict_page(body))
    latencies: list[float] = []
    identifiers: set[str] = set()
    page_sizes: list[int] = []
    params: dict[str, str] = {"verb": "ListRecords", "metadataPrefix": prefix}
    # Loopback: no compression (the peer offers none; gzip is measured on its own below when asked).
    headers = {"Accept-Encoding": "identity"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        while True:
            t = time.perf_counter()
            async with session.get(base_url, params=params) as response:
                body = await response.read()
                response.raise_for_status()
            latencies.append(time.perf_counter() - t)
            page, token = read_page(body, len(latencies))
            identifiers.update(page)
            page_sizes.append(len(page))
            if not token:
                break
            params = {"verb": "ListRecords", "resumptionToken": token}
    seconds = time.perf_counter() - started
    received = sum(page_sizes)
    assert received == expected, f"{base_url} {prefix}: received {received} records, expected {expected}"
    assert len(identifiers) == expected, f"{base_url} {prefix}: {len(identifiers)} distinct identifiers"
    ordered = sorted(latencies)
    return {
        "records": received,
        "pages": len(latencies),
        "page_size": max(page_sizes),
        "client": client,
        "seconds": round(seconds, 2),
        "records_per_s": round(received / seconds),
        "mean_page_ms": round(sum(latencies) / len(latencies) * 1000, 2),
        "first_page_ms": round(latencies[0] * 1000, 1),
        "last_page_ms": round(latencies[-1] * 1000, 1),
        "p50_page_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_page_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
    }


async def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    import aiohttp

    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {_stop(proc)}")
            try:
                async with session.get(url, params={"verb": "Identify"}) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after 120 s")


def measure(
    kind: str, backend: str, url: str, size: int, prefix: str, page_size: int | None, client: str = "light"
) -> dict[str, Any]:
    """One server process, one complete harvest of one format, its peak RSS."""
    port = _free_port()
    proc = (
        _start_essaim(url, port, page_size) if kind == "essaim" else _start_peer(backend, url, port, page_size or 100)
    )
    base = f"http://127.0.0.1:{port}/oai"
    try:
        asyncio.run(_wait_ready(base, proc))
        idle = _status(proc.pid)["VmRSS"]
        load = os.getloadavg()[0]
        result = asyncio.run(harvest(base, prefix, size, client))
        status = _status(proc.pid)
    finally:
        log = _stop(proc)
    if proc.returncode not in (0, -signal.SIGINT, 130) and "Traceback" in log:
        print(log, file=sys.stderr)
    return {
        "impl": kind,
        "backend": backend,
        "sheets": size,
        "format": prefix,
        **result,
        "idle_rss_mib": round(idle, 1),
        "peak_rss_mib": round(status["VmHWM"], 1),
        "load_at_start": round(load, 2),
        "load_at_end": round(os.getloadavg()[0], 2),
    }


def _pg_available() -> str | None:
    async def probe() -> None:
        import asyncpg

        conn = await asyncio.wait_for(asyncpg.connect(PG_URL), 5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"PostgreSQL unreachable at {PG_URL}: {exc}"
    return None


def _peer_available() -> str | None:
    try:
        import oaipmh.server  # noqa: F401
    except ImportError as exc:
        return f"pyoai is not installed ({exc}): .venv/bin/pip install pyoai (bench/run harvest does it)"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000", help="corpus sizes, comma-separated (default 1000000)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--formats", default="oai_dc,essaim")
    parser.add_argument("--templates", type=int, default=3000, help="distinct sheets through the real write path")
    parser.add_argument("--page-size", type=int, help="ESSAIM_OAI_PAGE_SIZE for the node (default: its own)")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument(
        "--client", choices=["light", "strict"], default="light", help="how the harvester reads pages (see harvest())"
    )
    parser.add_argument("--rebuild", action="store_true", help="build the cached corpora again")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--serve-peer", nargs=4, metavar=("BACKEND", "URL", "PORT", "PAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_peer:
        backend, url, port, page = args.serve_peer
        serve_peer(backend, url, int(port), int(page))
        return 0

    sizes = [int(s) for s in args.sizes.split(",")]
    backends = args.backends.split(",")
    formats = args.formats.split(",")
    if "postgres" in backends and (why := _pg_available()):
        print(f"skipping PostgreSQL: {why}")
        backends.remove("postgres")
    peer = not args.no_peer
    if peer and (why := _peer_available()):
        print(f"skipping the peer: {why}")
        peer = False
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        for backend in backends:
            url = corpus(backend, size, args.templates, args.rebuild)
            if args.build_only:
                continue
            for prefix in formats:
                ours = measure("essaim", backend, url, size, prefix, args.page_size, args.client)
                print(json.dumps(ours), flush=True)
                rows.append(ours)
                if peer:
                    theirs = measure("pyoai", backend, url, size, prefix, ours["page_size"], args.client)
                    theirs["ratio_essaim_to_peer"] = round(ours["records_per_s"] / theirs["records_per_s"], 2)
                    print(json.dumps(theirs), flush=True)
                    rows.append(theirs)
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    if rows:
        results = ROOT / "bench" / "results"
        results.mkdir(exist_ok=True)
        (results / "harvest.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
