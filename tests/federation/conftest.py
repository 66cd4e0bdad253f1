"""Fixtures of the federation tests: real Essaim nodes in subprocesses, and a scripted remote peer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from protocol.activitypub.activities import ActorProfile, service_actor
from protocol.activitypub.keys import KeyPair, generate_rsa_keypair
from protocol.activitypub.signatures import sign_request

REPO = Path(__file__).resolve().parents[2]
AP = "application/activity+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    port: int
    directory: Path
    username: str
    allow: str
    federation: dict[str, Any] = field(default_factory=dict)
    database_url: str = ""  # default: SQLite in the directory
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def actor(self) -> str:
        return f"{self.base}/actor"

    @property
    def handle(self) -> str:
        return f"{self.username}@127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.federation.node_process",
                str(self.directory),
                str(self.port),
                self.allow,
                self.username,
                json.dumps(self.federation),
                self.database_url,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        if not ready or not self.process.stdout.readline():
            pytest.fail("the node process did not start (see its stderr above)")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    async def ctl(self, action: str, **params: Any) -> Any:
        async with aiohttp.ClientSession() as session:
            method = session.get if action == "state" else session.post
            async with method(f"{self.base}/ctl/{action}", params={k: str(v) for k, v in params.items()}) as r:
                assert r.status == 200, await r.text()
                return await r.json()

    async def until(self, check: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = await self.ctl("state")
            if check(state):
                return state
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not reached; state: {json.dumps(state)[:3000]}")
            await asyncio.sleep(0.1)


@dataclass
class Peer:
    """A scripted remote ActivityPub server on loopback (the test's own actor, own key)."""

    port: int
    keys: KeyPair
    received: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # next inbox answers, then 202
    down: bool = False  # every inbox POST answers 503 (a host in an outage)
    gets: list[dict[str, str]] = field(default_factory=list)  # headers of each GET of the actor (key fetches)
    name: str = "mallory"  # dataclasses.replace(peer, name="bob"): another actor of the same server and key
    delay: float = 0.0  # seconds each inbox POST takes to answer
    busy: list[int] = field(default_factory=lambda: [0, 0])  # [inbox POSTs in progress, the most at once]
    runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def actor(self) -> str:
        return f"{self.base}/users/{self.name}"

    @property
    def key_id(self) -> str:
        return f"{self.actor}#main-key"

    def document(self, name: str | None = None) -> dict[str, Any]:
        actor = f"{self.base}/users/{name or self.name}"
        return service_actor(
            ActorProfile(
                id=actor,
                username=name or self.name,
                name=(name or self.name).title(),
                summary="",
                url=actor,
                inbox=f"{actor}/inbox",
                outbox=f"{actor}/outbox",
                followers=f"{actor}/followers",
                following=f"{actor}/following",
                featured=f"{actor}/featured",
                shared_inbox=f"{self.base}/inbox",
                public_key_pem=self.keys.public_pem,
            )
        )

    async def start(self) -> None:
        async def actor(request: web.Request) -> web.Response:
            self.gets.append(dict(request.headers))
            return web.json_response(self.document(request.match_info["name"]), content_type=AP)

        async def inbox(request: web.Request) -> web.Response:
            raw = await request.read()
            if self.down:
                return web.Response(status=503)
            self.busy[0] += 1
            self.busy[1] = max(self.busy)
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.busy[0] -= 1
            self.received.append(
                {"headers": dict(request.headers), "raw": raw, "body": json.loads(raw), "path": request.path}
            )
            if self.answers:
                status, headers = self.answers.pop(0)
                return web.Response(status=status, headers=headers)
            return web.Response(status=202)

        app = web.Application()
        app.router.add_get("/users/{name}", actor)
        app.router.add_post("/inbox", inbox)
        app.router.add_post("/users/{name}/inbox", inbox)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def sign(self, url: str, body: bytes, *, now: datetime | None = None, key: KeyPair | None = None) -> dict[str, str]:
        return sign_request(
            method="POST",
            target_uri=url,
            body=body,
            key_id=self.key_id,
            private_key_pem=(key or self.keys).private_pem,
            now=now or datetime.now(UTC),
        )

    async def post(self, url: str, activity: Any, headers: dict[str, str] | None = None, body: bytes | None = None):  # type: ignore[no-untyped-def]
        data = body if body is not None else json.dumps(activity).encode()
        sent = {"Content-Type": AP, **(headers if headers is not None else self.sign(url, data))}
        async with aiohttp.ClientSession() as session, session.post(url, data=data, headers=sent) as response:
            return response.status, await response.text()


KEYS = generate_rsa_keypair()


@contextlib.contextmanager
def database_for(kind: str, name: str) -> Iterator[str]:
    """A database URL for a node process: '' (SQLite in its directory) or a fresh PostgreSQL database."""
    if kind == "sqlite":
        yield ""
        return
    from tests.oai_support import PG_PREFIX, PG_URL, _pg_reachable

    reason = asyncio.run(_pg_reachable())
    if reason:
        pytest.skip(reason)
    database = f"{PG_PREFIX}{os.getpid()}_{name}"  # dropped after, or by the next run if this one dies

    async def admin(sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    asyncio.run(admin(f'CREATE DATABASE "{database}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + database
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def ports() -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def nodes(
    request: pytest.FixtureRequest, ports: tuple[int, int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Node, Node]]:
    """Two nodes that follow each other, each on its own database (SQLite files, or PostgreSQL databases)."""
    allow = ",".join(str(p) for p in ports)
    with database_for(request.param, "a") as url_a, database_for(request.param, "b") as url_b:
        a = Node(ports[0], tmp_path_factory.mktemp("a"), "alpha", allow, database_url=url_a)
        b = Node(ports[1], tmp_path_factory.mktemp("b"), "beta", allow, database_url=url_b)
        a.start()
        b.start()
        try:
            yield a, b
        finally:
            a.stop()
            b.stop()


@pytest.fixture
async def peer(ports: tuple[int, int, int]) -> AsyncIterator[Peer]:
    p = Peer(ports[2], KEYS)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@contextlib.asynccontextmanager
async def running_peer(port: int) -> AsyncIterator[Peer]:
    """A scripted peer on ``port`` with the fixed test keys, stopped on exit."""
    peer = Peer(port, KEYS)
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()
