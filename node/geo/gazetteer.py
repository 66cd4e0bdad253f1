"""Offline gazetteer: commune name and/or postcode -> INSEE code, département, région, point.

Load once (``Gazetteer.load()`` or the shared ``Gazetteer.default()``); every
lookup after that is a pure, synchronous dictionary access. The file is built by
:mod:`node.geo.build` from packaged open data, lazily on first use if missing.

Resolution order, most precise first, each step honest about what it knows:

1. a commune name (or INSEE code) that matches one commune, after narrowing by
   postcode, département and coordinates -> ``COMMUNE`` (an arrondissement of
   Paris, Lyon or Marseille when the postcode or the name tells which);
2. a postcode alone: one commune -> ``COMMUNE``; several -> the mean of their
   points, ``POSTCODE``, approximate;
3. a département (given, or implied by the postcode) -> its centroid,
   ``DEPARTEMENT``, approximate;
4. coordinates alone -> the nearest commune's centre, approximate;
5. otherwise ``UNKNOWN``, with a message saying what could not be matched.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, ClassVar

from node.geo.model import FORMAT_VERSION, Commune, Resolution, default_path
from node.geo.resolver import resolve as _resolve
from node.geo.text import (
    departement_of_postcode as _prefix_departement,
)
from node.geo.text import (
    fold,
    name_key,
    normalise_departement,
    normalise_postcode,
    strip_article,
)
from protocol.sheet import Place, Precision

_CELL = 0.25  # degrees, grid of the reverse lookup
_CITY_POSTCODES = {"75000": "75056", "69000": "69123", "13000": "13055"}
_INSEE = re.compile(r"^(\d{5}|2[AB]\d{3})$", re.IGNORECASE)
_LEADING_CODE = re.compile(r"^\s*(\d{2,3}|2[abAB])\s*(?:[-–—:]\s*)?(?=\D|$)")


class Gazetteer:
    """Immutable lookup tables over the communes, départements and régions."""

    _default: ClassVar[Gazetteer | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, document: dict[str, Any]) -> None:
        if document.get("format") != FORMAT_VERSION:
            raise ValueError(f"gazetteer format {document.get('format')!r}, expected {FORMAT_VERSION}")
        self.sources: dict[str, str | None] = document.get("sources", {})
        self.regions: dict[str, tuple[str, float | None, float | None]] = {
            code: (v[0], v[1], v[2]) for code, v in document["regions"].items()
        }
        self.departements: dict[str, tuple[str, str, float | None, float | None]] = {
            code: (v[0], v[1], v[2], v[3]) for code, v in document["departements"].items()
        }
        self.communes: list[Commune] = [
            Commune(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], tuple(r[9])) for r in document["communes"]
        ]
        self._by_insee: dict[str, Commune] = {}
        self._by_key: dict[str, list[Commune]] = defaultdict(list)
        self._by_bare_key: dict[str, list[Commune]] = defaultdict(list)
        self._arrondissements: dict[str, list[Commune]] = defaultdict(list)
        self._by_postcode: dict[str, list[Commune]] = defaultdict(list)
        self._grid: dict[tuple[int, int], list[Commune]] = defaultdict(list)
        for c in self.communes:
            if c.kind in ("com", "arm"):
                self._by_insee[c.insee] = c
            if c.kind == "arm" and c.parent:
                self._arrondissements[c.parent].append(c)
        for c in self.communes:  # Paris, Lyon, Marseille are found through their arrondissements
            placed = c.lat is not None and c.lon is not None
            if placed and (c.kind == "arm" or (c.kind == "com" and c.insee not in self._arrondissements)):
                self._grid[self._cell(c.lat, c.lon)].append(c)  # type: ignore[arg-type]
        for c, row in zip(self.communes, document["communes"], strict=True):
            key = row[10]
            self._by_key[key].append(c)
            if strip_article(key) != key:
                self._by_bare_key[strip_article(key)].append(c)
        for c in self.communes:
            if c.kind == "arm" or (c.kind == "com" and c.insee not in self._arrondissements):
                for postcode in c.postcodes:
                    self._by_postcode[postcode].append(c)
        for generic, insee in _CITY_POSTCODES.items():  # "75000 Paris" is common, though no such postcode exists
            if generic not in self._by_postcode and insee in self._by_insee:
                self._by_postcode[generic].append(self._by_insee[insee])
        self._departement_names = {fold(name): code for code, (name, *_rest) in self.departements.items()}
        self._region_names = {fold(name): code for code, (name, *_rest) in self.regions.items()}

    # ------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: str | Path | None = None) -> Gazetteer:
        """Read the gazetteer file, building it first if it is missing or of an older format."""
        file = Path(path) if path else default_path()
        if file.exists():
            try:
                return cls(_read(file))
            except (ValueError, KeyError, IndexError, TypeError, OSError, EOFError):
                pass  # stale or truncated: rebuild below
        from node.geo.build import build  # imported here: building needs the raw-data packages

        build(file)
        return cls(_read(file))

    @classmethod
    def default(cls) -> Gazetteer:
        """One process-wide gazetteer, loaded from the default path on first use."""
        with cls._lock:
            if cls._default is None:
                cls._default = cls.load()
            return cls._default

    # ------------------------------------------------------------- tables

    def commune(self, insee: str) -> Commune | None:
        """The commune or municipal arrondissement with this INSEE code."""
        return self._by_insee.get(insee.strip().upper())

    def communes_of_postcode(self, postcode: str) -> list[Commune]:
        """Communes (arrondissements for Paris, Lyon, Marseille) served by a postcode."""
        code = normalise_postcode(postcode)
        return list(self._by_postcode.get(code, ())) if code else []

    def departement_of_postcode(self, postcode: str) -> str | None:
        """The département of a postcode: from the postcode table, else from its prefix."""
        communes = self.communes_of_postcode(postcode)
        if communes:
            return Counter(c.departement for c in communes).most_common(1)[0][0]
        code = _prefix_departement(postcode)
        return code if code in self.departements else None

    def departement_code(self, value: str | None) -> str | None:
        """A département code from a code ("35", "2a", "971") or a name ("Ille-et-Vilaine", "35 - Ille...")."""
        if value is None or not str(value).strip():
            return None
        code = normalise_departement(value)
        if code in self.departements:
            return code
        text = str(value)
        lead = _LEADING_CODE.match(text)
        if lead and normalise_departement(lead.group(1)) in self.departements:
            return normalise_departement(lead.group(1))
        return self._departement_names.get(fold(text))

    def departement_name(self, code: str) -> str | None:
        entry = self.departements.get(code)
        return entry[0] if entry else None

    def region_of_departement(self, code: str) -> str | None:
        entry = self.departements.get(code)
        return entry[1] if entry else None

    def region_name(self, code: str) -> str | None:
        entry = self.regions.get(code)
        return entry[0] if entry else None

    def region_code(self, value: str | None) -> str | None:
        """A région code from its code or its name, accents and case folded ("Ile-de-France" -> "11")."""
        if value is None:
            return None
        text = str(value).strip()
        return text if text in self.regions else self._region_names.get(fold(text))

    # ------------------------------------------------------------- reverse

    @staticmethod
    def _cell(lat: float, lon: float) -> tuple[int, int]:
        return math.floor(lat / _CELL), math.floor(lon / _CELL)

    def reverse(self, lat: float, lon: float, max_km: float = 30.0) -> Commune | None:
        """The commune (or municipal arrondissement) whose centre is nearest; borders are not kept, so near one
        the answer may be the neighbour."""
        row, col = self._cell(lat, lon)
        cell_km = 111.0 * _CELL * max(math.cos(math.radians(lat)), 0.2)  # the narrower side of a cell
        reach = math.ceil(max_km / cell_km) + 1
        best: tuple[float, Commune] | None = None
        # Rings of cells outward from the point's cell: once the best centre found is nearer than
        # anything the next ring can hold, stop.
        for ring in range(reach + 1):
            for dr in range(-ring, ring + 1):
                edge = abs(dr) == ring
                for dc in range(-ring, ring + 1) if edge else (-ring, ring):
                    for c in self._grid.get((row + dr, col + dc), ()):
                        d = _distance_km(lat, lon, c.lat, c.lon)  # type: ignore[arg-type]
                        if d <= max_km and (best is None or d < best[0]):
                            best = (d, c)
            if best is not None and best[0] <= ring * cell_km:
                break
        return best[1] if best else None

    # ------------------------------------------------------------- resolve

    def candidates(self, commune: str) -> list[Commune]:
        """Every commune, arrondissement, delegated or associated commune a name (or INSEE code) may denote."""
        text = commune.strip()
        if _INSEE.match(text):
            found = self.commune(text)
            return [found] if found else []
        key = name_key(text)
        return list(self._by_key.get(key) or self._by_bare_key.get(strip_article(key)) or ())

    def resolve(
        self,
        commune: str | None,
        postcode: str | None,
        departement: str | None = None,
        lat: float | None = None,
        lon: float | None = None,
    ) -> Resolution:
        """Resolve a place; see the module docstring for the order tried."""
        return _resolve(self, commune, postcode, departement, lat, lon)

    def resolve_place(self, place: Place) -> Place:
        """A place completed from the gazetteer (kept as is when nothing matched)."""
        result = self.resolve(place.commune, place.postcode, place.departement, place.lat, place.lon)
        return result.apply(place) if result.precision is not Precision.UNKNOWN else place

    def arrondissements(self, insee: str) -> list[Commune]:
        return list(self._arrondissements.get(insee, ()))


def _read(file: Path) -> dict[str, Any]:
    with gzip.open(file, "rb") as fh:
        document: dict[str, Any] = json.loads(fh.read())
    return document


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(a)))


distance_km = _distance_km
