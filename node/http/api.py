"""The node's admin JSON API (bearer tokens): sheets CRUD, import, export.

Described in the OpenAPI document served at ``/api/openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from node.auth import AuthError, check_token
from node.context import NODE, TOKEN_NAME, NodeContext
from node.editing import prepare_sheet
from node.export import FORMATS, export_chunks
from node.importer import ImportFailed
from node.mapping import MappingError, builtin_mappings, load_mapping
from protocol.errors import SheetValidationError
from protocol.sheet import Sheet, Tombstone, format_datestamp, sheet_to_dict, tombstone_to_dict

routes = web.RouteTableDef()
# API paths anyone may call (the hub's search API, for browsers); the parts adding them list them here.
PUBLIC_API_PATHS = web.AppKey("public_api_paths", frozenset)
MAX_PAGE = 200
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "geojson": "application/geo+json; charset=utf-8",
}


def problem(status: int, title: str, **extra: Any) -> web.Response:
    """An RFC 9457 problem document."""
    body = {"status": status, "title": title, **extra}
    return web.json_response(body, status=status, content_type="application/problem+json")


def _unauthorized(title: str, **extra: Any) -> web.Response:
    response = problem(401, title, **extra)
    response.headers["WWW-Authenticate"] = 'Bearer realm="essaim"'
    return response


@web.middleware
async def bearer_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every ``/api/`` route but the OpenAPI document needs ``Authorization: Bearer <token>``."""
    public = request.app.get(PUBLIC_API_PATHS, frozenset())
    if request.path.startswith("/api/") and request.path != "/api/openapi.json" and request.path not in public:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("a bearer token is required", detail="create one with: essaim token create NAME")
        try:
            request[TOKEN_NAME] = await check_token(request.app[NODE].db, token.strip())
        except AuthError as exc:
            return _unauthorized(str(exc))
    return await handler(request)


def _ctx(request: web.Request) -> NodeContext:
    return request.app[NODE]


def _sheet_json(item: Sheet | Tombstone) -> dict[str, Any]:
    return tombstone_to_dict(item) if isinstance(item, Tombstone) else sheet_to_dict(item)


@routes.get("/api/v1/sheets")
async def list_sheets(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    try:
        limit = int(request.query.get("limit", "50"))
        offset = int(request.query.get("offset", "0"))
    except ValueError:
        return problem(400, "limit and offset must be whole numbers")
    if limit < 1 or offset < 0:
        return problem(400, f"limit must be at least 1 (at most {MAX_PAGE} are returned) and offset at least 0")
    limit = min(limit, MAX_PAGE)
    total, rows = await ctx.store.search_titles(request.query.get("q", ""), limit=limit, offset=offset)
    items = [
        {
            "id": r["uri"],
            "local_id": r["local_id"],
            "title": r["title"],
            "datestamp": format_datestamp(datetime.fromtimestamp(int(r["stamp"]), tz=UTC)),
        }
        for r in rows
    ]
    return web.json_response({"total": total, "limit": limit, "offset": offset, "items": items})


async def _read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"status": 400, "title": f"the body is not JSON: {exc}"}),
            content_type="application/problem+json",
        ) from None


async def _write(request: web.Request, local_id: str | None, *, mode: str) -> web.Response:
    """``mode``: "create" (POST: the sheet must not exist), "replace" (PUT: it must exist),
    "upsert" (PUT ?upsert=true: either)."""
    ctx = _ctx(request)
    data = await _read_json(request)
    try:
        sheet = prepare_sheet(
            data,
            partner=ctx.partner,
            licence=ctx.licence,
            resolver=ctx.resolver,
            local_id=local_id,
            description_format=request.query.get("description_format", "html"),
        )
    except SheetValidationError as exc:
        return problem(422, "invalid sheet", errors=[{"field": e.path, "message": e.message} for e in exc.errors])
    existing = await ctx.store.get(sheet.local_id)
    live = existing is not None and not isinstance(existing, Tombstone)
    if mode == "replace" and not live:
        return problem(
            404, f"no sheet {sheet.local_id!r}", detail="PUT with ?upsert=true, or POST /api/v1/sheets, creates it"
        )
    if mode == "create" and live:
        return problem(409, f"sheet {sheet.local_id!r} exists: PUT /api/v1/sheets/{sheet.local_id} to change it")
    result = await ctx.store.upsert(sheet)
    stored = await ctx.store.get(sheet.local_id)
    assert stored is not None
    status = 201 if result.status == "created" else 200
    return web.json_response({"status": result.status, "sheet": _sheet_json(stored)}, status=status)


@routes.post("/api/v1/sheets")
async def create_sheet(request: web.Request) -> web.Response:
    return await _write(request, None, mode="create")


@routes.put("/api/v1/sheets/{local_id}")
async def replace_sheet(request: web.Request) -> web.Response:
    upsert = request.query.get("upsert", "").lower() in ("1", "true", "yes")
    return await _write(request, request.match_info["local_id"], mode="upsert" if upsert else "replace")


@routes.get("/api/v1/sheets/{local_id}")
async def get_sheet(request: web.Request) -> web.Response:
    item = await _ctx(request).store.get(request.match_info["local_id"])
    if item is None:
        return problem(404, f"no sheet {request.match_info['local_id']!r}")
    if isinstance(item, Tombstone):
        return web.json_response(_sheet_json(item), status=410)
    return web.json_response(_sheet_json(item))


@routes.delete("/api/v1/sheets/{local_id}")
async def delete_sheet(request: web.Request) -> web.Response:
    result = await _ctx(request).store.delete(request.match_info["local_id"])
    if result.status == "missing":
        return problem(404, f"no sheet {request.match_info['local_id']!r}")
    return web.json_response({"status": "deleted", "id": result.uri})


async def run_import(
    ctx: NodeContext, path: Path, mapping_name: str, *, dry_run: bool, delete_missing: bool = False
) -> tuple[int, dict[str, Any]]:
    """Shared by the API and the admin: (HTTP status, report).

    Over HTTP only the built-in mappings are offered: a path would let a client make
    the server read (and quote in error messages) any ``.toml`` file it can reach.
    """
    if mapping_name not in builtin_mappings():
        error = f"no mapping {mapping_name!r}: one of {', '.join(builtin_mappings())}"
        return 400, {"ok": False, "error": error, "mappings": builtin_mappings()}
    try:
        mapping = load_mapping(mapping_name)
    except MappingError as exc:
        return 400, {"ok": False, "error": str(exc), "mappings": builtin_mappings()}
    importer = ctx.importer(mapping)
    ctx.count("imports_total")
    try:
        report = await importer.run(path, dry_run=dry_run, delete_missing=delete_missing)
    except ImportFailed as exc:
        ctx.count("imports_refused_total")
        return 422, exc.report.as_dict()
    except MappingError as exc:
        ctx.count("imports_refused_total")
        return 422, {"ok": False, "error": str(exc)}
    return 200, report.as_dict()


async def save_upload(request: web.Request, max_bytes: int) -> tuple[Path, str]:
    """Stream the request body (raw or the first multipart file) to a temporary file."""
    handle = tempfile.NamedTemporaryFile(prefix="essaim-import-", delete=False)
    name = request.query.get("filename", "upload")
    size = 0
    try:
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            part = await reader.next()
            while part is not None and not getattr(part, "filename", None):
                part = await reader.next()
            if part is None:
                raise web.HTTPBadRequest(text="no file in the form")
            name = part.filename or name  # type: ignore[union-attr]
            while chunk := await part.read_chunk():  # type: ignore[union-attr]
                size += len(chunk)
                if size > max_bytes:
                    raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=size)
                handle.write(chunk)
        else:
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=size)
                handle.write(chunk)
    except BaseException:
        handle.close()
        await asyncio.to_thread(Path(handle.name).unlink, missing_ok=True)
        raise
    handle.close()
    return Path(handle.name), Path(name).name


@routes.post("/api/v1/import")
async def import_file(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    mapping = request.query.get("mapping", "")
    if not mapping:
        return problem(400, "the mapping query parameter is required", ok=False, mappings=builtin_mappings())
    path, name = await save_upload(request, ctx.max_upload)
    try:
        status, report = await run_import(
            ctx,
            path,
            mapping,
            dry_run=request.query.get("dry_run") in ("1", "true"),
            delete_missing=request.query.get("delete_missing") in ("1", "true"),
        )
    finally:
        path.unlink(missing_ok=True)
    report["file"] = name
    if status != 200:  # the report's members extend the problem document
        title = "import refused, nothing was written" if status == 422 else "the import cannot start"
        return problem(status, title, **{k: v for k, v in report.items() if k not in ("status", "title")})
    return web.json_response(report, status=status)


async def stream_export(request: web.Request, ctx: NodeContext, fmt: str) -> web.StreamResponse:
    """Shared by the API and the admin: the whole export, streamed."""
    if fmt not in FORMATS:
        return problem(400, f"format must be one of {', '.join(FORMATS)}")
    response = web.StreamResponse(
        headers={
            "Content-Type": CONTENT_TYPES[fmt],
            "Content-Disposition": f'attachment; filename="essaim-export.{fmt}"',
        }
    )
    await response.prepare(request)
    async for chunk in export_chunks(ctx.store, fmt, licence=ctx.licence, source=ctx.base_url):
        await response.write(chunk.encode("utf-8"))
    await response.write_eof()
    return response


@routes.get("/api/v1/export")
async def export(request: web.Request) -> web.StreamResponse:
    return await stream_export(request, _ctx(request), request.query.get("format", "json"))
