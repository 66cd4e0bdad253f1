"""The hub on the fediverse: (a) time from a sheet change on a node to that change being searchable on the
hub, (b) time from a change to its delivery to every follower of a hub feed actor.

(a) ``searchable``: a real node (``tests.federation.node_process``: ``build_app``, SQLite WAL +
``synchronous=FULL``) in its own process, followed by a real hub in this process (``build_app``,
role hub, embedded Typesense 0.24.1). N sheet changes are written on the node through its
``SheetStore`` at a paced rate; each is timed from the node's commit to the moment the hub's
Typesense returns it (one search of the recent documents every 20 ms). Push path: node outbox →
signed delivery → hub inbox (verification, group commit) → normalised write → index queue →
index worker. Peer in the same run: the pull path the hub had before, an incremental OAI-PMH
harvest of the same node run back to back, on M more changes.

(b) ``followers``: the hub's theme feed actor has F followers, each with its own inbox (no shared
inbox: one signed delivery each) on R loopback receiver servers in another process; one node
change of that theme is timed until every receiver has the ``Announce``. The followers are
inserted in the hub's ``ap_feed_follower`` table directly (the bench does not send F Follows).

    python bench/fedhub_bench.py [--changes 1000] [--rate 20] [--peer-changes 100] [--followers 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from essaim.app import build_app  # noqa: E402
from federation.hubpush import sync_follows  # noqa: E402
from federation.service import FEDERATION  # noqa: E402
from harvesting.admin import HUB  # noqa: E402
from search.lifecycle import SEARCH_RUNTIME  # noqa: E402
from search.schema import ALIAS  # noqa: E402
from tests.fedhub.support import hub_settings  # noqa: E402

RECEIVERS = """
import asyncio, json, sys
from aiohttp import web
count = {"n": 0}
async def inbox(request):
    await request.read()
    count["n"] += 1
    return web.Response(status=202)
async def actor(request):
    return web.json_response({"id": str(request.url), "type": "Person", "inbox": str(request.url) + "/inbox"})
async def counter(request):
    return web.json_response(count)
async def main(ports):
    for port in ports:
        app = web.Application()
        app.router.add_post("/u/{n}/inbox", inbox)
        app.router.add_get("/u/{n}", actor)
        app.router.add_get("/count", counter)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main([int(p) for p in sys.argv[1:]]))
"""


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, ensure_ascii=False), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def start(args: list[str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 60)
    if not ready or not process.stdout.readline():
        raise SystemExit(f"{args[1]} did not start")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


async def ctl(session: aiohttp.ClientSession, base: str, action: str, **params: Any) -> Any:
    async with session.post(f"{base}/ctl/{action}", params={k: str(v) for k, v in params.items()}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def watch(app: Any, pending: dict[str, float], seen: dict[str, float], stop_when: int) -> None:
    """Record when each pending title first comes back from the hub's Typesense."""
    client = app[SEARCH_RUNTIME].client
    while len(seen) < stop_when:
        since = int(time.time()) - 30
        result = await client.search(
            ALIAS,
            {
                "q": "*",
                "query_by": "title",
                "filter_by": f"datestamp:>={since}",
                "sort_by": "datestamp:desc",
                "per_page": 250,
                "include_fields": "title",
            },
        )
        now = time.monotonic()
        for hit in result.get("hits", []):
            title = hit["document"]["title"]
            if title in pending and title not in seen:
                seen[title] = now - pending[title]
        await asyncio.sleep(0.02)


async def bench(changes: int, rate: float, peer_changes: int, followers: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fedhub-bench-"))
    node_port, hub_port = free_port(), free_port()
    receiver_ports = [free_port() for _ in range(10)]
    (workdir / "node").mkdir()
    node = start(
        ["-m", "tests.federation.node_process", str(workdir / "node"), str(node_port), str(hub_port), "bench", "{}"]
    )
    receivers = start(["-c", RECEIVERS, *map(str, receiver_ports)])
    settings = hub_settings(
        workdir / "hub",
        hub_port,
        [node_port, *receiver_ports],
        federation={"feeds": ["ENV"], "workers": 32, "per_host": 8},
        search={"poll": 0.05},
        fedhub={"follow_interval": 3600.0},  # the bench follows the node itself (and unfollows it for the peer)
    )
    client = TestClient(TestServer(build_app(settings), host="127.0.0.1", port=hub_port))
    await client.start_server()
    base = f"http://127.0.0.1:{node_port}"
    try:
        app = client.server.app
        hub, fed = app[HUB], app[FEDERATION]
        key = (await hub.register(base))["key"]
        await sync_follows(fed, key)
        await asyncio.sleep(2)  # the Follow, its Accept
        await hub.harvest_now(key)
        async with aiohttp.ClientSession() as session:
            # (a) push: node change -> searchable on the hub
            pending: dict[str, float] = {}
            seen: dict[str, float] = {}
            watcher = asyncio.create_task(watch(app, pending, seen, changes))
            started = time.monotonic()
            for i in range(changes):
                title = f"Projet banc {i} poussé"
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
                await ctl(session, base, "upsert", n=i, title=title, themes="SOL")
                pending[title] = time.monotonic()
            await asyncio.wait_for(watcher, timeout=120)
            latencies = list(seen.values())
            push = {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95)}
            emit(
                {
                    "bench": "fedhub",
                    "case": "change_to_searchable_push",
                    "changes": changes,
                    "rate_per_s": rate,
                    "p50_s": round(push["p50"], 3),
                    "p95_s": round(push["p95"], 3),
                    "p99_s": round(percentile(latencies, 0.99), 3),
                    "target_p95_s": 2.0,
                }
            )
            # peer: pull, incremental harvests back to back (the hub no longer follows the node)
            await fed.db.execute("DELETE FROM hub_push_source")
            pending2: dict[str, float] = {}
            seen2: dict[str, float] = {}
            watcher = asyncio.create_task(watch(app, pending2, seen2, peer_changes))

            async def harvest_loop() -> None:
                while not watcher.done():
                    await hub.harvest_now(key)

            harvester = asyncio.create_task(harvest_loop())
            started = time.monotonic()
            for i in range(peer_changes):
                title = f"Projet banc {i} moissonné"
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
                await ctl(session, base, "upsert", n=i, title=title, themes="SOL")
                pending2[title] = time.monotonic()
            await asyncio.wait_for(watcher, timeout=120)
            await harvester
            pull = list(seen2.values())
            emit(
                {
                    "bench": "fedhub",
                    "case": "change_to_searchable_pull_peer",
                    "changes": peer_changes,
                    "p50_s": round(percentile(pull, 0.5), 3),
                    "p95_s": round(percentile(pull, 0.95), 3),
                    "push_vs_pull_p95": round(push["p95"] / max(1e-9, percentile(pull, 0.95)), 3),
                }
            )
            # (b) one change announced to F followers of the theme feed
            await fed.db.executemany(
                "INSERT INTO ap_feed_follower (feed, actor, inbox, shared_inbox, follow_id, follow, status, created)"
                " VALUES ('ENV', ?, ?, NULL, ?, '{}', 'accepted', 0)",
                [
                    (f"{u}", f"{u}/inbox", f"{u}#follow")
                    for n in range(followers)
                    for u in [f"http://127.0.0.1:{receiver_ports[n % len(receiver_ports)]}/u/{n}"]
                ],
            )
            await fed.db.execute(
                "INSERT INTO hub_push_source (source, actor, kind, repo_id, follow_id, followed,"
                " baseline, pushed, last_push) VALUES (?, ?, 'node', 'localhost.localdomain', NULL,"
                " 0, 0, 0, 0)",
                [key, f"{base}/actor"],
            )
            changed = time.monotonic()
            await ctl(session, base, "upsert", n=changes + 1, title="Projet banc à suivre", themes="ENV")
            got = 0
            while got < followers and time.monotonic() - changed < 120:
                counts = []
                for port in receiver_ports[:1]:
                    async with session.get(f"http://127.0.0.1:{port}/count") as r:
                        counts.append(int((await r.json())["n"]))
                got = counts[0]
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - changed
            emit(
                {
                    "bench": "fedhub",
                    "case": "change_to_all_followers",
                    "followers": followers,
                    "delivered": got,
                    "seconds": round(elapsed, 3),
                    "deliveries_per_s": round(got / elapsed, 1),
                    "target_s": 10.0,
                }
            )
    finally:
        await client.close()
        stop(node)
        stop(receivers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="node changes per second")
    parser.add_argument("--peer-changes", type=int, default=100)
    parser.add_argument("--followers", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(bench(args.changes, args.rate, args.peer_changes, args.followers))


if __name__ == "__main__":
    main()
