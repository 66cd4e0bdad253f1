"""Records of the gazetteer (a commune entry, the outcome of a resolution) and where its file lives."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from protocol.sheet import Place, Precision

FORMAT_VERSION = 1  # of the gazetteer file; a file of another version is rebuilt on load
# Anchored at the checkout (the project is installed editable), not at the current directory.
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "var" / "gazetteer"
DEFAULT_NAME = "gazetteer.json.gz"


def default_path() -> Path:
    """Where the gazetteer lives: ``$ESSAIM_GAZETTEER`` or ``var/gazetteer/gazetteer.json.gz`` (from the cwd)."""
    env = os.environ.get("ESSAIM_GAZETTEER")
    return Path(env) if env else DEFAULT_DIR / DEFAULT_NAME


@dataclass(frozen=True, slots=True)
class Commune:
    insee: str
    name: str
    kind: str  # com | arm (municipal arrondissement) | comd (delegated) | coma (associated)
    departement: str
    region: str
    lat: float | None
    lon: float | None
    population: int
    parent: str | None  # the commune an arrondissement, delegated or associated commune belongs to
    postcodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the gazetteer made of a place.

    ``insee``/``commune`` name the current commune (Paris, not "Paris 11e
    Arrondissement"); ``subdivision``/``subdivision_name`` name the municipal
    arrondissement or the delegated/associated commune matched within it, whose
    point is then the one given. ``approximate`` is true when the point stands
    for a wider area than what was asked for or was guessed.
    """

    insee: str | None = None
    commune: str | None = None
    postcode: str | None = None
    departement: str | None = None
    region: str | None = None
    lat: float | None = None
    lon: float | None = None
    precision: Precision = Precision.UNKNOWN
    approximate: bool = True
    message: str | None = None
    subdivision: str | None = None
    subdivision_name: str | None = None
    candidates: tuple[str, ...] = ()  # "Name (département)" of the communes an ambiguous name could be

    @property
    def resolved(self) -> bool:
        """True when the commune is known for sure."""
        return self.insee is not None and not self.approximate

    def apply(self, place: Place) -> Place:
        """``place`` with the resolved fields filled in (fields already set are kept, except precision)."""
        return replace(
            place,
            insee=place.insee or self.insee,
            commune=place.commune or self.commune,
            postcode=place.postcode or self.postcode,
            departement=place.departement or self.departement,
            region=place.region or self.region,
            lat=place.lat if place.lat is not None else self.lat,
            lon=place.lon if place.lon is not None else self.lon,
            precision=place.precision if place.lat is not None else self.precision,
        )
