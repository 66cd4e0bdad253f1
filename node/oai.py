"""OAI-PMH 2.0 endpoint of a node: runs the typed requests of :mod:`protocol.oai` against the tables.

Lists page by keyset over ``(stamp, pk_id)`` (or ``(spec, stamp, sheet_pk)`` of
``sheet_set`` for a selective harvest), both covered by an index, and join the
metadata pre-rendered by a node's storage in ``sheet_format``. A live sheet without
a stored fragment (every sheet of a hub, see :class:`node.storage.SheetStore`) is
rendered from its stored JSON as it is served: every live sheet is disseminated in
every format. Deleted records keep their row (``deleted``, no format rows): they are
listed for every prefix as ``status="deleted"`` headers (deletedRecord
``persistent``, spec §2.5.1).

Harvesters are sequential: they ask for page N+1 only once they have read page N. So
when a page has a successor, the executor reads and renders that successor at once
(:class:`ReadAhead`), while the harvester parses the page it was sent; the next request
finds it ready and only wraps it in a fresh envelope and token. A page read ahead is a
snapshot at most ``ttl`` seconds old, like an answer that took that long: a sheet
written meanwhile has a datestamp after the list's frozen ``until`` and reaches the next
incremental harvest either way. Writes made through this process's storage drop the
pages read ahead at once; writes by another process (a CLI import) are bounded by the ttl.

Mount with ``app.router.add_route("*", "/oai", make_oai_handler(db, config))`` and
``app.router.add_get("/schemas/{name}", make_schema_handler())``.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from aiohttp import web

from node.db import Database
from protocol.accept import qualities
from protocol.oai.config import OaiConfig
from protocol.oai.errors import ErrorCode, OaiError
from protocol.oai.identifiers import make_identifier, parse_identifier
from protocol.oai.metadata import METADATA_FORMATS, render_format
from protocol.oai.namespaces import ESSAIM_SCHEMA_FILE
from protocol.oai.native import schema_bytes
from protocol.oai.requests import (
    GetRecord,
    Identify,
    ListMetadataFormats,
    ListQuery,
    ListSets,
    OaiRequest,
    echo_arguments,
    parse_request,
)
from protocol.oai.response import render_error, render_records, render_result
from protocol.oai.results import (
    FormatsResult,
    Header,
    IdentifyResult,
    OaiResult,
    Record,
    RecordResult,
    SetsResult,
    make_page,
    next_query,
)
from protocol.oai.sets import set_catalogue
from protocol.oai.stylesheet import STYLESHEET_FILE, stylesheet_bytes
from protocol.sheet import Partner

Clock = Callable[[], float]
XML_CONTENT_TYPE = "text/xml"

_COLUMNS = "s.pk_id, s.source, s.local_id, s.stamp, s.deleted, s.sets, s.provenance"


Fetched = tuple[list[Record], bytes | None]  # up to page_size + 1 records, and the page's records as XML


class ReadAhead:
    """The next page of each running list, read while the harvester works on the current one.

    Keyed by the :class:`ListQuery` the page's resumption token resumes; an entry is used
    once, within ``ttl`` seconds, and only if no write went through this process's storage
    since it was started (``generation``). At most ``capacity`` lists are held (the oldest
    goes first), each one page: memory does not grow with the corpus.
    """

    def __init__(self, capacity: int = 32, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.clock = clock
        self.generation = 0
        self.hits = 0
        self._entries: OrderedDict[ListQuery, tuple[float, int, asyncio.Task[Fetched]]] = OrderedDict()

    def start(self, query: ListQuery, read: Callable[[ListQuery], Coroutine[Any, Any, Fetched]]) -> None:
        if self.capacity <= 0 or query in self._entries:
            return
        task: asyncio.Task[Fetched] = asyncio.get_running_loop().create_task(read(query))
        task.add_done_callback(_consume_error)
        self._entries[query] = (self.clock(), self.generation, task)
        while len(self._entries) > self.capacity:
            _, (_, _, old) = self._entries.popitem(last=False)
            old.cancel()

    async def take(self, query: ListQuery) -> Fetched | None:
        """The page read ahead for ``query``, or None (not started, stale, or its read failed)."""
        entry = self._entries.pop(query, None)
        if entry is None:
            return None
        started, generation, task = entry
        if generation != self.generation or self.clock() - started > self.ttl:
            task.cancel()
            return None
        try:
            fetched = await task
        except Exception:  # the read is done again on the request's own path, which reports errors
            return None
        if generation != self.generation:  # a write landed while the read ran
            return None
        self.hits += 1
        return fetched

    def invalidate(self) -> None:
        self.generation += 1
        for _, _, task in self._entries.values():
            task.cancel()
        self._entries.clear()

    def watch(self, db: Database) -> None:
        """Invalidate on every sheet write made through ``db`` (the listener keeps no strong reference)."""
        ref = weakref.ref(self)

        async def listener(tx: Any, changes: Any) -> None:
            target = ref()
            if target is not None:
                target.invalidate()

        listener.essaim_oai_read_ahead = ref  # type: ignore[attr-defined]
        db.sheet_listeners[:] = [
            x for x in db.sheet_listeners if getattr(x, "essaim_oai_read_ahead", lambda: True)() is not None
        ]
        db.sheet_listeners.append(listener)


def _consume_error(task: asyncio.Task[Fetched]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved here so that an unused failed read logs nothing


class OaiExecutor:
    """Answers one typed request from the database; dispatch is a table of request type -> method."""

    def __init__(self, db: Database, config: OaiConfig, read_ahead: ReadAhead | None = None) -> None:
        self.db = db
        self.config = config
        self.read_ahead = read_ahead if read_ahead is not None else ReadAhead()
        self.read_ahead.watch(db)
        self.repo_id = config.repo_id  # a property parsing the base URL: read once, not per record
        # The fragments are read as the UTF-8 bytes the database holds: the page joins them as they come.
        xml = "convert_to(f.xml, 'UTF8')" if db.dialect == "postgres" else "CAST(f.xml AS BLOB)"
        # The stored fragment, or else the sheet's JSON to render it from (see _record).
        self._metadata = f"{xml} AS xml, CASE WHEN f.sheet_pk IS NULL THEN s.data END AS data"
        self._table: Mapping[type, Callable[[Any, int], Awaitable[OaiResult]]] = {
            Identify: self.identify,
            ListMetadataFormats: self.list_metadata_formats,
            ListSets: self.list_sets,
            GetRecord: self.get_record,
            ListQuery: self.list_records,
        }

    async def run(self, request: OaiRequest, now: int) -> OaiResult:
        return await self._table[type(request)](request, now)

    # ------------------------------------------------------------------ rows -> records

    def _record(self, row: Mapping[str, Any], prefix: str | None) -> Record:
        """The record of a row; ``prefix``: the format of its metadata (None for a header alone)."""
        deleted = bool(row["deleted"])
        stamp = int(row["stamp"])
        header = Header(
            identifier=make_identifier(self.repo_id, str(row["source"]), str(row["local_id"])),
            stamp=stamp,
            sets=tuple(str(row["sets"] or "").split()),
            deleted=deleted,
        )
        provenance = json.loads(row["provenance"]) if row.get("provenance") else None
        metadata: bytes | None = None
        if prefix is not None and not deleted:
            xml = row["xml"]
            if xml is not None:
                metadata = xml.encode("utf-8") if isinstance(xml, str) else bytes(xml)
            else:  # not stored: rendered from the sheet's JSON (selected only for such a row)
                metadata = render_format(prefix, json.loads(row["data"])).encode("utf-8")
        return Record(header, metadata, provenance, key=(stamp, int(row["pk_id"])))

    async def _row_by_identifier(self, identifier: str, prefix: str | None) -> dict[str, Any]:
        parsed = parse_identifier(self.config.repo_id, identifier)
        if parsed is None:
            raise OaiError(ErrorCode.ID_DOES_NOT_EXIST, f"{identifier!r} is not an identifier of this repository")
        xml = self._metadata if prefix else "NULL AS xml"
        join = " LEFT JOIN sheet_format f ON f.sheet_pk = s.pk_id AND f.prefix = ?" if prefix else ""
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS}, {xml} FROM sheet s{join} WHERE s.source = ? AND s.local_id = ?",
            [*([prefix] if prefix else []), *parsed],
        )
        if row is None:
            raise OaiError(ErrorCode.ID_DOES_NOT_EXIST, f"no record has the identifier {identifier!r}")
        return row

    # ------------------------------------------------------------------ verbs

    async def identify(self, request: Identify, now: int) -> OaiResult:
        row = await self.db.fetchone("SELECT MIN(stamp) AS earliest FROM sheet")
        earliest = row["earliest"] if row and row["earliest"] is not None else now
        return IdentifyResult(int(earliest))

    async def list_metadata_formats(self, request: ListMetadataFormats, now: int) -> OaiResult:
        if request.identifier is None:
            return FormatsResult(METADATA_FORMATS)
        # Raises idDoesNotExist; a live sheet is disseminated in every format (stored or rendered
        # when served), a tombstone too, as a deleted header.
        await self._row_by_identifier(request.identifier, None)
        return FormatsResult(METADATA_FORMATS)

    async def list_sets(self, request: ListSets, now: int) -> OaiResult:
        partners: list[Partner] = []
        if self.config.hub:
            specs = await self.db.fetch(
                "SELECT DISTINCT spec FROM sheet_set WHERE spec LIKE ? ORDER BY spec", ["partner:%"]
            )
            for spec_row in specs:
                row = await self.db.fetchone(
                    "SELECT s.data FROM sheet_set ss JOIN sheet s ON s.pk_id = ss.sheet_pk"
                    " WHERE ss.spec = ? AND s.data IS NOT NULL ORDER BY ss.stamp DESC LIMIT 1",
                    [spec_row["spec"]],
                )
                if row is not None:
                    data = json.loads(row["data"]).get("partner") or {}
                    partners.append(Partner(name=str(data.get("name", "")), id=data.get("id")))
        return SetsResult(tuple(set_catalogue(hub=self.config.hub, partners=partners)))

    async def get_record(self, request: GetRecord, now: int) -> OaiResult:
        row = await self._row_by_identifier(request.identifier, request.prefix)
        return RecordResult(self._record(row, request.prefix))

    def _list_sql(self, query: ListQuery, *, count: bool) -> tuple[str, list[Any]]:
        """The keyset query of a list request (spec §4.3, §4.5): one index range scan, no OFFSET."""
        if query.set_spec is None:
            source, stamp, pk = "sheet s", "s.stamp", "s.pk_id"
            where, params = [], []
        else:
            source = "sheet_set ss JOIN sheet s ON s.pk_id = ss.sheet_pk"
            stamp, pk = "ss.stamp", "ss.sheet_pk"
            where, params = ["ss.spec = ?"], [query.set_spec]
        where.append(f"{stamp} <= ?")
        params.append(query.until_stamp)
        if query.from_stamp is not None:
            where.append(f"{stamp} >= ?")
            params.append(query.from_stamp)
        if query.after is not None and not count:
            # A row value, not ``stamp > ? OR (stamp = ? AND pk > ?)``: with statistics (ANALYZE) SQLite
            # plans the OR as a MULTI-INDEX OR plus a sort of every remaining row, so each page cost
            # O(rows left); the row value is one index range scan that stops at LIMIT, on both backends.
            where.append(f"({stamp}, {pk}) > (?, ?)")
            params.extend([query.after[0], query.after[1]])
        if count:
            # completeListSize (spec §3.5: may be an estimate) counts the keyset index range alone: no
            # join, an index-only scan. It is exact, as every record is listed in every format; with
            # the join it was a scan of a million fragments (~1 s per 100k sheets) at the first page.
            table = "sheet s" if query.set_spec is None else "sheet_set ss"
            return f"SELECT COUNT(*) AS n FROM {table} WHERE {' AND '.join(where)}", params
        # Every record is listed for every prefix: a live one with its stored fragment or rendered
        # when served, a deleted one as a header (deletedRecord persistent).
        if query.headers_only:
            join, metadata = "", "NULL AS xml"
        else:
            join, metadata = " LEFT JOIN sheet_format f ON f.sheet_pk = s.pk_id AND f.prefix = ?", self._metadata
            params.insert(0, query.prefix)
        sql = (
            f"SELECT {_COLUMNS}, {metadata} FROM {source}{join} WHERE {' AND '.join(where)}"
            f" ORDER BY {stamp}, {pk} LIMIT ?"
        )
        return sql, [*params, self.config.page_size + 1]

    async def list_records(self, query: ListQuery, now: int) -> OaiResult:
        complete = query.complete_size
        if complete is None:
            # Counted once, at the first page, then carried in the token (spec §3.5: may be an estimate).
            sql, params = self._list_sql(query, count=True)
            row = await self.db.fetchone(sql, params)
            complete = int(row["n"]) if row else 0
        ahead = await self.read_ahead.take(query)
        records, text = ahead if ahead is not None else (await self._read_page(query), None)
        if not records:
            # Also when the rest of a list moved past the frozen 'until' during the harvest: the
            # schema forbids an empty list element, and noRecordsMatch ends a harvest cleanly.
            raise OaiError(ErrorCode.NO_RECORDS_MATCH, "no record matches the request")
        following = next_query(query, records, complete, self.config)
        if following is not None:
            self.read_ahead.start(following, self._read_ahead)
        return make_page(query, records, complete, self.config, now, text)

    async def _read_page(self, query: ListQuery) -> list[Record]:
        sql, params = self._list_sql(query, count=False)
        rows = await self.db.fetch(sql, params)
        prefix = None if query.headers_only else query.prefix
        return [self._record(r, prefix) for r in rows]

    async def _read_ahead(self, query: ListQuery) -> Fetched:
        records = await self._read_page(query)
        return records, render_records(records[: self.config.page_size], query)


async def respond(executor: OaiExecutor, arguments: Mapping[str, Sequence[str]], now: int) -> bytes:
    """The body of the answer to one OAI-PMH request (always HTTP 200, errors included)."""
    config = executor.config
    echo = echo_arguments(arguments)
    try:
        request = parse_request(arguments, config, now)
        result = await executor.run(request, now)
    except OaiError as error:
        return render_error(error, config, now, echo)
    return render_result(result, config, now, echo)


def _multi(items: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in items.items():
        out.setdefault(key, []).append(str(value))  # a urlencoded form only holds text
    return out


def make_oai_handler(
    db: Database, config: OaiConfig, clock: Clock | None = None, *, read_ahead: ReadAhead | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """aiohttp handler for GET and form-encoded POST (spec §3.1.1), gzip/deflate on request.

    ``read_ahead`` reads the next pages of running lists (default: 32 lists); the caller
    that passes one calls its ``invalidate`` before closing the database.
    """
    executor = OaiExecutor(db, config, read_ahead)
    now_of = clock or time.time

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            if request.content_type != "application/x-www-form-urlencoded":
                raise web.HTTPUnsupportedMediaType(text="OAI-PMH POST requests are application/x-www-form-urlencoded")
            arguments = _multi(await request.post())
        elif request.method in ("GET", "HEAD"):
            arguments = _multi(request.query)
        else:
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "POST"])
        body = await respond(executor, arguments, int(now_of()))
        # Identify announces gzip and deflate: the answer is compressed when the client accepts either.
        coding = content_coding(request.headers.get("Accept-Encoding", ""))
        headers = {"Vary": "Accept-Encoding"}
        if coding is not None:
            if len(body) > _COMPRESS_INLINE:  # zlib releases the GIL: a page is compressed off the event loop
                body = await asyncio.get_running_loop().run_in_executor(None, compress, body, coding)
            else:
                body = compress(body, coding)
            headers["Content-Encoding"] = coding
        return web.Response(body=body, content_type=XML_CONTENT_TYPE, charset="utf-8", headers=headers)

    return handler


# zlib level 1, as web servers compress dynamic answers by default (nginx's gzip_comp_level): a
# ListRecords page costs half the CPU of zlib's default level 6, for ~1.4 times its compressed size.
COMPRESSION_LEVEL = 1
_COMPRESS_INLINE = 64 * 1024


def compress(body: bytes, coding: str) -> bytes:
    """``body`` in the ``gzip`` or ``deflate`` (zlib, RFC 9110 §8.4.1.2) content coding."""
    compressor = zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, 31 if coding == "gzip" else 15)
    return compressor.compress(body) + compressor.flush()


def content_coding(accept_encoding: str) -> str | None:
    """The coding to answer with for an ``Accept-Encoding`` header: gzip, else deflate, else None (identity).

    A coding is acceptable when it is listed, or covered by ``*``, with a quality above zero (RFC 9110 §12.5.3).
    """
    # A q that is not a number refuses the coding; x-gzip is gzip (RFC 9110 §8.4.1.3).
    quality = {"gzip" if value == "x-gzip" else value: q or 0.0 for value, q in qualities(accept_encoding)}
    for coding in ("gzip", "deflate"):
        if quality.get(coding, quality.get("*", 0.0)) > 0:
            return coding
    return None


def make_schema_handler() -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Serves ``/schemas/essaim-sheet-1.0.xsd`` (and the browser stylesheet) from package data."""
    files = {ESSAIM_SCHEMA_FILE: (schema_bytes, "application/xml"), STYLESHEET_FILE: (stylesheet_bytes, "text/xsl")}

    async def handler(request: web.Request) -> web.StreamResponse:
        entry = files.get(request.match_info.get("name", ""))
        if entry is None:
            raise web.HTTPNotFound()
        loader, content_type = entry
        response = web.Response(body=loader(), content_type=content_type, charset="utf-8")
        response.headers["Cache-Control"] = "public, max-age=86400"
        response.enable_compression()
        return response

    return handler
