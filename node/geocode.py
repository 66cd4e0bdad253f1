"""Place completion at import and edit: the offline gazetteer behind a small adapter.

Partner-supplied coordinates are kept when they agree with the place's commune,
postcode or département (they are usually better than a centroid). When they
point far away from it -- real exports carry shuffled or default coordinates --
the gazetteer's point replaces them and the import report counts the place under
``coordinates_replaced``. Codes (INSEE, département, région) are always filled
from the gazetteer when it can tell them. What it cannot resolve is reported,
never invented: the place keeps what it had, marked ``unknown`` precision.

The online geocoder (the national address API, ``[geo] online = true``) is asked
afterwards, asynchronously, for places the gazetteer left unresolved or only
approximate, and for street addresses without coordinates: see
:func:`online_pass`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import cache, lru_cache

from node.geo import Gazetteer
from node.geo.gazetteer import distance_km
from node.geo.online import AddressApiGeocoder, GeocoderError
from node.importer import PlaceResolver
from protocol.sheet import Place, Precision

logger = logging.getLogger("essaim.geo")

# How far (km) partner coordinates may sit from the centre of what the names say.
TOLERANCE_KM = {
    Precision.ADDRESS: 15.0,
    Precision.COMMUNE: 25.0,
    Precision.POSTCODE: 40.0,
    Precision.DEPARTEMENT: 150.0,
    Precision.REGION: 400.0,
}


@cache
def _gazetteer() -> Gazetteer:
    return Gazetteer.default()


def resolve_place(place: Place, gazetteer: Gazetteer | None = None) -> tuple[Place, str]:
    """Complete ``place`` offline; returns it and how it was placed (for the report)."""
    gaz = gazetteer or _gazetteer()
    given = place.lat is not None and place.lon is not None
    # Resolve from the names and codes alone, so the partner's point can be checked against them.
    found = gaz.resolve(commune=place.commune or place.insee, postcode=place.postcode, departement=place.departement)
    from_point = False
    if found.precision == Precision.UNKNOWN and given:
        found = gaz.resolve(commune=None, postcode=None, departement=place.departement, lat=place.lat, lon=place.lon)
        from_point = True
    precision = found.precision
    if precision == Precision.UNKNOWN:
        return place, "given" if given else "unresolved"
    how = precision.value + (" (approximate)" if found.approximate else "")
    lat, lon = found.lat, found.lon
    if given:
        assert place.lat is not None and place.lon is not None
        far = (
            not from_point  # found from the partner's point itself: nothing contradicts it
            and found.lat is not None
            and found.lon is not None
            and distance_km(place.lat, place.lon, found.lat, found.lon) > TOLERANCE_KM.get(precision, 400.0)
        )
        if far:
            how = "coordinates_replaced"
        else:
            lat, lon, how = place.lat, place.lon, "given"
            if place.precision != Precision.UNKNOWN:
                # Already placed (a stored sheet edited, a native re-import): keep what is known, so that
                # resolving twice changes nothing and a postcode centre never turns "commune" precise.
                precision = place.precision
            else:
                precision = Precision.ADDRESS if place.address else max_precision(precision, Precision.COMMUNE)
    completed = replace(
        place,
        insee=place.insee or found.insee,
        commune=place.commune or found.commune,
        postcode=place.postcode or found.postcode,
        departement=found.departement or place.departement,
        region=found.region or place.region,
        lat=lat,
        lon=lon,
        precision=precision,
    )
    return completed, how


_ORDER = [
    Precision.UNKNOWN,
    Precision.COUNTRY,
    Precision.REGION,
    Precision.DEPARTEMENT,
    Precision.POSTCODE,
    Precision.COMMUNE,
    Precision.ADDRESS,
]


def max_precision(a: Precision, b: Precision) -> Precision:
    """The finer of two precisions (partner coordinates are at least commune-precise)."""
    rank = {p: i for i, p in enumerate(_ORDER)}
    return a if rank.get(a, 0) >= rank.get(b, 0) else b


# Places repeat across a file (the same commune and postcode on many sheets): the default
# gazetteer's answer is a pure function of the place, kept for the last few thousand seen.
_CACHED = 8192


@lru_cache(maxsize=_CACHED)
def _resolve_default(place: Place) -> tuple[Place, str]:
    return resolve_place(place)


def resolve_default(place: Place) -> tuple[Place, str]:
    """:func:`resolve_place` with the default gazetteer, remembered per place.

    Equal places get the same answer; a zero coordinate skips the memory, since ``-0.0 == 0.0``
    and the answer keeps the partner's own point.
    """
    if place.lat == 0 or place.lon == 0:
        return resolve_place(place)
    return _resolve_default(place)


def make_resolver() -> PlaceResolver:
    """The offline resolver used by imports and edits."""
    return resolve_default


_COARSE = {Precision.UNKNOWN, Precision.COUNTRY, Precision.REGION, Precision.DEPARTEMENT, Precision.POSTCODE}


def wants_online(place: Place) -> bool:
    """Whether the online geocoder could improve on the offline answer.

    Asked of places already completed offline: a street address the gazetteer could only
    place at its commune's centre has coordinates by then, but not address precision.
    """
    return place.precision in _COARSE or (bool(place.address) and place.precision != Precision.ADDRESS)


async def online_pass(places: tuple[Place, ...], geocoder: AddressApiGeocoder) -> tuple[tuple[Place, ...], int, int]:
    """Ask the address API for the places that want it.

    Returns the places, how many the API improved and how many requests failed.
    A failure keeps the offline answer: an import never fails because a
    web service is down.
    """
    out, improved, failed = [], 0, 0
    for place in places:
        if not wants_online(place):
            out.append(place)
            continue
        try:
            found = await geocoder.geocode(place.address, place.commune, place.postcode, place.insee)
        except GeocoderError as exc:
            logger.warning("online geocoding failed, offline answer kept: %s", exc)
            failed += 1
            out.append(place)
            continue
        if found is None or found.lat is None or (place.insee and found.insee not in (place.insee, found.subdivision)):
            out.append(place)
            continue
        improved += 1
        out.append(
            replace(
                place,
                insee=found.insee or place.insee,
                commune=place.commune or found.commune,
                postcode=place.postcode or found.postcode,
                departement=found.departement or place.departement,
                region=found.region or place.region,
                lat=found.lat,
                lon=found.lon,
                precision=found.precision,
            )
        )
    return tuple(out), improved, failed
