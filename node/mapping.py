"""Declarative import mappings: a partner's own column layout → sheet fields.

A mapping is a small TOML file a partner can write (see ``node/mappings/*.toml``
and the README). Each entry of ``[fields]`` names a target field and where its
value comes from::

    title = "Nom du projet"                        # one column
    themes = { columns = ["Thème 1", "Thème 2"] }  # several columns -> a list
    tags = { column = "Tags", split = "," }        # one cell holding a list
    place_address = { column = "Adresse", null = ["NR", "-"] }
    stage = { column = "Stade", map = { "Idée" = "idee" } }
    awards = { column = "Lauréats", template = "Lauréat {value}" }
    local_id = { column = "Id", fallback = ["Ancien id"] }  # first non-empty
    partner_name = { constant = "Mon réseau" }

Column names are matched after trimming and folding case, accents and runs of
spaces, because real exports are full of stray spaces (``"Nom du projet "``).
"""

from __future__ import annotations

import codecs
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from protocol.taxonomy import fold

# Every target a mapping may fill, and whether it holds a list.
SCALAR_TARGETS = {
    "local_id",
    "title",
    "summary",
    "description",
    "url",
    "language",
    "licence",
    "partner_name",
    "partner_url",
    "partner_logo",
    "holder_name",
    "holder_legal_form",
    "holder_siret",
    "stage",
    "start_date",
    "end_date",
    "created",
    "modified",
    "place_address",
    "place_postcode",
    "place_commune",
    "place_insee",
    "place_departement",
    "place_region",
    "place_lat",
    "place_lon",
    "place_scope",
    "contact_name",
    "contact_email",
    "contact_phone",
    "contact_url",
    "link_facebook",
    "link_twitter",
    "link_linkedin",
    "link_instagram",
    "link_website",
    "link_video",
}
MULTILINE_TARGETS = {"description"}
LIST_TARGETS = {"themes", "subthemes", "tags", "audiences", "engineering", "awards", "images", "links"}


class MappingError(ValueError):
    """A mapping file is invalid, or does not fit the file being imported."""


@dataclass(frozen=True)
class FieldRule:
    target: str
    columns: tuple[str, ...] = ()
    split: str | None = None
    null: frozenset[str] = frozenset()
    values: Mapping[str, str] = field(default_factory=dict)
    template: str | None = None
    constant: str | None = None


@dataclass(frozen=True)
class ImportMapping:
    name: str
    description: str
    format: str  # csv | json | native
    delimiter: str
    encoding: str
    group_by_local_id: bool
    description_format: str  # html | markdown | text
    null: frozenset[str]
    rules: tuple[FieldRule, ...]
    crosswalk: Mapping[str, tuple[str, ...]]  # partner tag (folded) -> taxonomy codes

    def columns(self) -> set[str]:
        return {c for r in self.rules for c in r.columns}

    def check_header(self, header: Sequence[str], where: str) -> dict[str, int]:
        """Map each needed column to its index; every missing column is named."""
        index = {fold(h): i for i, h in enumerate(header)}
        missing = sorted(c for c in self.columns() if fold(c) not in index)
        if missing:
            raise MappingError(
                f"{where}: the header lacks column(s) {', '.join(repr(m) for m in missing)}"
                f" required by mapping {self.name!r}"
            )
        return {c: index[fold(c)] for c in self.columns()}


def _rule(target: str, spec: Any, where: str, default_null: frozenset[str]) -> FieldRule:
    if target not in SCALAR_TARGETS and target not in LIST_TARGETS:
        known = ", ".join(sorted(SCALAR_TARGETS | LIST_TARGETS))
        raise MappingError(f"{where}: unknown target field {target!r} (known: {known})")
    if isinstance(spec, str):
        return FieldRule(target=target, columns=(spec,), null=default_null)
    if not isinstance(spec, Mapping):
        raise MappingError(f"{where}: {target} must be a column name or a table")
    unknown = set(spec) - {"column", "columns", "fallback", "split", "null", "map", "template", "constant"}
    if unknown:
        raise MappingError(f"{where}: {target}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("split", "template", "constant", "column"):
        if key in spec and (not isinstance(spec[key], str) or (key == "split" and not spec[key])):
            raise MappingError(
                f"{where}: {target}.{key} must be a non-empty text"
                if key == "split"
                else f"{where}: {target}.{key} must be a text"
            )
    for key in ("columns", "fallback", "null"):
        if key in spec and not isinstance(spec[key], list):
            raise MappingError(f"{where}: {target}.{key} must be a list")
    if "map" in spec and not isinstance(spec["map"], Mapping):
        raise MappingError(f"{where}: {target}.map must be a table of value = replacement")
    columns: tuple[str, ...] = ()
    if "column" in spec:
        columns = (str(spec["column"]),)
    if "columns" in spec:
        columns = columns + tuple(str(c) for c in spec["columns"])
    if not columns and "constant" not in spec:
        raise MappingError(f"{where}: {target} needs a column, columns or a constant")
    if len(columns) > 1 and target in SCALAR_TARGETS:
        raise MappingError(
            f"{where}: {target} holds one value and cannot take several columns"
            " (use fallback = [...] for columns read when the first is empty)"
        )
    if "fallback" in spec:
        if target not in SCALAR_TARGETS:
            raise MappingError(f"{where}: {target}: fallback only applies to single-value fields")
        # apply_rules keeps the first non-empty value, so fallbacks simply come after.
        columns = columns + tuple(str(c) for c in spec["fallback"])
    values = {fold(str(k)): str(v) for k, v in (spec.get("map") or {}).items()}
    return FieldRule(
        target=target,
        columns=columns,
        split=spec.get("split"),
        null=default_null | frozenset(fold(str(v)) for v in spec.get("null", [])),
        values=values,
        template=spec.get("template"),
        constant=spec.get("constant"),
    )


_TOP_KEYS = {
    "name",
    "description",
    "format",
    "delimiter",
    "encoding",
    "group_by_local_id",
    "description_format",
    "null",
    "fields",
    "crosswalk",
}


def parse_mapping(data: Mapping[str, Any], where: str) -> ImportMapping:
    # A misspelt key ("delimeter") would otherwise be ignored and the file misread.
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise MappingError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)} (known: {', '.join(sorted(_TOP_KEYS))})"
        )
    fmt = str(data.get("format", "csv"))
    if fmt not in ("csv", "json", "native"):
        raise MappingError(f"{where}: format must be csv, json or native, not {fmt!r}")
    delimiter = str(data.get("delimiter", ","))
    if len(delimiter) != 1 or delimiter in ('"', "\r", "\n"):
        raise MappingError(f'{where}: delimiter must be one character (such as "," or ";"), not {delimiter!r}')
    encoding = str(data.get("encoding", "utf-8-sig"))
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise MappingError(f"{where}: unknown encoding {encoding!r} (utf-8, utf-8-sig, cp1252, latin-1...)") from None
    if not isinstance(data.get("null", []), list):
        raise MappingError(f"{where}: null must be a list of texts")
    default_null = frozenset(fold(str(v)) for v in data.get("null", []))
    fields_table = data.get("fields", {})
    if not isinstance(fields_table, Mapping):
        raise MappingError(f"{where}: fields must be a table ([fields])")
    if fmt != "native" and "local_id" not in fields_table:
        raise MappingError(f"{where}: [fields] must say where local_id (the partner's own id) comes from")
    if fmt != "native" and "title" not in fields_table:
        raise MappingError(f"{where}: [fields] must say where title comes from")
    rules = tuple(_rule(t, s, where, default_null) for t, s in fields_table.items())
    crosswalk = {fold(str(k)): tuple(str(c) for c in v) for k, v in (data.get("crosswalk") or {}).items()}
    desc_fmt = str(data.get("description_format", "text"))
    if desc_fmt not in ("html", "markdown", "text"):
        raise MappingError(f"{where}: description_format must be html, markdown or text")
    return ImportMapping(
        name=str(data.get("name", Path(where).stem)),
        description=str(data.get("description", "")),
        format=fmt,
        delimiter=delimiter,
        encoding=encoding,
        group_by_local_id=bool(data.get("group_by_local_id", False)),
        description_format=desc_fmt,
        null=default_null,
        rules=rules,
        crosswalk=crosswalk,
    )


def builtin_mappings() -> list[str]:
    folder = resources.files("node").joinpath("mappings")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_mapping(name_or_path: str) -> ImportMapping:
    """A built-in mapping by name (``apcis``, ``native``…) or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text, where = path.read_text(encoding="utf-8"), str(path)
    elif name_or_path in builtin_mappings():
        res = resources.files("node").joinpath(f"mappings/{name_or_path}.toml")
        text, where = res.read_text(encoding="utf-8"), f"mapping {name_or_path}"
    else:
        raise MappingError(f"no mapping {name_or_path!r}: give a .toml file or one of {', '.join(builtin_mappings())}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{where}: {exc}") from None
    return parse_mapping(data, where)


def apply_rules(mapping: ImportMapping, cell: Mapping[str, str | Sequence[str]]) -> dict[str, Any]:
    """Turn one row (column → raw text, or a list of texts from JSON) into target values; lists stay lists."""
    out: dict[str, Any] = {}
    for rule in mapping.rules:
        raw: list[str] = []
        if rule.constant is not None:
            raw.append(rule.constant)
        for column in () if rule.constant is not None else rule.columns:
            value = cell.get(column, "")
            if isinstance(value, str):
                raw.append(value)
            else:
                raw.extend(str(v) for v in value)
        items: list[str] = []
        for value in raw:
            parts = value.split(rule.split) if rule.split else [value]
            for part in parts:
                # Line breaks of a description are its paragraphs (and its Markdown): kept there only.
                part = (
                    part.replace("\r\n", "\n").strip() if rule.target in MULTILINE_TARGETS else " ".join(part.split())
                )
                if not part or fold(part) in rule.null:
                    continue
                part = rule.values.get(fold(part), part)
                if rule.template:
                    part = rule.template.replace("{value}", part)
                if part not in items:
                    items.append(part)
        if rule.target in LIST_TARGETS:
            out.setdefault(rule.target, []).extend(i for i in items if i not in out.get(rule.target, []))
        elif items:
            out[rule.target] = items[0]
    return out
