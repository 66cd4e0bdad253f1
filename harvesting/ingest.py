"""The hub's write path for one batch of harvested records, whatever the source kind.

A batch (an OAI-PMH page, a file, a group of crawled pages) is normalised
(:mod:`harvesting.normalise`), written through :class:`node.storage.SheetStore`
(unchanged sheets are not rewritten; the change listeners -- search index queue,
outbox -- run in the same transaction), its unmapped tags queued, and the duplicate
clusters of the changed sheets recomputed (:mod:`harvesting.duplicates`), all in the
caller's transaction.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tortoise.backends.base.client import BaseDBAsyncClient

from harvesting import duplicates
from harvesting.duplicates import MatchKey
from harvesting.normalise import Normaliser, record_unmapped
from node.storage import Provenances, SheetStore, WriteResult
from protocol.sheet import Sheet
from protocol.taxonomy import fold

if TYPE_CHECKING:
    from harvesting.pipeline import LiveRecord


@dataclass
class BatchCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    missing: int = 0
    places_resolved: int = 0
    unmapped: int = 0
    cluster_moves: int = 0
    statuses: dict[str, str] = field(default_factory=dict)  # local id → write status


async def write_batch(
    store: SheetStore,
    normaliser: Normaliser,
    sheets: Sequence[Sheet],
    deletions: Sequence[str],
    *,
    tx: BaseDBAsyncClient,
    origin: Mapping[str, Any] | None = None,
    provenance: Provenances | None = None,
) -> BatchCounts:
    """Normalise and store ``sheets``, turn ``deletions`` (local ids) into tombstones, in ``tx``.

    ``origin`` (``{"baseURL": …, "metadataNamespace": …, **extra}``) asks for the provenance of the written sheets to be
    recorded here (file and crawl sources; the OAI-PMH harvester writes its own): original
    identifier and URL, first and last seen. Unchanged sheets keep theirs untouched.
    ``provenance`` (local id → provenance, computed by the caller) is stored with the sheets this
    writes instead; the caller stores the others'.
    """
    normalised = [normaliser.sheet(s) for s in sheets]
    by_id = {n.sheet.local_id: n.sheet for n in normalised}
    results = await store.upsert_many([n.sheet for n in normalised], tx=tx, provenance=provenance)
    counts = await _after_upsert(
        store,
        results,
        {n.sheet.local_id: n.unmapped for n in normalised},
        by_id,
        deletions,
        tx=tx,
    )
    counts.places_resolved = sum(n.places_resolved for n in normalised)
    if origin is not None:
        await _provenance(store, origin, counts.statuses, by_id, tx)
    return counts


async def write_prepared(
    store: SheetStore,
    records: Sequence[LiveRecord],
    deletions: Sequence[str],
    *,
    tx: BaseDBAsyncClient,
    stamp: int,
    provenance: Provenances | None = None,
) -> BatchCounts:
    """:func:`write_batch` of records a worker process decoded, normalised and prepared at ``stamp``
    (:mod:`harvesting.pipeline`); the same rows come out.

    ``provenance`` (local id → provenance) is stored with the sheets this writes
    (:meth:`node.storage.SheetStore.upsert_prepared`); the caller stores the others'."""
    results = await store.upsert_prepared([r.prepared for r in records], tx=tx, stamp=stamp, provenance=provenance)
    counts = await _after_upsert(
        store,
        results,
        {r.identifier: r.unmapped for r in records},
        {r.identifier: r.match for r in records},
        deletions,
        tx=tx,
    )
    counts.places_resolved = sum(r.places_resolved for r in records)
    return counts


async def _after_upsert(
    store: SheetStore,
    results: Sequence[WriteResult],
    unmapped_of: Mapping[str, Sequence[str]],
    keys: Mapping[str, Sheet | MatchKey | None],
    deletions: Sequence[str],
    *,
    tx: BaseDBAsyncClient,
) -> BatchCounts:
    """Count the writes, delete, queue the unmapped tags of changed sheets, re-cluster duplicates."""
    counts = BatchCounts()
    changed: list[tuple[str, Sheet | MatchKey | None]] = []
    seen: dict[str, tuple[str, int, str]] = {}
    for result in results:
        setattr(counts, result.status, getattr(counts, result.status) + 1)
        counts.statuses[result.local_id] = result.status
        if result.status in ("created", "updated"):
            changed.append((result.uri, keys[result.local_id]))
            for tag in unmapped_of.get(result.local_id, ()):
                key = fold(tag)
                spelling, n, _ = seen.get(key, (tag, 0, ""))
                seen[key] = (spelling, n + 1, result.uri)
    for result in await store.delete_many(list(deletions), tx=tx):
        setattr(counts, result.status, getattr(counts, result.status) + 1)
        counts.statuses[result.local_id] = result.status
        if result.status == "deleted":
            changed.append((result.uri, None))
    if seen:
        await record_unmapped(store.db, store.source, seen, now=int(time.time()), tx=tx)
        counts.unmapped = sum(n for _, n, _ in seen.values())
    counts.cluster_moves = await duplicates.update(store.db, store.source, changed, tx=tx)
    return counts


async def _provenance(
    store: SheetStore,
    origin: Mapping[str, Any],
    statuses: Mapping[str, str],
    sheets: Mapping[str, Sheet],
    tx: BaseDBAsyncClient,
) -> None:
    moved = [k for k, status in statuses.items() if status in ("created", "updated", "deleted")]
    if not moved:
        return
    now = datetime.fromtimestamp(int(store.now()), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = await store.provenance_of(moved, conn=tx)
    out: dict[str, dict[str, Any]] = {}
    for local_id in moved:
        old = before.get(local_id, {})
        sheet = sheets.get(local_id)
        out[local_id] = {
            **origin,
            "identifier": local_id,
            # The OAI provenance container (re-exposed by the hub's own OAI-PMH) needs a datestamp:
            # rows and pages have none of their own, the version is the one seen at this harvest.
            "datestamp": now,
            "originalURL": (sheet.url if sheet is not None else old.get("originalURL")) or None,
            "harvestDate": now,
            "firstSeen": old.get("firstSeen", now),
            "lastSeen": now,
            "deleted": sheet is None,
            "altered": True,  # mapped from rows or pages into the sheet
        }
    await store.set_provenance(out, tx=tx)
