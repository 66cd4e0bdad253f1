"""A real hub in the test process (``build_app``, role hub, embedded Typesense, federation on) at a known port,
and real Essaim nodes in subprocesses (:class:`tests.federation.conftest.Node`) that it harvests and follows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from essaim.app import build_app
from essaim.settings import Settings, load_settings
from federation.service import FEDERATION, Federation
from harvesting.admin import HUB
from harvesting.hub import Hub
from node.context import NODE, NodeContext
from tests.search.hub_support import FAST_SEARCH, skip_without_typesense

FAST_FEDERATION = {"retry_base": 0.2, "poll": 0.1, "lease": 5, "signature_max_age": 300, "page_size": 5}


def hub_settings(directory: Path | str, port: int, allow: list[int], **sections: Any) -> Settings:
    values: dict[str, Any] = {
        "role": "hub",
        "data_dir": str(directory),
        "base_url": f"http://127.0.0.1:{port}",
        "port": port,
        "log_format": "text",
        "partner": {"username": f"hub{port}", "name": f"Hub {port}"},
        "hub": {"scheduler": False},
        "outbound": {"allow": [f"127.0.0.1:{p}" for p in allow], "connect_timeout": 1.0, "total_timeout": 3.0},
        "federation": {**FAST_FEDERATION, **sections.pop("federation", {})},
        "search": {**FAST_SEARCH, **sections.pop("search", {})},
        "fedhub": {"follow_interval": 0.5, **sections.pop("fedhub", {})},
        **sections,
    }
    return load_settings(environ={"ESSAIM_DATA_DIR": str(directory)}, overrides=values)


class RunningHub:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    @property
    def app(self) -> Any:
        return self.client.server.app

    @property
    def fed(self) -> Federation:
        return self.app[FEDERATION]

    @property
    def hub(self) -> Hub:
        return self.app[HUB]

    @property
    def ctx(self) -> NodeContext:
        return self.app[NODE]

    async def found(self, **params: str) -> int:
        response = await self.client.get("/api/search", params=params)
        assert response.status == 200, await response.text()
        return int((await response.json())["found"])


@asynccontextmanager
async def running_hub(settings: Settings) -> AsyncIterator[RunningHub]:
    skip_without_typesense()
    client = TestClient(TestServer(build_app(settings), host="127.0.0.1", port=settings.port))
    await client.start_server()
    try:
        yield RunningHub(client)
    finally:
        await client.close()
