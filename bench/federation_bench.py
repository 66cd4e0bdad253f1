"""Federation benchmark: (a) signed inbox POSTs verified and persisted, (b) fan-out of one sheet update.

(a) ``inbox``: a real node (``essaim.app.build_app``, SQLite WAL + ``synchronous=FULL``) in
its own process receives pre-signed draft-cavage POSTs (``rsa-sha256`` over
``(request-target) host date digest``) from N remote actors served by a loopback actor
server, 20 % ``Follow`` (each answered by a queued, signed ``Accept``) and 80 %
``Create(Note)``, from a closed loop of C concurrent clients. Every key is fetched (signed
GET) and cached during a warm-up; then the timed run reports verified activities/s and
p50/p99 latency, and checks that every activity was persisted. Peer in the same run: a bare
aiohttp inbox that reads, parses, verifies with bovine's ``SignatureChecker`` (its own
draft-cavage implementation, keys cached in memory) and INSERTs the raw activity into
SQLite with the same durability settings, driven by the same load.

(b) ``fanout``: the node has F followers spread over M loopback inbox servers (distinct
ports, so distinct hosts for per-host concurrency), each follower with its own inbox URL
(no shared inbox: one delivery each). One sheet update is timed from the write until every
receiver has got it and the node's queue is empty: signed deliveries/s and time to drain;
receivers verify every signature. Peer: a bare loop that signs (the same RSA-2048 draft-cavage
signing) and POSTs the same activity to the same F inboxes with the same concurrency limits.

    python bench/federation_bench.py [--only inbox|fanout] [--requests 4000] [--concurrency 32]
                                     [--followers 10000] [--inboxes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol.activitypub.activities import ActorProfile, service_actor  # noqa: E402
from protocol.activitypub.keys import generate_rsa_keypair  # noqa: E402
from protocol.activitypub.signatures import prepare_verification, sign_request  # noqa: E402

AP = "application/activity+json"
TARGETS = {"inbox_per_s": 500.0, "inbox_p99_ms": 200.0, "fanout_per_s": 500.0}


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, ensure_ascii=False), flush=True)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    with open(results / "federation.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps({**record, "at": datetime.now(UTC).isoformat(timespec="seconds")}) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------ child processes


def child(args: list[str]) -> subprocess.Popen[bytes]:
    """Start ``python bench/federation_bench.py --child ...`` and wait for its ready line."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"child {args[0]} did not start")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if os.environ.get("ESSAIM_BENCH_PROFILE"):
        import signal

        process.send_signal(signal.SIGUSR1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


async def serve_forever(runner: web.AppRunner, sites: list[web.TCPSite]) -> None:
    for site in sites:
        await site.start()
    print(json.dumps({"ready": True}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def child_node(config_path: str) -> None:
    """The real node; ``/bench/*`` routes write a sheet and bulk-insert followers."""
    from essaim.app import build_app
    from essaim.settings import load_settings
    from node.context import NODE
    from protocol.sheet import Sheet

    config = json.loads(Path(config_path).read_text())
    port = config["port"]
    settings = load_settings(
        environ={},
        overrides={
            "data_dir": config["dir"],
            "base_url": f"http://127.0.0.1:{port}",
            "port": port,
            "log_format": "json",
            "log_level": "WARNING",
            "outbound": {"allow": [f"127.0.0.1:{p}" for p in config["allow"]], "per_host": 4},
            "federation": config.get("federation", {}),
        },
    )
    app = build_app(settings)

    async def upsert(request: web.Request) -> web.Response:
        ctx = app[NODE]
        n = int(request.query["n"])
        sheet = Sheet(
            id=ctx.store.make_uri(f"bench-{n}"),
            local_id=f"bench-{n}",
            title=request.query.get("title", f"Projet de banc d'essai {n}"),
            partner=ctx.partner,
            summary="Une fiche pour mesurer la diffusion d'une mise à jour à tous les abonnés.",
            themes=("ENV",),
        )
        result = await ctx.store.upsert(sheet)
        return web.json_response({"status": result.status, "uri": result.uri})

    async def followers(request: web.Request) -> web.Response:
        rows = await request.json()
        db = app[NODE].db
        now = int(time.time())
        async with db.transaction() as tx:
            await db.executemany(
                "INSERT INTO ap_follower (actor, inbox, shared_inbox, follow_id, follow, status, created)"
                " VALUES (?, ?, NULL, ?, '{}', 'accepted', ?)",
                [(actor, inbox, f"{actor}#follow", now) for actor, inbox in rows],
                conn=tx,
            )
        return web.json_response({"inserted": len(rows)})

    async def counts(request: web.Request) -> web.Response:
        db = app[NODE].db
        rows = await db.fetch("SELECT status, COUNT(*) AS n FROM ap_delivery GROUP BY status")
        inbox = await db.fetchone("SELECT COUNT(*) AS n FROM ap_inbox")
        return web.json_response(
            {"deliveries": {r["status"]: r["n"] for r in rows}, "inbox": inbox["n"] if inbox else 0}
        )

    app.router.add_post("/bench/upsert", upsert)
    app.router.add_post("/bench/followers", followers)
    app.router.add_get("/bench/counts", counts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await serve_forever(runner, [web.TCPSite(runner, "127.0.0.1", port, backlog=1024)])


async def child_actors(config_path: str) -> None:
    """Remote actors (documents with their public keys) and an inbox that accepts the node's Accepts."""
    config = json.loads(Path(config_path).read_text())
    base = f"http://127.0.0.1:{config['port']}"
    documents = {}
    for name, public_pem in config["actors"].items():
        actor_id = f"{base}/users/{name}"
        documents[name] = service_actor(
            ActorProfile(
                id=actor_id,
                username=name,
                name=name,
                summary="",
                url=actor_id,
                inbox=f"{actor_id}/inbox",
                outbox=f"{actor_id}/outbox",
                followers=f"{actor_id}/followers",
                following=f"{actor_id}/following",
                featured=f"{actor_id}/featured",
                shared_inbox=f"{base}/inbox",
                public_key_pem=public_pem,
            )
        )
    received = {"n": 0}

    async def actor(request: web.Request) -> web.Response:
        return web.json_response(documents[request.match_info["name"]], content_type=AP)

    async def inbox(request: web.Request) -> web.Response:
        await request.read()
        received["n"] += 1
        return web.Response(status=202)

    app = web.Application()
    app.router.add_get("/users/{name}", actor)
    app.router.add_post("/inbox", inbox)
    app.router.add_post("/users/{name}/inbox", inbox)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await serve_forever(runner, [web.TCPSite(runner, "127.0.0.1", config["port"], backlog=1024)])


async def child_peer_inbox(config_path: str) -> None:
    """The peer of (a): read, parse, verify with bovine (keys cached), INSERT into SQLite; 202."""
    from bovine.crypto import build_validate_http_signature_raw
    from bovine.crypto.types import CryptographicIdentifier

    config = json.loads(Path(config_path).read_text())
    db = sqlite3.connect(Path(config["dir"]) / "peer.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY, uri TEXT UNIQUE, actor TEXT, payload TEXT)")
    cache: dict[str, CryptographicIdentifier] = {}
    session: aiohttp.ClientSession | None = None

    async def key_retriever(key_id: str) -> CryptographicIdentifier | None:
        nonlocal session
        if key_id not in cache:
            session = session or aiohttp.ClientSession()
            async with session.get(key_id.split("#")[0], headers={"Accept": AP}) as r:
                document = await r.json(content_type=None)
            key = document["publicKey"]
            cache[key_id] = CryptographicIdentifier.from_pem(key["publicKeyPem"], key["owner"])
        return cache[key_id]

    validate = build_validate_http_signature_raw(key_retriever)

    async def inbox(request: web.Request) -> web.Response:
        body = await request.content.read(256 * 1024 + 1)
        if len(body) > 256 * 1024:
            return web.Response(status=413)
        document = json.loads(body)

        async def get_body() -> bytes:
            return body

        url = f"http://{request.host}{request.path_qs}"
        headers = {k.lower(): v for k, v in request.headers.items()}
        owner = await validate(request.method, url, headers, get_body)
        if owner is None or owner != document.get("actor"):
            return web.Response(status=401)
        db.execute(
            "INSERT OR IGNORE INTO inbox (uri, actor, payload) VALUES (?, ?, ?)",
            (document["id"], document["actor"], body.decode()),
        )
        return web.Response(status=202)

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"inbox": db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]})

    app = web.Application()
    app.router.add_post("/inbox", inbox)
    app.router.add_get("/count", count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await serve_forever(runner, [web.TCPSite(runner, "127.0.0.1", config["port"], backlog=1024)])


async def child_receivers(config_path: str) -> None:
    """(b)'s M inbox servers in one process; each verifies every signature with the sender's key."""
    from protocol.activitypub.keys import load_public_key
    from protocol.activitypub.sigbase import verify_signature

    config = json.loads(Path(config_path).read_text())
    pem = config["public_pem"]
    key = load_public_key(pem)
    state = {"n": 0, "bad": 0, "ids": set()}

    async def inbox(request: web.Request) -> web.Response:
        body = await request.read()
        url = f"http://{request.host}{request.path}"
        try:
            pending = prepare_verification("POST", url, request.headers.items(), body, now=datetime.now(UTC))
            verify_signature(pending.algorithm, key, pending.message, pending.signature)
        except Exception:
            state["bad"] += 1
            return web.Response(status=401)
        state["n"] += 1
        return web.Response(status=202)

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"n": state["n"], "bad": state["bad"]})

    async def reset(request: web.Request) -> web.Response:
        state["n"] = state["bad"] = 0
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/users/{name}/inbox", inbox)
    app.router.add_get("/count", count)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sites = [web.TCPSite(runner, "127.0.0.1", port, backlog=1024) for port in config["ports"]]
    await serve_forever(runner, sites)


# ------------------------------------------------------------------ (a) inbox


def write_config(directory: Path, name: str, config: dict[str, Any]) -> str:
    path = directory / f"{name}.json"
    path.write_text(json.dumps(config))
    return str(path)


def presign(
    requests: list[tuple[str, dict[str, Any], str]], keys: dict[str, Any], key_ids: dict[str, str], url: str
) -> list[tuple[bytes, dict[str, str]]]:
    now = datetime.now(UTC)
    signed = []
    for actor_name, document, _ in requests:
        body = json.dumps(document).encode()
        headers = sign_request(
            method="POST",
            target_uri=url,
            body=body,
            key_id=key_ids[actor_name],
            private_key_pem=keys[actor_name].private_pem,
            now=now,
        )
        signed.append((body, {"Content-Type": AP, **headers}))
    return signed


async def fire(
    url: str, signed: list[tuple[bytes, dict[str, str]]], concurrency: int
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0
    queue = list(reversed(signed))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal failures
            while queue:
                body, headers = queue.pop()
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 202:
                        failures += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, failures


async def bench_inbox(workdir: Path, requests_n: int, concurrency: int, actors_n: int) -> None:
    node_port, actors_port, peer_port = free_port(), free_port(), free_port()
    keys = {f"a{i}": generate_rsa_keypair() for i in range(actors_n)}
    actors_base = f"http://127.0.0.1:{actors_port}"
    key_ids = {name: f"{actors_base}/users/{name}#main-key" for name in keys}
    (workdir / "node").mkdir()
    node_cfg = {"port": node_port, "dir": str(workdir / "node"), "allow": [actors_port]}
    processes = [
        child(
            [
                "actors",
                write_config(
                    workdir, "actors", {"port": actors_port, "actors": {n: k.public_pem for n, k in keys.items()}}
                ),
            ]
        ),
        child(["node", write_config(workdir, "node", node_cfg)]),
        child(["peer_inbox", write_config(workdir, "peer", {"port": peer_port, "dir": str(workdir)})]),
    ]
    try:
        node_actor = f"http://127.0.0.1:{node_port}/actor"

        def make(n: int, kind: str) -> list[tuple[str, dict[str, Any], str]]:
            out = []
            for i in range(n):
                name = f"a{i % actors_n}"
                actor = f"{actors_base}/users/{name}"
                activity_id = f"{actor}/activities/{uuid.uuid4()}"
                if kind == "mix" and i % 5 == 0:
                    document = {
                        "@context": "https://www.w3.org/ns/activitystreams",
                        "id": activity_id,
                        "type": "Follow",
                        "actor": actor,
                        "object": node_actor,
                    }
                else:
                    note = {
                        "id": f"{actor}/notes/{uuid.uuid4()}",
                        "type": "Note",
                        "attributedTo": actor,
                        "content": f"<p>Bravo pour ce projet ! Message {i}.</p>",
                        "to": ["https://www.w3.org/ns/activitystreams#Public"],
                    }
                    document = {
                        "@context": "https://www.w3.org/ns/activitystreams",
                        "id": activity_id,
                        "type": "Create",
                        "actor": actor,
                        "object": note,
                    }
                out.append((name, document, document["type"]))
            return out

        figures: dict[str, dict[str, float]] = {}
        for target, url in (
            ("essaim", f"http://127.0.0.1:{node_port}/inbox"),
            ("peer", f"http://127.0.0.1:{peer_port}/inbox"),
        ):
            warm = presign(make(actors_n, "create"), keys, key_ids, url)  # one per actor: keys fetched and cached
            _, _, warm_fail = await fire(url, warm, min(concurrency, 8))
            run = make(requests_n, "mix")
            signed = presign(run, keys, key_ids, url)
            elapsed, latencies, failures = await fire(url, signed, concurrency)
            async with aiohttp.ClientSession() as session:
                count_url = (
                    f"http://127.0.0.1:{node_port}/bench/counts"
                    if target == "essaim"
                    else f"http://127.0.0.1:{peer_port}/count"
                )
                async with session.get(count_url) as r:
                    persisted = (await r.json())["inbox"]
            figures[target] = {
                "per_s": requests_n / elapsed,
                "p50_ms": percentile(latencies, 0.5),
                "p99_ms": percentile(latencies, 0.99),
            }
            emit(
                {
                    "bench": "federation.inbox",
                    "impl": target,
                    "requests": requests_n,
                    "follows": sum(1 for _, _, kind in run if kind == "Follow"),
                    "concurrency": concurrency,
                    "actors": actors_n,
                    "seconds": round(elapsed, 3),
                    "activities_per_s": round(figures[target]["per_s"], 1),
                    "p50_ms": round(figures[target]["p50_ms"], 2),
                    "p99_ms": round(figures[target]["p99_ms"], 2),
                    "failures": failures + warm_fail,
                    "persisted": persisted,
                    "expected_persisted": requests_n + actors_n,
                }
            )
        ours, peer = figures["essaim"], figures["peer"]
        emit(
            {
                "bench": "federation.inbox.summary",
                "throughput_ratio_vs_peer": round(ours["per_s"] / peer["per_s"], 3),
                "p99_ratio_vs_peer": round(ours["p99_ms"] / peer["p99_ms"], 3),
                "target_per_s": TARGETS["inbox_per_s"],
                "target_p99_ms": TARGETS["inbox_p99_ms"],
                "meets_target": ours["per_s"] >= TARGETS["inbox_per_s"] and ours["p99_ms"] <= TARGETS["inbox_p99_ms"],
            }
        )
    finally:
        for process in processes:
            stop(process)


# ------------------------------------------------------------------ (b) fan-out


async def bench_fanout(workdir: Path, followers_n: int, inboxes_n: int, workers: int, per_host: int) -> None:
    node_port = free_port()
    ports = sorted({free_port() for _ in range(inboxes_n * 2)})[:inboxes_n]
    node_dir = workdir / "fanout-node"
    node_dir.mkdir()
    federation = {"workers": workers, "per_host": per_host, "poll": 0.2, "retry_base": 1.0}
    node_cfg = {"port": node_port, "dir": str(node_dir), "allow": ports, "federation": federation}
    node = child(["node", write_config(workdir, "fanout-node", node_cfg)])
    receivers: subprocess.Popen[bytes] | None = None
    try:
        base = f"http://127.0.0.1:{node_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/actor", headers={"Accept": AP}) as r:
                actor = await r.json(content_type=None)
            receivers = child(
                [
                    "receivers",
                    write_config(
                        workdir, "receivers", {"ports": ports, "public_pem": actor["publicKey"]["publicKeyPem"]}
                    ),
                ]
            )
            # the sheet exists before its followers do: only its update is timed
            async with session.post(f"{base}/bench/upsert", params={"n": "1"}) as r:
                created = await r.json()
            inboxes = [f"http://127.0.0.1:{ports[i % inboxes_n]}/users/f{i}/inbox" for i in range(followers_n)]
            rows = [[f"http://127.0.0.1:{ports[i % inboxes_n]}/users/f{i}", inbox] for i, inbox in enumerate(inboxes)]
            async with session.post(f"{base}/bench/followers", json=rows) as r:
                assert r.status == 200, await r.text()

            async def receiver_total() -> tuple[int, int]:
                async with session.get(f"http://127.0.0.1:{ports[0]}/count") as r:
                    data = await r.json()
                return int(data["n"]), int(data["bad"])

            started = time.perf_counter()
            async with session.post(f"{base}/bench/upsert", params={"n": "1", "title": "Titre mis à jour"}) as r:
                assert (await r.json())["status"] == "updated"
            enqueued = time.perf_counter() - started
            drained, bad = await drain(session, base, receiver_total, followers_n, timeout=600)
            elapsed = time.perf_counter() - started
        emit(
            {
                "bench": "federation.fanout",
                "impl": "essaim",
                "followers": followers_n,
                "inboxes": inboxes_n,
                "workers": workers,
                "per_host": per_host,
                "enqueue_s": round(enqueued, 3),
                "drain_s": round(elapsed, 3),
                "deliveries_per_s": round(followers_n / elapsed, 1),
                "delivered": drained,
                "bad_signatures": bad,
                "sheet": created["uri"],
            }
        )
        # the peer: a bare sign-and-POST loop, same activity, same inboxes, same concurrency limits
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{ports[0]}/reset") as r:
                await r.read()
        private_pem = (node_dir / "keys" / "actor.pem").read_text()  # node.keys.ensure_actor_key
        body = json.dumps(
            {
                "@context": "https://www.w3.org/ns/activitystreams",
                "id": f"{base}/activities/{uuid.uuid4()}",
                "type": "Update",
                "actor": actor["id"],
                "object": created["uri"],
            }
        ).encode()
        peer_elapsed, peer_ok = await sign_and_post(
            inboxes, body, actor["publicKey"]["id"], private_pem, workers, per_host
        )
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{ports[0]}/count") as r:
                peer_counts = await r.json()
        emit(
            {
                "bench": "federation.fanout",
                "impl": "peer_sign_and_post",
                "followers": followers_n,
                "inboxes": inboxes_n,
                "workers": workers,
                "per_host": per_host,
                "drain_s": round(peer_elapsed, 3),
                "deliveries_per_s": round(followers_n / peer_elapsed, 1),
                "delivered": peer_counts["n"],
                "bad_signatures": peer_counts["bad"],
                "ok": peer_ok,
            }
        )
        ours = followers_n / elapsed
        emit(
            {
                "bench": "federation.fanout.summary",
                "throughput_ratio_vs_peer": round(ours / (followers_n / peer_elapsed), 3),
                "target_per_s": TARGETS["fanout_per_s"],
                "meets_target": ours >= TARGETS["fanout_per_s"],
            }
        )
    finally:
        if receivers is not None:
            stop(receivers)
        stop(node)


async def drain(
    session: aiohttp.ClientSession, base: str, receiver_total: Any, expected: int, timeout: float
) -> tuple[int, int]:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        n, bad = await receiver_total()
        async with session.get(f"{base}/bench/counts") as r:
            pending = (await r.json())["deliveries"].get("pending", 0)
        if n >= expected and pending == 0:
            return n, bad
        await asyncio.sleep(0.05)
    raise SystemExit(f"fan-out did not drain in {timeout} s")


async def sign_and_post(
    inboxes: list[str], body: bytes, key_id: str, private_pem: str, workers: int, per_host: int
) -> tuple[float, int]:
    hosts: dict[str, asyncio.Semaphore] = {}
    overall = asyncio.Semaphore(workers)
    ok = 0
    connector = aiohttp.TCPConnector(limit=workers, limit_per_host=per_host)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str) -> None:
            nonlocal ok
            host = url.split("/")[2]
            semaphore = hosts.setdefault(host, asyncio.Semaphore(per_host))
            async with overall, semaphore:
                headers = sign_request(
                    method="POST",
                    target_uri=url,
                    body=body,
                    key_id=key_id,
                    private_key_pem=private_pem,
                    now=datetime.now(UTC),
                )
                async with session.post(url, data=body, headers={"Content-Type": AP, **headers}) as r:
                    await r.read()
                    ok += r.status == 202

        started = time.perf_counter()
        await asyncio.gather(*(one(url) for url in inboxes))
        return time.perf_counter() - started, ok


# ------------------------------------------------------------------ main


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, config = sys.argv[2], sys.argv[3]
        runner = {
            "node": child_node,
            "actors": child_actors,
            "peer_inbox": child_peer_inbox,
            "receivers": child_receivers,
        }[kind]
        profile = os.environ.get("ESSAIM_BENCH_PROFILE") if kind == "node" else None
        if profile:  # a cProfile of the node process, written on SIGUSR1 (sent by stop())
            import cProfile
            import signal

            profiler = cProfile.Profile()

            def dump(*_: Any) -> None:
                profiler.disable()
                profiler.dump_stats(profile)
                os._exit(0)

            signal.signal(signal.SIGUSR1, dump)
            profiler.enable()
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(runner(config))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["inbox", "fanout"])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--actors", type=int, default=50)
    parser.add_argument("--followers", type=int, default=10_000)
    parser.add_argument("--inboxes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8, help="the node's [federation] workers during the fan-out")
    parser.add_argument("--per-host", type=int, default=2, help="the node's [federation] per_host during the fan-out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="essaim-fedbench-") as tmp:
        workdir = Path(tmp)
        emit({"bench": "federation.machine", "cpus": os.cpu_count(), "loadavg": os.getloadavg()[0]})
        if args.only in (None, "inbox"):
            asyncio.run(bench_inbox(workdir, args.requests, args.concurrency, args.actors))
        if args.only in (None, "fanout"):
            asyncio.run(bench_fanout(workdir, args.followers, args.inboxes, args.workers, args.per_host))


if __name__ == "__main__":
    main()
