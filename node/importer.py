"""Import CSV and JSON files into the node: all-or-nothing, idempotent, streamed.

The whole file is read row by row and written in ONE transaction: the first
error does not stop the reading (every problem is reported with file, line,
column and field), but any error rolls everything back. Re-importing the same
file changes nothing (upsert on the partner's own id; an unchanged sheet keeps
its datestamp). ``dry_run`` runs the same code and rolls back at the end, so its
report (created / updated / unchanged) is exactly what a real run would do.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from node.mapping import ImportMapping, apply_rules
from node.storage import SheetStore
from protocol.errors import FieldError, SheetValidationError
from protocol.sheet import (
    Award,
    Contact,
    Image,
    Link,
    Partner,
    Place,
    Sheet,
    Stage,
    TagMapping,
    sheet_from_dict,
)
from protocol.taxonomy import Crosswalk, Taxonomy, default_taxonomy, fold
from protocol.text import sanitize_html, to_html

MAX_ERRORS = 200  # beyond this the report only counts them
csv.field_size_limit(10 * 1024 * 1024)


class ImportFailed(Exception):
    """The import was rolled back; ``report`` says why."""

    def __init__(self, report: ImportReport) -> None:
        self.report = report
        super().__init__(report.summary())


class _Rollback(Exception):
    """Raised inside the transaction to undo a dry run or a failed import."""


@dataclass
class RowError:
    line: int
    field: str
    message: str
    column: str = ""

    def __str__(self) -> str:
        col = f" (column {self.column!r})" if self.column else ""
        return f"line {self.line}: {self.field}{col}: {self.message}"


@dataclass
class ImportReport:
    file: str
    mapping: str
    dry_run: bool = False
    rows: int = 0
    sheets: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    unmapped_tags: dict[str, int] = field(default_factory=dict)
    unknown_codes: dict[str, int] = field(default_factory=dict)
    geocoding: dict[str, int] = field(default_factory=dict)
    unresolved_places: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def add_error(self, error: RowError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(error)

    def summary(self) -> str:
        if not self.ok:
            head = f"{self.file}: import refused, nothing was written: {self.error_count} error(s)"
            return head + "".join(f"\n  {self.file}: {e}" for e in self.errors[:20])
        verb = "would be" if self.dry_run else "were"
        return (
            f"{self.file}: {self.rows} rows, {self.sheets} sheets: {self.created} {verb} created,"
            f" {self.updated} updated, {self.unchanged} unchanged, {self.deleted} deleted"
        )

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "errors"}
        data["ok"] = self.ok
        data["errors"] = [e.__dict__ for e in self.errors]
        return data


# A resolver completes a place (codes, coordinates) and says how: "given", "commune",
# "postcode", "departement", "region" or "unresolved".
PlaceResolver = Callable[[Place], tuple[Place, str]]
# Places -> (places, how many improved, how many requests failed); see node.geocode.online_pass.
OnlinePass = Callable[[tuple[Place, ...]], Awaitable[tuple[tuple[Place, ...], int, int]]]


@dataclass
class _Pending:
    line: int
    values: dict[str, Any]
    places: list[Place]


_YEAR = re.compile(r"\b(19|20)\d{2}\b")


class Importer:
    """Turns mapped rows into sheets and writes them through a :class:`SheetStore`."""

    def __init__(
        self,
        store: SheetStore,
        mapping: ImportMapping,
        *,
        partner: Partner,
        licence: str,
        resolver: PlaceResolver | None = None,
        online: OnlinePass | None = None,
        crosswalk: Crosswalk | None = None,
        taxonomy: Taxonomy | None = None,
        progress: Callable[[int], None] | None = None,
        batch: int = 500,
        workers: int = 0,
    ) -> None:
        self.store = store
        self.mapping = mapping
        self.partner = partner
        self.licence = licence
        self.resolver = resolver
        self.online = online
        self.taxonomy = taxonomy or default_taxonomy()
        rules = dict(mapping.crosswalk)
        if crosswalk:
            rules.update(crosswalk.rules)
        self.crosswalk = Crosswalk(partner=partner.name, rules=rules)
        self.progress = progress
        self.batch = batch
        self.workers = workers  # worker processes for native JSON lines ([node] write_workers; 0: none)
        self._unmapped_spelling: dict[str, str] = {}
        self._regions = {fold(t.fr): code for code, t in self.taxonomy.regions.items()}
        self._regions.update({fold(t.en): code for code, t in self.taxonomy.regions.items()})

    # ------------------------------------------------------------------ driver

    async def run(self, path: Path, *, dry_run: bool = False, delete_missing: bool = False) -> ImportReport:
        report = ImportReport(file=str(path), mapping=self.mapping.name, dry_run=dry_run)
        self._unmapped_spelling.clear()
        started = time.monotonic()
        try:
            async with self.store.db.transaction() as tx:
                seen: set[str] = set()
                pending: list[Sheet] = []
                pipeline = self._pipeline(path)
                if pipeline is not None:
                    try:
                        async for writes, stamp in pipeline.batches(path, report):
                            seen.update(w.local_id for w in writes)
                            if report.ok and writes:
                                for result in await self.store.upsert_prepared(writes, tx=tx, stamp=stamp):
                                    setattr(report, result.status, getattr(report, result.status) + 1)
                    finally:
                        pipeline.close()
                else:
                    for sheet in self._sheets(path, report):
                        seen.add(sheet.local_id)
                        if report.ok:
                            pending.append(sheet)
                        if len(pending) >= self.batch:
                            await self._flush(pending, tx, report)
                    if report.ok:
                        await self._flush(pending, tx, report)
                if report.ok and delete_missing:
                    gone = sorted((await self.store.local_ids(conn=tx)) - seen)
                    results = await self.store.delete_many(gone, tx=tx)
                    report.deleted = sum(1 for r in results if r.status == "deleted")
                if not report.ok or dry_run:
                    raise _Rollback
        except _Rollback:
            pass
        report.seconds = round(time.monotonic() - started, 3)
        if not report.ok:
            raise ImportFailed(report)
        return report

    def _pipeline(self, path: Path) -> Any:
        """Worker processes for this file (:mod:`node.pipeline`), or None to work in-process: no
        workers asked, a small file, a mapping other than native JSON lines, online geocoding."""
        if self.workers <= 0:
            return None
        from node import pipeline  # imports this module

        try:
            if path.stat().st_size < pipeline.MIN_BYTES or not pipeline.json_lines(path, self.mapping.encoding):
                return None
        except OSError:
            return None
        spec = pipeline.spec_of(self)
        return pipeline.Pipeline(self, spec, self.workers) if spec is not None else None

    async def _flush(self, pending: list[Sheet], tx: Any, report: ImportReport) -> None:
        if self.online is not None:
            for i, sheet in enumerate(pending):
                if not sheet.places:
                    continue
                places, improved, failed = await self.online(sheet.places)
                pending[i] = replace(sheet, places=places)
                if improved:
                    report.geocoding["online"] = report.geocoding.get("online", 0) + improved
                if failed:
                    report.geocoding["online_failed"] = report.geocoding.get("online_failed", 0) + failed
        for result in await self.store.upsert_many(pending, tx=tx):
            setattr(report, result.status, getattr(report, result.status) + 1)
        pending.clear()

    # ------------------------------------------------------------------ reading

    def read(self, path: Path, report: ImportReport) -> Iterator[Sheet]:
        """The file's sheets, validated, without writing anything (row errors go to ``report``):
        for callers with their own write path, such as the hub's file and crawl sources."""
        return self._sheets(path, report)

    def _sheets(self, path: Path, report: ImportReport) -> Iterator[Sheet]:
        if self.mapping.format == "native":
            yield from self._native(path, report)
            return
        rows = self._csv_rows(path, report) if self.mapping.format == "csv" else self._json_rows(path, report)
        group: _Pending | None = None
        seen: dict[str, int] = {}
        for line, cells in rows:
            report.rows += 1
            if self.progress:
                self.progress(report.rows)
            values = apply_rules(self.mapping, cells)
            local_id = values.get("local_id")
            if not local_id:
                report.add_error(RowError(line, "local_id", "is required", self._column("local_id")))
                continue
            place = self._place(values, line, report)
            if group is not None and self.mapping.group_by_local_id and group.values.get("local_id") == local_id:
                if place is not None and place not in group.places:
                    group.places.append(place)
                continue
            if local_id in seen:
                hint = " (rows of one project must be adjacent)" if self.mapping.group_by_local_id else ""
                report.add_error(
                    RowError(
                        line,
                        "local_id",
                        f"{local_id!r} already used at line {seen[local_id]}{hint}",
                        self._column("local_id"),
                    )
                )
                continue
            seen[local_id] = line
            if group is not None:
                sheet = self._build(group, report)
                if sheet is not None:
                    yield sheet
            group = _Pending(line, values, [place] if place is not None else [])
        if group is not None:
            sheet = self._build(group, report)
            if sheet is not None:
                yield sheet

    def _open(self, path: Path) -> TextIO:
        return path.open(encoding=self.mapping.encoding, newline="")

    def _csv_rows(self, path: Path, report: ImportReport) -> Iterator[tuple[int, dict[str, str]]]:
        line = 1
        try:
            with self._open(path) as handle:
                reader = csv.reader(handle, delimiter=self.mapping.delimiter, strict=True)
                header = next(reader, None)
                if header is None:
                    report.add_error(RowError(1, "header", "the file is empty"))
                    return
                index = self.mapping.check_header(header, str(path))
                while True:
                    # A quoted cell may span several lines: errors name the line the record starts on.
                    line = reader.line_num + 1
                    row = next(reader, None)
                    if row is None:
                        break
                    if not any(c.strip() for c in row):
                        continue
                    if len(row) != len(header):
                        report.add_error(
                            RowError(line, "row", f"has {len(row)} cells where the header has {len(header)}")
                        )
                        continue
                    yield line, {col: row[i] for col, i in index.items()}
        except UnicodeDecodeError as exc:
            report.add_error(
                RowError(0, "file", f"is not valid {self.mapping.encoding}: {exc.reason} at byte {exc.start}")
            )
        except csv.Error as exc:
            report.add_error(RowError(line, "file", f"is not valid CSV: {exc}"))

    def _json_rows(self, path: Path, report: ImportReport) -> Iterator[tuple[int, dict[str, str | list[str]]]]:
        for line, item in self._json_items(path, report):
            if not isinstance(item, Mapping):
                report.add_error(RowError(line, "item", "must be an object"))
                continue
            yield line, {col: _json_cell(item.get(col)) for col in self.mapping.columns()}

    def _json_items(self, path: Path, report: ImportReport) -> Iterator[tuple[int, Any]]:
        """A JSON array (item numbers count from 1) or JSON lines (line numbers)."""
        try:
            with self._open(path) as handle:
                first = handle.read(1)
                while first and first.isspace():
                    first = handle.read(1)
                handle.seek(0)
                if first == "[":
                    try:
                        items = json.load(handle)
                    except json.JSONDecodeError as exc:
                        report.add_error(RowError(exc.lineno, "file", f"is not valid JSON: {exc.msg}"))
                        return
                    yield from enumerate(items, start=1)
                    return
                for number, text in enumerate(handle, start=1):
                    if not text.strip():
                        continue
                    try:
                        yield number, json.loads(text)
                    except json.JSONDecodeError as exc:
                        report.add_error(RowError(number, "line", f"is not valid JSON: {exc.msg}"))
        except UnicodeDecodeError as exc:
            report.add_error(RowError(0, "file", f"is not valid {self.mapping.encoding}: {exc.reason}"))

    def _native(self, path: Path, report: ImportReport) -> Iterator[Sheet]:
        seen: dict[str, int] = {}
        for line, item in self._json_items(path, report):
            report.rows += 1
            if self.progress:
                self.progress(report.rows)
            sheet = self.native_item(line, item, report, seen)
            if sheet is not None:
                yield sheet

    def native_item(
        self, line: int, item: Any, report: ImportReport, seen: dict[str, int] | None = None
    ) -> Sheet | None:
        """One item of a native file as a sheet, or None with its errors in ``report``.

        ``seen`` (local id -> line) finds repeats; a worker process (:mod:`node.pipeline`) passes
        None and the reader checks them in file order.
        """
        if isinstance(item, Mapping):
            local_id = str(item.get("local_id") or "")
            item = {
                **item,
                # Any text passes validation: the URI is the store's to give (the id is blanked below).
                "id": "-" if local_id else "",
                "partner": item.get("partner") or {"name": self.partner.name},
                "local_id": local_id,
            }
        try:
            sheet = sheet_from_dict(item)
        except SheetValidationError as exc:
            for err in exc.errors:
                if err.path != "id":
                    report.add_error(RowError(line, err.path, err.message))
            return None
        if seen is not None:
            if sheet.local_id in seen:
                report.add_error(
                    RowError(line, "local_id", f"{sheet.local_id!r} already used at item {seen[sheet.local_id]}")
                )
                return None
            seen[sheet.local_id] = line
        places = []
        for place in sheet.places:
            resolved = self._resolve(place, report)
            places.append(resolved)
        codes = self._codes(list(sheet.themes) + list(sheet.subthemes), line, "themes", report)
        themes, subthemes = self.taxonomy.complete(codes, codes)
        report.sheets += 1
        return Sheet(
            **{
                **_fields(sheet),
                "id": "",
                "places": tuple(places),
                "themes": themes,
                "subthemes": subthemes,
                "description": to_html(sheet.description or "", "html") or None,
            }
        )

    def _column(self, target: str) -> str:
        for rule in self.mapping.rules:
            if rule.target == target and rule.columns:
                return rule.columns[0]
        return ""

    # ------------------------------------------------------------------ building

    def _place(self, values: dict[str, Any], line: int, report: ImportReport) -> Place | None:
        keys = (
            "place_address",
            "place_postcode",
            "place_commune",
            "place_insee",
            "place_departement",
            "place_region",
            "place_lat",
            "place_lon",
        )
        if not any(values.get(k) for k in keys):
            return None
        region = values.get("place_region")
        if region and not region.isdigit():
            code = self._regions.get(fold(region))
            if code is None:
                report.add_error(
                    RowError(line, "place.region", f"unknown région {region!r}", self._column("place_region"))
                )
            region = code
        data = {
            "address": values.get("place_address"),
            "postcode": values.get("place_postcode"),
            "commune": values.get("place_commune"),
            "insee": values.get("place_insee"),
            "departement": values.get("place_departement"),
            "region": region,
            "lat": values.get("place_lat"),
            "lon": values.get("place_lon"),
            "scope": values.get("place_scope"),
        }
        if data["postcode"] and data["postcode"].isdigit() and len(data["postcode"]) == 4:
            data["postcode"] = "0" + data["postcode"]  # spreadsheets eat leading zeros
        try:
            place = sheet_from_dict(
                {
                    "id": "x",
                    "local_id": "x",
                    "title": "x",
                    "partner": {"name": "x"},
                    "places": [{k: v for k, v in data.items() if v}],
                }
            ).places[0]
        except SheetValidationError as exc:
            for err in exc.errors:
                target = "place_" + err.path.split(".")[-1]
                report.add_error(
                    RowError(line, err.path.replace("places[0]", "place"), err.message, self._column(target))
                )
            return None
        if (place.lat is None) != (place.lon is None):
            report.add_error(RowError(line, "place", "latitude and longitude go together: one is missing"))
            return None
        return self._resolve(place, report)

    def _resolve(self, place: Place, report: ImportReport) -> Place:
        if self.resolver is None:
            return place
        resolved, how = self.resolver(place)
        report.geocoding[how] = report.geocoding.get(how, 0) + 1
        if how == "unresolved" and len(report.unresolved_places) < MAX_ERRORS:
            what = " ".join(x for x in (place.postcode, place.commune, place.departement) if x) or "(empty)"
            if what not in report.unresolved_places:
                report.unresolved_places.append(what)
        return resolved

    def _codes(self, codes: list[str], line: int, name: str, report: ImportReport) -> list[str]:
        out = []
        for code in codes:
            code = code.strip().upper()
            if self.taxonomy.classify(code) is None:
                report.unknown_codes[code] = report.unknown_codes.get(code, 0) + 1
            else:
                out.append(code)
        return out

    def _build(self, pending: _Pending, report: ImportReport) -> Sheet | None:
        v, line = pending.values, pending.line
        errors_before = report.error_count
        tags: list[TagMapping] = []
        mapped: list[str] = []
        for tag in v.get("tags", []):
            codes = self.crosswalk.map(self.taxonomy, tag)
            if codes is None:
                # Counted under the first spelling seen: "Jardin partagé" and "jardin  partage" are one
                # crosswalk rule to write, so they are one line of the report.
                key = self._unmapped_spelling.setdefault(fold(tag), tag)
                report.unmapped_tags[key] = report.unmapped_tags.get(key, 0) + 1
                tags.append(TagMapping(tag=tag))
            else:
                tags.append(TagMapping(tag=tag, codes=codes))
                mapped.extend(codes)
        known = self._codes(v.get("themes", []) + v.get("subthemes", []) + mapped, line, "themes", report)
        themes_t, subthemes_t = self.taxonomy.complete(known, known)
        stage = v.get("stage")
        if stage and stage not in {s.value for s in Stage}:
            report.add_error(
                RowError(
                    line,
                    "stage",
                    f"unknown stage {stage!r} (idee, experimentation, developpement, essaimage, termine)",
                    self._column("stage"),
                )
            )
        links = [
            Link(url=u, rel=rel)
            for rel in ("facebook", "twitter", "linkedin", "instagram", "video")
            if (u := v.get(f"link_{rel}"))
        ]
        if v.get("link_website"):
            links.append(Link(url=v["link_website"], rel="website"))
        links.extend(Link(url=u) for u in v.get("links", []))
        for link in links:
            if not link.url.startswith(("http://", "https://")):
                report.add_error(RowError(line, "links", f"{link.url!r} is not an http(s) URL"))
        description = v.get("description")
        try:
            description = _canonical_html(description, self.mapping.description_format) if description else None
        except ValueError as exc:
            report.add_error(RowError(line, "description", str(exc)))
        data: dict[str, Any] = {
            "id": self.store.make_uri(v["local_id"]),
            "local_id": v["local_id"],
            "title": v.get("title"),
            "summary": v.get("summary"),
            "url": v.get("url"),
            "language": v.get("language"),
            "licence": v.get("licence") or self.licence,
            "partner": {
                "name": v.get("partner_name") or self.partner.name,
                "url": v.get("partner_url") or self.partner.url,
                "logo": v.get("partner_logo") or self.partner.logo,
                "id": self.partner.id,
            },
            "start_date": v.get("start_date"),
            "end_date": v.get("end_date"),
            "created": v.get("created"),
            "modified": v.get("modified"),
            "audiences": v.get("audiences", []),
            "engineering": v.get("engineering", []),
        }
        if v.get("holder_name"):
            data["holder"] = {
                "name": v["holder_name"],
                "legal_form": v.get("holder_legal_form"),
                "siret": v.get("holder_siret"),
            }
        try:
            base = sheet_from_dict({k: x for k, x in data.items() if x not in (None, "")})
        except SheetValidationError as exc:
            self._field_errors(exc.errors, line, report)
            return None
        if report.error_count > errors_before:
            return None
        contact = None
        if any(v.get(f"contact_{k}") for k in ("name", "email", "phone", "url")):
            contact = Contact(
                name=v.get("contact_name"),
                email=v.get("contact_email"),
                phone=v.get("contact_phone"),
                url=v.get("contact_url"),
            )
        awards = tuple(
            Award(name=a, year=int(m.group(0)) if (m := _YEAR.search(a)) else None) for a in v.get("awards", [])
        )
        report.sheets += 1
        return Sheet(
            **{
                **_fields(base),
                "description": description,
                "themes": themes_t,
                "subthemes": subthemes_t,
                "tags": tuple(tags),
                "stage": Stage(stage) if stage else None,
                "places": tuple(pending.places),
                "contact": contact,
                "awards": awards,
                "images": tuple(Image(url=u) for u in v.get("images", []) if u.startswith(("http://", "https://"))),
                "links": tuple(links),
            }
        )

    def _field_errors(self, errors: tuple[FieldError, ...], line: int, report: ImportReport) -> None:
        for err in errors:
            target = err.path.replace(".", "_")
            report.add_error(RowError(line, err.path, err.message, self._column(target)))


def _canonical_html(text: str, fmt: str) -> str | None:
    """Description HTML in the sanitiser's own serialisation (escaped text from plain text reads
    ``'`` as ``&#x27;``, the sanitiser writes ``'``): exported then re-imported, it stays the same."""
    return sanitize_html(to_html(text, fmt)) or None


def _json_cell(value: Any) -> str | list[str]:
    """A JSON value as mapping rules read it: a list stays a list of texts (one value each)."""
    if isinstance(value, list | tuple):
        return [_json_text(v) for v in value if v is not None and not isinstance(v, list | tuple | Mapping)]
    return _json_text(value)


def _json_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fields(sheet: Sheet) -> dict[str, Any]:
    return {name: getattr(sheet, name) for name in sheet.__dataclass_fields__}


__all__ = ["ImportFailed", "ImportReport", "Importer", "OnlinePass", "PlaceResolver", "RowError"]
