"""Geohash cells computed by us, stored as facet strings for map clustering.

Typesense 0.24 cannot aggregate on geopoints, but it counts facet values fast: a
document carries its cell at a few precisions (``gh2`` … ``gh6``) and a map view
facets on the precision matching its zoom level.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

_BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"
_DECODE = {c: i for i, c in enumerate(_BASE32)}

PRECISIONS = (2, 3, 4, 5, 6)


@dataclass(frozen=True, slots=True)
class BBox:
    """A bounding box in degrees; ``south < north`` and ``west < east`` (no antimeridian crossing)."""

    south: float
    west: float
    north: float
    east: float

    def __post_init__(self) -> None:
        for name, value, lo, hi in (
            ("south", self.south, -90, 90),
            ("north", self.north, -90, 90),
            ("west", self.west, -180, 180),
            ("east", self.east, -180, 180),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"bbox {name} must be a number between {lo} and {hi}")
        if not (self.south < self.north and self.west < self.east):
            raise ValueError("bbox needs south < north and west < east")

    def polygon(self) -> list[tuple[float, float]]:
        return [(self.south, self.west), (self.north, self.west), (self.north, self.east), (self.south, self.east)]


def encode(lat: float, lon: float, precision: int) -> str:
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    out: list[str] = []
    bits, value, even = 0, 0, True
    while len(out) < precision:
        if even:
            mid = (lon_lo + lon_hi) / 2
            value = value * 2 + (lon >= mid)
            lon_lo, lon_hi = (mid, lon_hi) if lon >= mid else (lon_lo, mid)
        else:
            mid = (lat_lo + lat_hi) / 2
            value = value * 2 + (lat >= mid)
            lat_lo, lat_hi = (mid, lat_hi) if lat >= mid else (lat_lo, mid)
        even = not even
        bits += 1
        if bits == 5:
            out.append(_BASE32[value])
            bits, value = 0, 0
    return "".join(out)


def cell_bounds(cell: str) -> BBox:
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    even = True
    for char in cell:
        value = _DECODE[char]
        for shift in range(4, -1, -1):
            bit = (value >> shift) & 1
            if even:
                mid = (lon_lo + lon_hi) / 2
                lon_lo, lon_hi = (mid, lon_hi) if bit else (lon_lo, mid)
            else:
                mid = (lat_lo + lat_hi) / 2
                lat_lo, lat_hi = (mid, lat_hi) if bit else (lat_lo, mid)
            even = not even
    return BBox(lat_lo, lon_lo, lat_hi, lon_hi)


def cell_centre(cell: str) -> tuple[float, float]:
    b = cell_bounds(cell)
    return ((b.south + b.north) / 2, (b.west + b.east) / 2)


def precision_for_zoom(zoom: int) -> int:
    """Geohash precision whose cells are a few tens of pixels wide at a web-map zoom level."""
    if zoom <= 4:
        return 2
    if zoom <= 7:
        return 3
    if zoom <= 9:
        return 4
    if zoom <= 12:
        return 5
    return 6


def cells(lat: float, lon: float) -> dict[str, str]:
    """Facet fields ``gh2`` … ``gh6`` for one point."""
    return dict(_cells(lat, lon))


@functools.lru_cache(maxsize=1 << 16)
def _cells(lat: float, lon: float) -> tuple[tuple[str, str], ...]:
    # Sheets are placed at their communes' coordinates: few distinct points, each
    # encoded once (the bisection costs ~10 µs in Python).
    full = encode(lat, lon, max(PRECISIONS))
    return tuple((f"gh{p}", full[:p]) for p in PRECISIONS)
