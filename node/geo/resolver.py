"""The decisions behind :meth:`Gazetteer.resolve`: which commune a name means, and the fallbacks.

Kept apart from the tables so that the rules read in one place. Every
guess is marked ``approximate`` and explained in ``Resolution.message``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from node.geo.model import Commune, Resolution
from node.geo.text import departement_of_postcode as prefix_departement
from node.geo.text import normalise_postcode
from protocol.sheet import Precision

if TYPE_CHECKING:
    from node.geo.gazetteer import Gazetteer

_SUB_KINDS = {"comd": "delegated commune", "coma": "associated commune", "arm": "municipal arrondissement"}
_MAX_LISTED = 8


def resolve(
    gaz: Gazetteer,
    commune: str | None,
    postcode: str | None,
    departement: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
) -> Resolution:
    notes: list[str] = []
    pc = normalise_postcode(postcode)
    if postcode is not None and str(postcode).strip() and pc is None:
        notes.append(f"postcode {str(postcode).strip()!r} is not a French postcode")
    dep = gaz.departement_code(departement)
    if departement is not None and str(departement).strip() and dep is None:
        notes.append(f"département {str(departement).strip()!r} not recognised")
    point = (float(lat), float(lon)) if lat is not None and lon is not None and _valid_point(lat, lon) else None
    pc_communes = gaz.communes_of_postcode(pc) if pc else []
    pc_dep = gaz.departement_of_postcode(pc) if pc else None
    if pc and not pc_communes:
        notes.append(f"postcode {pc} is not in the postcode table (CEDEX or special code?)")

    name = commune.strip() if commune else ""
    fallback_dep = dep
    candidates: tuple[str, ...] = ()
    if name:
        found = gaz.candidates(name)
        if not found:
            notes.append(f"commune {name!r} not found")
        else:
            chosen, pool = _choose(gaz, found, pc, dep, pc_dep, point, notes)
            if chosen is not None:
                return _from_commune(gaz, chosen, pc, dep, notes)
            candidates = tuple(_label(gaz, c) for c in pool)
            notes.append(f"commune {name!r} is ambiguous: {_listing(candidates)}")
            deps = {c.departement for c in pool}
            if fallback_dep is None and len(deps) == 1:
                fallback_dep = deps.pop()

    if pc_communes:
        return _from_postcode(gaz, pc, pc_communes, bool(name), notes, candidates)  # type: ignore[arg-type]

    fallback_dep = fallback_dep or pc_dep
    if point is not None:
        nearest = gaz.reverse(*point)
        if nearest is not None and (fallback_dep is None or nearest.departement == fallback_dep):
            notes.append(f"commune guessed from the coordinates: nearest centre is {nearest.name}")
            result = _from_commune(gaz, nearest, pc, dep, notes)
            return _replace(result, approximate=True, candidates=candidates)

    if fallback_dep is not None and fallback_dep in gaz.departements:
        return _from_departement(gaz, fallback_dep, pc, notes, candidates)
    if not name and not pc and dep is None and point is None:
        notes.append("nothing to resolve: no commune, postcode, département or coordinates")
    return Resolution(message="; ".join(notes) or "unresolved", candidates=candidates)


# ------------------------------------------------------------------ choices


def _choose(
    gaz: Gazetteer,
    found: list[Commune],
    pc: str | None,
    dep: str | None,
    pc_dep: str | None,
    point: tuple[float, float] | None,
    notes: list[str],
) -> tuple[Commune | None, list[Commune]]:
    """The one commune a name denotes given the hints, or None and the remaining candidates."""
    pool = list(found)
    if pc:
        pool = [c for c in pool if pc in _postcodes(gaz, c)] or pool
    for hint in (dep, pc_dep):
        if hint and len(pool) > 1:
            pool = [c for c in pool if c.departement == hint] or pool
    if dep and all(c.departement != dep for c in pool):
        notes.append(f"no commune of that name in département {dep}")
    living = [c for c in pool if c.kind in ("com", "arm")]
    if living:
        pool = living
    # A delegated commune named like its own commune nouvelle is the commune nouvelle.
    if len({_main_insee(c) for c in pool}) == 1:
        return min(pool, key=lambda c: c.kind != "com"), pool
    if point is not None:
        placed = [c for c in pool if c.lat is not None and c.lon is not None]
        if placed:
            nearest = min(placed, key=lambda c: _flat_distance(point, c))
            notes.append(f"{len(pool)} communes bear that name; chose the one nearest the coordinates")
            return nearest, pool
    return None, sorted(pool, key=lambda c: -c.population)


def _from_commune(gaz: Gazetteer, chosen: Commune, pc: str | None, dep: str | None, notes: list[str]) -> Resolution:
    sub: Commune | None = None
    main = chosen
    if chosen.kind == "com" and pc:
        within = [a for a in gaz.arrondissements(chosen.insee) if pc in a.postcodes]
        if len(within) == 1:
            sub = within[0]
    elif chosen.kind in _SUB_KINDS and chosen.parent:
        parent = gaz.commune(chosen.parent)
        if parent is not None:
            sub, main = chosen, parent
            if chosen.kind != "arm" and chosen.name != parent.name:
                notes.append(f"{chosen.name} is a {_SUB_KINDS[chosen.kind]} of {parent.name}")
    own_postcodes = _postcodes(gaz, sub or main)
    if pc and pc in own_postcodes:
        postcode: str | None = pc
    elif pc and prefix_departement(pc) == main.departement:
        postcode = pc  # a CEDEX or special code of the right département: kept as given
    else:
        if pc:
            notes.append(f"postcode {pc} does not belong to {main.name}")
        postcode = own_postcodes[0] if len(own_postcodes) == 1 else None
    if dep and dep != main.departement:
        notes.append(f"{main.name} is in département {main.departement}, not {dep}")
    lat, lon = (sub.lat, sub.lon) if sub and sub.lat is not None else (main.lat, main.lon)
    precision, approximate = Precision.COMMUNE, False
    if lat is None or lon is None:
        lat, lon = _mean_point([gaz.commune(c.insee) or c for c in gaz.communes_of_postcode(postcode or "")])
        precision = Precision.POSTCODE
        if lat is None:
            _name, _region, lat, lon = gaz.departements[main.departement]
            precision = Precision.DEPARTEMENT
        approximate = True
        notes.append(f"no point known for {main.name}: {precision.value} centre used")
    return Resolution(
        insee=main.insee,
        commune=main.name,
        postcode=postcode,
        departement=main.departement,
        region=main.region,
        lat=lat,
        lon=lon,
        precision=precision,
        approximate=approximate,
        message="; ".join(notes) or None,
        subdivision=sub.insee if sub else None,
        subdivision_name=sub.name if sub else None,
    )


def _from_postcode(
    gaz: Gazetteer, pc: str, communes: list[Commune], typed: bool, notes: list[str], candidates: tuple[str, ...]
) -> Resolution:
    if len(communes) == 1:
        if not typed:
            return _from_commune(gaz, communes[0], pc, None, notes)
        result = _from_commune(gaz, communes[0], pc, None, [])
        notes.append(f"postcode {pc} is served by {result.commune} alone; its centre is used")
        return _replace(result, precision=Precision.POSTCODE, approximate=True, message="; ".join(notes))
    lat, lon = _mean_point(communes)
    dep = Counter(c.departement for c in communes).most_common(1)[0][0]
    labels = tuple(_label(gaz, c) for c in sorted(communes, key=lambda c: -c.population))
    notes.append(f"postcode {pc} is shared by {len(communes)} communes ({_listing(labels)}): their mean centre is used")
    return Resolution(
        postcode=pc,
        departement=dep,
        region=gaz.region_of_departement(dep),
        lat=lat,
        lon=lon,
        precision=Precision.POSTCODE,
        approximate=True,
        message="; ".join(notes),
        candidates=candidates or labels,
    )


def _from_departement(
    gaz: Gazetteer, dep: str, pc: str | None, notes: list[str], candidates: tuple[str, ...]
) -> Resolution:
    _name, region, lat, lon = gaz.departements[dep]
    notes.append(f"only the département is known: centre of {gaz.departement_name(dep)} ({dep}) used")
    return Resolution(
        postcode=pc if pc and prefix_departement(pc) == dep else None,
        departement=dep,
        region=region,
        lat=lat,
        lon=lon,
        precision=Precision.DEPARTEMENT,
        approximate=True,
        message="; ".join(notes),
        candidates=candidates,
    )


# ------------------------------------------------------------------ helpers


def _postcodes(gaz: Gazetteer, c: Commune) -> tuple[str, ...]:
    if c.postcodes or not c.parent:
        return c.postcodes
    parent = gaz.commune(c.parent)
    return parent.postcodes if parent else ()


def _main_insee(c: Commune) -> str:
    return c.parent if c.kind in ("comd", "coma") and c.parent else c.insee


def _label(gaz: Gazetteer, c: Commune) -> str:
    if c.kind in ("comd", "coma") and c.parent:
        parent = gaz.commune(c.parent)
        return f"{c.name} ({c.departement}, in {parent.name if parent else c.parent})"
    return f"{c.name} ({c.departement})"


def _listing(labels: tuple[str, ...]) -> str:
    shown = ", ".join(labels[:_MAX_LISTED])
    return shown + (f" and {len(labels) - _MAX_LISTED} more" if len(labels) > _MAX_LISTED else "")


def _mean_point(communes: list[Commune]) -> tuple[float | None, float | None]:
    placed = [(c.lat, c.lon) for c in communes if c.lat is not None and c.lon is not None]
    if not placed:
        return None, None
    return round(sum(p[0] for p in placed) / len(placed), 5), round(sum(p[1] for p in placed) / len(placed), 5)


def _flat_distance(point: tuple[float, float], c: Commune) -> float:
    dlat = point[0] - (c.lat or 0.0)
    dlon = (point[1] - (c.lon or 0.0)) * math.cos(math.radians(point[0]))
    return dlat * dlat + dlon * dlon


def _valid_point(lat: float | None, lon: float | None) -> bool:
    if lat is None or lon is None:
        return False
    try:
        return math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180
    except TypeError:
        return False


def _replace(result: Resolution, **changes: object) -> Resolution:
    return replace(result, **changes)  # type: ignore[arg-type]
