"""Offline gazetteer of French communes, and an optional online geocoder.

``Gazetteer.default().resolve(commune, postcode)`` turns what a partner typed
into an INSEE code, département, région and a point, falling back honestly to
the postcode or département centre. See :mod:`node.geo.gazetteer`.
"""

from node.geo.gazetteer import Gazetteer, distance_km
from node.geo.model import Commune, Resolution

__all__ = ["Commune", "Gazetteer", "Resolution", "distance_km"]
