"""Sheet storage: upserts that only move the datestamp on a real change, tombstones, listing.

Every effective change writes, in the same transaction, the sheet row, its OAI
set memberships and its pre-rendered OAI metadata (so an OAI page is a join of
stored fragments), then calls the registered change listeners with the
transaction, so that outbox activities and search-index jobs are enqueued
atomically with the change, whatever made it (import, admin, API, harvest).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from tortoise.backends.base.client import BaseDBAsyncClient

from node.db import Database
from protocol.oai.metadata import render_formats
from protocol.oai.sets import set_specs
from protocol.picklable import pickled_by_fields
from protocol.sheet import Sheet, Tombstone, format_datestamp, sheet_from_dict, sheet_replacer, sheet_to_dict
from protocol.taxonomy import fold

# How many rows one SQL statement touches; SQLite allows 32766 parameters.
BATCH = 500


class Change:
    """One effective change, handed to listeners inside the writing transaction.

    ``sheet`` (None for a deletion) is the sheet as written. A write prepared in a worker
    process carries it only as its stored JSON: it is decoded the first time a listener
    reads it, so listeners that need only the row (the search and feed queues) cost nothing.
    """

    __slots__ = ("_sheet", "kind", "local_id", "pk", "source", "stamp", "uri", "write")

    def __init__(
        self,
        kind: str,  # "create" | "update" | "delete"
        pk: int,
        uri: str,
        local_id: str,
        stamp: int,
        sheet: Sheet | Callable[[], Sheet] | None,
        write: _Write | None = None,  # what storage computed for it (encoded dict, hash, set specs)
        source: str = "",  # the writing store's source ("" on a node: its own sheets)
    ) -> None:
        self.kind = kind
        self.pk = pk
        self.uri = uri
        self.local_id = local_id
        self.stamp = stamp
        self._sheet = sheet
        self.write = write
        self.source = source

    @property
    def sheet(self) -> Sheet | None:
        if callable(self._sheet):
            self._sheet = self._sheet()
        return self._sheet

    def __repr__(self) -> str:
        return f"Change({self.kind!r}, pk={self.pk}, uri={self.uri!r}, source={self.source!r})"


@dataclass(frozen=True, slots=True)
class _Write:
    sheet: Sheet
    data: dict[str, Any]  # sheet_to_dict(sheet)
    digest: str
    sets: tuple[str, ...]


@pickled_by_fields  # sent back by harvest workers (see protocol.picklable)
@dataclass(frozen=True, slots=True)
class Prepared:
    """A write of one sheet computed away from the database (a worker process, see node.pipeline).

    It carries what the writer stores, and the sheet only as that stored JSON (``text``), which
    the writer decodes only when it needs the sheet itself: for change listeners, or to compute
    the write again when the row it finds disagrees (another URI, an older creation date to
    keep, another stamp). ``formats`` is None when the worker found the same content hash
    stored already: an unchanged sheet is not rendered; it is empty for a hub, which stores none.
    """

    local_id: str
    uri: str
    title: str
    own_created: bool  # the sheet came with its creation date
    own_modified: bool
    digest: str
    sets: tuple[str, ...]
    stamp: int
    text: str  # json.dumps of the dated sheet's dict, as stored
    formats: dict[str, str] | None

    def dated(self) -> Sheet:
        """The sheet as written: under its URI, with its dates."""
        return sheet_from_dict(json.loads(self.text))

    def sheet(self) -> Sheet:
        """The sheet as it was handed to storage (no URI yet, only its own dates)."""
        dated = self.dated()
        return replace(
            dated,
            id="",
            created=dated.created if self.own_created else None,
            modified=dated.modified if self.own_modified else None,
        )


def prepare(sheet: Sheet, uri: str, stamp: int, *, hub: bool = False, stored: str | None = None) -> Prepared:
    """What a write of ``sheet`` (no URI yet) under ``uri`` at ``stamp`` computes, without the database.

    It is what :meth:`SheetStore.upsert_many` computes for a new sheet or one whose creation
    date is its own. ``stored`` is the content hash found stored for it, if any: when it is
    the same, the OAI formats are not rendered (the write will most likely be "unchanged").
    A hub stores no rendered formats (``formats`` is empty, see :class:`SheetStore`).
    """
    data = sheet_to_dict(sheet)
    data["id"] = uri
    digest = _hash(data)
    now = _to_datetime(stamp)
    created, modified = sheet.created or now, sheet.modified or now
    full = _with_dates(data, sheet, created, modified, now)
    if hub:
        formats: dict[str, str] | None = {}
    elif stored == digest:
        formats = None
    else:
        formats = render_formats(_dated(sheet, uri, created, modified, now), data=full)
    return Prepared(
        sheet.local_id,
        uri,
        sheet.title,
        sheet.created is not None,
        sheet.modified is not None,
        digest,
        set_specs(sheet, hub=hub),  # neither the URI nor the dates have a part in set memberships
        stamp,
        _to_json(full),
        formats,
    )


_SHEET_FIELDS = tuple(Sheet.__dataclass_fields__)
_DATED = ("id", "created", "modified", "datestamp")


async def sheet_counts(db: Database) -> tuple[int, int]:
    """Live sheets and tombstones of the whole database, from two index scans in one statement.

    All rows are counted on the smallest index of the sheet table, tombstones on the partial
    index that holds only them (``sheet_tombstone``, migration 0009). A ``GROUP BY deleted`` over the sheet table
    read every row's data instead: ~4.8 s on SQLite and ~3.7 s on PostgreSQL at 1,000,000 sheets
    (``/metrics``, ``essaim doctor``).
    """
    row = await db.fetchone(
        "SELECT (SELECT COUNT(*) FROM sheet) AS total, (SELECT COUNT(*) FROM sheet WHERE deleted) AS dead"
    )
    total, dead = (int(row["total"]), int(row["dead"])) if row else (0, 0)
    return max(total - dead, 0), dead


# replace(sheet, id=..., created=..., modified=..., datestamp=...): runs on every write.
_dated = sheet_replacer(*_DATED)
_SHEET_COLUMNS = (
    "uri",
    "source",
    "local_id",
    "stamp",
    "deleted",
    "content_hash",
    "title",
    "data",
    "sets",
    "provenance",
)
_SHEET_TYPES = ("text", "text", "text", "bigint", "boolean", "text", "text", "text", "text", "text")


def _with_dates(
    data: dict[str, Any], sheet: Sheet, created: datetime, modified: datetime, datestamp: datetime
) -> dict[str, Any]:
    """``sheet_to_dict`` of ``sheet`` with these dates, from ``data``, the dict of ``sheet`` (field order kept)."""
    if created is sheet.created and modified is sheet.modified:
        # The sheet's own dates, already in ``data`` at their places; the datestamp is the last field.
        full = data.copy()
        full["datestamp"] = _datestamp_text(datestamp)
        return full
    dates = {"created": format_datestamp(created), "modified": format_datestamp(modified)}
    dates["datestamp"] = _datestamp_text(datestamp)
    return {
        name: dates[name] if name in dates else data[name] for name in _SHEET_FIELDS if name in dates or name in data
    }


@lru_cache(maxsize=64)
def _datestamp_text(datestamp: datetime) -> str:
    # The same datestamp for every sheet of a batch: formatted once.
    return format_datestamp(datestamp)


@dataclass(frozen=True, slots=True)
class WriteResult:
    status: str  # "created" | "updated" | "unchanged" | "deleted" | "missing"
    local_id: str
    uri: str
    stamp: int | None = None


Listener = Callable[[BaseDBAsyncClient, Sequence[Change]], Awaitable[None]]
Provenances = Mapping[str, Mapping[str, Any]]  # local id → provenance of a harvested sheet


def _to_json(data: dict[str, Any]) -> str:
    """The stored JSON text of a sheet's dict: compact (orjson, ~5x faster than :mod:`json`; json
    writes what orjson refuses, an integer beyond 64 bits, and fails as before on a lone surrogate)."""
    try:
        return orjson.dumps(data).decode("utf-8")
    except orjson.JSONEncodeError:
        return _to_compact_json(data)


# json.dumps(obj, **options) builds an encoder on every call: these are built once (same output).
# Provenance keeps its separators: the push receiver finds a sheet by a LIKE on its text.
_to_sorted_json = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
# What content hashes have always been taken of (json.dumps with these options, UTF-8 encoded).
_to_hashed_json = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode
_to_compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _provenance_json(provenance: Mapping[str, Any]) -> str:
    return _to_sorted_json(dict(provenance))


_BOOKKEEPING = frozenset(("datestamp", "modified", "created"))


def _hash(data: dict[str, Any]) -> str:
    """Hash of what a reader sees: bookkeeping dates are excluded so they never count as a change."""
    visible = {k: v for k, v in data.items() if k not in _BOOKKEEPING}
    return hashlib.sha256(_hashed_json(visible)).hexdigest()


def _hashed_json(visible: dict[str, Any]) -> bytes:
    """``_to_hashed_json(visible)`` in UTF-8, the bytes every stored content hash was taken of.

    orjson writes the same bytes ~4x faster, with two exceptions handed to :mod:`json`: a float
    below 1e-4 in magnitude (Python writes ``1e-05``, orjson ``0.00001``; a place's coordinates
    are the sheet's only floats) and what orjson refuses (an integer beyond 64 bits, a lone
    surrogate -- which then fails to encode as before).
    """
    if not _tiny_coordinate(visible.get("places")):
        try:
            return orjson.dumps(visible, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    return _to_hashed_json(visible).encode("utf-8")


def _tiny_coordinate(places: Any) -> bool:
    for place in places or ():
        for key in ("lat", "lon"):
            value = place.get(key)
            if value and -1e-4 < value < 1e-4:
                return True
    return False


_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes


def _uuid5_url(name: str) -> str:
    """``str(uuid.uuid5(uuid.NAMESPACE_URL, name))`` without building a UUID object (twice as fast)."""
    digest = bytearray(hashlib.sha1(_URL_NAMESPACE + name.encode("utf-8"), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _to_datetime(stamp: int) -> datetime:
    return datetime.fromtimestamp(stamp, tz=UTC)


@dataclass(slots=True)
class _Row:
    """One sheet row about to be written, from either path (``write`` in-process, ``prepared`` from a worker)."""

    local_id: str
    uri: str
    title: str
    digest: str
    sets: tuple[str, ...]
    text: str
    formats: dict[str, str] | None
    write: _Write | None
    prepared: Prepared | None = None
    kind: str = "create"
    pk: int = 0

    def dated(self) -> Sheet:
        if self.write is not None:
            return self.write.sheet
        assert self.prepared is not None
        return self.prepared.dated()

    def lazy_dated(self) -> Sheet | Callable[[], Sheet]:
        """The sheet, or for a prepared write the function decoding it (see :class:`Change`)."""
        if self.write is not None:
            return self.write.sheet
        assert self.prepared is not None
        return self.prepared.dated

    def rendered(self) -> dict[str, str]:
        if self.formats is None:
            assert self.write is not None
            self.formats = render_formats(self.write.sheet, data=self.write.data)
        return self.formats


def _no_repeats(local_ids: Iterable[str]) -> None:
    seen: set[str] = set()
    for local_id in local_ids:  # checked up front: a repeat in a later batch would be a silent second write
        if local_id in seen:
            raise ValueError(f"local id {local_id!r} appears twice in one write")
        seen.add(local_id)


class SheetStore:
    """Reads and writes the sheets of one source (``source=""``: the node's own sheets).

    A node's store renders the OAI-PMH formats of a sheet when it writes it (``sheet_format``),
    so its provider serves a page by joining stored fragments. A hub's store (``hub=True``) does
    not: the hub writes far more than it is harvested, and the fragments would nearly double its
    database (two ~1.6 KB rows per sheet next to the ~2 KB sheet row) and cost a quarter of a
    harvest worker's CPU. Its provider renders them from the stored JSON when it serves them
    (:mod:`node.oai`), byte for byte what storage would have stored.
    """

    def __init__(
        self,
        db: Database,
        *,
        base_url: str,
        source: str = "",
        hub: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.base_url = base_url.rstrip("/")
        self.source = source
        self.hub = hub
        self.clock = clock
        self.listeners: list[Listener] = []

    # ------------------------------------------------------------------ ids

    def make_uri(self, local_id: str) -> str:
        """Stable https URI of a sheet on this node, derived from the partner's own id."""
        return f"{self.base_url}/sheets/{_uuid5_url(f'{self.base_url}|{self.source}|{local_id}')}"

    def now(self) -> int:
        return int(self.clock())

    # ------------------------------------------------------------------ writes

    async def upsert(self, sheet: Sheet) -> WriteResult:
        async with self.db.transaction() as tx:
            results = await self.upsert_many([sheet], tx=tx)
        return results[0]

    async def upsert_many(
        self, sheets: Sequence[Sheet], *, tx: BaseDBAsyncClient, provenance: Provenances | None = None
    ) -> list[WriteResult]:
        """Write a batch inside the caller's transaction; unchanged sheets keep their datestamp.

        ``provenance`` (local id → provenance, harvested sheets) is stored with the rows this
        writes, in the same statement; the caller stores the others' (:meth:`set_provenance`).
        """
        _no_repeats(s.local_id for s in sheets)
        results: list[WriteResult] = []
        for start in range(0, len(sheets), BATCH):
            results.extend(await self._upsert_batch(sheets[start : start + BATCH], tx, None, provenance))
        return results

    async def upsert_prepared(
        self,
        items: Sequence[Prepared],
        *,
        tx: BaseDBAsyncClient,
        stamp: int,
        provenance: Provenances | None = None,
    ) -> list[WriteResult]:
        """:meth:`upsert_many` of writes computed elsewhere at ``stamp`` (:func:`prepare`).

        An item the row found here disagrees with is computed again from its sheet, so the
        database ends up the same either way.
        """
        _no_repeats(p.local_id for p in items)
        results: list[WriteResult] = []
        for start in range(0, len(items), BATCH):
            results.extend(await self._upsert_prepared_batch(items[start : start + BATCH], tx, stamp, provenance))
        return results

    async def _upsert_batch(
        self,
        sheets: Sequence[Sheet],
        tx: BaseDBAsyncClient,
        stamp: int | None = None,
        provenance: Provenances | None = None,
    ) -> list[WriteResult]:
        stamp = self.now() if stamp is None else stamp
        await self.db.keep_statistics(0, tx)
        existing = await self._existing([s.local_id for s in sheets], tx)
        inserts: list[_Row] = []
        updates: list[_Row] = []
        results: list[WriteResult] = []
        for sheet in sheets:
            row = existing.get(sheet.local_id)
            uri = str(row["uri"]) if row else (sheet.id or self.make_uri(sheet.local_id))
            # The dict of the sheet under its URI: "id" is always present (a text), so setting it
            # keeps the field order, and the sheet itself is copied only once, when it changed.
            data = sheet_to_dict(sheet)
            data["id"] = uri
            digest = _hash(data)
            if row is not None and not row["deleted"] and row["content_hash"] == digest:
                results.append(WriteResult("unchanged", sheet.local_id, row["uri"], int(row["stamp"])))
                continue
            now = _to_datetime(stamp)
            kept = self._created_of(row) if row and sheet.created is None else None
            created, modified = sheet.created or kept or now, sheet.modified or now
            full = _with_dates(data, sheet, created, modified, now)
            sheet = _dated(sheet, uri, created, modified, now)
            sets = set_specs(sheet, hub=self.hub)
            write = _Write(sheet, full, digest, sets)
            formats: dict[str, str] | None = {} if self.hub else None  # None: rendered when written
            item = _Row(sheet.local_id, uri, sheet.title, digest, sets, _to_json(full), formats, write)
            self._place(item, row, stamp, inserts, updates, results)
        await self._write_rows(inserts, updates, tx, stamp, provenance)
        return results

    async def _upsert_prepared_batch(
        self, items: Sequence[Prepared], tx: BaseDBAsyncClient, stamp: int, provenance: Provenances | None
    ) -> list[WriteResult]:
        await self.db.keep_statistics(0, tx)
        existing = await self._existing([p.local_id for p in items], tx)
        inserts: list[_Row] = []
        updates: list[_Row] = []
        results: list[WriteResult] = []
        again: list[Sheet] = []
        for p in items:
            row = existing.get(p.local_id)
            if p.stamp != stamp or (row is not None and row["uri"] != p.uri):
                again.append(p.sheet())  # prepared under another URI or time
                continue
            if row is not None and not row["deleted"] and row["content_hash"] == p.digest:
                results.append(WriteResult("unchanged", p.local_id, row["uri"], int(row["stamp"])))
                continue
            if p.formats is None or (row is not None and not p.own_created and self._created_of(row) is not None):
                again.append(p.sheet())  # not rendered, or a stored creation date to keep
                continue
            self._place(
                _Row(p.local_id, p.uri, p.title, p.digest, p.sets, p.text, p.formats, None, p),
                row,
                stamp,
                inserts,
                updates,
                results,
            )
        await self._write_rows(inserts, updates, tx, stamp, provenance)
        if again:
            results.extend(await self._upsert_batch(again, tx, stamp, provenance))
        return results

    @staticmethod
    def _place(
        item: _Row,
        row: dict[str, Any] | None,
        stamp: int,
        inserts: list[_Row],
        updates: list[_Row],
        results: list[WriteResult],
    ) -> None:
        if row is None:
            inserts.append(item)
            results.append(WriteResult("created", item.local_id, item.uri, stamp))
        else:
            # A tombstone written again is a creation for readers (ActivityPub: Create, not Update),
            # under the same URI.
            item.kind = "create" if row["deleted"] else "update"
            item.pk = int(row["pk_id"])
            updates.append(item)
            results.append(WriteResult(item.kind + "d", item.local_id, item.uri, stamp))

    async def _write_rows(
        self,
        inserts: list[_Row],
        updates: list[_Row],
        tx: BaseDBAsyncClient,
        stamp: int,
        provenance: Provenances | None = None,
    ) -> None:
        # A harvested sheet's provenance goes in with its row (not in a second UPDATE of every new row).
        given = provenance or {}

        def written(row: _Row) -> tuple[str, str, str, str, str | None]:
            """content_hash, title, data, sets and provenance, as both statements set them."""
            found = given.get(row.local_id)
            provenance_text = _provenance_json(found) if found is not None else None
            return (row.digest, row.title, row.text, " ".join(row.sets), provenance_text)

        if inserts:
            await self.db.insert_many(
                "sheet",
                _SHEET_COLUMNS,
                _SHEET_TYPES,
                [(r.uri, self.source, r.local_id, stamp, False, *written(r)) for r in inserts],
                conn=tx,
            )
            await self.db.keep_statistics(len(inserts), tx)
            pks = await self._existing([r.local_id for r in inserts], tx, columns="pk_id, local_id")
            for r in inserts:
                r.pk = int(pks[r.local_id]["pk_id"])
        if updates:
            await self.db.executemany(
                "UPDATE sheet SET stamp = ?, deleted = ?, content_hash = ?, title = ?, data = ?, sets = ?,"
                " provenance = COALESCE(?, provenance) WHERE pk_id = ?",
                [(stamp, False, *written(r), r.pk) for r in updates],
                conn=tx,
            )
        rows = inserts + updates
        if not rows:
            return
        await self._write_derived(rows, tx, stamp, stale=[(r.pk,) for r in updates])
        listeners = (*self.listeners, *self.db.sheet_listeners)
        if listeners:
            changes = [
                Change(r.kind, r.pk, r.uri, r.local_id, stamp, r.lazy_dated(), r.write, self.source) for r in rows
            ]
            for listener in listeners:
                await listener(tx, changes)

    async def delete(self, local_id: str) -> WriteResult:
        async with self.db.transaction() as tx:
            return (await self.delete_many([local_id], tx=tx))[0]

    async def delete_many(self, local_ids: Sequence[str], *, tx: BaseDBAsyncClient) -> list[WriteResult]:
        """Turn sheets into tombstones (id + datestamp stay, so OAI-PMH and ActivityPub can announce it)."""
        stamp = self.now()
        existing = await self._existing(local_ids, tx)
        results: list[WriteResult] = []
        changes: list[Change] = []
        done: set[str] = set()
        for local_id in local_ids:
            row = existing.get(local_id)
            if row is None or row["deleted"] or local_id in done:
                results.append(WriteResult("missing", local_id, row["uri"] if row else ""))
                continue
            done.add(local_id)
            pk = int(row["pk_id"])
            changes.append(Change("delete", pk, str(row["uri"]), local_id, stamp, None, source=self.source))
            results.append(WriteResult("deleted", local_id, str(row["uri"]), stamp))
        if changes:
            await self.db.executemany(
                "UPDATE sheet SET stamp = ?, deleted = ?, content_hash = '', data = NULL WHERE pk_id = ?",
                [(stamp, True, c.pk) for c in changes],
                conn=tx,
            )
            await self.db.executemany(
                "UPDATE sheet_set SET stamp = ? WHERE sheet_pk = ?", [(stamp, c.pk) for c in changes], conn=tx
            )
            await self.db.executemany(
                "DELETE FROM sheet_format WHERE sheet_pk = ?", [(c.pk,) for c in changes], conn=tx
            )
            for listener in (*self.listeners, *self.db.sheet_listeners):
                await listener(tx, changes)
        return results

    async def _write_derived(
        self, rows: Sequence[_Row], tx: BaseDBAsyncClient, stamp: int, *, stale: Sequence[tuple[int]]
    ) -> None:
        """Set memberships and pre-rendered OAI metadata of written rows (``stale``: those that had some)."""
        await self.db.executemany("DELETE FROM sheet_set WHERE sheet_pk = ?", stale, conn=tx)
        await self.db.executemany("DELETE FROM sheet_format WHERE sheet_pk = ?", stale, conn=tx)
        set_rows: list[tuple[int, str, int]] = []
        format_rows: list[tuple[int, str, str]] = []
        for r in rows:
            set_rows.extend((r.pk, spec, stamp) for spec in r.sets)
            format_rows.extend((r.pk, prefix, xml) for prefix, xml in r.rendered().items())
        await self.db.insert_many(
            "sheet_set", ("sheet_pk", "spec", "stamp"), ("bigint", "text", "bigint"), set_rows, tx
        )
        await self.db.insert_many(
            "sheet_format", ("sheet_pk", "prefix", "xml"), ("bigint", "text", "text"), format_rows, tx
        )

    async def _existing(
        self,
        local_ids: Sequence[str],
        conn: BaseDBAsyncClient,
        columns: str = "pk_id, uri, local_id, stamp, deleted, content_hash, data",
    ) -> dict[str, dict[str, Any]]:
        """The rows of ``local_ids`` by local id (``columns``: the generated keys alone need no data)."""
        found: dict[str, dict[str, Any]] = {}
        ids = list(dict.fromkeys(local_ids))
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            marks = ", ".join("?" for _ in chunk)
            rows = await self.db.fetch(
                f"SELECT {columns} FROM sheet WHERE source = ? AND local_id IN ({marks})",
                [self.source, *chunk],
                conn=conn,
            )
            for row in rows:
                found[str(row["local_id"])] = row
        return found

    @staticmethod
    def _created_of(row: dict[str, Any]) -> datetime | None:
        if not row.get("data"):
            return None
        created = json.loads(row["data"]).get("created")
        return datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None

    # ------------------------------------------------------------------ reads

    async def get(self, local_id: str) -> Sheet | Tombstone | None:
        row = await self.db.fetchone(
            "SELECT uri, local_id, stamp, deleted, data FROM sheet WHERE source = ? AND local_id = ?",
            [self.source, local_id],
        )
        return self._decode(row) if row else None

    async def get_by_uri(self, uri: str) -> Sheet | Tombstone | None:
        row = await self.db.fetchone("SELECT uri, local_id, stamp, deleted, data FROM sheet WHERE uri = ?", [uri])
        return self._decode(row) if row else None

    @staticmethod
    def _decode(row: dict[str, Any]) -> Sheet | Tombstone:
        if row["deleted"] or not row["data"]:
            return Tombstone(
                id=str(row["uri"]), local_id=str(row["local_id"]), datestamp=_to_datetime(int(row["stamp"]))
            )
        return sheet_from_dict(json.loads(row["data"]))

    async def count(self, *, include_deleted: bool = False) -> int:
        sql = "SELECT COUNT(*) AS n FROM sheet WHERE source = ?"
        if not include_deleted:
            sql += " AND deleted = ?"
        row = await self.db.fetchone(sql, [self.source] if include_deleted else [self.source, False])
        return int(row["n"]) if row else 0

    async def search_titles(self, text: str, *, limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """The admin's list: live sheets whose title or partner id contains ``text``, newest first.

        Matching ignores case, accents and hyphens ("ecole" finds "École", "saint malo" finds
        "Saint-Malo"). It is done here rather than with SQL ``LOWER(...) LIKE``, which only folds
        ASCII on SQLite (and on PostgreSQL under the C locale) and reads ``%`` and ``_`` in the
        text as wildcards. Only the light columns are read, in keyset pages, so memory stays flat.
        """
        where = "source = ? AND deleted = ?"
        if not text.strip():
            total = await self.db.fetchone(f"SELECT COUNT(*) AS n FROM sheet WHERE {where}", [self.source, False])
            rows = await self.db.fetch(
                f"SELECT uri, local_id, title, stamp FROM sheet WHERE {where} ORDER BY stamp DESC, pk_id DESC"
                " LIMIT ? OFFSET ?",
                [self.source, False, limit, offset],
            )
            return (int(total["n"]) if total else 0), rows
        needle = fold(text)
        matched = 0
        page: list[dict[str, Any]] = []
        last: tuple[int, int] | None = None
        while True:
            after = " AND (stamp < ? OR (stamp = ? AND pk_id < ?))" if last else ""
            params: list[Any] = [self.source, False]
            if last:
                params += [last[0], last[0], last[1]]
            rows = await self.db.fetch(
                f"SELECT pk_id, uri, local_id, title, stamp FROM sheet WHERE {where}{after}"
                " ORDER BY stamp DESC, pk_id DESC LIMIT ?",
                [*params, BATCH * 4],
            )
            if not rows:
                break
            for row in rows:
                if needle in fold(str(row["title"] or "")) or needle in fold(str(row["local_id"])):
                    if offset <= matched < offset + limit:
                        page.append({k: row[k] for k in ("uri", "local_id", "title", "stamp")})
                    matched += 1
            last = (int(rows[-1]["stamp"]), int(rows[-1]["pk_id"]))
        return matched, page

    async def iter_sheets(self, *, batch: int = 1000) -> AsyncIterator[Sheet]:
        """Every live sheet in (stamp, pk) order, streamed by keyset so memory stays flat."""
        last_stamp, last_pk = -1, -1
        while True:
            rows = await self.db.fetch(
                "SELECT pk_id, stamp, data FROM sheet WHERE source = ? AND deleted = ?"
                " AND (stamp > ? OR (stamp = ? AND pk_id > ?)) ORDER BY stamp, pk_id LIMIT ?",
                [self.source, False, last_stamp, last_stamp, last_pk, batch],
            )
            if not rows:
                return
            for row in rows:
                yield sheet_from_dict(json.loads(row["data"]))
            last_stamp, last_pk = int(rows[-1]["stamp"]), int(rows[-1]["pk_id"])

    async def local_ids(self, *, conn: BaseDBAsyncClient | None = None) -> set[str]:
        """Partner ids of the live sheets; pass ``conn`` when inside a transaction (SQLite has one
        connection: a read outside the transaction would wait for it forever)."""
        rows = await self.db.fetch(
            "SELECT local_id FROM sheet WHERE source = ? AND deleted = ?", [self.source, False], conn=conn
        )
        return {str(r["local_id"]) for r in rows}

    # ------------------------------------------------------------------ provenance (harvested sheets)

    async def provenance_of(self, local_ids: Sequence[str], *, conn: BaseDBAsyncClient) -> dict[str, dict[str, Any]]:
        """Stored provenance (decoded JSON) of the given sheets of this source, tombstones included."""
        found: dict[str, dict[str, Any]] = {}
        ids = list(dict.fromkeys(local_ids))
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            marks = ", ".join("?" for _ in chunk)
            rows = await self.db.fetch(
                f"SELECT local_id, provenance FROM sheet WHERE source = ? AND local_id IN ({marks})"
                " AND provenance IS NOT NULL",
                [self.source, *chunk],
                conn=conn,
            )
            for row in rows:
                found[str(row["local_id"])] = json.loads(row["provenance"])
        return found

    async def set_provenance(self, items: Mapping[str, Mapping[str, Any]], *, tx: BaseDBAsyncClient) -> None:
        """Write the provenance of existing rows (sheets or tombstones) of this source, in the caller's
        transaction. It is bookkeeping: the stamp, the content and the listeners are left alone."""
        await self.db.executemany(
            "UPDATE sheet SET provenance = ? WHERE source = ? AND local_id = ?",
            [(_provenance_json(p), self.source, k) for k, p in items.items()],
            conn=tx,
        )
