"""The raw-HTTP client: row-level import results, deletes, aliases, scoped keys, failover."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from aiohttp import web

from search.client import SearchClient, encode_documents, generate_scoped_search_key
from search.errors import ApiError, ImportFailed, NodesUnavailable
from search.filters import Filter, build_filter
from search.query import SearchQuery, run_search
from search.schema import collection_name, collection_schema

pytestmark = pytest.mark.asyncio(loop_scope="session")


@contextlib.asynccontextmanager
async def fake_node(handler):
    """A small real HTTP server standing in for a sick cluster node."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def test_import_reports_every_failed_row(client, docs) -> None:
    name = collection_name() + "_rows"
    await client.create_collection(collection_schema(name))
    try:
        bad_type = {**docs[0], "id": "bad1", "created": "yesterday"}
        missing = {k: v for k, v in docs[1].items() if k != "title"} | {"id": "bad2"}
        rows = [docs[2], bad_type, docs[3], missing, docs[4]]
        with pytest.raises(ImportFailed) as err:
            await client.import_documents(name, rows, batch_size=2)
        assert [(f.index, f.id) for f in err.value.failures] == [(1, "bad1"), (3, "bad2")]
        assert "created" in err.value.failures[0].error and err.value.imported == 3
        report = await client.import_documents(name, rows, raise_on_failure=False)
        assert report.imported == 3 and len(report.failures) == 2
        assert await client.num_documents(name) == 3
        # create on an existing id is a row failure too
        report = await client.import_documents(name, [docs[2]], action="create", raise_on_failure=False)
        assert report.imported == 0 and report.failures[0].code == 409
        assert await client.delete_documents(name, [docs[2]["id"], docs[3]["id"], "0" * 32]) == 2
        assert await client.num_documents(name) == 1
        # Pre-encoded lines (the index worker encodes in its build thread): same row checks.
        with pytest.raises(ValueError, match="2 encoded lines for 5 documents"):
            await client.import_documents(name, rows, lines=encode_documents(rows[:2]))
        report = await client.import_documents(
            name, rows, batch_size=2, lines=encode_documents(rows), raise_on_failure=False
        )
        assert report.imported == 3 and [(f.index, f.id) for f in report.failures] == [(1, "bad1"), (3, "bad2")]
        assert await client.num_documents(name) == 3
    finally:
        await client.drop_collection(name)


async def test_alias_swap_while_searching(client, docs) -> None:
    alias = "sheets_swap_test"
    old, new = collection_name() + "_a", collection_name() + "_b"
    for name, rows in ((old, docs[:5]), (new, docs)):
        await client.create_collection(collection_schema(name))
        await client.import_documents(name, rows)
    await client.upsert_alias(alias, old)
    seen: list[int] = []
    stop = asyncio.Event()

    async def searcher() -> None:
        while not stop.is_set():
            result = await run_search(client, SearchQuery(q="", per_page=0), collection=alias)
            seen.append(result["found"])

    tasks = [asyncio.create_task(searcher()) for _ in range(4)]
    await asyncio.sleep(0.2)
    await client.upsert_alias(alias, new)
    assert await client.get_alias(alias) == new
    await asyncio.sleep(0.2)
    await client.drop_collection(old)
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks)  # any failed search raises here
    assert set(seen) == {5, len(docs)} and seen[-1] == len(docs)
    await client.delete_alias(alias)
    await client.drop_collection(new)
    assert await client.get_alias(alias) is None


async def test_scoped_key_restricts_results(client, collection, sheets) -> None:
    parent = await client.create_search_key("hub public search")
    scoped = generate_scoped_search_key(parent, {"filter_by": build_filter([Filter("partner", "Réseau B")])})
    partner_b = {str(n) for n, s in sheets.items() if s.partner.name == "Réseau B"}
    result = await run_search(client, SearchQuery(per_page=50), api_key=scoped)
    assert {h["document"]["local_id"] for h in result["hits"]} == partner_b
    # The holder's own filter narrows further but cannot widen the scope.
    wider = await run_search(client, SearchQuery(filters={"partner": ("Réseau A",)}), api_key=scoped)
    assert wider["found"] == 0
    with pytest.raises(ApiError) as err:
        await client.request("GET", "/collections", api_key=scoped)
    assert err.value.status in (401, 403)
    with pytest.raises(ApiError):
        await client.request("GET", "/collections", api_key=generate_scoped_search_key("x" + parent[1:], {}))


async def test_failover_on_dead_node_503_and_timeout(typesense, collection) -> None:
    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"message": "Not Ready or Lagging"}, status=503)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.8)
        return web.json_response({})

    async with fake_node(unavailable) as sick, fake_node(slow) as stuck:
        nodes = [closed_port(), sick, stuck, typesense.url]
        async with SearchClient(nodes, typesense.api_key, timeout=0.3) as c:
            result = await run_search(c, SearchQuery(q="jardins"))
            assert result["found"] == 1
            assert c.urls[c._preferred] == typesense.url  # later calls start with the healthy node
    async with SearchClient([closed_port(), closed_port()], typesense.api_key) as c:
        with pytest.raises(NodesUnavailable):
            await c.search("sheets", {"q": "*", "query_by": "title"})


async def test_errors_are_raised(client, collection) -> None:
    with pytest.raises(ApiError):
        await client.multi_search([{"collection": "sheets", "q": "*", "query_by": "no_such_field"}])
    with pytest.raises(ApiError) as err:
        await client.get_collection("no_such_collection")
    assert err.value.status == 404
    await client.drop_collection("no_such_collection")  # missing_ok


async def test_get_search_encodes_filters(client, collection) -> None:
    # The GET form carries filter_by in the query string: "&&", "`", "[" and spaces must survive encoding.
    partners = Filter("partner", ["Réseau `D` && (x) || [y], z:1", "Réseau C"])
    filter_by = build_filter([partners, Filter("themes", ["SOL", "EDU"])])
    result = await client.search("sheets", {"q": "*", "query_by": "title", "filter_by": filter_by, "per_page": 50})
    assert {h["document"]["local_id"] for h in result["hits"]} == {"7", "9"}
