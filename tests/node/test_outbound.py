"""The hardened outbound client against small real aiohttp servers on 127.0.0.1.

Only loopback servers are ever contacted. Refusals of other private ranges are
tested on the pure policy function and on the resolver itself, which refuse
before any connection exists, so a bug could never send a packet elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from node.outbound import (
    GuardedResolver,
    OutboundClient,
    OutboundConfig,
    OutboundConnectionError,
    OutboundHTTPError,
    OutboundRedirectError,
    OutboundRefused,
    OutboundTimeout,
    OutboundTooLarge,
    check_url,
    forbidden_reason,
    parse_retry_after,
)

Serve = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def start(app: web.Application) -> TestServer:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def listed(*servers: TestServer, **kwargs: object) -> OutboundConfig:
    return OutboundConfig(allow_list=frozenset(f"127.0.0.1:{s.port}" for s in servers), **kwargs)  # type: ignore[arg-type]


def hello_app(hits: list[web.Request] | None = None) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        if hits is not None:
            hits.append(request)
        return web.json_response({"hello": "world", "host": request.headers.get("Host")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    return app


# ----------------------------------------------------------------- address policy


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "fec0::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::1",
        "64:ff9b::7f00:1",
        "2001:db8::1",
    ],
)
def test_forbidden_addresses(address: str) -> None:
    assert forbidden_reason(address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:93.184.216.34"])
def test_public_addresses_pass(address: str) -> None:
    assert forbidden_reason(address) is None


async def test_resolver_refuses_private_answer_before_connecting() -> None:
    cfg = OutboundConfig(resolver_overrides={"evil.test": "10.1.2.3", "meta.test": "169.254.169.254"})
    resolver = GuardedResolver(cfg)
    for name in ("evil.test", "meta.test", "EVIL.test."):
        with pytest.raises(OutboundRefused) as info:
            await resolver.resolve(name, 443)
        assert info.value.address in ("10.1.2.3", "169.254.169.254")


async def test_resolver_allow_list_by_name_or_address() -> None:
    cfg = OutboundConfig(
        resolver_overrides={"node1.test": "127.0.0.1", "node2.test": "127.0.0.1"},
        allow_list=frozenset({"node1.test:8001", "127.0.0.1:8002"}),
    )
    resolver = GuardedResolver(cfg)
    assert (await resolver.resolve("node1.test", 8001))[0]["host"] == "127.0.0.1"
    assert (await resolver.resolve("node2.test", 8002))[0]["host"] == "127.0.0.1"
    with pytest.raises(OutboundRefused):
        await resolver.resolve("node1.test", 8003)  # listed for one port only


def test_scheme_policy_without_network() -> None:
    strict = OutboundConfig()
    check_url(strict, URL("https://example.org/x"))
    for url in ("http://example.org/", "ftp://example.org/", "file:///etc/passwd", "gopher://x/"):
        with pytest.raises(OutboundRefused):
            check_url(strict, URL(url))
    check_url(OutboundConfig(allow_http=True), URL("http://example.org/"))
    check_url(OutboundConfig(allow_list=frozenset({"node1.test:8000"})), URL("http://node1.test:8000/"))
    with pytest.raises(OutboundRefused):
        check_url(strict, URL("https://user:pw@example.org/"))


def test_config_validates_entries() -> None:
    with pytest.raises(ValueError):
        OutboundConfig(allow_list=frozenset({"no-port"}))
    with pytest.raises(ValueError):
        OutboundConfig(resolver_overrides={"a.test": "not-an-ip"})
    cfg = OutboundConfig(allow_list=frozenset({"Node1.Test:80", "[::1]:8080"}))
    assert cfg.is_allow_listed("node1.test", 80) and cfg.is_allow_listed("::1", 8080)


# ------------------------------------------------------------- allow-list, live


async def test_loopback_refused_unless_allow_listed(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    hits: list[web.Request] = []
    server = await serve(hello_app(hits))
    url = f"http://127.0.0.1:{server.port}/x"
    caplog.set_level(logging.WARNING, logger="essaim.outbound")
    async with OutboundClient(OutboundConfig(allow_http=True)) as client:
        with pytest.raises(OutboundRefused):
            await client.get(url)
    assert hits == []
    events = [r for r in caplog.records if getattr(r, "event", None) == "outbound.refused"]
    assert len(events) == 1 and events[0].url == url and events[0].address == "127.0.0.1"  # type: ignore[attr-defined]

    async with OutboundClient(listed(server)) as client:
        response = await client.get(url)
    assert response.status == 200 and response.json()["hello"] == "world"
    assert response.url == url and len(hits) == 1
    assert hits[0].headers["User-Agent"].startswith("Essaim/")


async def test_resolver_override_reaches_named_node(serve: Serve) -> None:
    server = await serve(hello_app())
    cfg = OutboundConfig(
        resolver_overrides={"node1.test": "127.0.0.1"}, allow_list=frozenset({f"node1.test:{server.port}"})
    )
    async with OutboundClient(cfg) as client:
        response = await client.get(f"http://node1.test:{server.port}/actor")
        assert response.json()["host"] == f"node1.test:{server.port}"
        # Same override, port not listed: refused at resolution.
        with pytest.raises(OutboundRefused):
            await client.get(f"http://node1.test:{server.port + 1}/actor")


async def test_ipv6_loopback_forms_refused(serve: Serve) -> None:
    server = await serve(hello_app())
    cfg = OutboundConfig(allow_http=True, resolver_overrides={"six.test": "::1", "mapped.test": "::ffff:127.0.0.1"})
    async with OutboundClient(cfg) as client:
        for url in (
            f"http://[::1]:{server.port}/",
            f"http://[::ffff:127.0.0.1]:{server.port}/",
            f"http://[::ffff:7f00:1]:{server.port}/",
            f"http://six.test:{server.port}/",
            f"http://mapped.test:{server.port}/",
        ):
            with pytest.raises(OutboundRefused):
                await client.get(url)


# ------------------------------------------------------------------ redirects


def redirect_app(routes: dict[str, tuple[int, str]], seen: list[tuple[str, str, bytes, str | None]]) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, await request.read(), request.headers.get("Authorization")))
        if request.path in routes:
            status, location = routes[request.path]
            return web.Response(status=status, headers={"Location": location})
        return web.Response(text=f"final {request.method} {request.path}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def test_redirect_to_unlisted_loopback_refused(serve: Serve) -> None:
    victim_hits: list[web.Request] = []
    victim = await serve(hello_app(victim_hits))
    seen: list[tuple[str, str, bytes, str | None]] = []
    front = await serve(redirect_app({"/go": (302, f"http://127.0.0.1:{victim.port}/admin")}, seen))
    async with OutboundClient(listed(front)) as client:
        with pytest.raises(OutboundRefused):
            await client.get(f"http://127.0.0.1:{front.port}/go")
        for location in ("ftp://example.org/x", "file:///etc/passwd", f"http://[::1]:{victim.port}/"):
            other = await serve(redirect_app({"/go": (301, location)}, seen))
            async with OutboundClient(listed(other)) as second:
                with pytest.raises(OutboundRefused):
                    await second.get(f"http://127.0.0.1:{other.port}/go")
    assert victim_hits == []


async def test_redirect_chain_limit_and_loop(serve: Serve) -> None:
    seen: list[tuple[str, str, bytes, str | None]] = []
    routes = {f"/r{i}": (302, f"/r{i + 1}") for i in range(6)}
    routes["/loop-a"] = (301, "/loop-b")
    routes["/loop-b"] = (301, "/loop-a")
    server = await serve(redirect_app(routes, seen))
    base = f"http://127.0.0.1:{server.port}"
    async with OutboundClient(listed(server, max_redirects=5)) as client:
        five = await client.get(f"{base}/r1")  # r1 -> ... -> r6: five redirects, the limit
        assert five.text() == "final GET /r6" and len(five.history) == 5 and five.url == f"{base}/r6"
        with pytest.raises(OutboundRedirectError):
            await client.get(f"{base}/r0")  # six redirects
        with pytest.raises(OutboundRedirectError):
            await client.get(f"{base}/loop-a")
        raw = await client.get(f"{base}/r0", follow_redirects=False)
        assert raw.status == 302 and raw.headers["Location"] == "/r1"


async def test_redirect_methods_and_credentials(serve: Serve) -> None:
    seen_b: list[tuple[str, str, bytes, str | None]] = []
    other = await serve(redirect_app({}, seen_b))
    seen: list[tuple[str, str, bytes, str | None]] = []
    routes = {
        "/see-other": (303, "/landing"),
        "/temporary": (307, "/landing"),
        "/moved": (301, "/landing"),
        "/elsewhere": (308, f"http://127.0.0.1:{other.port}/inbox"),
    }
    server = await serve(redirect_app(routes, seen))
    base = f"http://127.0.0.1:{server.port}"
    auth = {"Authorization": "Bearer secret"}
    async with OutboundClient(listed(server, other)) as client:
        assert (await client.post(f"{base}/see-other", data=b"payload")).text() == "final GET /landing"
        assert (await client.post(f"{base}/moved", data=b"payload")).text() == "final GET /landing"
        assert (await client.post(f"{base}/temporary", data=b"payload", headers=auth)).text() == "final POST /landing"
        assert seen[-1] == ("POST", "/landing", b"payload", "Bearer secret")  # same origin keeps credentials
        response = await client.post(f"{base}/elsewhere", data=b"payload", headers=auth)
    assert response.text() == "final POST /inbox"
    assert seen_b[-1] == ("POST", "/inbox", b"payload", None)  # other origin: Authorization dropped


# ---------------------------------------------------------------------- bodies


async def test_oversize_body_with_and_without_content_length(serve: Serve) -> None:
    big = b"x" * (3 * 1024 * 1024)

    async def fixed(request: web.Request) -> web.Response:
        return web.Response(body=big)

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(48):  # 48 x 64 KiB = 3 MiB, no Content-Length
            await response.write(b"y" * 65536)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/fixed", fixed)
    app.router.add_get("/streamed", streamed)
    server = await serve(app)
    base = f"http://127.0.0.1:{server.port}"
    async with OutboundClient(listed(server, max_body_bytes=1024 * 1024)) as client:
        for path in ("/fixed", "/streamed"):
            with pytest.raises(OutboundTooLarge) as info:
                await client.get(base + path)
            assert info.value.limit == 1024 * 1024
        # The per-call cap overrides the configured one, both ways.
        assert len((await client.get(base + "/fixed", max_bytes=4 * 1024 * 1024)).body) == len(big)
        with pytest.raises(OutboundTooLarge):
            await client.get(base + "/streamed", max_bytes=1000)


async def test_lying_content_length_cannot_bypass_cap() -> None:
    """A raw server announces 16 bytes and then sends 2 MiB: we never hold more than announced."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(32):
                writer.write(b"z" * 65536)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cfg = OutboundConfig(allow_list=frozenset({f"127.0.0.1:{port}"}), max_body_bytes=1024)
        async with OutboundClient(cfg) as client:
            try:
                response = await client.get(f"http://127.0.0.1:{port}/")
            except OutboundConnectionError:
                pass  # aiohttp saw the excess bytes as a broken response: refused as well
            else:
                assert response.body == b"z" * 16  # only what was announced, never the 2 MiB
    finally:
        server.close()
        await server.wait_closed()


async def test_gzip_bomb_and_honest_compression(serve: Serve) -> None:
    bomb = gzip.compress(b"\0" * (32 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 64 * 1024
    text = ("essaim " * 2000).encode()

    async def bomb_handler(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip"})

    async def gz(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(text), headers={"Content-Encoding": "gzip"})

    async def deflate(request: web.Request) -> web.Response:
        return web.Response(body=zlib.compress(text), headers={"Content-Encoding": "deflate"})

    async def truncated(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(text)[:-20], headers={"Content-Encoding": "gzip"})

    async def unknown(request: web.Request) -> web.Response:
        return web.Response(body=b"??", headers={"Content-Encoding": "br"})

    app = web.Application()
    for name, handler in [
        ("bomb", bomb_handler),
        ("gz", gz),
        ("deflate", deflate),
        ("cut", truncated),
        ("br", unknown),
    ]:
        app.router.add_get(f"/{name}", handler)
    server = await serve(app)
    base = f"http://127.0.0.1:{server.port}"
    async with OutboundClient(listed(server, max_body_bytes=1024 * 1024)) as client:
        with pytest.raises(OutboundTooLarge):
            await client.get(base + "/bomb")
        assert (await client.get(base + "/gz")).body == text
        assert (await client.get(base + "/deflate")).body == text
        with pytest.raises(OutboundConnectionError):
            await client.get(base + "/cut")
        with pytest.raises(OutboundConnectionError):
            await client.get(base + "/br")
        # Limit counts decoded bytes: the compressed body is small, the decoded one is not.
        with pytest.raises(OutboundTooLarge):
            await client.get(base + "/gz", max_bytes=len(text) - 1)


# ------------------------------------------------------------------- timeouts


async def test_slow_server_and_trickled_body_time_out(serve: Serve) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(100):
            await response.write(b".")
            await asyncio.sleep(0.05)
        return response

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/trickle", trickle)
    server = await serve(app)
    base = f"http://127.0.0.1:{server.port}"
    async with OutboundClient(listed(server, read_timeout=0.3, total_timeout=5)) as client:
        started = time.monotonic()
        with pytest.raises(OutboundTimeout):
            await client.get(base + "/slow")
        assert time.monotonic() - started < 2
        # Each byte arrives well within the read timeout; only the total deadline stops it.
        started = time.monotonic()
        with pytest.raises(OutboundTimeout):
            await client.get(base + "/trickle", timeout=0.5)
        assert time.monotonic() - started < 2


# ------------------------------------------------------------ statuses, limits


async def test_http_errors_carry_status_headers_and_excerpt(serve: Serve) -> None:
    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=429, text="slow down " * 200, headers={"Retry-After": "120"})

    app = web.Application()
    app.router.add_get("/busy", busy)
    server = await serve(app)
    url = f"http://127.0.0.1:{server.port}/busy"
    async with OutboundClient(listed(server)) as client:
        with pytest.raises(OutboundHTTPError) as info:
            await client.get(url)
        assert info.value.status == 429 and info.value.url == url
        assert parse_retry_after(info.value.headers["Retry-After"]) == 120
        assert info.value.body_excerpt.startswith(b"slow down") and len(info.value.body_excerpt) <= 512
        missing = await client.get(f"http://127.0.0.1:{server.port}/none", raise_for_status=False)
        assert missing.status == 404


async def test_per_host_concurrency_limit(serve: Serve) -> None:
    state = {"now": 0, "peak": 0}

    async def handler(request: web.Request) -> web.Response:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.1)
        state["now"] -= 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    server = await serve(app)
    async with OutboundClient(listed(server, per_host_limit=2)) as client:
        results = await asyncio.gather(*(client.get(f"http://127.0.0.1:{server.port}/") for _ in range(6)))
    assert all(r.status == 200 for r in results)
    assert state["peak"] == 2


async def test_connection_refused_is_an_outbound_error() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with OutboundClient(OutboundConfig(allow_list=frozenset({f"127.0.0.1:{port}"}))) as client:
        with pytest.raises(OutboundConnectionError):
            await client.get(f"http://127.0.0.1:{port}/")


# ----------------------------------------------------------------- Retry-After


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30") == 30
    assert parse_retry_after(" 0 ") == 0
    assert parse_retry_after("86400", cap=600) == 600
    future = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(future, now=now) == 90
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now=now) == 0
    assert parse_retry_after("Sunday, 01-Jan-26 12:02:00 GMT", now=now) == 120  # RFC 850 form
    assert parse_retry_after("Thu Jan  1 12:00:30 2026", now=now) == 30  # asctime form
    assert parse_retry_after(format_datetime(now + timedelta(days=3), usegmt=True), now=now, cap=3600) == 3600
    for junk in (None, "", "soon", "-5", "1.5", "Mon, 99 Foo 2026"):
        assert parse_retry_after(junk) is None
    assert parse_retry_after("soon", default=60) == 60
