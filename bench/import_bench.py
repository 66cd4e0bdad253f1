"""Import benchmark: N generated sheets through the real importer, on SQLite and PostgreSQL.

Each measurement runs in its own process so that peak RSS (``ru_maxrss``) belongs
to it alone. For each backend it reports sheets/s and peak RSS at several file
sizes (memory must stay flat as the file grows: the importer streams), and it
runs a *peer* in the same session: the plain ``sqlite3``/``asyncpg`` bulk insert
of the same rows into a bare table (the floor any importer on that database pays
for writing the data), so the figure comes with a ratio that machine noise
affects much less than the absolute number.

    python bench/import_bench.py [--sizes 25000,50000,100000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("ESSAIM_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
PG_DATABASE = "essaim_bench"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _pg_fresh_url() -> str:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {PG_DATABASE}")
    finally:
        await conn.close()
    return PG_URL.rsplit("/", 1)[0] + "/" + PG_DATABASE


# ------------------------------------------------------------------ child: one measurement


async def _essaim(backend: str, file: Path, workdir: Path) -> dict[str, float]:
    from node.db import Database
    from node.geocode import make_resolver
    from node.importer import Importer
    from node.mapping import load_mapping
    from node.storage import SheetStore
    from protocol.sheet import Partner

    url = await _pg_fresh_url() if backend == "postgres" else f"sqlite:///{workdir}/bench.sqlite3"
    db = Database(url)
    await db.upgrade()
    await db.open()
    try:
        store = SheetStore(db, base_url="https://bench.example")
        importer = Importer(
            store,
            load_mapping("native"),
            partner=Partner(name="Bench"),
            licence="https://www.etalab.gouv.fr/licence-ouverte-open-licence",
            resolver=make_resolver(),
            workers=int(os.environ["ESSAIM_NODE_WRITE_WORKERS"]),  # set by main()
        )
        started = time.perf_counter()
        report = await importer.run(file)
        first = time.perf_counter() - started
        started = time.perf_counter()
        again = await importer.run(file)
        second = time.perf_counter() - started
        assert report.created == report.sheets and again.unchanged == report.sheets, (report, again)
        return {"sheets": report.sheets, "seconds": first, "reimport_seconds": second}
    finally:
        await db.close()


async def _peer(backend: str, file: Path, workdir: Path) -> dict[str, float]:
    """Bulk insert of the same JSON rows into a bare table, 500 per statement batch, one transaction."""
    started = time.perf_counter()
    count = 0
    if backend == "sqlite":
        conn = sqlite3.connect(workdir / "peer.sqlite3")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (local_id TEXT PRIMARY KEY, title TEXT, data TEXT)")
        batch: list[tuple[str, str, str]] = []
        with conn, file.open(encoding="utf-8") as handle:
            for line in handle:
                item = json.loads(line)
                batch.append((item["local_id"], item["title"], json.dumps(item, ensure_ascii=False)))
                if len(batch) == 500:
                    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", batch)
                    count += len(batch)
                    batch.clear()
            conn.executemany("INSERT INTO t VALUES (?, ?, ?)", batch)
            count += len(batch)
        conn.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(await _pg_fresh_url())
        try:
            await conn.execute("CREATE TABLE t (local_id TEXT PRIMARY KEY, title TEXT, data TEXT)")
            async with conn.transaction():
                batch = []
                with file.open(encoding="utf-8") as handle:
                    for line in handle:
                        item = json.loads(line)
                        batch.append((item["local_id"], item["title"], json.dumps(item, ensure_ascii=False)))
                        if len(batch) == 500:
                            await conn.executemany("INSERT INTO t VALUES ($1, $2, $3)", batch)
                            count += len(batch)
                            batch.clear()
                    await conn.executemany("INSERT INTO t VALUES ($1, $2, $3)", batch)
                    count += len(batch)
        finally:
            await conn.close()
    return {"sheets": count, "seconds": time.perf_counter() - started}


def child(kind: str, backend: str, file: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="essaim-bench-") as tmp:
        work = _essaim if kind == "essaim" else _peer
        result = asyncio.run(work(backend, file, Path(tmp)))
    result["peak_rss_mib"] = _peak_rss_mib()
    # The largest worker process of the pipeline (write_workers > 0), whose memory counts too.
    result["worker_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(result))


# ------------------------------------------------------------------ parent: orchestration


def _run_child(kind: str, backend: str, file: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, backend, str(file)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


async def _pg_available() -> str | None:
    try:
        import asyncpg

        conn = await asyncio.wait_for(asyncpg.connect(PG_URL), 5)
        await conn.close()
    except Exception as exc:
        return f"PostgreSQL unreachable at {PG_URL}: {exc}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="25000,50000,100000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--write-workers", type=int, help="[node] write_workers (default: the node's, the machine's cores up to 4)"
    )
    parser.add_argument("--child", nargs=3, metavar=("KIND", "BACKEND", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_workers is None:  # the node's own default (a child inherits its parent's choice)
        from essaim.settings import default_worker_processes

        inherited = os.environ.get("ESSAIM_NODE_WRITE_WORKERS")
        args.write_workers = int(inherited) if inherited is not None else default_worker_processes()
    # [node] write_workers of the measured importer (node/pipeline.py), read by the children
    os.environ["ESSAIM_NODE_WRITE_WORKERS"] = str(args.write_workers)
    if args.child:
        child(args.child[0], args.child[1], Path(args.child[2]))
        return 0

    from node.demo import write_demo_file

    sizes = [int(s) for s in args.sizes.split(",")]
    backends = args.backends.split(",")
    if "postgres" in backends and (why := asyncio.run(_pg_available())):
        print(f"skipping PostgreSQL: {why}")
        backends.remove("postgres")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    rows = []
    with tempfile.TemporaryDirectory(prefix="essaim-bench-data-") as tmp:
        for size in sizes:
            file = Path(tmp) / f"sheets-{size}.jsonl"
            write_demo_file(file, size, seed=11, partner="Bench")
            mib = file.stat().st_size / 2**20
            for backend in backends:
                ours = _run_child("essaim", backend, file)
                peer = _run_child("peer", backend, file)
                row = {
                    "backend": backend,
                    "write_workers": args.write_workers,
                    "sheets": size,
                    "file_mib": round(mib, 1),
                    "sheets_per_s": round(size / ours["seconds"]),
                    "reimport_sheets_per_s": round(size / ours["reimport_seconds"]),
                    "peak_rss_mib": round(ours["peak_rss_mib"], 1),
                    "worker_peak_rss_mib": round(ours.get("worker_peak_rss_mib", 0.0), 1),
                    "peer_rows_per_s": round(size / peer["seconds"]),
                    "peer_peak_rss_mib": round(peer["peak_rss_mib"], 1),
                    "ratio_to_peer": round(peer["seconds"] / ours["seconds"], 3),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "import.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
