"""A typed builder for Typesense ``filter_by`` expressions that user input cannot escape.

Typesense 0.24.1's filter tokenizer toggles its "inside a quoted value" state on
*every* backtick, even an escaped one (``\\```), and its value splitter treats a
backslash before the closing backtick as an escape. So escaping does not work:
a value holding ``\\` || id:!=x || t:=\\``` splits the expression. What does work:

* every string value is wrapped in backticks (inside them ``&&``, ``||``, ``(``,
  ``)``, ``,``, ``[``, ``]`` and ``:`` carry no syntax), and
* backticks, backslashes and colons are removed from the value. The tokenizer
  enters a "geo value" mode on ``:`` followed by ``(`` even inside backticks, and
  stays in it past the closing backtick, swallowing the expression's own
  parentheses (measured: ``(tags:=`:(`) && (n:>0)`` is refused as unbalanced).
  Typesense drops all three characters when it indexes a string (``a`b``,
  ``a\\b``, ``a:b`` and ``ab`` are the same token), so removing them never changes
  what a value matches.

Numbers and coordinates are typed and formatted by us; field names must be in the
schema's whitelist with the right kind.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from search.errors import FilterError
from search.geo import BBox
from search.schema import FILTERABLE, Kind

MAX_VALUES = 200
MAX_VALUE_CHARS = 256
MAX_POLYGON_POINTS = 100
_STRIPPED = str.maketrans("", "", "`\\:")


def quote(value: str) -> str:
    """A string value as one backtick-quoted filter value (see module docstring)."""
    if not isinstance(value, str):
        raise FilterError(f"filter value must be text, not {type(value).__name__}")
    cleaned = " ".join(value.translate(_STRIPPED).split())
    if len(cleaned) > MAX_VALUE_CHARS:
        raise FilterError(f"filter value longer than {MAX_VALUE_CHARS} characters")
    if not cleaned:
        # An empty quoted value makes the value splitter merge neighbours: refuse it.
        raise FilterError(f"filter value {value!r} has no searchable characters")
    return f"`{cleaned}`"


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FilterError(f"numeric filter value must be an integer, not {value!r}")
    return str(value)


def _coordinate(value: object, lo: float, hi: float, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FilterError(f"{name} must be a finite number")
    if not lo <= value <= hi:
        raise FilterError(f"{name} must be between {lo} and {hi}")
    return f"{float(value):.7f}"


def _check_field(name: str, kinds: tuple[Kind, ...], allowed: Mapping[str, Kind]) -> None:
    kind = allowed.get(name)
    if kind is None:
        raise FilterError(f"cannot filter on {name!r}")
    if kind not in kinds:
        raise FilterError(f"field {name!r} does not take this kind of filter")


class Clause:
    """One part of a filter expression."""

    def render(self, allowed: Mapping[str, Kind]) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Filter(Clause):
    """``field`` equals any of ``values`` (or none of them when ``negate``)."""

    field: str
    values: tuple[str | int, ...]
    negate: bool = False

    def __init__(self, field: str, values: str | int | Iterable[str | int], negate: bool = False) -> None:
        object.__setattr__(self, "field", field)
        vals = (values,) if isinstance(values, str | int) else tuple(values)
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "negate", negate)

    def render(self, allowed: Mapping[str, Kind]) -> str:
        _check_field(self.field, (Kind.STRING, Kind.INT), allowed)
        if not self.values:
            raise FilterError(f"filter on {self.field!r} has no values")
        if len(self.values) > MAX_VALUES:
            raise FilterError(f"more than {MAX_VALUES} values for {self.field!r}")
        numeric = allowed[self.field] is Kind.INT
        rendered = list(dict.fromkeys(_number(v) if numeric else quote(v) for v in self.values))  # type: ignore[arg-type]
        op = ":!=" if self.negate else ":="
        body = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
        return f"{self.field}{op}{body}"


@dataclass(frozen=True, slots=True)
class Range(Clause):
    """Inclusive integer range; either bound may be open."""

    field: str
    low: int | None = None
    high: int | None = None

    def render(self, allowed: Mapping[str, Kind]) -> str:
        _check_field(self.field, (Kind.INT,), allowed)
        if self.low is None and self.high is None:
            raise FilterError(f"range on {self.field!r} has no bound")
        if self.low is not None and self.high is not None:
            if int(_number(self.low)) > int(_number(self.high)):
                raise FilterError(f"range on {self.field!r} has low > high")
            return f"{self.field}:[{_number(self.low)}..{_number(self.high)}]"
        if self.low is not None:
            return f"{self.field}:>={_number(self.low)}"
        return f"{self.field}:<={_number(self.high)}"


@dataclass(frozen=True, slots=True)
class GeoRadius(Clause):
    lat: float
    lon: float
    km: float
    field: str = "locations"

    def render(self, allowed: Mapping[str, Kind]) -> str:
        _check_field(self.field, (Kind.GEO,), allowed)
        lat = _coordinate(self.lat, -90, 90, "latitude")
        lon = _coordinate(self.lon, -180, 180, "longitude")
        km = _coordinate(self.km, 0, 20_000, "radius")
        if float(km) <= 0:
            raise FilterError("radius must be positive")
        return f"{self.field}:({lat}, {lon}, {km} km)"


@dataclass(frozen=True, slots=True)
class GeoPolygon(Clause):
    """Points ``(lat, lon)`` of a simple polygon, in either winding order."""

    points: tuple[tuple[float, float], ...]
    field: str = "locations"

    @classmethod
    def from_bbox(cls, bbox: BBox, field: str = "locations") -> GeoPolygon:
        return cls(tuple(bbox.polygon()), field)

    def render(self, allowed: Mapping[str, Kind]) -> str:
        _check_field(self.field, (Kind.GEO,), allowed)
        if not 3 <= len(self.points) <= MAX_POLYGON_POINTS:
            raise FilterError(f"a polygon needs 3 to {MAX_POLYGON_POINTS} points")
        coords: list[str] = []
        for point in self.points:
            if not isinstance(point, Sequence) or len(point) != 2:
                raise FilterError("a polygon point is a (lat, lon) pair")
            coords.append(_coordinate(point[0], -90, 90, "latitude"))
            coords.append(_coordinate(point[1], -180, 180, "longitude"))
        return f"{self.field}:(" + ", ".join(coords) + ")"


@dataclass(frozen=True, slots=True)
class AnyOf(Clause):
    """Disjunction of clauses."""

    clauses: tuple[Clause, ...] = field(default_factory=tuple)

    def render(self, allowed: Mapping[str, Kind]) -> str:
        if not self.clauses:
            raise FilterError("empty disjunction")
        return "(" + " || ".join(f"({c.render(allowed)})" for c in self.clauses) + ")"


def build_filter(clauses: Iterable[Clause], allowed: Mapping[str, Kind] = FILTERABLE) -> str:
    """Conjunction of clauses as a ``filter_by`` string ("" when there is none)."""
    parts = [c.render(allowed) for c in clauses]
    if len(parts) == 1:
        return parts[0]
    return " && ".join(f"({p})" for p in parts)
