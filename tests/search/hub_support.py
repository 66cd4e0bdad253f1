"""A real hub (``build_app`` with ``role = hub``) running its embedded Typesense, for the search tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from essaim.app import build_app
from essaim.settings import Settings, load_settings
from search.lifecycle import SEARCH_RUNTIME, SearchRuntime

# Fast retries so the tests see the worker recover in seconds.
# counts_stale 0: the facet counts a test reads right after a write are those of the index it wrote.
FAST_SEARCH = {"poll": 0.2, "retry_base": 0.2, "retry_max": 1.0, "ready_within": 30.0, "lease": 30, "counts_stale": 0.0}


def hub_settings(data_dir: Path, **search: Any) -> Settings:
    values = {
        "role": "hub",
        "data_dir": str(data_dir),
        "base_url": "http://hub.essaim.test",
        "hub": {"scheduler": False},
        "federation": {"enabled": False},
        "search": {**FAST_SEARCH, **search},
    }
    return load_settings(environ={"ESSAIM_DATA_DIR": str(data_dir)}, overrides=values)


def skip_without_typesense() -> None:
    from search.errors import ServerError
    from search.server import bundled_binary

    try:
        bundled_binary()
    except (ServerError, OSError) as exc:
        pytest.skip(f"the bundled Typesense binary cannot be installed here: {exc}")


@asynccontextmanager
async def hub_client(settings: Settings) -> AsyncIterator[TestClient]:
    skip_without_typesense()
    client = TestClient(TestServer(build_app(settings), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def runtime(client: TestClient) -> SearchRuntime:
    return client.server.app[SEARCH_RUNTIME]


async def eventually(check: Callable[[], Any], *, within: float = 10.0, every: float = 0.05) -> float:
    """Seconds until ``await check()`` is truthy; fails after ``within``."""
    started = time.monotonic()
    last: Any = None
    while time.monotonic() - started < within:
        last = await check()
        if last:
            return time.monotonic() - started
        await asyncio.sleep(every)
    raise AssertionError(f"not true after {within}s (last: {last!r})")


async def found(client: TestClient, **params: str) -> int:
    response = await client.get("/api/search", params=params)
    if response.status != 200:
        return -1
    return int((await response.json())["found"])
