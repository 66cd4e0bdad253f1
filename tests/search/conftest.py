"""A real Typesense 0.24.1 (the bundled binary) for the whole search test session.

Async tests here run on the session event loop (``pytestmark`` in each module),
because the server's supervisor and the pooled aiohttp session live on it.
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from protocol.sheet import Sheet
from search.client import SearchClient
from search.schema import ALIAS, collection_name, collection_schema, document_from_sheet
from search.synonyms import install_synonyms
from tests.search.corpus import corpus_sheets


@pytest.fixture(scope="session")
def sheets() -> dict[int, Sheet]:
    return {int(s.local_id): s for s, _ in corpus_sheets()}


@pytest.fixture(scope="session")
def docs() -> list[dict]:
    return [document_from_sheet(s, cluster=c) for s, c in corpus_sheets()]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def typesense(tmp_path_factory: pytest.TempPathFactory):
    from search.errors import ServerError
    from search.server import EmbeddedTypesense, bundled_binary

    try:
        bundled_binary()
    except (ServerError, OSError) as exc:
        pytest.skip(f"the bundled Typesense binary cannot be installed here: {exc}")
    server = EmbeddedTypesense(tmp_path_factory.mktemp("typesense"))
    await server.start(ready_within=60)
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(typesense):
    async with SearchClient(typesense.nodes) as c:
        yield c


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def collection(client: SearchClient, docs: list[dict]) -> str:
    """The corpus indexed in a versioned collection behind the ``sheets`` alias."""
    name = collection_name()
    await client.create_collection(collection_schema(name))
    await install_synonyms(client, name)
    report = await client.import_documents(name, docs)
    assert report.imported == len(docs)
    await client.upsert_alias(ALIAS, name)
    return name
