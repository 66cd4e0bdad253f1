"""The server-rendered admin, in French, for partners without developers.

Sign in, list and search sheets, edit one, upload an import file and read its
report. Sessions are signed cookies; every POST carries a CSRF token (derived
from the session, or a double-submit cookie on the sign-in form); no admin page
answers without a session.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from node.auth import AuthError, authenticate
from node.context import CSRF, NODE, USER, NodeContext
from node.editing import prepare_sheet
from node.http.api import run_import, stream_export
from node.mapping import builtin_mappings, load_mapping
from node.models import ImportRun
from protocol.errors import SheetValidationError
from protocol.sheet import Sheet, Tombstone, sheet_to_dict
from protocol.taxonomy import default_taxonomy
from protocol.text import html_to_text

routes = web.RouteTableDef()
SESSION = "essaim_session"
LOGIN_CSRF = "essaim_login_csrf"
PAGE = 50
PLACES, MATCHES = 3, 5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _ctx(request: web.Request) -> NodeContext:
    return request.app[NODE]


@web.middleware
async def csrf_and_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/admin"):
        return await handler(request)
    ctx = _ctx(request)
    if request.path == "/admin/login":
        if request.method == "POST":
            form = await request.post()
            cookie = request.cookies.get(LOGIN_CSRF)
            if not cookie or not secrets.compare_digest(cookie, str(form.get("csrf", ""))):
                raise web.HTTPForbidden(text="Jeton CSRF invalide : rechargez la page de connexion.")
        return await handler(request)
    cookie = request.cookies.get(SESSION)
    user = ctx.signer.verify(cookie)
    if user is None:
        raise web.HTTPSeeOther(f"/admin/login?next={quote(request.path_qs)}")
    request[USER] = user
    request[CSRF] = ctx.signer.csrf(cookie or "")
    if request.method == "POST":
        form = await request.post()
        if not ctx.signer.check_csrf(cookie, str(form.get("csrf", ""))):
            raise web.HTTPForbidden(text="Jeton CSRF invalide : rechargez la page.")
    response = await handler(request)
    response.headers["Cache-Control"] = "no-store"
    return response


async def template_context(request: web.Request) -> dict[str, Any]:
    return {
        "csrf": request.get(CSRF, ""),
        "partner": _ctx(request).partner,
        "signed_in": USER in request,
        "federation_nav": bool(_ctx(request).extra.get("federation_nav")),
        "taxonomy": default_taxonomy(),
        "hub": _ctx(request).store.hub,
    }


# ---------------------------------------------------------------------- sign in


@routes.get("/admin/login")
async def login_form(request: web.Request) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = aiohttp_jinja2.render_template(
        "admin/login.html", request, {"login_csrf": token, "next": request.query.get("next", "/admin"), "error": None}
    )
    response.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="Strict", secure=_ctx(request).secure_cookies)
    return response


@routes.post("/admin/login")
async def login(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    form = await request.post()
    target = str(form.get("next") or "/admin")
    if not target.startswith("/admin"):
        target = "/admin"  # never an open redirect
    try:
        user = await authenticate(ctx.db, str(form.get("email", "")), str(form.get("password", "")))
    except AuthError:
        ctx.count("admin_login_failures_total")
        token = secrets.token_urlsafe(24)
        response = aiohttp_jinja2.render_template(
            "admin/login.html",
            request,
            {"login_csrf": token, "next": target, "error": "Adresse ou mot de passe incorrect."},
            status=401,
        )
        response.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="Strict", secure=ctx.secure_cookies)
        return response
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        SESSION,
        ctx.signer.issue(user),
        httponly=True,
        samesite="Lax",
        secure=ctx.secure_cookies,
        max_age=ctx.signer.ttl,
        path="/admin",
    )
    response.del_cookie(LOGIN_CSRF)
    raise response


@routes.post("/admin/logout")
async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/admin/login")
    response.del_cookie(SESSION, path="/admin")
    raise response


# ---------------------------------------------------------------------- sheets


@routes.get("/admin")
@aiohttp_jinja2.template("admin/list.html")
async def sheet_list(request: web.Request) -> dict[str, Any]:
    ctx = _ctx(request)
    q = request.query.get("q", "").strip()
    try:
        page = max(int(request.query.get("page", "1")), 1)
    except ValueError:
        page = 1
    total, rows = await ctx.store.search_titles(q, limit=PAGE, offset=(page - 1) * PAGE)
    for row in rows:
        row["when"] = time.strftime("%d/%m/%Y %H:%M", time.gmtime(int(row["stamp"])))
    return {"q": q, "page": page, "total": total, "rows": rows, "pages": max((total + PAGE - 1) // PAGE, 1)}


def _form_values(sheet: Sheet | None) -> dict[str, Any]:
    """The edit form's initial values: the sheet flattened to form fields."""
    if sheet is None:
        return {
            "places": [{}] * PLACES,
            "matches": [{}] * MATCHES,
            "holder": {},
            "contact": {},
            "codes": set(),
            "description_format": "markdown",
        }
    data = sheet_to_dict(sheet)
    description = sheet.description or ""
    rich = any(tag in description for tag in ("<a ", "<strong", "<em", "<ul", "<ol", "<h"))
    places = list(data.get("places", []))[:PLACES]
    matches = list(data.get("matches", []))[:MATCHES]
    return {
        **data,
        "description": description if rich else html_to_text(description).replace("\n", "\n\n"),
        "description_format": "html" if rich else "markdown",
        "holder": data.get("holder", {}),
        "contact": data.get("contact", {}),
        "places": places + [{}] * (PLACES - len(places)),
        "matches": matches + [{}] * (MATCHES - len(matches)),
        "links_text": "\n".join(link["url"] for link in data.get("links", [])),
        "images_text": "\n".join(i["url"] for i in data.get("images", [])),
        "awards_text": "\n".join(a["name"] for a in data.get("awards", [])),
        "codes": set(sheet.themes) | set(sheet.subthemes),
    }


def _lines(text: Any) -> list[str]:
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


def _form_to_dict(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """The posted form back to the canonical sheet shape (validated by ``prepare_sheet``)."""

    def get(name: str) -> str | None:
        value = str(form.get(name, "")).strip()
        return value or None

    places = []
    for i in range(PLACES):
        place = {k: get(f"place-{i}-{k}") for k in ("address", "postcode", "commune", "scope")}
        if any(v for k, v in place.items() if k != "scope"):
            places.append({k: v for k, v in place.items() if v})
    matches = []
    for i in range(MATCHES):
        text = get(f"match-{i}-text")
        if text:
            matches.append(
                {
                    "kind": get(f"match-{i}-kind"),
                    "direction": get(f"match-{i}-direction") or "need",
                    "status": get(f"match-{i}-status") or "open",
                    "text": text,
                }
            )
    holder = {k: get(f"holder-{k}") for k in ("name", "legal_form", "siret")}
    contact = {k: get(f"contact-{k}") for k in ("name", "email", "phone", "url")}
    data: dict[str, Any] = {
        "local_id": get("local_id"),
        "title": get("title"),
        "summary": get("summary"),
        "description": get("description"),
        "url": get("url"),
        "stage": get("stage"),
        "start_date": get("start_date"),
        "end_date": get("end_date"),
        "themes": [str(c) for c in form.getall("codes", [])],
        "audiences": [str(c) for c in form.getall("audiences", [])],
        "engineering": [str(c) for c in form.getall("engineering", [])],
        "places": places,
        "matches": matches,
        "links": [{"url": u} for u in _lines(form.get("links"))],
        "images": [{"url": u} for u in _lines(form.get("images"))],
        "awards": [{"name": a} for a in _lines(form.get("awards"))],
    }
    if holder["name"] or holder["siret"]:
        data["holder"] = {k: v for k, v in holder.items() if v}
    if any(contact.values()):
        data["contact"] = {k: v for k, v in contact.items() if v}
    return {k: v for k, v in data.items() if v not in (None, [], "")}


async def _render_edit(
    request: web.Request,
    values: dict[str, Any],
    *,
    new: bool,
    errors: list[Any],
    status: int = 200,
    saved: str | None = None,
) -> web.Response:
    return aiohttp_jinja2.render_template(
        "admin/edit.html",
        request,
        {"v": values, "new": new, "errors": errors, "saved": saved, "PLACES": PLACES, "MATCHES": MATCHES},
        status=status,
    )


@routes.get("/admin/sheets/new")
async def new_form(request: web.Request) -> web.Response:
    return await _render_edit(request, _form_values(None), new=True, errors=[])


@routes.get("/admin/sheets/{local_id}")
async def edit_form(request: web.Request) -> web.Response:
    item = await _ctx(request).store.get(request.match_info["local_id"])
    if item is None or isinstance(item, Tombstone):
        raise web.HTTPNotFound(text="Fiche introuvable.")
    return await _render_edit(
        request, _form_values(item), new=False, errors=[], saved="ok" if request.query.get("saved") else None
    )


def _same(a: Any, b: Any) -> bool:
    return (a or None) == (b or None)


def _keep_hidden(old: Sheet, data: dict[str, Any], form: MultiDictProxy[Any]) -> tuple[dict[str, Any], str | None]:
    """Merge the posted form into the stored sheet: keep what the form does not show.

    The form shows a part of a sheet: the partner's raw tags, language, licence,
    coordinates and codes of places, link labels, image captions, award years,
    match dates and the places and matches beyond the form's rows would be lost
    otherwise. An untouched description keeps its stored HTML (the form shows it
    as text). Returns the merged sheet and the description format to use (None
    keeps the posted one).
    """
    before = sheet_to_dict(old)
    merged = dict(data)
    for key in ("tags", "language", "licence"):
        if key in before:
            merged[key] = before[key]
    shown = _form_values(old)
    fmt = None
    posted = str(form.get("description", "")).replace("\r\n", "\n").strip()
    if posted == str(shown.get("description") or "").strip():
        merged["description"] = old.description
        fmt = "html"
        if not old.description:
            merged.pop("description", None)
    old_places = list(before.get("places", []))
    places = []
    for place in merged.get("places", []):
        same = next(
            (p for p in old_places if all(_same(p.get(k), place.get(k)) for k in ("address", "postcode", "commune"))),
            None,
        )
        places.append({**same, "scope": place.get("scope", same.get("scope"))} if same else place)
    places += old_places[PLACES:]
    old_matches = list(before.get("matches", []))
    matches = []
    for match in merged.get("matches", []):
        same = next((m for m in old_matches if m.get("text") == match.get("text")), None)
        matches.append({**same, **match} if same else match)
    matches += old_matches[MATCHES:]
    merged["places"], merged["matches"] = places, matches

    def keep(key: str, name: str) -> None:
        old_items = {item[name]: item for item in before.get(key, [])}
        merged[key] = [{**old_items.get(item[name], {}), **item} for item in merged.get(key, [])]

    keep("links", "url")
    keep("images", "url")
    keep("awards", "name")
    if (before.get("contact") or {}).get("url"):
        merged["contact"] = {"url": before["contact"]["url"], **merged.get("contact", {})}
    return {k: v for k, v in merged.items() if v not in (None, [], "")}, fmt


async def _save(request: web.Request, local_id: str | None) -> web.Response:
    ctx = _ctx(request)
    form = await request.post()
    data = _form_to_dict(form)
    fmt = str(form.get("description_format", "markdown"))
    stored = await ctx.store.get(local_id) if local_id is not None else None
    if isinstance(stored, Sheet):
        data, kept_format = _keep_hidden(stored, data, form)
        fmt = kept_format or fmt
    try:
        sheet = prepare_sheet(
            data,
            partner=ctx.partner,
            licence=ctx.licence,
            resolver=ctx.resolver,
            local_id=local_id,
            description_format=fmt if fmt in ("html", "markdown") else "markdown",
        )
    except SheetValidationError as exc:
        values = {**_form_values(None), **data, "codes": set(data.get("themes", [])), "description_format": fmt}
        values["places"] = (data.get("places", []) + [{}] * PLACES)[:PLACES]
        values["matches"] = (data.get("matches", []) + [{}] * MATCHES)[:MATCHES]
        for key in ("holder", "contact"):
            values[key] = data.get(key, {})
        values["links_text"] = str(form.get("links", ""))
        values["images_text"] = str(form.get("images", ""))
        values["awards_text"] = str(form.get("awards", ""))
        return await _render_edit(request, values, new=local_id is None, errors=list(exc.errors), status=422)
    if local_id is None:
        existing = await ctx.store.get(sheet.local_id)
        if existing is not None and not isinstance(existing, Tombstone):
            values = {**_form_values(None), **data, "codes": set(data.get("themes", []))}
            return await _render_edit(
                request, values, new=True, status=409, errors=[f"L'identifiant « {sheet.local_id} » est déjà utilisé."]
            )
    await ctx.store.upsert(sheet)
    raise web.HTTPSeeOther(f"/admin/sheets/{quote(sheet.local_id)}?saved=1")


@routes.post("/admin/sheets/new")
async def create(request: web.Request) -> web.Response:
    return await _save(request, None)


@routes.post("/admin/sheets/{local_id}")
async def update(request: web.Request) -> web.Response:
    return await _save(request, request.match_info["local_id"])


@routes.post("/admin/sheets/{local_id}/delete")
async def delete(request: web.Request) -> web.Response:
    await _ctx(request).store.delete(request.match_info["local_id"])
    raise web.HTTPSeeOther("/admin")


# ---------------------------------------------------------------------- import


@routes.get("/admin/sheets")
async def sheets_alias(request: web.Request) -> web.Response:
    """``/admin`` is the list of sheets; this address leads there too."""
    raise web.HTTPSeeOther("/admin" + (f"?{request.query_string}" if request.query_string else ""))


@routes.get("/admin/import/{mapping}.csv")
async def import_template(request: web.Request) -> web.Response:
    """An empty spreadsheet with the columns a CSV mapping reads, to fill in and import."""
    name = request.match_info["mapping"]
    if name not in builtin_mappings():
        raise web.HTTPNotFound(text="Format de fichier inconnu.")
    mapping = load_mapping(name)
    if mapping.format != "csv":
        raise web.HTTPNotFound(text="Ce format n'est pas un tableur.")
    columns = list(dict.fromkeys(c for rule in mapping.rules for c in rule.columns))
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=mapping.delimiter, lineterminator="\r\n").writerow(columns)
    # A byte-order mark, so that spreadsheets read the accents of the header as UTF-8.
    body = ("\ufeff" if mapping.encoding == "utf-8-sig" else "") + buffer.getvalue()
    return web.Response(
        body=body.encode(mapping.encoding if mapping.encoding != "utf-8-sig" else "utf-8"),
        content_type="text/csv",
        charset=mapping.encoding.removesuffix("-sig"),
        headers={"Content-Disposition": f'attachment; filename="modele-{name}.csv"'},
    )


def _mappings() -> list[tuple[str, str, bool]]:
    """(name, description, whether it reads a spreadsheet) of every built-in mapping."""
    out = []
    for name in builtin_mappings():
        mapping = load_mapping(name)
        out.append((name, mapping.description, mapping.format == "csv"))
    return out


@routes.get("/admin/import")
@aiohttp_jinja2.template("admin/import.html")
async def import_form(request: web.Request) -> dict[str, Any]:
    runs = await ImportRun.all().using_db(_ctx(request).db.conn).order_by("-id").limit(20)
    return {"mappings": _mappings(), "runs": runs, "report": None}


@routes.post("/admin/import")
async def import_upload(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    form = await request.post()
    upload = form.get("file")
    mapping = str(form.get("mapping", ""))
    dry_run = form.get("dry_run") == "on"
    if not isinstance(upload, web.FileField):
        raise web.HTTPBadRequest(text="Aucun fichier envoyé.")
    # aiohttp spools uploads to an anonymous temporary file: copy it to a named one for the importer.
    with tempfile.NamedTemporaryFile(prefix="essaim-import-", delete=False) as handle:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, handle)
        path = Path(handle.name)
    started = int(time.time())
    try:
        _status, report = await run_import(ctx, path, mapping, dry_run=dry_run)
    finally:
        await asyncio.to_thread(path.unlink, missing_ok=True)
    report["file"] = upload.filename
    run = await ImportRun.create(
        using_db=ctx.db.conn,
        started=started,
        finished=int(time.time()),
        filename=upload.filename[:255],
        mapping=mapping[:128],
        dry_run=dry_run,
        ok=bool(report.get("ok")),
        report=json.dumps(report, ensure_ascii=False),
    )
    raise web.HTTPSeeOther(f"/admin/imports/{run.id}")


@routes.get("/admin/imports/{run_id:\\d+}")
@aiohttp_jinja2.template("admin/import.html")
async def import_report(request: web.Request) -> dict[str, Any]:
    ctx = _ctx(request)
    run = await ImportRun.filter(id=int(request.match_info["run_id"])).using_db(ctx.db.conn).first()
    if run is None:
        raise web.HTTPNotFound(text="Rapport introuvable.")
    runs = await ImportRun.all().using_db(ctx.db.conn).order_by("-id").limit(20)
    return {"mappings": _mappings(), "runs": runs, "report": json.loads(run.report), "run": run}


@routes.get("/admin/export")
async def export(request: web.Request) -> web.StreamResponse:
    return await stream_export(request, _ctx(request), request.query.get("format", "csv"))
