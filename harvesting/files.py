"""CSV and JSON files published at a URL, harvested through the node importer's mappings.

A ``file`` source names a URL and an import mapping (a built-in name such as
``generic-csv``, or the path of a mapping TOML, see ``node/mapping.py``). Each run:

1. fetches the file through the hardened outbound client, conditionally (``If-None-Match``
   / ``If-Modified-Since`` from the last complete run); a ``304`` or a body with the same
   SHA-256 ends the run at once, without a write;
2. reads the rows with :class:`node.importer.Importer` (the same column matching, splits,
   value maps and validation as ``essaim import``), and writes the sheets in batches through
   the hub's write path (:func:`harvesting.ingest.write_batch`: normalisation, change
   listeners, duplicate clusters);
3. turns the sheets that left the file into tombstones -- only when every row was read
   without error: a row that fails validation must not make its sheet disappear.

A rejected row is a ``harvest.record_rejected`` log event and counts as rejected; a file
that cannot be fetched or parsed at all is a failed run, the stored sheets untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harvesting.harvester import HarvestStats
from harvesting.ingest import write_batch
from harvesting.normalise import Normaliser, rules_of
from node.db import Database
from node.importer import Importer, ImportReport
from node.mapping import MappingError, load_mapping
from node.outbound import OutboundClient, OutboundError
from node.storage import SheetStore
from protocol.sheet import LICENCE_OUVERTE_2, Partner, Sheet

logger = logging.getLogger("essaim.harvest")

BATCH = 500
Progress = Callable[[str, int, int | None], None]  # source key, records just done, total if known
MAX_FILE_BYTES = 200 * 1024 * 1024


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a file source's config (``mapping`` required); raises ``ValueError`` for the operator."""
    mapping = str(config.get("mapping") or "")
    if not mapping:
        raise ValueError("a file source needs an import mapping (--mapping NAME or PATH)")
    try:
        loaded = load_mapping(mapping)
    except MappingError as exc:
        raise ValueError(str(exc)) from None
    if loaded.format == "native":
        pass  # native JSON lines (the node's export) need no column mapping
    out = {"mapping": mapping}
    for key in ("partner", "licence"):
        if config.get(key):
            out[key] = str(config[key])
    return out


class FileHarvester:
    """Harvests one ``file`` source (a row of ``harvest_source``) into the hub's database."""

    def __init__(
        self,
        db: Database,
        client: OutboundClient,
        *,
        hub_base_url: str,
        max_bytes: int = MAX_FILE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.client = client
        self.hub_base_url = hub_base_url
        self.max_bytes = max_bytes
        self.clock = clock
        self._progress: Progress | None = None

    async def harvest(self, row: Mapping[str, Any], on_progress: Progress | None = None) -> HarvestStats:
        key = str(row["key"])
        stats = HarvestStats(source=key)
        started = time.monotonic()
        self._progress = on_progress
        try:
            await self._run(row, stats)
        except (OutboundError, ValueError) as exc:
            stats.errors.append(f"file: {exc}"[:2000])
            logger.warning(
                "harvest.page_rejected",
                extra={"event": "harvest.page_rejected", "source": key, "url": row["base_url"], "error": str(exc)},
            )
        stats.duration = time.monotonic() - started
        return stats

    async def _run(self, row: Mapping[str, Any], stats: HarvestStats) -> None:
        key, url = str(row["key"]), str(row["base_url"])
        config = json.loads(row["config"] or "{}")
        mapping = load_mapping(str(config["mapping"]))
        previous = json.loads(row.get("fetch_state") or "{}")
        headers = {}
        if previous.get("etag"):
            headers["If-None-Match"] = previous["etag"]
        if previous.get("last_modified"):
            headers["If-Modified-Since"] = previous["last_modified"]
        response = await self.client.get(url, headers=headers, max_bytes=self.max_bytes, raise_for_status=False)
        stats.pages = 1
        if response.status == 304:
            stats.complete = True
            return
        response.raise_for_status()
        digest = hashlib.sha256(response.body).hexdigest()
        if digest == previous.get("sha256"):
            stats.complete = True
            return
        store = SheetStore(self.db, base_url=self.hub_base_url, source=key, hub=True, clock=self.clock)
        importer = Importer(
            store,
            mapping,
            partner=Partner(name=config.get("partner") or str(row["name"] or key)),
            licence=config.get("licence") or LICENCE_OUVERTE_2,
        )
        normaliser = Normaliser(await rules_of(self.db, key))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ("data.csv" if mapping.format == "csv" else "data.json")
            path.write_bytes(response.body)
            origin = {
                "baseURL": url,
                "metadataNamespace": f"urn:essaim:import-mapping:{mapping.name}",
                "kind": "file",
                "mapping": mapping.name,
            }
            seen, report = await read_into(
                store, importer, normaliser, path, stats, where=url, origin=origin, on_progress=self._progress
            )
        stats.rejected = report.error_count
        if report.rows == 0 and report.error_count:
            raise ValueError(f"no row could be read: {report.errors[0] if report.errors else 'unreadable'}")
        if report.error_count:
            # Tombstones only from a clean read; the run is incomplete so the next one tries again.
            stats.errors.append(f"{report.error_count} row(s) rejected, sheets missing from the file kept for now")
            return
        async with self.db.transaction() as tx:
            gone = sorted((await store.local_ids(conn=tx)) - seen)
            counts = await write_batch(store, normaliser, [], gone, tx=tx, origin=origin)
            await self.db.execute(
                "UPDATE harvest_source SET fetch_state = ? WHERE id = ?",
                [
                    json.dumps(
                        {
                            "etag": response.headers.get("ETag"),
                            "last_modified": response.headers.get("Last-Modified"),
                            "sha256": digest,
                        }
                    ),
                    row["id"],
                ],
                conn=tx,
            )
        stats.deleted += counts.deleted
        stats.complete = True


async def read_into(
    store: SheetStore,
    importer: Importer,
    normaliser: Normaliser,
    path: Path,
    stats: HarvestStats,
    *,
    where: str,
    line_names: Callable[[int], str] | None = None,
    origin: Mapping[str, Any] | None = None,
    on_progress: Progress | None = None,
) -> tuple[set[str], ImportReport]:
    """Read ``path`` with ``importer`` and write its sheets in batches; returns the local ids read and
    the report (its errors are logged as ``harvest.record_rejected``)."""
    report = ImportReport(file=where, mapping=importer.mapping.name)
    seen: set[str] = set()
    batch: list[Sheet] = []
    logged = 0

    def log_rejections() -> int:
        for error in report.errors[logged:]:
            logger.warning(
                "harvest.record_rejected",
                extra={
                    "event": "harvest.record_rejected",
                    "source": store.source,
                    "url": line_names(error.line) if line_names else where,
                    "identifier": f"line {error.line}",
                    "reason": str(error),
                },
            )
        return len(report.errors)

    async def flush() -> None:
        if not batch:
            return
        async with store.db.transaction() as tx:
            counts = await write_batch(store, normaliser, batch, [], tx=tx, origin=origin)
        stats.added += counts.created
        stats.updated += counts.updated
        stats.unchanged += counts.unchanged
        stats.places_resolved += counts.places_resolved
        stats.unmapped_tags += counts.unmapped
        if on_progress is not None:
            on_progress(store.source, len(batch), None)
        batch.clear()

    for sheet in importer.read(path, report):
        seen.add(sheet.local_id)
        batch.append(sheet)
        if len(batch) >= BATCH:
            await flush()
        logged = log_rejections()
    await flush()
    log_rejections()
    return seen, report
