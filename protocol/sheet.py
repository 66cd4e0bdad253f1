"""The canonical project sheet ("fiche projet"): a pure, immutable record.

Every other part of Essaim (storage, OAI-PMH, ActivityPub, harvesting, search)
speaks this record. It is serialised to and from plain JSON-compatible dicts
with :func:`sheet_to_dict` / :func:`sheet_from_dict`; the latter validates and
reports every problem with the path of the offending field.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime
from typing import Any

from protocol.errors import FieldError, SheetValidationError

LICENCE_OUVERTE_2 = "https://www.etalab.gouv.fr/licence-ouverte-open-licence"


class Stage(enum.StrEnum):
    """Maturity of a project, in the network's own vocabulary."""

    IDEE = "idee"
    EXPERIMENTATION = "experimentation"
    DEVELOPPEMENT = "developpement"  # amorçage / développement
    ESSAIMAGE = "essaimage"
    TERMINE = "termine"


class Scope(enum.StrEnum):
    """Geographical reach of a place's activity."""

    LOCAL = "local"
    DEPARTEMENTAL = "departemental"
    REGIONAL = "regional"
    NATIONAL = "national"
    INTERNATIONAL = "international"


class Precision(enum.StrEnum):
    """How precisely a place's coordinates are known (best first)."""

    ADDRESS = "address"
    COMMUNE = "commune"
    POSTCODE = "postcode"
    DEPARTEMENT = "departement"
    REGION = "region"
    COUNTRY = "country"
    UNKNOWN = "unknown"


class MatchKind(enum.StrEnum):
    """What a need or an offer is about (matchmaking)."""

    EXPERTISE = "expertise"
    BENEVOLAT = "benevolat"
    EMPLOI = "emploi"
    FINANCEMENT = "financement"
    PARTENARIAT = "partenariat"
    LIEU = "lieu"


class MatchDirection(enum.StrEnum):
    NEED = "need"
    OFFER = "offer"


class MatchStatus(enum.StrEnum):
    OPEN = "open"
    FULFILLED = "fulfilled"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Partner:
    """The organisation that publishes the sheet (the node's owner, or a harvested source)."""

    name: str
    url: str | None = None
    logo: str | None = None
    id: str | None = None  # stable identifier of the partner (its actor URI on a node)


@dataclass(frozen=True, slots=True)
class Holder:
    """The organisation carrying the project."""

    name: str
    legal_form: str | None = None
    siret: str | None = None


@dataclass(frozen=True, slots=True)
class Place:
    address: str | None = None
    postcode: str | None = None
    commune: str | None = None
    insee: str | None = None
    departement: str | None = None  # code, e.g. "35", "2A", "971"
    region: str | None = None  # INSEE region code, e.g. "53"
    country: str = "FR"
    lat: float | None = None
    lon: float | None = None
    precision: Precision = Precision.UNKNOWN
    scope: Scope = Scope.LOCAL


@dataclass(frozen=True, slots=True)
class TagMapping:
    """One partner tag and the taxonomy codes it maps to (empty when unmapped)."""

    tag: str
    codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Award:
    name: str
    year: int | None = None


@dataclass(frozen=True, slots=True)
class Contact:
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Image:
    url: str
    alt: str | None = None
    credit: str | None = None


@dataclass(frozen=True, slots=True)
class Link:
    url: str
    label: str | None = None
    rel: str = "related"  # related | facebook | twitter | social | video | document


@dataclass(frozen=True, slots=True)
class Match:
    """A need or an offer attached to a project (calls for expertise, volunteers, jobs, funding...)."""

    kind: MatchKind
    text: str
    direction: MatchDirection = MatchDirection.NEED
    status: MatchStatus = MatchStatus.OPEN
    start: date | None = None
    end: date | None = None


@dataclass(frozen=True, slots=True)
class Sheet:
    """A project sheet. ``id`` is an https URI on the publishing node; ``local_id`` is the partner's own id."""

    id: str
    local_id: str
    title: str
    partner: Partner
    summary: str | None = None
    description: str | None = None  # sanitised HTML
    url: str | None = None  # the original page on the partner's site
    language: str = "fr"
    licence: str = LICENCE_OUVERTE_2
    holder: Holder | None = None
    themes: tuple[str, ...] = ()  # level-1 taxonomy codes
    subthemes: tuple[str, ...] = ()  # level-2 taxonomy codes
    tags: tuple[TagMapping, ...] = ()  # the partner's raw tags and their mapping
    audiences: tuple[str, ...] = ()
    stage: Stage | None = None
    engineering: tuple[str, ...] = ()
    places: tuple[Place, ...] = ()
    start_date: date | None = None
    end_date: date | None = None
    created: datetime | None = None
    modified: datetime | None = None
    awards: tuple[Award, ...] = ()
    contact: Contact | None = None
    images: tuple[Image, ...] = ()
    links: tuple[Link, ...] = ()
    matches: tuple[Match, ...] = ()
    # Set by storage on every effective change: UTC, second precision.
    datestamp: datetime | None = None

    def content_hash(self) -> str:
        """Hash of everything a reader sees, excluding the bookkeeping datestamps.

        Two writes with the same hash are the same sheet: storage leaves the
        datestamp alone for such a write.
        """
        data = sheet_to_dict(self)
        for volatile in ("datestamp", "modified"):
            data.pop(volatile, None)
        blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What remains of a deleted sheet, so OAI-PMH and ActivityPub can announce the deletion."""

    id: str
    local_id: str
    datestamp: datetime


# --------------------------------------------------------------------------- time


def utc_seconds(value: datetime) -> datetime:
    """Normalise to an aware UTC datetime with second precision (OAI-PMH granularity)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0)


def format_datestamp(value: datetime) -> str:
    if value.tzinfo is not UTC or value.microsecond:
        value = utc_seconds(value)
    if value.year < 1000:  # as strftime writes it (no zero padding of the year on every platform)
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{value.year}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z"


# ------------------------------------------------------------------ serialisation


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _encode(value: Any) -> Any:
    # Hot path of every write (hashing, storage, rendering): one dict lookup on the exact type,
    # then an encoder made once per type (see _encoder_for).
    kind = type(value)
    if kind is str or value is None:
        return value
    encoder = _ENCODERS.get(kind)
    if encoder is None:
        encoder = _ENCODERS[kind] = _encoder_for(kind)
    return encoder(value)


def _same(value: Any) -> Any:
    return value


def _enum_value(value: Any) -> Any:
    return value.value


def _tuple(value: tuple[Any, ...]) -> list[Any]:
    return [v if type(v) is str else _encode(v) for v in value]


def _encoder_for(kind: type) -> Callable[[Any], Any]:
    """The encoder of one type, matching the isinstance order of the generic rules:
    str/int/float (enum members give their value), tuple, enum, datetime, date, dataclass."""
    if issubclass(kind, enum.Enum):
        return _enum_value
    if issubclass(kind, str | int | float):
        return _same
    if issubclass(kind, tuple):
        return _tuple
    if issubclass(kind, datetime):
        return format_datestamp
    if issubclass(kind, date):
        return date.isoformat
    if hasattr(kind, "__dataclass_fields__"):
        return _dataclass_encoder(kind)
    return _same


def _dataclass_encoder(kind: type) -> Callable[[Any], dict[str, Any]]:
    # Unrolled per field (generated once per dataclass): no loop, no getattr by name. A field
    # that is None or () is omitted; text is kept as is without a call.
    lines = ["def encode(value):", "    out = {}"]
    for name in _field_names(kind):
        lines += [
            f"    v = value.{name}",
            "    if v is not None and v != ():",
            f"        out[{name!r}] = v if type(v) is str else _encode(v)",
        ]
    lines.append("    return out")
    namespace: dict[str, Any] = {"_encode": _encode}
    exec("\n".join(lines), namespace)  # noqa: S102 -- field names are identifiers of our own dataclasses
    encoder: Callable[[Any], dict[str, Any]] = namespace["encode"]
    return encoder


_ENCODERS: dict[type, Callable[[Any], Any]] = {}


def sheet_to_dict(sheet: Sheet) -> dict[str, Any]:
    """JSON-compatible dict; ``None`` and empty lists are omitted."""
    result = _encode(sheet)
    assert isinstance(result, dict)
    return result


def tombstone_to_dict(tomb: Tombstone) -> dict[str, Any]:
    return {"id": tomb.id, "local_id": tomb.local_id, "datestamp": format_datestamp(tomb.datestamp), "deleted": True}


class _Reader:
    """Collects field errors while decoding a dict into records."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def text(self, data: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
        value = data.get(key)
        if type(value) is str:  # the usual case, answered first
            stripped = value.strip()
            if stripped:
                return stripped
            if required:
                self.fail(f"{path}{key}", "is required")
            return None
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.fail(f"{path}{key}", "is required")
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.fail(f"{path}{key}", f"must be text, not {type(value).__name__}")
            return None
        return value.strip()

    def number(self, data: Mapping[str, Any], key: str, path: str, lo: float, hi: float) -> float | None:
        value = data.get(key)
        if value is None or value == "":
            return None
        try:
            number = float(str(value).replace(",", ".")) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            self.fail(f"{path}{key}", f"must be a number, not {value!r}")
            return None
        if not lo <= number <= hi:
            self.fail(f"{path}{key}", f"must be between {lo} and {hi}, not {number}")
            return None
        return number

    def integer(self, data: Mapping[str, Any], key: str, path: str) -> int | None:
        value = data.get(key)
        if value is None or value == "":
            return None
        try:
            return int(str(value).strip())
        except ValueError:
            self.fail(f"{path}{key}", f"must be a whole number, not {value!r}")
            return None

    def enum(self, data: Mapping[str, Any], key: str, path: str, kind: type[enum.Enum], default: Any = None) -> Any:
        value = data.get(key)
        if value is None or value == "":
            return default
        try:
            member = kind._value2member_map_.get(value)  # what kind(value) looks up first
        except TypeError:  # not hashable: kind(value) says it is not a member
            member = None
        if member is not None:
            return member
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in kind)
            self.fail(f"{path}{key}", f"must be one of {allowed}, not {value!r}")
            return default

    def day(self, data: Mapping[str, Any], key: str, path: str) -> date | None:
        value = data.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        try:
            return date.fromisoformat(str(value)[:10])
        except ValueError:
            self.fail(f"{path}{key}", f"must be a date YYYY-MM-DD, not {value!r}")
            return None

    def instant(self, data: Mapping[str, Any], key: str, path: str) -> datetime | None:
        value = data.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, datetime):
            return utc_seconds(value)
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{path}{key}", f"must be a date-time in ISO 8601, not {value!r}")
            return None
        return utc_seconds(parsed)

    def strings(self, data: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            self.fail(f"{path}{key}", "must be a list of text values")
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{path}{key}[{i}]", "must be text")
            elif item.strip() and item.strip() not in out:
                out.append(item.strip())
        return tuple(out)

    def objects(self, data: Mapping[str, Any], key: str, path: str) -> list[tuple[str, Mapping[str, Any]]]:
        value = data.get(key)
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            self.fail(f"{path}{key}", "must be a list of objects")
            return []
        out = []
        for i, item in enumerate(value):
            if type(item) is not dict and not isinstance(item, Mapping):  # a dict answered without the ABC
                self.fail(f"{path}{key}[{i}]", "must be an object")
            else:
                out.append((f"{path}{key}[{i}].", item))
        return out

    def obj(self, data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
        value = data.get(key)
        if value is None:
            return None
        if type(value) is not dict and not isinstance(value, Mapping):
            self.fail(f"{path}{key}", "must be an object")
            return None
        return value


def _place(r: _Reader, p: str, d: Mapping[str, Any]) -> Place:
    return Place(
        address=r.text(d, "address", p),
        postcode=r.text(d, "postcode", p),
        commune=r.text(d, "commune", p),
        insee=r.text(d, "insee", p),
        departement=r.text(d, "departement", p),
        region=r.text(d, "region", p),
        country=r.text(d, "country", p) or "FR",
        lat=r.number(d, "lat", p, -90, 90),
        lon=r.number(d, "lon", p, -180, 180),
        precision=r.enum(d, "precision", p, Precision, Precision.UNKNOWN),
        scope=r.enum(d, "scope", p, Scope, Scope.LOCAL),
    )


def _match(r: _Reader, p: str, d: Mapping[str, Any]) -> Match | None:
    kind = r.enum(d, "kind", p, MatchKind)
    text = r.text(d, "text", p, required=True)
    if kind is None:
        if "kind" not in d:
            r.fail(f"{p}kind", "is required")
        return None
    return Match(
        kind=kind,
        text=text or "",
        direction=r.enum(d, "direction", p, MatchDirection, MatchDirection.NEED),
        status=r.enum(d, "status", p, MatchStatus, MatchStatus.OPEN),
        start=r.day(d, "start", p),
        end=r.day(d, "end", p),
    )


def sheet_from_dict(data: Mapping[str, Any]) -> Sheet:
    """Decode and validate; raises :class:`SheetValidationError` listing every bad field."""
    r = _Reader()
    if not isinstance(data, Mapping):
        raise SheetValidationError([FieldError("", "a sheet must be an object")])
    partner_data = r.obj(data, "partner", "")
    partner = None
    if partner_data is None:
        r.fail("partner", "is required")
    else:
        partner = Partner(
            name=r.text(partner_data, "name", "partner.", required=True) or "",
            url=r.text(partner_data, "url", "partner."),
            logo=r.text(partner_data, "logo", "partner."),
            id=r.text(partner_data, "id", "partner."),
        )
    holder_data = r.obj(data, "holder", "")
    holder = None
    if holder_data is not None:
        name = r.text(holder_data, "name", "holder.", required=True)
        siret = r.text(holder_data, "siret", "holder.")
        if siret is not None:
            siret = siret.replace(" ", "")
            if not (siret.isdigit() and len(siret) == 14):
                r.fail("holder.siret", f"must be 14 digits, not {siret!r}")
                siret = None
        holder = Holder(name=name or "", legal_form=r.text(holder_data, "legal_form", "holder."), siret=siret)
    contact_data = r.obj(data, "contact", "")
    contact = None
    if contact_data is not None:
        contact = Contact(
            name=r.text(contact_data, "name", "contact."),
            email=r.text(contact_data, "email", "contact."),
            phone=r.text(contact_data, "phone", "contact."),
            url=r.text(contact_data, "url", "contact."),
        )
    tags = []
    for p, d in r.objects(data, "tags", ""):
        tag = r.text(d, "tag", p, required=True)
        if tag:
            tags.append(TagMapping(tag=tag, codes=r.strings(d, "codes", p)))
    awards = []
    for p, d in r.objects(data, "awards", ""):
        name = r.text(d, "name", p, required=True)
        if name:
            awards.append(Award(name=name, year=r.integer(d, "year", p)))
    images = []
    for p, d in r.objects(data, "images", ""):
        url = r.text(d, "url", p, required=True)
        if url:
            images.append(Image(url=url, alt=r.text(d, "alt", p), credit=r.text(d, "credit", p)))
    links = []
    for p, d in r.objects(data, "links", ""):
        url = r.text(d, "url", p, required=True)
        if url:
            links.append(Link(url=url, label=r.text(d, "label", p), rel=r.text(d, "rel", p) or "related"))
    matches = [m for p, d in r.objects(data, "matches", "") if (m := _match(r, p, d)) is not None]
    places = [_place(r, p, d) for p, d in r.objects(data, "places", "")]
    sheet_id = r.text(data, "id", "", required=True)
    local_id = r.text(data, "local_id", "", required=True)
    title = r.text(data, "title", "", required=True)
    sheet = Sheet(
        id=sheet_id or "",
        local_id=local_id or "",
        title=title or "",
        partner=partner or Partner(name=""),
        summary=r.text(data, "summary", ""),
        description=r.text(data, "description", ""),
        url=r.text(data, "url", ""),
        language=r.text(data, "language", "") or "fr",
        licence=r.text(data, "licence", "") or LICENCE_OUVERTE_2,
        holder=holder,
        themes=r.strings(data, "themes", ""),
        subthemes=r.strings(data, "subthemes", ""),
        tags=tuple(tags),
        audiences=r.strings(data, "audiences", ""),
        stage=r.enum(data, "stage", "", Stage),
        engineering=r.strings(data, "engineering", ""),
        places=tuple(places),
        start_date=r.day(data, "start_date", ""),
        end_date=r.day(data, "end_date", ""),
        created=r.instant(data, "created", ""),
        modified=r.instant(data, "modified", ""),
        awards=tuple(awards),
        contact=contact,
        images=tuple(images),
        links=tuple(links),
        matches=tuple(matches),
        datestamp=r.instant(data, "datestamp", ""),
    )
    if r.errors:
        raise SheetValidationError(r.errors)
    return sheet


def sheet_replacer(*names: str) -> Callable[..., Sheet]:
    """A function ``f(sheet, *values)`` returning ``replace(sheet, **dict(zip(names, values)))``.

    Written out once, field by field: :func:`dataclasses.replace` walks the fields and
    checks its arguments on every call, which shows on paths that run once per sheet.
    """
    unknown = [name for name in names if name not in Sheet.__dataclass_fields__]
    if unknown or len(set(names)) != len(names) or not names:
        raise ValueError(f"not distinct Sheet fields: {names!r}")
    params = ", ".join(f"v_{name}" for name in names)
    fields_ = Sheet.__dataclass_fields__
    args = ", ".join(f"{name}=v_{name}" if name in names else f"{name}=sheet.{name}" for name in fields_)
    namespace: dict[str, Any] = {"Sheet": Sheet}
    exec(f"def replaced(sheet, {params}):\n    return Sheet({args})\n", namespace)  # noqa: S102 -- our own field names
    replaced: Callable[..., Sheet] = namespace["replaced"]
    return replaced


def with_datestamp(sheet: Sheet, stamp: datetime) -> Sheet:
    return replace(sheet, datestamp=utc_seconds(stamp))


def unique(values: Iterable[str]) -> tuple[str, ...]:
    """Order-preserving de-duplication of non-empty strings."""
    out: list[str] = []
    for v in values:
        v = v.strip()
        if v and v not in out:
            out.append(v)
    return tuple(out)


__all__ = [
    "LICENCE_OUVERTE_2",
    "Award",
    "Contact",
    "Holder",
    "Image",
    "Link",
    "Match",
    "MatchDirection",
    "MatchKind",
    "MatchStatus",
    "Partner",
    "Place",
    "Precision",
    "Scope",
    "Sheet",
    "Stage",
    "TagMapping",
    "Tombstone",
    "format_datestamp",
    "sheet_from_dict",
    "sheet_replacer",
    "sheet_to_dict",
    "tombstone_to_dict",
    "unique",
    "utc_seconds",
    "with_datestamp",
]
