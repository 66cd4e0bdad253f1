"""ListRecords harvesting of one source into the hub's sheet store, resumable page by page.

Each page is committed in one transaction: its sheets and tombstones (through
:class:`node.storage.SheetStore`, so unchanged sheets are not rewritten and the
change listeners run), their provenance, and the checkpoint naming the
resumption token of the next page (table ``harvest_state``). A crash, a timeout
or a broken page leaves every committed page intact and the checkpoint on the
next page to fetch; the next run resumes there. The ``from`` of an incremental
run is the responseDate of the first page of the last complete run
(ARCHITECTURE §2.9), not the largest datestamp seen: datestamps are the
provider's clock, and records changed during a run carry datestamps earlier
than its end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from harvesting.ingest import write_batch, write_prepared
from harvesting.normalise import Normaliser, rules_of
from harvesting.pipeline import DecodedPage, HarvestPipeline, LiveRecord, PageJob
from harvesting.records import NAMESPACES, Deleted, Harvested, Rejected, decode_record
from harvesting.transport import BadResumptionToken, HarvestError, ListPage, OaiTransport, PageReader, RawPage
from node.db import Database
from node.storage import SheetStore

logger = logging.getLogger("essaim.harvest")


class ResumptionLoop(HarvestError):
    """The provider handed out a resumption token it had already given in this run."""

    reason = "token-loop"


class TooManyPages(HarvestError):
    reason = "too-many-pages"


class HarvestConflict(HarvestError):
    """Another harvester moved the checkpoint of this source meanwhile: this page is not committed."""

    reason = "conflict"


@dataclass(frozen=True, slots=True)
class Source:
    """One harvested endpoint. ``key`` is the ``source`` column of the hub's sheets (≤ 128 characters)."""

    key: str
    base_url: str
    prefix: str = "essaim"
    set_spec: str | None = None
    name: str = ""  # partner name for oai_dc records without a publisher
    granularity: str = "seconds"  # the provider's Identify granularity: "seconds" or "day"


@dataclass(frozen=True, slots=True)
class HarvestConfig:
    max_pages: int = 1_000_000  # per run: a provider minting fresh tokens forever is stopped here


@dataclass
class HarvestStats:
    source: str
    pages: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    places_resolved: int = 0  # places the gazetteer completed
    unmapped_tags: int = 0  # tag occurrences queued for the operator's crosswalk
    errors: list[str] = field(default_factory=list)
    duration: float = 0.0
    complete: bool = False  # the run reached the last page
    resumed: bool = False  # the run continued from a checkpoint
    incremental_from: str | None = None
    failure: HarvestError | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.complete and not self.errors


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Harvester:
    """Harvests sources into ``db`` (the hub's database); one instance may serve many sources in turn."""

    def __init__(
        self,
        db: Database,
        transport: OaiTransport,
        *,
        hub_base_url: str,
        config: HarvestConfig | None = None,
        clock: Callable[[], float] = time.time,
        pipeline: HarvestPipeline | None = None,
    ) -> None:
        """``pipeline``: worker processes decoding the pages (None: decoded in this process)."""
        self.db = db
        self.transport = transport
        self.hub_base_url = hub_base_url
        self.config = config or HarvestConfig()
        self.clock = clock
        self.pipeline = pipeline
        self._normaliser = Normaliser()
        self._rules: dict[str, tuple[str, ...]] = {}
        self._rules_key = 0

    def store(self, source: Source) -> SheetStore:
        return SheetStore(self.db, base_url=self.hub_base_url, source=source.key, hub=True, clock=self.clock)

    # ------------------------------------------------------------------ state

    async def state(self, source: Source) -> dict[str, Any]:
        """The checkpoint row of the source (created empty on first use)."""
        key = [source.key, source.set_spec or "", source.prefix]
        await self.db.execute(
            "INSERT INTO harvest_state (source, set_spec, prefix, base_url, run_pages, generation, updated)"
            " VALUES (?, ?, ?, ?, 0, 0, ?) ON CONFLICT (source, set_spec, prefix) DO NOTHING",
            [*key, source.base_url, int(self.clock())],
        )
        row = await self.db.fetchone(
            "SELECT * FROM harvest_state WHERE source = ? AND set_spec = ? AND prefix = ?", key
        )
        assert row is not None
        if row["base_url"] != source.base_url:
            # A token is only meaningful to the endpoint that minted it.
            await self.db.execute(
                "UPDATE harvest_state SET base_url = ?, token = NULL, run_started = NULL, run_pages = 0,"
                " next_from = NULL, generation = generation + 1 WHERE id = ?",
                [source.base_url, row["id"]],
            )
            return await self.state(source)
        return row

    async def _checkpoint(
        self, tx: BaseDBAsyncClient, state: dict[str, Any], token: str | None, run_started: str, pages: int
    ) -> None:
        now = int(self.clock())
        if token is None:  # the run is complete: its start is the next run's 'from'
            sql = (
                "UPDATE harvest_state SET token = NULL, run_started = NULL, run_pages = 0, next_from = ?,"
                " last_complete = ?, last_error = NULL, last_error_at = NULL, generation = generation + 1,"
                " updated = ? WHERE id = ? AND generation = ?"
            )
            params: list[Any] = [run_started, now, now, state["id"], state["generation"]]
        else:
            sql = (
                "UPDATE harvest_state SET token = ?, run_started = ?, run_pages = ?, generation = generation + 1,"
                " updated = ? WHERE id = ? AND generation = ?"
            )
            params = [token, run_started, pages, now, state["id"], state["generation"]]
        if await self.db.execute(sql, params, conn=tx) != 1:
            raise HarvestConflict(f"the checkpoint of {state['source']!r} was moved by another harvester")
        state["generation"] = int(state["generation"]) + 1

    async def _record_failure(self, state: dict[str, Any], error: HarvestError, *, reset: bool) -> None:
        reset_sql = ", token = NULL, run_started = NULL, run_pages = 0" if reset else ""
        await self.db.execute(
            f"UPDATE harvest_state SET last_error = ?, last_error_at = ?, generation = generation + 1{reset_sql}"
            " WHERE id = ?",
            [f"{error.reason}: {error}"[:2000], int(self.clock()), state["id"]],
        )

    # ------------------------------------------------------------------ run

    async def harvest(self, source: Source) -> HarvestStats:
        """One run: resume the checkpointed run if any, else start an incremental one; never raises a
        :class:`HarvestError` (it ends the run and is in ``stats.errors`` / ``stats.failure``)."""
        started = time.monotonic()
        stats = HarvestStats(source=source.key)
        state = await self.state(source)
        # The crosswalk is read once per run: a rule edited meanwhile applies from the next (full) run.
        self._rules = await rules_of(self.db, source.key)
        if self.pipeline is not None:
            self._rules_key = self.pipeline.rules_key(source.key, self._rules)
        else:
            self._normaliser = Normaliser(self._rules)
        try:
            await self._run(source, state, stats)
        except HarvestError as error:
            stats.errors.append(f"{error.reason}: {error}")
            stats.failure = error
            logger.warning(
                "harvest.page_rejected",
                extra={
                    "event": "harvest.page_rejected",
                    "source": source.key,
                    "url": error.url,
                    "reason": error.reason,
                    "error": str(error),
                    "pages_committed": stats.pages,
                },
            )
            await self._record_failure(state, error, reset=isinstance(error, ResumptionLoop | TooManyPages))
        stats.duration = time.monotonic() - started
        logger.info(
            "harvest.run",
            extra={
                "event": "harvest.run",
                "source": source.key,
                "pages": stats.pages,
                "added": stats.added,
                "updated": stats.updated,
                "unchanged": stats.unchanged,
                "deleted": stats.deleted,
                "rejected": stats.rejected,
                "complete": stats.complete,
                "errors": len(stats.errors),
                "duration": round(stats.duration, 3),
            },
        )
        return stats

    def _fresh_arguments(self, source: Source, state: dict[str, Any]) -> dict[str, str]:
        arguments = {"metadataPrefix": source.prefix}
        if source.set_spec:
            arguments["set"] = source.set_spec
        next_from = state.get("next_from")
        if next_from:
            arguments["from"] = next_from[:10] if source.granularity == "day" else next_from
        return arguments

    async def _run(self, source: Source, state: dict[str, Any], stats: HarvestStats) -> None:
        token: str | None = state.get("token")
        run_started: str | None = state.get("run_started") if token else None
        pages = int(state.get("run_pages") or 0) if token else 0
        stats.resumed = token is not None
        arguments = {"resumptionToken": token} if token else self._fresh_arguments(source, state)
        stats.incremental_from = state.get("next_from")
        seen: set[str] = {token} if token else set()
        reader = self._worker_reader(source) if self.pipeline is not None else None
        page = await self._first_page(source, state, stats, arguments, reader)
        if token is not None and not stats.resumed:  # the checkpointed token expired: a fresh run
            run_started, pages, seen = None, 0, set()
        # The next page is fetched (and decoded by a worker) while this one is written: the
        # checkpoint still moves only once a page is committed, so a crash resumes as before.
        ahead: asyncio.Task[ListPage] | None = None
        try:
            while True:
                if run_started is None:
                    run_started = page.response_date_text
                if page.token is not None and page.token in seen:
                    raise ResumptionLoop(
                        f"resumptionToken {page.token[:80]!r} was already used in this run", url=page.url
                    )
                if pages + 1 > self.config.max_pages:
                    raise TooManyPages(f"more than {self.config.max_pages} pages in one run", url=page.url)
                if page.token is not None:
                    ahead = asyncio.ensure_future(
                        self.transport.list_records(source.base_url, {"resumptionToken": page.token}, reader=reader)
                    )
                await self._commit_page(source, state, page, run_started, pages + 1, stats)
                pages += 1
                if page.token is None:
                    stats.complete = True
                    return
                seen.add(page.token)
                assert ahead is not None
                page, ahead = await ahead, None
        finally:
            if ahead is not None:  # the page being written failed: the next one is not wanted
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    async def _first_page(
        self,
        source: Source,
        state: dict[str, Any],
        stats: HarvestStats,
        arguments: dict[str, str],
        reader: PageReader | None,
    ) -> ListPage:
        try:
            return await self.transport.list_records(source.base_url, arguments, reader=reader)
        except BadResumptionToken as error:
            if not stats.resumed:
                raise
            # The checkpointed token expired while we were away: start the run again. Pages
            # already stored come back unchanged and are not rewritten.
            logger.warning(
                "harvest.checkpoint_expired",
                extra={"event": "harvest.checkpoint_expired", "source": source.key, "url": error.url},
            )
            stats.resumed = False
            return await self.transport.list_records(
                source.base_url, self._fresh_arguments(source, state), reader=reader
            )

    def _worker_reader(self, source: Source) -> PageReader:
        """Pages parsed and decoded by the worker processes, prepared for writes at the time they are read."""
        pipeline = self.pipeline
        assert pipeline is not None
        store = self.store(source)
        job = PageJob(source.key, source.prefix, source.name or source.key, self._rules_key, self._rules, 0)

        async def read(raw: RawPage) -> ListPage:
            decoded = await pipeline.decode(raw, replace(job, stamp=store.now()))
            assert decoded.page is not None
            return replace(decoded.page, decoded=decoded)

        return read

    async def _commit_page(
        self, source: Source, state: dict[str, Any], page: ListPage, run_started: str, pages: int, stats: HarvestStats
    ) -> None:
        store = self.store(source)
        live: Sequence[Harvested | LiveRecord]
        decoded: DecodedPage | None = page.decoded
        if decoded is not None:
            live, gone, rejections = decoded.live, decoded.gone, decoded.rejected
        else:
            live, gone, rejections = self._decode(source, page)
        for rejection in rejections:
            logger.warning(
                "harvest.record_rejected",
                extra={
                    "event": "harvest.record_rejected",
                    "source": source.key,
                    "identifier": rejection.identifier,
                    "reason": rejection.reason,
                    "url": page.url,
                },
            )
        async with self.db.transaction() as tx:
            before = await store.provenance_of([*(d.identifier for d in live), *(d.identifier for d in gone)], conn=tx)
            provenance = self._provenance(source, live, gone, before)
            deletions = [d.identifier for d in gone]
            if decoded is not None:
                counts = await write_prepared(
                    store, decoded.live, deletions, tx=tx, stamp=decoded.stamp, provenance=provenance
                )
            else:
                sheets = [d.sheet for d in live if isinstance(d, Harvested)]
                counts = await write_batch(store, self._normaliser, sheets, deletions, tx=tx, provenance=provenance)
            # Sheets written carry theirs already; tombstones and unchanged content with a new datestamp:
            written = ("created", "updated")
            await store.set_provenance(
                {k: p for k, p in provenance.items() if counts.statuses.get(k) not in written}, tx=tx
            )
            await self._checkpoint(tx, state, page.token, run_started, pages)
        # Counted once the page is committed: a rolled-back page added nothing.
        stats.pages += 1
        stats.added += counts.created
        stats.updated += counts.updated
        stats.unchanged += counts.unchanged + counts.missing
        stats.deleted += counts.deleted
        stats.rejected += len(rejections)
        stats.places_resolved += counts.places_resolved
        stats.unmapped_tags += counts.unmapped

    @staticmethod
    def _decode(source: Source, page: ListPage) -> tuple[list[Harvested], list[Deleted], list[Rejected]]:
        """The page's records in its order (a record listed twice in a page: the last one counts)."""
        latest: dict[str, Harvested | Deleted] = {}
        rejections: list[Rejected] = []
        for element in page.records:
            decoded = decode_record(element, source.prefix, partner_name=source.name or source.key)
            if isinstance(decoded, Rejected):
                rejections.append(decoded)
                continue
            latest.pop(decoded.identifier, None)
            latest[decoded.identifier] = decoded
        live = [d for d in latest.values() if isinstance(d, Harvested)]
        gone = [d for d in latest.values() if isinstance(d, Deleted)]
        return live, gone, rejections

    def _provenance(
        self,
        source: Source,
        live: Sequence[Harvested | LiveRecord],
        gone: Sequence[Deleted],
        before: dict[str, dict[str, Any]],
    ) -> dict[str, dict[str, Any]]:
        """Provenance (OAI provenance guidelines, plus first/last seen) of the records whose datestamp moved.

        A record sent again with the datestamp already stored writes nothing: a re-harvest without
        change leaves the database as it was. ``lastSeen`` is thus the last harvest that received a new
        version; when the source was last harvested completely is ``harvest_state.last_complete``.
        """
        now = _iso(self.clock())
        namespace = NAMESPACES.get(source.prefix, "")
        out: dict[str, dict[str, Any]] = {}
        records: list[Harvested | LiveRecord | Deleted] = [*live, *gone]
        for record in records:
            old = before.get(record.identifier)
            deleted = isinstance(record, Deleted)
            if old is not None and old.get("datestamp") == record.datestamp and bool(old.get("deleted")) == deleted:
                continue
            data: dict[str, Any] = {
                "baseURL": source.base_url,
                "identifier": record.identifier,
                "datestamp": record.datestamp,
                "metadataNamespace": namespace,
                "harvestDate": now,
                "altered": source.prefix != "essaim",  # oai_dc is mapped, the native format is kept whole
                "firstSeen": (old or {}).get("firstSeen", now),
                "lastSeen": now,
                "deleted": deleted,
            }
            if not isinstance(record, Deleted) and record.url:
                data["originalURL"] = record.url  # the project's page on the partner's site
            elif old and old.get("originalURL"):
                data["originalURL"] = old["originalURL"]
            if not isinstance(record, Deleted) and record.original_id:
                data["sheetId"] = record.original_id
            elif old and old.get("sheetId"):
                data["sheetId"] = old["sheetId"]
            out[record.identifier] = data
        return out
