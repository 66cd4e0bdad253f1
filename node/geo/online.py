"""Optional online geocoding through the national address API (off by default).

Enabled by the ``[geo] online = true`` setting. It never opens connections
itself: it is given the project's hardened outbound client (or any callable
with the same shape) and only builds URLs and reads the GeoJSON answer:

    {"type": "FeatureCollection", "features": [{"geometry": {"coordinates": [lon, lat]},
     "properties": {"label", "score", "type", "postcode", "citycode", "city", "context", ...}}]}

``context`` reads "75, Paris, Île-de-France": département code first. The
offline gazetteer supplies the région and checks the commune code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from node.geo.gazetteer import Gazetteer
from node.geo.model import Resolution
from protocol.sheet import Place, Precision

logger = logging.getLogger("essaim.geo")

# The national address API (Géoplateforme); any server answering the same way will do.
DEFAULT_BASE_URL = "https://data.geopf.fr/geocodage"
_PRECISIONS = {
    "housenumber": Precision.ADDRESS,
    "street": Precision.ADDRESS,
    "locality": Precision.COMMUNE,
    "municipality": Precision.COMMUNE,
}

Fetch = Callable[[str], Awaitable[Any]]  # URL -> response with .body, bytes, str or parsed JSON


class GeocoderError(RuntimeError):
    """The address API could not be asked or answered something unusable."""


class AddressApiGeocoder:
    """Ask the address API for one place; ``client`` is e.g. ``OutboundClient(...).get``."""

    def __init__(
        self,
        client: Fetch,
        base_url: str = DEFAULT_BASE_URL,
        *,
        gazetteer: Gazetteer | None = None,
        min_score: float = 0.5,
    ) -> None:
        self._client = client
        self._base = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._gazetteer = gazetteer
        self.min_score = min_score

    def search_url(self, query: str, *, postcode: str | None = None, citycode: str | None = None) -> str:
        params = {"q": query[:200], "limit": "1"}
        if postcode:
            params["postcode"] = postcode
        if citycode:
            params["citycode"] = citycode
        return f"{self._base}/search/?{urlencode(params)}"

    async def geocode(
        self,
        address: str | None,
        commune: str | None = None,
        postcode: str | None = None,
        citycode: str | None = None,
    ) -> Resolution | None:
        """The best match for an address, or None when nothing scores ``min_score`` or more."""
        query = " ".join(part.strip() for part in (address, postcode, commune) if part and part.strip())
        if len(query) < 3:
            return None
        url = self.search_url(query, postcode=postcode, citycode=citycode)
        try:
            answer = _decode(await self._client(url))
        except GeocoderError:
            raise
        except Exception as exc:  # the client's own errors: reported, never fatal to an import
            raise GeocoderError(f"address API request failed: {exc}") from exc
        return self._best(answer)

    def _best(self, answer: Any) -> Resolution | None:
        features = answer.get("features") if isinstance(answer, dict) else None
        if not isinstance(features, list):
            raise GeocoderError("address API answer is not a GeoJSON FeatureCollection")
        for feature in features:
            try:
                props = feature["properties"]
                lon, lat = (float(v) for v in feature["geometry"]["coordinates"][:2])
                score = float(props.get("score", 0))
            except (KeyError, TypeError, ValueError):
                continue
            if score < self.min_score:
                continue
            departement = str(props.get("context", "")).split(",")[0].strip() or None
            insee, subdivision, region = props.get("citycode"), None, None
            if self._gazetteer is not None:
                departement = self._gazetteer.departement_code(departement) or departement
                region = self._gazetteer.region_of_departement(departement or "")
                known = self._gazetteer.commune(str(insee or ""))
                if known is not None and known.kind == "arm":  # Paris, Lyon, Marseille: as offline
                    insee, subdivision = known.parent, known.insee
            kind = str(props.get("type", ""))
            return Resolution(
                insee=insee,
                subdivision=subdivision,
                commune=props.get("city"),
                postcode=props.get("postcode"),
                departement=departement,
                region=region,
                lat=lat,
                lon=lon,
                precision=_PRECISIONS.get(kind, Precision.COMMUNE),
                approximate=score < 0.8,
                message=f"address API: {props.get('label', '')} ({kind}, score {score:.2f})",
            )
        return None


def _decode(response: Any) -> Any:
    body = getattr(response, "body", response)
    if isinstance(body, bytes | bytearray | str):
        try:
            return json.loads(body)
        except ValueError as exc:
            raise GeocoderError("address API answer is not JSON") from exc
    return body


def online_geocoder(settings: Any, client: Fetch, gazetteer: Gazetteer | None = None) -> AddressApiGeocoder | None:
    """The online geocoder when ``settings.online`` (an ``essaim.settings.GeoSettings``) is true, else None."""
    if not getattr(settings, "online", False):
        return None
    return AddressApiGeocoder(client, getattr(settings, "api_url", "") or DEFAULT_BASE_URL, gazetteer=gazetteer)


async def geocode_place(place: Place, gazetteer: Gazetteer, online: AddressApiGeocoder | None = None) -> Place:
    """Complete a place: offline first; the online geocoder (when given) only for a street address or a miss.

    Coordinates already on the place are kept. An online failure is logged and
    the offline answer stands.
    """
    offline = gazetteer.resolve(place.commune, place.postcode, place.departement, place.lat, place.lon)
    wants_online = online is not None and place.lat is None and (bool(place.address) or not offline.resolved)
    if wants_online and online is not None:
        try:
            found = await online.geocode(place.address, place.commune, place.postcode, offline.insee)
        except GeocoderError as exc:
            logger.warning("online geocoding failed, offline answer kept: %s", exc)
            found = None
        if found is not None and (offline.insee is None or found.insee in (offline.insee, offline.subdivision)):
            return found.apply(place)
    return offline.apply(place) if offline.precision is not Precision.UNKNOWN else place
