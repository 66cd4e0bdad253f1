"""The durable search-index queue (table ``index_queue``) and the worker that drains it.

Every effective sheet change (harvest, push, admin, import) appends one row in the
transaction of the change (:func:`install_queue` registers the listener on the
database, so every ``SheetStore`` of the process is covered). The worker claims due
rows with a lease, reads the sheets' *current* state after the claim, upserts or
deletes the documents in batches, reads every import row result, and deletes only
the rows it claimed: a change committed after the read has a later row and is
indexed again. While Typesense is unreachable the claimed rows are released
untouched and the worker backs off; nothing is lost and the backlog drains when
the server returns. A document Typesense refuses is retried with backoff and set
aside (``status = 'failed'``) after ``max_attempts``.

A reindex in progress names the collection it is building in ``index_state``; the
worker then writes to that collection too, so the new collection misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from node.db import Database
from node.storage import Change
from protocol.errors import SheetValidationError
from protocol.sheet import sheet_from_dict
from search.client import SearchClient, encode_documents
from search.errors import NodesUnavailable, NotFound
from search.schema import ALIAS, document_from_sheet, document_id

log = logging.getLogger("essaim.search.indexer")

CHUNK = 500  # ids per SQL statement (SQLite allows 32766 parameters)
BUILDING_KEY = "building"  # index_state key: the collection a reindex is filling
# index_state key: changes with every batch applied, so that the hub processes that do not index
# themselves ([search] indexer = false) see the index move: their cached counts, home-page figures and
# wide map views were kept for their first generation until evicted.
GENERATION_KEY = "generation"
RECENT_WINDOW = 30.0  # seconds of acknowledged sheets sent again after a server restart or outage

# uri -> duplicate-cluster id; the hub's duplicate detection provides it (optional, sync or async).
ClusterLookup = Callable[[Database, Sequence[str]], Awaitable[Mapping[str, str]] | Mapping[str, str]]


async def lookup_clusters(lookup: ClusterLookup | None, db: Database, uris: Sequence[str]) -> Mapping[str, str] | None:
    """Call the duplicate-cluster lookup, awaiting it when it is a coroutine function."""
    if lookup is None or not uris:
        return None
    result = lookup(db, uris)
    if inspect.isawaitable(result):
        result = await result
    return result


@dataclass(frozen=True, slots=True)
class IndexerConfig:
    batch_size: int = 1000
    poll: float = 0.5
    lease: int = 120
    retry_base: float = 1.0
    retry_max: float = 30.0
    max_attempts: int = 10
    debounce: float = 0.02  # after a wake-up: lets the writing transaction commit, and batches bursts


# --------------------------------------------------------------------- enqueueing


def enqueue_listener(db: Database, wake: Callable[[], None] | None = None) -> Any:
    """The ``SheetStore`` listener: one queue row per changed sheet, in the writer's transaction."""

    async def listener(tx: BaseDBAsyncClient, changes: Sequence[Change]) -> None:
        now = int(time.time())
        await db.executemany(
            "INSERT INTO index_queue (sheet_pk, uri, enqueued, status, attempts, next_attempt, claimed_until)"
            " VALUES (?, ?, ?, 'pending', 0, 0, 0)",
            [(c.pk, c.uri, now) for c in changes],
            conn=tx,
        )
        if wake is not None:
            wake()

    listener.essaim_index_queue = True  # type: ignore[attr-defined]
    return listener


def install_queue(db: Database, wake: Callable[[], None] | None = None) -> None:
    """Register the queue listener on ``db`` once (a second call only adds the wake-up)."""
    for existing in db.sheet_listeners:
        if getattr(existing, "essaim_index_queue", False):
            if wake is None:
                return
            db.sheet_listeners.remove(existing)
            break
    db.sheet_listeners.append(enqueue_listener(db, wake))
    db.touch_listeners[:] = [t for t in db.touch_listeners if not getattr(t, "essaim_index_queue", False)]
    db.touch_listeners.append(touch_listener(db, wake))


def touch_listener(db: Database, wake: Callable[[], None] | None = None) -> Any:
    """Queue the sheets whose derived data (duplicate cluster) moved, in the writer's transaction."""

    async def listener(tx: BaseDBAsyncClient, uris: Sequence[str]) -> None:
        now = int(time.time())
        ids = list(dict.fromkeys(uris))
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            marks = ", ".join("?" for _ in chunk)
            await db.execute(
                "INSERT INTO index_queue (sheet_pk, uri, enqueued, status, attempts, next_attempt, claimed_until)"
                f" SELECT pk_id, uri, ?, 'pending', 0, 0, 0 FROM sheet WHERE uri IN ({marks})",
                [now, *chunk],
                conn=tx,
            )
        if wake is not None:
            wake()

    listener.essaim_index_queue = True  # type: ignore[attr-defined]
    return listener


async def enqueue_sheets(db: Database, *, since: int | None = None, pks: Sequence[int] | None = None) -> int:
    """Queue every sheet (live or tombstone) changed at or after ``since``, or the sheets ``pks``."""
    now = int(time.time())
    if pks is not None:
        total = 0
        ids = list(dict.fromkeys(pks))
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            marks = ", ".join("?" for _ in chunk)
            # RETURNING counts on both backends (asyncpg reports no row count for INSERT … SELECT).
            total += len(
                await db.fetch(
                    "INSERT INTO index_queue (sheet_pk, uri, enqueued, status, attempts, next_attempt, claimed_until)"
                    f" SELECT pk_id, uri, ?, 'pending', 0, 0, 0 FROM sheet WHERE pk_id IN ({marks}) RETURNING id",
                    [now, *chunk],
                )
            )
        return total
    where, params = ("WHERE stamp >= ?", [since]) if since is not None else ("", [])
    rows = await db.fetch(
        "INSERT INTO index_queue (sheet_pk, uri, enqueued, status, attempts, next_attempt, claimed_until)"
        f" SELECT pk_id, uri, ?, 'pending', 0, 0, 0 FROM sheet {where} ORDER BY pk_id RETURNING id",
        [now, *params],
    )
    return len(rows)


# --------------------------------------------------------------------- state


async def get_state(db: Database, key: str) -> str | None:
    row = await db.fetchone("SELECT value FROM index_state WHERE key = ?", [key])
    return str(row["value"]) if row and row["value"] else None


async def set_state(db: Database, key: str, value: str | None) -> None:
    if value is None:
        await db.execute("DELETE FROM index_state WHERE key = ?", [key])
        return
    await db.execute(
        "INSERT INTO index_state (key, value, updated) VALUES (?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated = excluded.updated",
        [key, value, int(time.time())],
    )


# --------------------------------------------------------------------- documents


def build_documents(
    rows: Sequence[Mapping[str, Any]], clusters: Mapping[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    """Documents of the live ``sheet`` rows, document ids of the dead ones, and undecodable rows.

    ``clusters`` maps a sheet URI to its duplicate-cluster id (the hub's duplicate
    detection); absent, ``duplicate_cluster`` stays empty.
    """
    docs: list[dict[str, Any]] = []
    deletes: list[str] = []
    broken: dict[str, str] = {}
    clusters = clusters or {}
    for row in rows:
        uri = str(row["uri"])
        if row["deleted"] or not row["data"]:
            deletes.append(document_id(uri))
            continue
        try:
            sheet = sheet_from_dict(json.loads(row["data"]))
        except (ValueError, SheetValidationError) as exc:
            broken[uri] = f"stored sheet cannot be read: {exc}"[:500]
            continue
        docs.append(document_from_sheet(sheet, cluster=clusters.get(uri)))
    return docs, deletes, broken


def build_and_encode(
    rows: Sequence[Mapping[str, Any]], clusters: Mapping[str, str] | None
) -> tuple[list[dict[str, Any]], list[str], dict[str, str], list[str]]:
    """:func:`build_documents` and the documents' JSON lines (one worker-thread call)."""
    docs, deletes, broken = build_documents(rows, clusters)
    return docs, deletes, broken, encode_documents(docs)


async def read_sheets(db: Database, pks: Sequence[int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for start in range(0, len(pks), CHUNK):
        chunk = list(pks[start : start + CHUNK])
        marks = ", ".join("?" for _ in chunk)
        out.extend(await db.fetch(f"SELECT pk_id, uri, deleted, data FROM sheet WHERE pk_id IN ({marks})", chunk))
    return out


# --------------------------------------------------------------------- the queue


class IndexQueue:
    """Claims, acknowledgements, retries and counts of ``index_queue`` rows."""

    def __init__(self, db: Database, config: IndexerConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.config = config
        self.clock = clock

    def now(self) -> int:
        return int(self.clock())

    def claim_sql(self) -> str:
        """The claim statement; parameters: token, lease end, now, now, limit."""
        # PostgreSQL: SKIP LOCKED lets several hub processes claim side by side; SQLite
        # has one writer at a time, so the UPDATE alone is atomic.
        postgres = self.db.dialect == "postgres"
        lock = " FOR UPDATE SKIP LOCKED" if postgres else ""
        # SQLite would pick index_queue_due (status, next_attempt) and sort every pending row
        # by id for each claim: O(backlog) per batch, minutes over a 1M-row backlog. Walking
        # the primary key in id order stops after ``limit`` due rows (due rows are the head of
        # the queue: only retries in backoff and rows set aside are skipped).
        hint = "" if postgres else " NOT INDEXED"
        return (
            "UPDATE index_queue SET claimed_by = ?, claimed_until = ? WHERE id IN ("
            f"SELECT id FROM index_queue{hint} WHERE status = 'pending' AND next_attempt <= ? AND claimed_until <= ?"
            f" ORDER BY id LIMIT ?{lock}) RETURNING id, sheet_pk, uri, attempts"
        )

    async def claim(self, limit: int) -> tuple[str, list[dict[str, Any]]]:
        """A lease on up to ``limit`` due rows, oldest first: ``(token, rows)``."""
        token = uuid.uuid4().hex
        now = self.now()
        rows = await self.db.fetch(self.claim_sql(), [token, now + self.config.lease, now, now, limit])
        return token, rows

    async def ack(self, token: str, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start : start + CHUNK])
            marks = ", ".join("?" for _ in chunk)
            await self.db.execute(f"DELETE FROM index_queue WHERE claimed_by = ? AND id IN ({marks})", [token, *chunk])

    async def release(self, token: str, delay: float) -> None:
        """Give the rows back untouched (Typesense unreachable: not the document's fault)."""
        await self.db.execute(
            "UPDATE index_queue SET claimed_by = NULL, claimed_until = 0, next_attempt = ? WHERE claimed_by = ?",
            [self.now() + max(0, round(delay)), token],
        )

    async def retry(self, token: str, rows: Sequence[Mapping[str, Any]], error: str) -> int:
        """Count a failed attempt on ``rows``; returns how many were set aside for good."""
        failed = 0
        for row in rows:
            attempts = int(row["attempts"]) + 1
            give_up = attempts >= self.config.max_attempts
            failed += give_up
            delay = min(self.config.retry_max, self.config.retry_base * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
            status = "failed" if give_up else "pending"
            await self.db.execute(
                "UPDATE index_queue SET status = ?, attempts = ?, next_attempt = ?, last_error = ?,"
                " claimed_by = NULL, claimed_until = 0 WHERE id = ? AND claimed_by = ?",
                [
                    status,
                    attempts,
                    self.now() + max(1, round(delay)),
                    error,
                    row["id"],
                    token,
                ],
            )
        return failed

    async def counts(self) -> dict[str, int]:
        rows = await self.db.fetch("SELECT status, COUNT(*) AS n FROM index_queue GROUP BY status")
        out = {"pending": 0, "failed": 0}
        for r in rows:
            out[str(r["status"])] = int(r["n"])
        return out


# --------------------------------------------------------------------- the worker


@dataclass(slots=True)
class _Batch:
    """Claimed rows with the documents built from the sheets' state read after the claim."""

    token: str
    rows: list[dict[str, Any]]
    docs: list[dict[str, Any]]
    deletes: list[str]
    broken: dict[str, str]
    lines: list[str]  # the documents' JSON lines, encoded in the build thread


class IndexWorker:
    """Drains the queue into Typesense (through ``alias``, and a collection being rebuilt)."""

    def __init__(
        self,
        db: Database,
        client: SearchClient,
        *,
        alias: str = ALIAS,
        config: IndexerConfig | None = None,
        clusters: ClusterLookup | None = None,
        on_indexed: Callable[[int], None] | None = None,
        count: Callable[[str, int], None] | None = None,
    ) -> None:
        self.db = db
        self.client = client
        self.alias = alias
        self.config = config or IndexerConfig()
        self.queue = IndexQueue(db, self.config)
        self.clusters = clusters
        self.on_indexed = on_indexed
        self._count = count
        self.wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._unavailable_since: float | None = None
        self._pending_logged = 0.0
        self.indexed = 0
        self.deleted = 0
        self._recent: deque[tuple[float, list[int]]] = deque()  # (when acknowledged, sheet pks)

    def _remember(self, pks: Iterable[int]) -> None:
        now = time.monotonic()
        self._recent.append((now, list(pks)))
        while self._recent and self._recent[0][0] < now - RECENT_WINDOW:
            self._recent.popleft()

    async def requeue_recent(self) -> int:
        """Queue again the sheets acknowledged in the last :data:`RECENT_WINDOW` seconds.

        Called when the server stops answering or was restarted: Typesense 0.24 has been
        seen to lose an import it had acknowledged a few milliseconds before a SIGKILL
        (tests/search/test_hub_index.py). Sending them again is an idempotent upsert (a
        tombstone's row deletes again).
        """
        pks = list(dict.fromkeys(pk for _, batch in self._recent for pk in batch))
        self._recent.clear()
        if not pks:
            return 0
        queued = await enqueue_sheets(self.db, pks=pks)
        log.info("index.requeued_recent", extra={"event": "index.requeued_recent", "sheets": queued})
        return queued

    def count(self, name: str, by: int = 1) -> None:
        if self._count is not None:
            self._count(name, by)

    @property
    def available(self) -> bool:
        return self._unavailable_since is None

    async def run(self) -> None:
        """Until :meth:`stop`: claim, index, back off while Typesense is unreachable.

        Two batches are in the pipeline: the next one is read from the database and built
        (Python, in a thread) while the previous one is being imported (Typesense). Sends
        stay in claim order, and a batch is read after the previous one was, so a sheet's
        newer state always lands last.
        """
        delay = self.config.retry_base
        inflight: asyncio.Task[None] | None = None
        try:
            while not self._stopping:
                self.wake.clear()
                batch: _Batch | None = None
                try:
                    token, rows = await self.queue.claim(self.config.batch_size)
                    if rows:
                        batch = await self._prepare_or_release(token, rows)
                    if inflight is not None:
                        task, inflight = inflight, None
                        await task
                    if batch is not None:
                        inflight = asyncio.create_task(self._send(batch))
                        batch = None
                        delay = self.config.retry_base
                        await asyncio.sleep(0)  # more may be waiting: go on at once, letting searches in
                        continue
                except NodesUnavailable as exc:
                    if batch is not None:  # built while the previous import failed: give it back too
                        await self.queue.release(batch.token, 0)
                    if self._unavailable_since is None:
                        self._unavailable_since = time.monotonic()
                        log.warning("index.unavailable", extra={"event": "index.unavailable", "error": str(exc)[:300]})
                        await self.requeue_recent()
                    await self._log_pending()
                    await self._sleep(delay)
                    delay = min(self.config.retry_max, delay * 2)
                    continue
                except Exception:  # a bug or a database failure: logged, retried after a pause
                    if batch is not None:
                        await self.queue.release(batch.token, 0)
                    log.exception("index worker failed", extra={"event": "index.error"})
                    await self._sleep(delay)
                    delay = min(self.config.retry_max, delay * 2)
                    continue
                delay = self.config.retry_base
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.config.poll)
                if self.wake.is_set() and self.config.debounce:
                    await asyncio.sleep(self.config.debounce)
        finally:
            if inflight is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await inflight

    async def _log_pending(self) -> None:
        """While Typesense is unreachable: the backlog, at most every 30 s (``index.pending``)."""
        now = time.monotonic()
        if now - self._pending_logged < 30:
            return
        self._pending_logged = now
        with contextlib.suppress(Exception):
            counts = await self.queue.counts()
            log.warning("index.pending", extra={"event": "index.pending", **counts})

    async def _sleep(self, seconds: float) -> None:
        # Backing off: new changes do not cut the pause short, stopping does.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        self.wake.set()

    async def drain(self, *, within: float = 600.0) -> int:
        """Index until no due row is left (for the CLI and tests); returns rows handled."""
        deadline = time.monotonic() + within
        total = 0
        while True:
            handled = await self.run_once()
            total += handled
            if not handled:
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(f"index queue not drained after {within}s")

    async def run_once(self) -> int:
        """One batch: returns how many queue rows were handled (0: nothing due)."""
        token, rows = await self.queue.claim(self.config.batch_size)
        if not rows:
            return 0
        await self._send(await self._prepare_or_release(token, rows))
        return len(rows)

    async def _prepare_or_release(self, token: str, rows: list[dict[str, Any]]) -> _Batch:
        try:
            return await self._prepare(token, rows)
        except BaseException:
            await asyncio.shield(self.queue.release(token, 0))
            raise

    async def _send(self, batch: _Batch) -> None:
        try:
            await self._apply(batch)
        except NodesUnavailable:
            await self.queue.release(batch.token, 0)
            raise
        except NotFound as exc:
            # The alias or collection is gone (an operator dropped it): not the documents' fault.
            await self.queue.release(batch.token, self.config.retry_base)
            raise NodesUnavailable(f"index collection missing: {exc}") from exc
        except BaseException:
            await asyncio.shield(self.queue.release(batch.token, 0))
            raise
        if self._unavailable_since is not None:
            log.info(
                "index.available",
                extra={"event": "index.available", "down_s": round(time.monotonic() - self._unavailable_since, 1)},
            )
            self._unavailable_since = None

    async def _prepare(self, token: str, rows: list[dict[str, Any]]) -> _Batch:
        pks = list(dict.fromkeys(int(r["sheet_pk"]) for r in rows))
        sheets = await read_sheets(self.db, pks)
        found = {str(s["uri"]) for s in sheets}
        clusters = await lookup_clusters(self.clusters, self.db, [str(s["uri"]) for s in sheets if not s["deleted"]])
        docs, deletes, broken, lines = await asyncio.to_thread(build_and_encode, sheets, clusters)
        # A queue row whose sheet row is gone entirely: remove its document too.
        deletes += [document_id(str(r["uri"])) for r in rows if str(r["uri"]) not in found]
        return _Batch(token, rows, docs, deletes, broken, lines)

    async def _apply(self, batch: _Batch) -> None:
        token, rows, docs, deletes, broken = batch.token, batch.rows, batch.docs, batch.deletes, batch.broken
        building = await get_state(self.db, BUILDING_KEY)
        targets = [self.alias] + ([building] if building and building != self.alias else [])
        refused: dict[str, str] = {}
        for target in targets:
            try:
                if docs:
                    report = await self.client.import_documents(
                        target, docs, "upsert", batch_size=len(docs), raise_on_failure=False, lines=batch.lines
                    )
                    for failure in report.failures:
                        if failure.id is not None:
                            refused.setdefault(failure.id, f"Typesense {failure.code}: {failure.error}"[:500])
                if deletes:
                    await self.client.delete_documents(target, deletes)
            except NotFound:
                if target == self.alias:
                    raise
                # The reindex failed and dropped its collection meanwhile: nothing to keep in sync.
                log.info("index.building_gone", extra={"event": "index.building_gone", "collection": target})
        by_doc = {document_id(str(r["uri"])): r for r in rows}
        failed_rows = [r for d, r in by_doc.items() if d in refused]
        broken_rows = [r for r in rows if str(r["uri"]) in broken]
        bad_ids = {int(r["id"]) for r in failed_rows + broken_rows}
        # A sheet's rows all share its outcome.
        bad_uris = {str(r["uri"]) for r in failed_rows + broken_rows}
        retry = [r for r in rows if str(r["uri"]) in bad_uris]
        good = [int(r["id"]) for r in rows if int(r["id"]) not in bad_ids and str(r["uri"]) not in bad_uris]
        await self.queue.ack(token, good)
        if retry:
            errors = {**{str(r["uri"]): refused[document_id(str(r["uri"]))] for r in failed_rows}, **broken}
            first = next(iter(errors.values()))
            given_up = await self.queue.retry(token, retry, first)
            self.count("index_refused_total", len(retry))
            log.warning(
                "index.refused",
                extra={"event": "index.refused", "documents": len(errors), "given_up": given_up, "first": first},
            )
        acked = set(good)
        if good:
            await set_state(self.db, GENERATION_KEY, str(time.time_ns()))
        self._remember(int(r["sheet_pk"]) for r in rows if int(r["id"]) in acked)
        self.indexed += len(docs) - len(refused)
        self.deleted += len(deletes)
        self.count("index_upserts_total", len(docs) - len(refused))
        self.count("index_deletes_total", len(deletes))
        if self.on_indexed is not None:
            self.on_indexed(len(good))
