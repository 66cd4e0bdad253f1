"""Index maintenance: the live collection behind the alias, full reindex, reconciliation.

A reindex never touches the live collection: it creates a new versioned collection,
names it in ``index_state`` (so the queue worker writes every change to it as well),
fills it from the database, queues again every sheet changed since it started (a
change read by the build before it committed would otherwise stay stale in the new
collection), swaps the alias (atomic in Typesense: searches never fail), and drops
the old collection after a grace period for the searches already running on it.

Reconciliation compares the ids and datestamps of the database's live sheets with
the index's documents, queues the missing and stale sheets, and deletes the
documents of sheets that are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.db import Database
from search.client import SearchClient
from search.errors import NotFound
from search.indexer import (
    BUILDING_KEY,
    ClusterLookup,
    build_and_encode,
    enqueue_sheets,
    lookup_clusters,
    set_state,
)
from search.schema import ALIAS, SCHEMA_VERSION, collection_name, collection_schema, document_id
from search.synonyms import install_synonyms

log = logging.getLogger("essaim.search.maintenance")
_VERSIONED = re.compile(r"^sheets_v(\d+)_")
CATCH_UP_MARGIN = 3600  # seconds before the build's start whose changes are queued again


def schema_version_of(collection: str) -> int | None:
    found = _VERSIONED.match(collection)
    return int(found.group(1)) if found else None


async def new_collection(client: SearchClient) -> str:
    """A fresh, empty versioned collection with the synonyms installed."""
    name = collection_name()
    existing = {c["name"] for c in await client.list_collections()}
    suffix = 1
    while name in existing:  # two reindexes within one second
        name = f"{collection_name()}_{suffix}"
        suffix += 1
    await client.create_collection(collection_schema(name))
    await install_synonyms(client, name)
    return name


async def ensure_collection(client: SearchClient, db: Database, alias: str = ALIAS) -> dict[str, Any]:
    """Make sure ``alias`` names a collection; a new one is filled through the queue.

    Returns ``{"collection", "created", "queued", "outdated"}``; ``outdated`` means the
    live collection has an older schema version (run ``essaim hub reindex``).
    """
    current = await client.get_alias(alias)
    if current is not None:
        try:
            await client.get_collection(current)
        except NotFound:
            current = None
    if current is not None:
        version = schema_version_of(current)
        return {"collection": current, "created": False, "queued": 0, "outdated": version != SCHEMA_VERSION}
    name = await new_collection(client)
    await client.upsert_alias(alias, name)
    # An empty index in front of a database that has sheets (a new Typesense, a lost data
    # directory): every sheet goes through the queue, the hub serves while it fills.
    queued = await enqueue_sheets(db)
    log.info("index.created", extra={"event": "index.created", "collection": name, "queued": queued})
    return {"collection": name, "created": True, "queued": queued, "outdated": False}


async def live_count(db: Database) -> int:
    row = await db.fetchone("SELECT COUNT(*) AS n FROM sheet WHERE deleted = ?", [False])
    return int(row["n"]) if row else 0


@dataclass
class ReindexReport:
    collection: str
    previous: str | None
    documents: int = 0
    refused: list[str] = field(default_factory=list)
    requeued: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "previous": self.previous,
            "documents": self.documents,
            "refused": self.refused[:20],
            "refused_count": len(self.refused),
            "requeued": self.requeued,
            "seconds": round(self.seconds, 2),
        }


async def reindex(
    db: Database,
    client: SearchClient,
    *,
    alias: str = ALIAS,
    batch: int = 1000,
    clusters: ClusterLookup | None = None,
    drop_grace: float = 5.0,
    progress: Callable[[int], None] | None = None,
) -> ReindexReport:
    """Build a new collection from the database and swap ``alias`` to it (no downtime)."""
    started = time.monotonic()
    since = int(time.time()) - CATCH_UP_MARGIN
    name = await new_collection(client)
    report = ReindexReport(collection=name, previous=await client.get_alias(alias))
    await set_state(db, BUILDING_KEY, name)
    log.info("index.reindex_started", extra={"event": "index.reindex_started", "collection": name})
    swapped = False

    async def send(docs: list[dict[str, Any]], lines: list[str]) -> None:
        result = await client.import_documents(
            name, docs, "upsert", batch_size=len(docs), raise_on_failure=False, lines=lines
        )
        report.documents += result.imported
        report.refused += [f.id or f"#{f.index}" for f in result.failures]
        if progress is not None:
            progress(report.documents)

    # A pipeline of two: the next batch is read and built (in a thread) while the previous
    # one is imported. Batches hold distinct sheets, so their order does not matter.
    inflight: asyncio.Task[None] | None = None
    try:
        last = 0
        while True:
            rows = await db.fetch(
                "SELECT pk_id, uri, deleted, data FROM sheet WHERE pk_id > ? AND deleted = ? ORDER BY pk_id LIMIT ?",
                [last, False, batch],
            )
            if not rows:
                break
            last = int(rows[-1]["pk_id"])
            lookup = await lookup_clusters(clusters, db, [str(r["uri"]) for r in rows])
            docs, _, broken, lines = await asyncio.to_thread(build_and_encode, rows, lookup)
            report.refused += list(broken)
            if inflight is not None:
                task, inflight = inflight, None
                await task
            inflight = asyncio.create_task(send(docs, lines))
        if inflight is not None:
            task, inflight = inflight, None
            await task
        report.requeued = await enqueue_sheets(db, since=since)
        await client.upsert_alias(alias, name)
        swapped = True
    finally:
        if inflight is not None:  # the build failed: the import under way is of no use
            inflight.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await inflight
        await set_state(db, BUILDING_KEY, None)
        if not swapped:
            with contextlib.suppress(Exception):
                await client.drop_collection(name)
    if report.previous and report.previous != name:
        await asyncio.sleep(drop_grace)  # searches resolved to the old collection finish first
        await client.drop_collection(report.previous)
    report.seconds = time.monotonic() - started
    log.info("index.reindexed", extra={"event": "index.reindexed", **report.as_dict()})
    return report


async def reconcile(db: Database, client: SearchClient, *, alias: str = ALIAS, repair: bool = True) -> dict[str, Any]:
    """Compare database and index by id and datestamp; with ``repair``, queue and delete what differs."""
    started = time.monotonic()
    expected: dict[str, tuple[int, int]] = {}  # document id -> (sheet pk, stamp)
    last = 0
    while True:
        rows = await db.fetch(
            "SELECT pk_id, uri, stamp FROM sheet WHERE pk_id > ? AND deleted = ? ORDER BY pk_id LIMIT 5000",
            [last, False],
        )
        if not rows:
            break
        last = int(rows[-1]["pk_id"])
        for r in rows:
            expected[document_id(str(r["uri"]))] = (int(r["pk_id"]), int(r["stamp"]))
    indexed = {str(d["id"]): int(d.get("datestamp", 0)) for d in await client.export_fields(alias, "id,datestamp")}
    missing = [pk for doc, (pk, _) in expected.items() if doc not in indexed]
    stale = [pk for doc, (pk, stamp) in expected.items() if doc in indexed and indexed[doc] != stamp]
    extra = [doc for doc in indexed if doc not in expected]
    queued = deleted = 0
    if repair:
        if missing or stale:
            queued = await enqueue_sheets(db, pks=missing + stale)
        if extra:
            deleted = await client.delete_documents(alias, extra)
    result = {
        "sheets": len(expected),
        "documents": len(indexed),
        "missing": len(missing),
        "stale": len(stale),
        "extra": len(extra),
        "queued": queued,
        "deleted": deleted,
        "seconds": round(time.monotonic() - started, 2),
    }
    log.info("index.reconciled", extra={"event": "index.reconciled", **result})
    return result
