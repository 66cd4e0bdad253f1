"""The import's CPU-bound work in worker processes, the database writes in the importing one.

An import of a native JSON-lines file spends most of its time in pure Python per
sheet: decoding, validation, geocoding, sanitising, then what storage computes
for a write (canonical dict, content hash, set memberships, the two pre-rendered
OAI formats, the stored JSON text: :func:`node.storage.prepare`). With
``[node] write_workers = N`` that work runs in ``N`` spawned worker processes,
one chunk of lines (the importer's batch) at a time, while the importing process
reads the file, checks repeated ids in file order and writes to the database.

A write comes back as a :class:`node.storage.Prepared`: plain texts, the sheet
only as its stored JSON, so the writer unpickles no sheet objects (it decodes the
JSON only for change listeners, or for a write it must compute again). Each worker
reads, through its own read-only connection, the content hashes committed before
the import, and does not render a sheet whose hash is already stored: a re-import
of an unchanged file renders nothing.

What stays as it was: one transaction for the whole file (all or nothing), the
errors with their line numbers and fields, in file order, the progress callback,
and the streaming: at most ``2 × N`` chunks are in flight, so memory does not grow
with the file. Each chunk is stamped when it is sent (its sheets' datestamp);
storage checks every prepared write against the row it finds and computes again
the rare one that disagrees (another URI, an older creation date to keep, a hash
hint that was wrong), so the database ends up byte for byte as with the in-process
path.
"""

from __future__ import annotations

import asyncio
import copyreg
import multiprocessing
import pickle
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from node.importer import MAX_ERRORS, Importer, ImportReport, RowError
from node.storage import Prepared, SheetStore, prepare
from protocol import sheet as model
from protocol.taxonomy import Crosswalk

# Below this size an import stays in-process: starting the workers (imports, gazetteer) costs
# about a second, more than a small file takes.
MIN_BYTES = 2 * 1024 * 1024


# ------------------------------------------------------------------ pickling


# Frozen slots dataclasses pickle through dataclasses' generic __getstate__/__setstate__ (a
# fields() walk per object); a sheet is a few dozen objects. Rebuilt positionally instead.
def _reducer(cls: type) -> Callable[[Any], tuple[type, tuple[Any, ...]]]:
    names = tuple(f.name for f in fields(cls))

    def reduce(obj: Any) -> tuple[type, tuple[Any, ...]]:
        return cls, tuple([getattr(obj, n) for n in names])

    return reduce


for _cls in (
    model.Sheet,
    model.Partner,
    model.Holder,
    model.Place,
    model.TagMapping,
    model.Award,
    model.Contact,
    model.Image,
    model.Link,
    model.Match,
    Prepared,
):
    copyreg.pickle(_cls, _reducer(_cls))


# ------------------------------------------------------------------ worker side


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build the same sheets as the importer (plain, picklable values)."""

    base_url: str
    source: str
    hub: bool
    mapping: Any  # ImportMapping
    partner: model.Partner
    licence: str
    resolver: Any  # a module-level PlaceResolver (pickled by reference) or None
    crosswalk_rules: dict[str, Any]
    taxonomy: Any  # Taxonomy
    # Where a worker reads the content hashes committed before the import: the node's SQLite
    # file, or its PostgreSQL URL (both None for an in-memory database).
    sqlite_path: str | None
    postgres_url: str | None


@dataclass
class ItemResult:
    """One line as the worker saw it; the reader replays its report only if the id is not a repeat."""

    line: int
    row: bool  # False for a line that is not JSON: not a row (as in-process), only its error
    local_id: str | None  # None: the line was refused (``errors``)
    errors: list[RowError]
    geocoding: dict[str, int]
    unresolved: list[str]
    unknown_codes: dict[str, int]
    prepared: Prepared | None  # the write, with the sheet only as its stored JSON


class StoredHashes:
    """Content hashes of live rows as committed, read by a worker process (a read-only connection).

    Only a hint: the writer checks every write against the row it reads in its own transaction,
    and any failure here means no hint (every sheet is rendered).
    """

    def __init__(self, sqlite_path: str | None, postgres_url: str | None) -> None:
        self.sqlite: sqlite3.Connection | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pg: Any = None
        try:
            if sqlite_path is not None:
                self.sqlite = sqlite3.connect(
                    Path(sqlite_path).as_uri() + "?mode=ro", uri=True, check_same_thread=False
                )
            elif postgres_url is not None:
                import asyncpg

                self.loop = asyncio.new_event_loop()
                self.pg = self.loop.run_until_complete(asyncpg.connect(postgres_url))
        except Exception:  # no hint, as documented
            self.sqlite = self.pg = None

    def close(self) -> None:
        """Close the connection (a worker's goes with its process)."""
        if self.sqlite is not None:
            self.sqlite.close()
        if self.pg is not None and self.loop is not None:
            self.loop.run_until_complete(self.pg.close())
        if self.loop is not None:
            self.loop.close()
        self.sqlite = self.pg = self.loop = None

    def of(self, source: str, local_ids: list[str]) -> dict[str, str]:
        if not local_ids:
            return {}
        try:
            if self.sqlite is not None:
                marks = ", ".join("?" for _ in local_ids)
                rows = self.sqlite.execute(
                    "SELECT local_id, content_hash FROM sheet"
                    f" WHERE source = ? AND deleted = 0 AND local_id IN ({marks})",
                    [source, *local_ids],
                ).fetchall()
            elif self.pg is not None and self.loop is not None:
                rows = self.loop.run_until_complete(
                    self.pg.fetch(
                        "SELECT local_id, content_hash FROM sheet"
                        " WHERE source = $1 AND NOT deleted AND local_id = ANY($2::text[])",
                        source,
                        local_ids,
                    )
                )
            else:
                return {}
        except Exception:  # no hint
            return {}
        return {str(local_id): str(digest) for local_id, digest in rows}


@dataclass
class _Worker:
    importer: Importer
    store: SheetStore
    hub: bool
    lookup: StoredHashes


_worker: _Worker | None = None


def _init(spec_bytes: bytes) -> None:
    global _worker
    from node.db import Database

    spec: WorkerSpec = pickle.loads(spec_bytes)  # noqa: S301 -- pickled by our own parent process
    # A store used only to mint URIs (SheetStore.make_uri is pure): its database is never opened.
    store = SheetStore(Database("sqlite://:memory:"), base_url=spec.base_url, source=spec.source, hub=spec.hub)
    importer = Importer(
        store,
        spec.mapping,
        partner=spec.partner,
        licence=spec.licence,
        resolver=spec.resolver,
        crosswalk=Crosswalk(partner=spec.partner.name, rules=spec.crosswalk_rules),
        taxonomy=spec.taxonomy,
    )
    _worker = _Worker(importer, store, spec.hub, StoredHashes(spec.sqlite_path, spec.postgres_url))


def _work(lines: list[tuple[int, str]], stamp: int, file: str) -> list[ItemResult]:
    import json

    assert _worker is not None, "worker not initialised"
    worker = _worker
    importer = worker.importer
    out: list[ItemResult] = []
    sheets: list[model.Sheet | None] = []
    for number, text in lines:
        report = ImportReport(file=file, mapping=importer.mapping.name)
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            report.add_error(RowError(number, "line", f"is not valid JSON: {exc.msg}"))
            out.append(ItemResult(number, False, None, report.errors, {}, [], {}, None))
            sheets.append(None)
            continue
        sheet = importer.native_item(number, item, report, None)
        out.append(
            ItemResult(
                number,
                True,
                sheet.local_id if sheet is not None else None,
                report.errors,
                report.geocoding,
                report.unresolved_places,
                report.unknown_codes,
                None,
            )
        )
        sheets.append(sheet)
    stored = worker.lookup.of(worker.store.source, [s.local_id for s in sheets if s is not None])
    for result, sheet in zip(out, sheets, strict=True):
        if sheet is not None:
            uri = worker.store.make_uri(sheet.local_id)
            result.prepared = prepare(sheet, uri, stamp, hub=worker.hub, stored=stored.get(sheet.local_id))
    return out


# ------------------------------------------------------------------ reader side


def spec_of(importer: Importer) -> bytes | None:
    """The pickled worker spec of ``importer``, or None when it cannot go to another process
    (a resolver that is a closure, an online geocoding pass, a mapping other than native)."""
    if importer.mapping.format != "native" or importer.online is not None:
        return None
    store = importer.store
    spec = WorkerSpec(
        base_url=store.base_url,
        source=store.source,
        hub=store.hub,
        mapping=importer.mapping,
        partner=importer.partner,
        licence=importer.licence,
        resolver=importer.resolver,
        crosswalk_rules=dict(importer.crosswalk.rules),
        taxonomy=importer.taxonomy,
        sqlite_path=store.db.sqlite_path(),
        postgres_url=store.db.url if store.db.dialect == "postgres" else None,
    )
    try:
        return pickle.dumps(spec)
    except (pickle.PicklingError, AttributeError, TypeError):
        return None


def json_lines(path: Path, encoding: str) -> bool:
    """Whether the file is JSON lines (the workers' input); a JSON array is read in-process."""
    with path.open(encoding=encoding, errors="replace") as handle:
        first = handle.read(1)
        while first and first.isspace():
            first = handle.read(1)
    return first != "["


class Pipeline:
    """Worker processes building the sheets and writes of one import (see the module docstring)."""

    def __init__(self, importer: Importer, spec: bytes, workers: int) -> None:
        self.importer = importer
        self.workers = workers
        self._decode_error: RowError | None = None  # a file that is not valid in its encoding
        self.pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init, initargs=(spec,)
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _chunks(self, path: Path, report: ImportReport) -> Iterator[list[tuple[int, str]]]:
        chunk: list[tuple[int, str]] = []
        try:
            with path.open(encoding=self.importer.mapping.encoding, newline="") as handle:
                for number, text in enumerate(handle, start=1):
                    if not text.strip():
                        continue
                    chunk.append((number, text))
                    if len(chunk) >= self.importer.batch:
                        yield chunk
                        chunk = []
        except UnicodeDecodeError as exc:
            # As in-process: the lines read before the bad byte are still checked, then this error.
            if chunk:
                yield chunk
                chunk = []
            self._decode_error = RowError(0, "file", f"is not valid {self.importer.mapping.encoding}: {exc.reason}")
        if chunk:
            yield chunk

    async def batches(self, path: Path, report: ImportReport) -> AsyncIterator[tuple[list[Prepared], int]]:
        """(prepared writes, their stamp) per chunk, in file order; errors go to ``report``."""
        self._decode_error = None
        store = self.importer.store
        loop = asyncio.get_running_loop()
        in_flight: deque[tuple[asyncio.Future[list[ItemResult]], int]] = deque()
        chunks = self._chunks(path, report)
        seen: dict[str, int] = {}
        exhausted = False

        def refill() -> None:
            nonlocal exhausted
            while not exhausted and len(in_flight) < 2 * self.workers:
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                    return
                stamp = store.now()
                future: Future[list[ItemResult]] = self.pool.submit(_work, chunk, stamp, report.file)
                in_flight.append((asyncio.wrap_future(future, loop=loop), stamp))

        refill()
        while in_flight:
            waiting, stamp = in_flight.popleft()
            results = await waiting
            refill()  # the workers go on while this chunk is merged and written
            writes: list[Prepared] = []
            for item in results:
                if item.row:
                    report.rows += 1
                    if self.importer.progress:
                        self.importer.progress(report.rows)
                if item.local_id is None or item.prepared is None:
                    for error in item.errors:
                        report.add_error(error)
                    continue
                if item.local_id in seen:
                    report.add_error(
                        RowError(item.line, "local_id", f"{item.local_id!r} already used at item {seen[item.local_id]}")
                    )
                    continue
                seen[item.local_id] = item.line
                _merge(report, item)
                report.sheets += 1
                writes.append(item.prepared)
            yield writes, stamp
        if self._decode_error is not None:
            report.add_error(self._decode_error)


def _merge(report: ImportReport, item: ItemResult) -> None:
    for how, n in item.geocoding.items():
        report.geocoding[how] = report.geocoding.get(how, 0) + n
    for what in item.unresolved:
        if len(report.unresolved_places) < MAX_ERRORS and what not in report.unresolved_places:
            report.unresolved_places.append(what)
    for code, n in item.unknown_codes.items():
        report.unknown_codes[code] = report.unknown_codes.get(code, 0) + n


__all__ = ["MIN_BYTES", "Pipeline", "StoredHashes", "json_lines", "spec_of"]
