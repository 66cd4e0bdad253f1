"""The hub's search runtime: Typesense (embedded or external), the service, the index worker.

Embedded (the default), the hub starts the bundled Typesense 0.24.1 on 127.0.0.1
with its data and a generated API key under the hub's data directory, waits until it
is ready (``/health`` *and* the document count it had when it last stopped: a
restarted server answers ``ok`` while it is still loading), supervises it (restarted
if it dies; searches answer 503 until it has reloaded), and stops it with the hub.
External, the hub talks to the given node URLs (one server or a Raft cluster) with
the given key and fails over between nodes.

:func:`search_context` is the ``cleanup_ctx`` the app shell appends for ``role = hub``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from node.context import NODE
from node.db import Database
from search.client import SearchClient, generate_scoped_search_key
from search.errors import SearchError, ServerError
from search.indexer import (
    GENERATION_KEY,
    ClusterLookup,
    IndexerConfig,
    IndexQueue,
    IndexWorker,
    get_state,
    install_queue,
    set_state,
)
from search.maintenance import ensure_collection, reconcile
from search.schema import ALIAS
from search.server import EmbeddedTypesense, TypesenseNodes
from search.service import SEARCH, SearchService

log = logging.getLogger("essaim.search")
COUNT_KEY = "documents"  # index_state: {"collection", "documents"} when last seen, for readiness
SEARCH_KEY = "search_key"  # index_state: the search-only parent key of scoped keys


@dataclass(frozen=True)
class SearchConfig:
    urls: tuple[str, ...] = ()  # external nodes; empty: embedded
    api_key: str = ""
    data_dir: str = "var/hub/typesense"
    port: int = 0
    ready_within: float = 60.0
    indexer: bool = True
    timeout: float = 5.0
    wide_zoom: int = 7
    cache_stale: float = 300.0
    counts_cache: int = 4096
    counts_stale: float = 2.0
    search_key_ttl: int = 30 * 86_400
    indexer_config: IndexerConfig = field(default_factory=IndexerConfig)
    clusters: ClusterLookup | None = None  # uri -> duplicate cluster (the hub's duplicate detection)
    restart_backoff: tuple[float, float] = (0.5, 10.0)


class SearchRuntime:
    """Everything search the hub runs; ``app[SEARCH_RUNTIME]``."""

    def __init__(self, config: SearchConfig, db: Database, count: Callable[[str, int], None] | None = None) -> None:
        self.config = config
        self.db = db
        self._count = count
        self.server: EmbeddedTypesense | None = None
        self.client: SearchClient | None = None
        self.service: SearchService | None = None
        self.worker: IndexWorker | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._search_key: str | None = None
        self.last_documents: int | None = None

    @property
    def nodes(self) -> TypesenseNodes:
        if self.server is not None:
            return self.server.nodes
        return TypesenseNodes(tuple(u.rstrip("/") for u in self.config.urls), self.config.api_key)

    async def start(self) -> None:
        conf = self.config
        saved = await get_state(self.db, COUNT_KEY)
        expected = json.loads(saved) if saved else {}
        if not conf.urls:
            self.server = EmbeddedTypesense(conf.data_dir, port=conf.port or None, restart_backoff=conf.restart_backoff)
            await self.server.start(ready_within=conf.ready_within)
        self.client = SearchClient(self.nodes, timeout=conf.timeout)
        self.service = SearchService(
            self.client,
            wide_zoom=conf.wide_zoom,
            cache_stale=conf.cache_stale,
            counts_size=conf.counts_cache,
            counts_stale=conf.counts_stale,
        )
        loaded = True
        if self.server is not None:
            loaded = await self._wait_loaded(expected)
        state = await ensure_collection(self.client, self.db)
        if not loaded and not state["created"]:
            await self._repair()
        if state["outdated"]:
            log.warning(
                "index.schema_outdated",
                extra={
                    "event": "index.schema_outdated",
                    "collection": state["collection"],
                    "fix": "essaim hub reindex",
                },
            )
        self.worker = IndexWorker(
            self.db,
            self.client,
            config=conf.indexer_config,
            clusters=conf.clusters,
            on_indexed=self.service.changed,
            count=self._count,
        )
        install_queue(self.db, self.worker.wake.set)
        if conf.indexer:
            self._tasks.append(asyncio.create_task(self.worker.run(), name="search-indexer"))
        self._tasks.append(asyncio.create_task(self._watch(), name="search-watch"))

    async def _wait_loaded(self, expected: dict[str, Any]) -> bool:
        """Readiness beyond ``/health``: the live collection holds what it held when last seen.

        False when it does not within ``ready_within``: documents lost with the data
        directory, or by Typesense itself (0.24 has been seen to come back from a clean
        restart with its log replayed and the documents of its last imports missing).
        """
        assert self.server is not None and self.service is not None
        name, documents = expected.get("collection"), int(expected.get("documents") or 0)
        if not name or not documents:
            return True
        try:
            await self.server.wait_ready({name: documents}, ready_within=self.config.ready_within)
        except ServerError as exc:
            log.warning("search.not_ready", extra={"event": "search.not_ready", "reason": str(exc)})
            return False
        return True

    async def _repair(self) -> None:
        """Queue what the index misses or holds stale (reconciliation); the hub serves meanwhile."""
        assert self.client is not None
        try:
            result = await reconcile(self.db, self.client, repair=True)
        except (SearchError, OSError) as exc:  # Typesense gone again: `essaim hub reconcile` is the fallback
            log.warning("search.repair_failed", extra={"event": "search.repair_failed", "error": str(exc)[:300]})
            return
        log.warning("search.repaired", extra={"event": "search.repaired", **result})
        if self.worker is not None:
            self.worker.wake.set()

    async def _watch(self) -> None:
        """Every few seconds: the alias target and document count (readiness after a restart, metrics)."""
        assert self.client is not None and self.service is not None
        collection: str | None = None
        generation = await get_state(self.db, GENERATION_KEY)
        while True:
            try:
                # Batches applied by any hub process's worker (another process's too: [search] indexer = false).
                applied = await get_state(self.db, GENERATION_KEY)
                if applied != generation:
                    generation = applied
                    self.service.changed()
                if self.server is not None and self.server.take_restart():
                    self.service.ready = False
                    log.warning("search.restarted", extra={"event": "search.restarted", "pid": self.server.pid})
                    if self.worker is not None:  # it may not have seen the outage (a restart between batches)
                        await self.worker.requeue_recent()
                    if not await self._wait_loaded(json.loads(await get_state(self.db, COUNT_KEY) or "{}")):
                        await self._repair()
                    self.service.ready = True
                    self.service.changed()
                current = await self.client.get_alias(ALIAS)
                if current != collection:
                    collection = current
                    self.service.changed()  # a reindex swapped the alias: cached aggregates are stale
                if current:
                    documents = await self.client.num_documents(current)
                    if documents != self.last_documents:  # kept for the readiness check of the next start
                        self.last_documents = documents
                        await set_state(self.db, COUNT_KEY, json.dumps({"collection": current, "documents": documents}))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Typesense down: the worker backs off, the API answers 503
                log.debug("search watch: %s", exc)
            await asyncio.sleep(2.0)

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.client is not None and self.service is not None:
            with contextlib.suppress(SearchError, OSError):
                current = await self.client.get_alias(ALIAS)
                if current:
                    n = await self.client.num_documents(current)
                    await set_state(self.db, COUNT_KEY, json.dumps({"collection": current, "documents": n}))
            await self.service.close()
            await self.client.close()
        if self.server is not None:
            await self.server.stop()

    # ------------------------------------------------------------------ scoped keys

    async def search_key(self) -> str:
        """The search-only parent key of scoped keys (created once, kept in ``index_state``)."""
        if self._search_key is not None:
            return self._search_key
        assert self.client is not None
        saved = await get_state(self.db, SEARCH_KEY)
        if saved:
            record = json.loads(saved)
            if await self.client.get_key(int(record["id"])) is not None:
                self._search_key = str(record["value"])
                return self._search_key
        record = await self.client.create_search_key_record("essaim scoped search keys", [ALIAS, "sheets_*"])
        await set_state(self.db, SEARCH_KEY, json.dumps({"id": record["id"], "value": record["value"]}))
        self._search_key = str(record["value"])
        return self._search_key

    async def mint_scoped_key(self, filter_by: str, expires_at: int) -> str:
        """A key that can only search, only through ``filter_by``, until ``expires_at``."""
        params: dict[str, Any] = {"expires_at": expires_at}
        if filter_by:
            params["filter_by"] = filter_by
        return generate_scoped_search_key(await self.search_key(), params)

    # ------------------------------------------------------------------ metrics

    async def metrics_lines(self) -> list[str]:
        counts = await IndexQueue(self.db, self.config.indexer_config).counts()
        up = 0
        documents: int | None = None
        if self.client is not None:
            try:
                documents = await self.client.num_documents(ALIAS)
                up = 1
            except (SearchError, OSError):
                documents = None
        lines = [
            "# HELP essaim_index_up Whether Typesense answers.",
            "# TYPE essaim_index_up gauge",
            f"essaim_index_up {up}",
            "# HELP essaim_index_pending_operations Sheet changes waiting to reach the search index.",
            "# TYPE essaim_index_pending_operations gauge",
            f"essaim_index_pending_operations {counts['pending']}",
            "# HELP essaim_index_failed_operations Sheet changes Typesense refused max_attempts times.",
            "# TYPE essaim_index_failed_operations gauge",
            f"essaim_index_failed_operations {counts['failed']}",
            "# HELP essaim_index_generation Index changes applied by this process (cache generation).",
            "# TYPE essaim_index_generation gauge",
            f"essaim_index_generation {self.service.generation if self.service else 0}",
            "# HELP essaim_search_counts_cache_hits_total Facet counts a search read from the counts cache.",
            "# TYPE essaim_search_counts_cache_hits_total counter",
            f"essaim_search_counts_cache_hits_total {self.service.counts_hits if self.service else 0}",
            "# HELP essaim_search_counts_cache_misses_total Facet counts a search had Typesense count.",
            "# TYPE essaim_search_counts_cache_misses_total counter",
            f"essaim_search_counts_cache_misses_total {self.service.counts_misses if self.service else 0}",
        ]
        if documents is not None:
            lines += [
                "# HELP essaim_index_documents Documents in the live search collection.",
                "# TYPE essaim_index_documents gauge",
                f"essaim_index_documents {documents}",
            ]
        if self.server is not None:
            lines += [
                "# HELP essaim_index_server_restarts Times the embedded Typesense was restarted.",
                "# TYPE essaim_index_server_restarts counter",
                f"essaim_index_server_restarts {self.server.restarts}",
            ]
        return lines


SEARCH_RUNTIME = web.AppKey("search_runtime", SearchRuntime)


def search_context(config: SearchConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    """The hub app's ``cleanup_ctx``: append it after the one that opens the database."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        node = app[NODE]
        runtime = SearchRuntime(config, node.db, count=node.count)
        await runtime.start()
        assert runtime.service is not None
        app[SEARCH_RUNTIME] = runtime
        app[SEARCH] = runtime.service
        node.metrics.append(runtime.metrics_lines)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                node.metrics.remove(runtime.metrics_lines)
            await runtime.stop()

    return ctx


def default_data_dir(hub_data_dir: str | Path) -> str:
    return str(Path(hub_data_dir) / "typesense")
