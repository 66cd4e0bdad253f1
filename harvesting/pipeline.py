"""The harvest's CPU-bound work in worker processes, the database writes in the hub's process.

Per record, a harvest spends most of its time in pure Python: decoding the
record into a sheet (which validates every field), normalising it (crosswalk,
gazetteer), then what storage computes for a write (canonical dict, content hash,
set memberships, the stored JSON text; a hub stores no rendered OAI formats). With
``[hub] harvest_processes = N`` that work runs in ``N`` spawned worker processes,
one ListRecords page at a time, while the hub's process fetches pages and writes
them: the sources harvested at once (``[hub] workers``) keep the workers busy.

The hub's process fetches each page and checks the HTTP exchange (status, content
type), then hands the page's bytes to a worker, which parses them strictly
(:func:`harvesting.transport.read_list_page`: a page is well-formed OAI-PMH or the run
stops there, the worker's error raised in the hub's process) and returns the page's
envelope (resumption token, response date) and, per record, a :class:`LiveRecord`
(the write as a :class:`node.storage.Prepared`, the tags nothing maps, the duplicate
match key) or a tombstone or a rejection, in the page's order. Storage checks every
prepared write against the row it finds in the page's transaction (an unchanged
sheet is not written) and computes again the rare one that disagrees, so the
database ends up byte for byte as with the in-process path
(:meth:`harvesting.harvester.Harvester._commit_page`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

from harvesting.duplicates import MatchKey, match_key
from harvesting.normalise import Normaliser
from harvesting.records import Deleted, Harvested, Rejected, decode_record
from harvesting.transport import ListPage, RawPage, read_list_page
from node.storage import Prepared, SheetStore, prepare
from protocol.picklable import pickled_by_fields

# Normalisers a worker keeps (one per source and crosswalk version harvested recently).
_NORMALISERS = 64


@dataclass(frozen=True)
class HubSpec:
    """What every worker needs (plain, picklable values)."""

    hub_base_url: str


@dataclass(frozen=True)
class PageJob:
    """One page to decode: its body as fetched, and the source it belongs to."""

    source: str
    prefix: str
    partner_name: str
    rules_key: int  # identifies ``rules`` for the worker's cache of normalisers
    rules: dict[str, tuple[str, ...]]
    stamp: int  # the datestamp the page's sheets are prepared for


@pickled_by_fields  # ~100 per page sent back (see protocol.picklable)
@dataclass(frozen=True, slots=True)
class LiveRecord:
    identifier: str
    datestamp: str
    original_id: str | None  # the sheet URI on the source, when it has one
    url: str | None  # the project's page on the partner's site
    prepared: Prepared
    unmapped: tuple[str, ...]  # spellings of the tags nothing maps
    places_resolved: int
    match: MatchKey | None  # the duplicate-cluster key of the normalised sheet


@dataclass
class DecodedPage:
    """A page's records in the page's order, a record listed twice counting once (the last)."""

    live: list[LiveRecord] = field(default_factory=list)
    gone: list[Deleted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    size: int = 0  # records in the page, as listed
    stamp: int = 0  # the datestamp the live records were prepared for
    # The page's envelope (token, response date, list size), without its records.
    page: ListPage | None = None


# ------------------------------------------------------------------ worker side


@dataclass
class _Worker:
    spec: HubSpec
    stores: dict[str, SheetStore] = field(default_factory=dict)
    normalisers: OrderedDict[int, Normaliser] = field(default_factory=OrderedDict)

    def store(self, source: str) -> SheetStore:
        store = self.stores.get(source)
        if store is None:
            from node.db import Database

            # Used only to mint URIs (SheetStore.make_uri is pure): its database is never opened.
            store = SheetStore(Database("sqlite://:memory:"), base_url=self.spec.hub_base_url, source=source, hub=True)
            self.stores[source] = store
        return store

    def normaliser(self, job: PageJob) -> Normaliser:
        normaliser = self.normalisers.get(job.rules_key)
        if normaliser is None:
            normaliser = self.normalisers[job.rules_key] = Normaliser(job.rules)
            while len(self.normalisers) > _NORMALISERS:
                self.normalisers.popitem(last=False)
        else:
            self.normalisers.move_to_end(job.rules_key)
        return normaliser


_worker: _Worker | None = None


def _init(spec_bytes: bytes) -> None:
    global _worker
    spec: HubSpec = pickle.loads(spec_bytes)  # noqa: S301 -- pickled by our own parent process
    _worker = _Worker(spec)
    Normaliser()  # loads the taxonomy and the gazetteer now, not on the first page


def decode_page(raw: RawPage, job: PageJob, worker: _Worker | None = None) -> DecodedPage:
    """Parse strictly, decode, normalise and prepare the records of one ListRecords page (in a worker
    process); a page that is not a well-formed OAI-PMH answer raises its :class:`HarvestError`."""
    worker = worker or _worker
    assert worker is not None, "worker not initialised"
    page = read_list_page(raw)
    latest: dict[str, Harvested | Deleted] = {}
    out = DecodedPage(size=len(page.records), stamp=job.stamp, page=replace(page, records=()))
    for element in page.records:
        decoded = decode_record(element, job.prefix, partner_name=job.partner_name)
        if isinstance(decoded, Rejected):
            out.rejected.append(decoded)
            continue
        latest.pop(decoded.identifier, None)
        latest[decoded.identifier] = decoded
    normaliser = worker.normaliser(job)
    store = worker.store(job.source)
    live = [d for d in latest.values() if isinstance(d, Harvested)]
    for record in live:
        normalised = normaliser.sheet(record.sheet)
        sheet = normalised.sheet
        prepared = prepare(sheet, store.make_uri(sheet.local_id), job.stamp, hub=True)
        out.live.append(
            LiveRecord(
                record.identifier,
                record.datestamp,
                record.original_id,
                sheet.url,
                prepared,
                tuple(normalised.unmapped),
                normalised.places_resolved,
                match_key(sheet),
            )
        )
    out.gone = [d for d in latest.values() if isinstance(d, Deleted)]
    return out


# ------------------------------------------------------------------ hub side


class HarvestPipeline:
    """Worker processes decoding harvested pages (see the module docstring); shared by a hub's harvests."""

    def __init__(self, spec: HubSpec, processes: int) -> None:
        self.processes = processes
        self.pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(pickle.dumps(spec),),
        )
        self._rules: dict[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], int] = {}

    def rules_key(self, source: str, rules: dict[str, tuple[str, ...]]) -> int:
        """A small number naming this source's crosswalk as it is now (the workers' cache key)."""
        frozen = (source, tuple(sorted(rules.items())))
        key = self._rules.get(frozen)
        if key is None:
            key = self._rules[frozen] = len(self._rules) + 1
        return key

    async def decode(self, raw: RawPage, job: PageJob) -> DecodedPage:
        loop = asyncio.get_running_loop()
        return await asyncio.wrap_future(self.pool.submit(decode_page, raw, job), loop=loop)

    def pids(self) -> list[int]:
        """Process ids of the running workers (started on the first page)."""
        return [p.pid for p in list(getattr(self.pool, "_processes", {}).values()) if p.pid is not None]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["DecodedPage", "HarvestPipeline", "HubSpec", "LiveRecord", "PageJob", "decode_page"]
