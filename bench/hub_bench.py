"""Hub benchmark: harvest 100,000 sheets from 10 Essaim nodes on loopback, end to end.

Ten real nodes (``essaim node serve``, SQLite, 10,000 sheets each, each corpus built from
its own generated sheets) serve OAI-PMH on loopback ports. The hub runs in a child process
(so that its peak RSS, ``VmHWM``, is its own): it registers the ten nodes (Identify,
ListMetadataFormats, NodeInfo), then harvests them all -- strict transport, native
``essaim`` records, normalisation (crosswalk, gazetteer places), storage through
``SheetStore`` (sheet JSON, set memberships; a hub stores no rendered formats), duplicate clusters,
checkpoints -- ``--workers`` sources at a time, into a fresh hub database (SQLite, or
PostgreSQL with ``--backend postgres``). Reported:

- ``harvest``: records/s end to end, seconds, peak hub RSS;
- ``incremental``: an incremental re-harvest of the ten nodes with no change: seconds, sheet
  writes (rows stamped during the run: must be 0) and queue writes;
- ``full_unchanged``: the same with the ``from`` cleared (every record sent again and compared):
  seconds and sheet writes (must be 0);
- ``serve``: the hub's own OAI-PMH provider listing the whole aggregate in each format (records
  rendered from their JSON as they are served), in-process: records/s and CPU per record;
- ``peer``: the same ten endpoints read by a plain ``sickle`` loop (``ListRecords`` iterated
  to the end, records parsed, nothing stored) in the same run, and the ratio hub/sickle.

    python bench/hub_bench.py [--nodes 10] [--per-node 10000] [--workers 4] [--processes 1] [--harvest-processes N]
                              [--backend sqlite|postgres] [--page-size N] [--no-peer] [--rebuild]

Targets on the project's machine: ≥ 5,000 records/s end to end, ≤ 500 MB hub RSS, the
unchanged incremental re-harvest of the 10 nodes in ≤ 10 s with 0 writes.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import harvest_bench as hb  # noqa: E402  (the node corpus builder and server helpers)

WORK = ROOT / "var" / "bench" / "hub"
PG_URL = os.environ.get("ESSAIM_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
PG_DB = "essaim_hub_bench"
CORPUS_VERSION = 1


# ------------------------------------------------------------------ node corpora


async def _templates(node: int, count: int) -> Path:
    """``count`` generated sheets (seed = node number) imported once through the real importer."""
    from node.db import Database
    from node.demo import write_demo_file
    from node.geocode import make_resolver
    from node.importer import Importer
    from node.mapping import load_mapping
    from node.storage import SheetStore
    from protocol.sheet import Partner

    path = WORK / f"templates-{node}-{count}.sqlite3"
    for stale in WORK.glob(path.name + "*"):
        stale.unlink()
    file = WORK / f"templates-{node}.jsonl"
    write_demo_file(file, count, seed=1000 + node, partner=f"Réseau {node}", with_handwritten=False)
    db = Database(f"sqlite:///{path}")
    await db.upgrade()
    await db.open()
    try:
        store = SheetStore(db, base_url=f"https://noeud-{node}.bench.example")
        importer = Importer(
            store,
            load_mapping("native"),
            partner=Partner(name=f"Réseau {node}"),
            licence=hb.LICENCE,
            resolver=make_resolver(),
        )
        report = await importer.run(file)
        assert report.created == count, report
    finally:
        await db.close()
    file.unlink()
    return path


def node_corpus(node: int, size: int, templates: int, rebuild: bool) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"node-{node}-{size}.sqlite3"
    if not rebuild and path.exists() and _marked(path, size):
        return path
    rows = hb._read_templates(asyncio.run(_templates(node, templates)))
    hb._build_sqlite(path, rows, size)
    return path


def _marked(path: Path, size: int) -> bool:
    try:
        conn = sqlite3.connect(path)
        row = conn.execute("SELECT size, version FROM bench_corpus").fetchone()
        conn.close()
    except sqlite3.Error:
        return False
    return tuple(row or ()) == (size, hb.CORPUS_VERSION)


def start_node(node: int, path: Path, port: int, page_size: int | None) -> subprocess.Popen[bytes]:
    data_dir = WORK / f"node-{node}-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ESSAIM_DATABASE_URL": f"sqlite:///{path}",
        "ESSAIM_BASE_URL": f"http://127.0.0.1:{port}",
        "ESSAIM_LOG_LEVEL": "WARNING",
        "ESSAIM_PARTNER_NAME": f"Réseau {node}",
    }
    env.pop("ESSAIM_CONFIG", None)
    if page_size:
        env["ESSAIM_OAI_PAGE_SIZE"] = str(page_size)
    cmd = [str(Path(sys.executable).parent / "essaim"), "node", "serve", "--data-dir", str(data_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-migrate"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# ------------------------------------------------------------------ the hub (child process)


async def _hub_database(backend: str) -> str:
    if backend == "sqlite":
        path = WORK / "hub.sqlite3"
        for stale in WORK.glob("hub.sqlite3*"):
            stale.unlink()
        return f"sqlite:///{path}"
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {PG_DB}")
        await conn.execute(f"CREATE DATABASE {PG_DB}")
    finally:
        await conn.close()
    return PG_URL.rsplit("/", 1)[0] + f"/{PG_DB}"


def _rss() -> dict[str, float]:
    return hb._status(os.getpid())


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_cpu(stat: Path) -> float:
    """User + system CPU seconds in a ``/proc/…/stat`` file (its fields 14 and 15)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _threads_cpu(pid: int) -> dict[int, float]:
    """Thread id → CPU seconds, for each thread of a process (the main thread's id is the pid; the
    others: the SQLite connection's thread, aiohttp's resolver...)."""
    return {int(task.name): _stat_cpu(task / "stat") for task in Path(f"/proc/{pid}/task").iterdir()}


def _postgres_pids() -> list[int]:
    """The PostgreSQL server's processes on this machine (backends, WAL writer, checkpointer...)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _cpu(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (all their threads)."""
    total = 0.0
    for pid in pids:
        try:
            total += _stat_cpu(Path(f"/proc/{pid}/stat"))
        except OSError:
            continue  # gone
    return total


async def worker_child(db_url: str, allow: list[str], workers: int) -> dict[str, Any]:
    """One more hub process on the same database: its scheduler claims due sources until none is left."""
    from harvesting.hub import Hub, run_scheduler
    from harvesting.transport import OaiTransport
    from node.db import Database
    from node.outbound import OutboundClient, OutboundConfig

    db = Database(db_url)
    await db.open()
    cpu_before = _cpu([os.getpid()])
    counts: dict[str, int] = {}
    try:
        async with OutboundClient(OutboundConfig(allow_list=frozenset(allow), total_timeout=60.0)) as client:

            def count(name: str, by: int) -> None:
                counts[name] = counts.get(name, 0) + by

            hub = Hub(db, OaiTransport(client), hub_base_url="https://hub.bench.example", count=count)
            stop = asyncio.Event()

            async def watch() -> None:
                while True:
                    await asyncio.sleep(0.2)
                    left = await db.fetchone(
                        "SELECT COUNT(*) AS n FROM harvest_source WHERE last_run IS NULL OR running_by IS NOT NULL"
                    )
                    if left and int(left["n"]) == 0:
                        stop.set()
                        return

            watcher = asyncio.create_task(watch())
            await run_scheduler(hub, workers=workers, poll=0.05, stop=stop)
            await watcher
    finally:
        await db.close()
    return {
        "runs": counts.get("harvest_runs_total", 0),
        "added": counts.get("harvest_added_total", 0),
        "cpu_s": _cpu([os.getpid()]) - cpu_before,
        "peak_rss_mib": round(_rss()["VmHWM"], 1),
    }


async def _spawn_workers(db_url: str, allow: list[str], workers: int, processes: int) -> list[dict[str, Any]]:
    spec = json.dumps({"db": db_url, "allow": allow, "workers": workers})
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker-child", spec, cwd=ROOT, stdout=subprocess.PIPE
        )
        for _ in range(processes)
    ]
    outs = [(await p.communicate())[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a hub worker process failed")
    return [json.loads(o.decode().strip().splitlines()[-1]) for o in outs]


async def hub_child(
    urls: list[str], backend: str, workers: int, expected: int, processes: int = 1, harvest_processes: int = 0
) -> dict[str, Any]:
    from harvesting.hub import Hub
    from harvesting.pipeline import HarvestPipeline, HubSpec
    from harvesting.transport import OaiTransport
    from node.db import Database
    from node.outbound import OutboundClient, OutboundConfig

    url = await _hub_database(backend)
    db = Database(url)
    await db.upgrade()
    await db.open()
    allow = frozenset(u.split("/")[2] for u in urls)
    out: dict[str, Any] = {
        "backend": backend,
        "workers": workers,
        "processes": processes,
        "harvest_processes": harvest_processes,
        "sources": len(urls),
    }
    base = "https://hub.bench.example"
    pipeline = HarvestPipeline(HubSpec(base), harvest_processes) if harvest_processes else None

    def pipeline_rss() -> float:
        """Peak RSS of the harvest worker processes, added to the hub's: they are part of it."""
        return sum(hb._status(pid)["VmHWM"] for pid in pipeline.pids()) if pipeline is not None else 0.0

    try:
        async with OutboundClient(OutboundConfig(allow_list=allow, total_timeout=60.0)) as client:
            hub = Hub(db, OaiTransport(client), hub_base_url=base, pipeline=pipeline)
            keys = [str((await hub.register(u))["key"]) for u in urls]
            gate = asyncio.Semaphore(workers)

            async def one(key: str) -> Any:
                async with gate:
                    return await hub.harvest_now(key)

            def hub_pids() -> list[int]:
                return [os.getpid(), *(pipeline.pids() if pipeline is not None else [])]

            async def everything() -> tuple[float, list[Any]]:
                started = time.perf_counter()
                results = await asyncio.gather(*(one(k) for k in keys))
                return time.perf_counter() - started, results

            idle = _rss()["VmRSS"]
            if processes > 1:
                # Scale-out: that many hub processes share the database, each claiming due sources.
                started = time.perf_counter()
                reports = await _spawn_workers(url, sorted(allow), workers, processes)
                seconds = time.perf_counter() - started
                added = sum(r["added"] for r in reports)
                rows = await db.fetch("SELECT last_error FROM harvest_source WHERE last_error IS NOT NULL")
                errors = [str(r["last_error"]) for r in rows]
                worker_rss = max(r["peak_rss_mib"] for r in reports)
                cpu = sum(r["cpu_s"] for r in reports)
                server_cpu = None
                threads = []
                results = []
            else:
                cpu_before, threads_before = _cpu(hub_pids()), _threads_cpu(os.getpid())
                server_before = _cpu(_postgres_pids()) if backend == "postgres" else 0.0
                seconds, results = await everything()
                cpu = _cpu(hub_pids()) - cpu_before
                server_cpu = _cpu(_postgres_pids()) - server_before if backend == "postgres" else None
                after = _threads_cpu(os.getpid())
                used = {tid: spent - threads_before.get(tid, 0.0) for tid, spent in after.items()}
                threads = [used.pop(os.getpid(), 0.0), *sorted(used.values(), reverse=True)]
                added = sum(r.added for r in results)
                errors = [e for r in results for e in r.errors]
                worker_rss = 0.0
            live = await db.fetchone("SELECT COUNT(*) AS n FROM sheet WHERE deleted = ?", [False])
            clustered = await db.fetchone("SELECT COUNT(*) AS n FROM hub_sheet_match WHERE cluster IS NOT NULL")
            out["harvest"] = {
                "records": added,
                "expected": expected,
                "stored_live": int(live["n"]) if live else 0,
                "errors": errors[:5],
                "pages": sum(r.pages for r in results) if results else None,
                "seconds": round(seconds, 2),
                "records_per_s": round(added / seconds),
                "sheets_in_duplicate_clusters": int(clustered["n"]) if clustered else 0,
                # CPU the hub used (its process, threads and harvest workers): what a record costs it,
                # a figure that moves less with the machine's other load than records/s does.
                "hub_cpu_s": round(cpu, 1),
                "hub_cpu_us_per_record": round(cpu / max(added, 1) * 1e6),
                # The hub's process alone (fetches, writes), per thread: the main thread, then the SQLite
                # connection's (which runs every statement: the one writer all pages go through).
                "hub_process_threads_cpu_s": [round(t, 1) for t in threads[:1] + [t for t in threads[1:] if t >= 0.05]],
                # PostgreSQL: the server's processes on this machine (the writes' other half).
                "db_server_cpu_s": round(server_cpu, 1) if server_cpu is not None else None,
                "idle_rss_mib": round(idle, 1),
                "peak_rss_mib": round(max(_rss()["VmHWM"], worker_rss) + pipeline_rss(), 1),
                "pipeline_rss_mib": round(pipeline_rss(), 1),
            }

            async def unchanged(label: str) -> None:
                await asyncio.sleep(1.1 - time.time() % 1)  # writes of this run get stamps ≥ since
                since = int(time.time())
                cpu_before = _cpu(hub_pids())
                seconds, results = await everything()
                cpu = _cpu(hub_pids()) - cpu_before
                written = await db.fetchone("SELECT COUNT(*) AS n FROM sheet WHERE stamp >= ?", [since])
                queued = await db.fetchone("SELECT COUNT(*) AS n FROM hub_unmapped_tag WHERE last_seen >= ?", [since])
                out[label] = {
                    "seconds": round(seconds, 2),
                    "hub_cpu_s": round(cpu, 1),
                    "records_received": sum(r.added + r.updated + r.unchanged + r.deleted for r in results),
                    "sheet_writes": int(written["n"]) if written else -1,
                    "queue_writes": int(queued["n"]) if queued else -1,
                    "changes_reported": sum(r.added + r.updated + r.deleted for r in results),
                    "errors": [e for r in results for e in r.errors][:5],
                    "peak_rss_mib": round(_rss()["VmHWM"] + pipeline_rss(), 1),
                }

            await unchanged("incremental")
            await db.execute("UPDATE harvest_state SET next_from = NULL")
            await unchanged("full_unchanged")
            # The hub serving its aggregate over OAI-PMH: it stores no fragments, so every record is
            # rendered from its JSON as it is served (a node joins pre-rendered ones: its CPU per record
            # served, HTTP included, is nodes_cpu_us_per_record).
            out["serve"] = {prefix: await _serve(db, prefix) for prefix in ("essaim", "oai_dc")}
    finally:
        await db.close()
        if pipeline is not None:
            pipeline.close()
    return out


async def _serve(db: Any, prefix: str) -> dict[str, Any]:
    """A whole ListRecords of the hub's provider in ``prefix``, page after page, without HTTP and
    without read-ahead: records/s and CPU per record (the hub's process, its SQLite thread included)."""
    from node.oai import OaiExecutor, ReadAhead, respond
    from protocol.oai.config import OaiConfig

    config = OaiConfig(
        "Essaim bench hub", "https://hub.bench.example/oai", ("bench@example.org",), b"bench-token-secret!", hub=True
    )
    executor = OaiExecutor(db, config, ReadAhead(capacity=0))
    now = int(time.time())
    arguments = {"verb": ["ListRecords"], "metadataPrefix": [prefix]}
    records = 0
    cpu_before, started = _cpu([os.getpid()]), time.perf_counter()
    while True:
        body = await respond(executor, arguments, now)
        records += body.count(b"<record>")
        token = re.search(rb"<resumptionToken[^>]*>([^<]+)</resumptionToken>", body)
        if token is None:
            break
        arguments = {"verb": ["ListRecords"], "resumptionToken": [html.unescape(token[1].decode())]}
    seconds, cpu = time.perf_counter() - started, _cpu([os.getpid()]) - cpu_before
    return {
        "records": records,
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds),
        "cpu_us_per_record": round(cpu / max(records, 1) * 1e6),
    }


# ------------------------------------------------------------------ the peer: a plain sickle loop (child process)


def sickle_child(urls: list[str]) -> dict[str, Any]:
    from sickle import Sickle

    started = time.perf_counter()
    records = 0
    for url in urls:
        for _record in Sickle(url, timeout=60).ListRecords(metadataPrefix="essaim", ignore_deleted=False):
            records += 1
    seconds = time.perf_counter() - started
    return {
        "records": records,
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds),
        "peak_rss_mib": round(_rss()["VmHWM"], 1),
    }


def _child(*argv: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *argv], cwd=ROOT, capture_output=True, text=True, check=False)
    if os.environ.get("ESSAIM_BENCH_PROFILE"):
        print(proc.stderr[-20000:], file=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--per-node", type=int, default=10_000)
    parser.add_argument("--templates", type=int, default=1000, help="distinct generated sheets per node")
    parser.add_argument("--workers", type=int, default=4, help="sources harvested at once by a hub process")
    parser.add_argument("--processes", type=int, default=1, help="hub processes sharing the database")
    parser.add_argument(
        "--harvest-processes",
        type=int,
        help="[hub] harvest_processes: worker processes decoding pages (default: the hub's, the cores up to 4)",
    )
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--page-size", type=int, help="ESSAIM_OAI_PAGE_SIZE of the nodes (default: theirs)")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--hub-child", help=argparse.SUPPRESS)
    parser.add_argument("--sickle-child", help=argparse.SUPPRESS)
    parser.add_argument("--worker-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.harvest_processes is None:  # the hub's own default
        from essaim.settings import default_worker_processes

        args.harvest_processes = default_worker_processes()
    if args.hub_child:
        spec = json.loads(args.hub_child)
        work = hub_child(
            spec["urls"],
            spec["backend"],
            spec["workers"],
            spec["expected"],
            spec["processes"],
            spec["harvest_processes"],
        )
        if os.environ.get("ESSAIM_BENCH_PROFILE"):  # where the hub's time goes, on stderr
            import cProfile
            import pstats

            profile = cProfile.Profile()
            result = profile.runcall(asyncio.run, work)
            order = os.environ.get("ESSAIM_BENCH_PROFILE_SORT", "cumulative")
            pstats.Stats(profile, stream=sys.stderr).sort_stats(order).print_stats(45)
        else:
            result = asyncio.run(work)
        print(json.dumps(result))
        return 0
    if args.worker_child:
        spec = json.loads(args.worker_child)
        print(json.dumps(asyncio.run(worker_child(spec["db"], spec["allow"], spec["workers"]))))
        return 0
    if args.sickle_child:
        print(json.dumps(sickle_child(json.loads(args.sickle_child))))
        return 0

    if args.backend == "postgres" and (why := hb._pg_available()):
        print(f"PostgreSQL unavailable: {why}")
        return 1
    started = time.perf_counter()
    paths = [node_corpus(n, args.per_node, args.templates, args.rebuild) for n in range(1, args.nodes + 1)]
    print(f"node corpora ready in {time.perf_counter() - started:.0f} s", flush=True)
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for n, path in enumerate(paths, start=1):
            port = hb._free_port()
            procs.append(start_node(n, path, port, args.page_size))
            urls.append(f"http://127.0.0.1:{port}/oai")
        for url, proc in zip(urls, procs, strict=True):
            asyncio.run(hb._wait_ready(url, proc))
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start", flush=True)
        expected = args.nodes * args.per_node
        spec = {
            "urls": urls,
            "backend": args.backend,
            "workers": args.workers,
            "expected": expected,
            "processes": args.processes,
            "harvest_processes": args.harvest_processes,
        }
        nodes_cpu = _cpu([p.pid for p in procs])
        ours = _child("--hub-child", json.dumps(spec))
        # Served: the harvest, then the full unchanged re-harvest (the incremental one sends nothing).
        served = ours["harvest"]["records"] + ours["full_unchanged"]["records_received"]
        ours["nodes_cpu_us_per_record"] = round((_cpu([p.pid for p in procs]) - nodes_cpu) / max(served, 1) * 1e6)
        ours["nodes"] = args.nodes
        ours["per_node"] = args.per_node
        print(json.dumps({"bench": "hub", **ours}), flush=True)
        result: dict[str, Any] = {"bench": "hub", **ours}
        if not args.no_peer:
            theirs = _child("--sickle-child", json.dumps(urls))
            theirs["ratio_hub_to_sickle"] = round(ours["harvest"]["records_per_s"] / theirs["records_per_s"], 2)
            print(json.dumps({"bench": "hub-peer-sickle", **theirs}), flush=True)
            result["peer"] = theirs
        node_rss = [hb._status(p.pid)["VmHWM"] for p in procs]
        print(json.dumps({"bench": "hub-nodes", "peak_rss_mib_max": round(max(node_rss), 1)}), flush=True)
        print(f"load average {os.getloadavg()[0]:.2f} at end")
        results = ROOT / "bench" / "results"
        results.mkdir(exist_ok=True)
        (results / "hub.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    finally:
        for proc in procs:
            hb._stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
