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
from collections.abc import Sequence
from dataclasses import dataclass, field

from tortoise.backends.base.client import BaseDBAsyncClient

from harvesting import duplicates
from harvesting.normalise import Normaliser, record_unmapped
from node.storage import SheetStore
from protocol.sheet import Sheet
from protocol.taxonomy import fold


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
) -> BatchCounts:
    """Normalise and store ``sheets``, turn ``deletions`` (local ids) into tombstones, in ``tx``."""
    counts = BatchCounts()
    normalised = [normaliser.sheet(s) for s in sheets]
    unmapped_of = {n.sheet.local_id: n.unmapped for n in normalised}
    counts.places_resolved = sum(n.places_resolved for n in normalised)
    changed: list[tuple[str, Sheet | None]] = []
    by_id = {n.sheet.local_id: n.sheet for n in normalised}
    seen: dict[str, tuple[str, int, str]] = {}
    for result in await store.upsert_many([n.sheet for n in normalised], tx=tx):
        setattr(counts, result.status, getattr(counts, result.status) + 1)
        counts.statuses[result.local_id] = result.status
        if result.status in ("created", "updated"):
            changed.append((result.uri, by_id[result.local_id]))
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
