"""Place completion at import: the real offline gazetteer, then the online address API.

The online geocoder talks to a real aiohttp server started on 127.0.0.1 that
answers like the national address API, through the project's hardened outbound
client (allow-listed for that one port).
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.geo import Gazetteer, distance_km
from node.geo.online import AddressApiGeocoder
from node.geocode import TOLERANCE_KM, make_resolver, max_precision, online_pass, resolve_place, wants_online
from node.importer import Importer
from node.mapping import load_mapping
from node.outbound import OutboundClient, OutboundConfig
from node.storage import SheetStore
from protocol.sheet import Partner, Place, Precision, Sheet
from tests import oai_support
from tests.oai_support import T0, Clock, open_database

RENNES = Place(commune="Rennes", postcode="35000")
PARIS_POINT = (48.8566, 2.3522)
# Where the fake API puts "12 rue de la Paix, Rennes": not the commune's centre.
PAIX_POINT = (48.1105, -1.6790)


@pytest.fixture(scope="module")
def gaz() -> Gazetteer:
    return Gazetteer.default()


@pytest.fixture(scope="module")
def rennes_centre(gaz: Gazetteer) -> tuple[float, float]:
    found = gaz.resolve("Rennes", "35000")
    assert found.lat is not None and found.lon is not None
    return found.lat, found.lon


# --------------------------------------------------------------------------- offline


def test_commune_and_postcode(gaz: Gazetteer, rennes_centre: tuple[float, float]) -> None:
    place, how = resolve_place(RENNES, gaz)
    assert how == "commune"
    assert (place.insee, place.departement, place.region) == ("35238", "35", "53")
    assert place.precision == Precision.COMMUNE
    assert (place.lat, place.lon) == rennes_centre
    assert distance_km(place.lat, place.lon, 48.1147, -1.6794) < 5  # the real Rennes
    assert place.commune == "Rennes" and place.postcode == "35000"

    place, how = resolve_place(Place(commune="Paris", postcode="75011"), gaz)
    assert (how, place.insee, place.departement, place.region) == ("commune", "75056", "75", "11")
    place, how = resolve_place(Place(commune="Saint-Denis", postcode="97400"), gaz)
    assert (place.insee, place.departement, place.region) == ("97411", "974", "04")
    assert place.lat is not None and place.lat < 0  # La Réunion, not Seine-Saint-Denis
    # The default gazetteer is used when none is given.
    assert resolve_place(RENNES) == resolve_place(RENNES, gaz)
    assert make_resolver()(RENNES) == resolve_place(RENNES, gaz)


def test_coarser_places_say_so(gaz: Gazetteer) -> None:
    place, how = resolve_place(Place(postcode="28700"), gaz)  # a postcode shared by several communes
    assert how == "postcode (approximate)"
    assert place.precision == Precision.POSTCODE and place.insee is None
    assert (place.departement, place.region) == ("28", "24")
    place, how = resolve_place(Place(departement="35"), gaz)
    assert how == "departement (approximate)"
    assert place.precision == Precision.DEPARTEMENT and place.region == "53" and place.lat is not None


def test_partner_coordinates_kept_when_close(gaz: Gazetteer) -> None:
    given = replace(RENNES, lat=48.1147, lon=-1.6794)
    place, how = resolve_place(given, gaz)
    assert how == "given"
    assert (place.lat, place.lon) == (48.1147, -1.6794)
    assert place.insee == "35238" and place.departement == "35"
    assert place.precision == Precision.COMMUNE
    # With a street address, the partner's point is taken as the address's.
    place, how = resolve_place(replace(given, address="12 rue de la Paix"), gaz)
    assert how == "given" and place.precision == Precision.ADDRESS


def test_partner_coordinates_replaced_when_far(gaz: Gazetteer, rennes_centre: tuple[float, float]) -> None:
    given = replace(RENNES, lat=PARIS_POINT[0], lon=PARIS_POINT[1])  # a shuffled row: Paris for Rennes
    place, how = resolve_place(given, gaz)
    assert how == "coordinates_replaced"
    assert (place.lat, place.lon) == rennes_centre
    assert place.insee == "35238" and place.precision == Precision.COMMUNE


@pytest.mark.parametrize(
    ("place", "precision"),
    [(RENNES, Precision.COMMUNE), (Place(departement="35"), Precision.DEPARTEMENT)],
)
def test_tolerance_depends_on_what_the_names_say(gaz: Gazetteer, place: Place, precision: Precision) -> None:
    centre, _ = resolve_place(place, gaz)
    assert centre.lat is not None and centre.lon is not None
    limit = TOLERANCE_KM[precision]
    step = 1 / 111.2  # degrees of latitude per km
    inside = replace(place, lat=centre.lat + 0.8 * limit * step, lon=centre.lon)
    outside = replace(place, lat=centre.lat + 1.2 * limit * step, lon=centre.lon)
    assert resolve_place(inside, gaz)[1] == "given"
    assert resolve_place(outside, gaz)[1] == "coordinates_replaced"


def test_coordinates_alone_find_the_commune(gaz: Gazetteer) -> None:
    place, how = resolve_place(Place(lat=48.1147, lon=-1.6794), gaz)
    assert how == "given" and (place.lat, place.lon) == (48.1147, -1.6794)
    assert (place.commune, place.insee, place.departement, place.region) == ("Rennes", "35238", "35", "53")
    # A point 27 km off L'Île-d'Yeu: the nearest centre names the place, but no name says the point is wrong.
    offshore = Place(lat=46.7245, lon=-2.34838 - 0.36)
    place, how = resolve_place(offshore, gaz)
    assert how == "given" and (place.lat, place.lon) == (offshore.lat, offshore.lon)
    assert (place.insee, place.departement) == ("85113", "85")
    # Outside France: nothing to say, the point stays as the partner gave it.
    dakar = Place(lat=14.6913, lon=-17.4598)
    assert resolve_place(dakar, gaz) == (dakar, "given")


def test_unresolved_places_are_reported_not_invented(gaz: Gazetteer) -> None:
    for place in (Place(commune="Zzyzx-les-Bains"), Place(), Place(commune="Saint-Denis")):  # the last: ambiguous
        resolved, how = resolve_place(place, gaz)
        assert how == "unresolved"
        assert resolved == place and resolved.precision == Precision.UNKNOWN


def test_resolving_twice_changes_nothing(gaz: Gazetteer) -> None:
    """What an edit or a re-import does to a stored place: it must not move or gain precision."""
    places = [
        RENNES,
        Place(postcode="28700"),
        Place(departement="35"),
        replace(RENNES, lat=PARIS_POINT[0], lon=PARIS_POINT[1]),
        replace(RENNES, lat=48.1147, lon=-1.6794, address="1 place de la Mairie"),
        Place(postcode="28700", departement="28", lat=48.8302, lon=2.3646),  # replaced by the postcode centre
        Place(lat=48.1147, lon=-1.6794),
    ]
    for place in places:
        once, _ = resolve_place(place, gaz)
        twice, how = resolve_place(once, gaz)
        assert twice == once, (place, how)
    postcode_centre, _ = resolve_place(Place(postcode="28700"), gaz)
    assert resolve_place(postcode_centre, gaz)[0].precision == Precision.POSTCODE


def test_precision_order() -> None:
    assert max_precision(Precision.DEPARTEMENT, Precision.COMMUNE) == Precision.COMMUNE
    assert max_precision(Precision.ADDRESS, Precision.COMMUNE) == Precision.ADDRESS
    assert max_precision(Precision.UNKNOWN, Precision.REGION) == Precision.REGION


def test_which_places_want_the_online_geocoder(gaz: Gazetteer) -> None:
    assert wants_online(Place())
    assert wants_online(resolve_place(Place(postcode="28700"), gaz)[0])
    assert not wants_online(resolve_place(RENNES, gaz)[0])
    # A street address the gazetteer could only put at its commune's centre.
    assert wants_online(resolve_place(replace(RENNES, address="12 rue de la Paix"), gaz)[0])
    # A street address with the partner's own point is already precise.
    given = replace(RENNES, address="12 rue de la Paix", lat=48.1105, lon=-1.679)
    assert not wants_online(resolve_place(given, gaz)[0])


# --------------------------------------------------------------------------- a fake address API


@dataclass
class AddressApi:
    """Answers like https://data.geopf.fr/geocodage/search/ for a few queries; records what it was asked."""

    queries: list[dict[str, str]] = field(default_factory=list)

    async def search(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.queries.append(query)
        text = query.get("q", "").lower()
        if "panne" in text:
            return web.Response(status=500, text="Internal Server Error")
        if "paix" in text:
            return web.json_response(self.collection(self.feature(0.93, "35238", "Rennes", "35000", PAIX_POINT)))
        if "gare" in text:  # an answer in another commune than the one the gazetteer found
            return web.json_response(self.collection(self.feature(0.9, "29019", "Brest", "29200", (48.39, -4.49))))
        if "vague" in text:  # too unsure to be used
            return web.json_response(self.collection(self.feature(0.31, "35238", "Rennes", "35000", PAIX_POINT)))
        return web.json_response(self.collection())

    @staticmethod
    def feature(score: float, citycode: str, city: str, postcode: str, point: tuple[float, float]) -> dict[str, Any]:
        context = {"35": "35, Ille-et-Vilaine, Bretagne", "29": "29, Finistère, Bretagne"}[citycode[:2]]
        return {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [point[1], point[0]]},
            "properties": {
                "label": f"{postcode} {city}",
                "score": score,
                "type": "housenumber",
                "postcode": postcode,
                "citycode": citycode,
                "city": city,
                "context": context,
            },
        }

    @staticmethod
    def collection(*features: dict[str, Any]) -> dict[str, Any]:
        return {"type": "FeatureCollection", "version": "draft", "features": list(features)}


@dataclass
class Online:
    api: AddressApi
    geocoder: AddressApiGeocoder
    port: int


@pytest.fixture
async def online(gaz: Gazetteer) -> AsyncIterator[Online]:
    api = AddressApi()
    app = web.Application()
    app.router.add_get("/search/", api.search)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    client = OutboundClient(OutboundConfig(allow_list=frozenset({f"127.0.0.1:{server.port}"}), total_timeout=5))
    try:
        geocoder = AddressApiGeocoder(client.get, base_url=f"http://127.0.0.1:{server.port}/", gazetteer=gaz)
        yield Online(api, geocoder, server.port)
    finally:
        await client.close()
        await server.close()


async def test_online_pass_improves_street_addresses(online: Online, gaz: Gazetteer) -> None:
    paix, _ = resolve_place(replace(RENNES, address="12 rue de la Paix"), gaz)
    known, _ = resolve_place(replace(RENNES, lat=48.1147, lon=-1.6794), gaz)
    places, improved, failed = await online_pass((paix, known), online.geocoder)

    assert (improved, failed) == (1, 0)
    better, same = places
    assert same == known  # commune-precise with the partner's point: not asked
    assert (better.lat, better.lon) == PAIX_POINT
    assert better.precision == Precision.ADDRESS
    assert (better.insee, better.departement, better.region) == ("35238", "35", "53")
    assert better.address == "12 rue de la Paix" and better.commune == "Rennes"
    (query,) = online.api.queries
    assert query == {"q": "12 rue de la Paix 35000 Rennes", "limit": "1", "postcode": "35000", "citycode": "35238"}


async def test_online_pass_keeps_the_offline_answer_when_it_cannot_do_better(online: Online, gaz: Gazetteer) -> None:
    gare, _ = resolve_place(replace(RENNES, address="1 place de la Gare"), gaz)
    vague, _ = resolve_place(replace(RENNES, address="lieu vague"), gaz)
    nowhere, _ = resolve_place(Place(address="chemin inconnu", commune="Zzyzx-les-Bains"), gaz)
    postcode, _ = resolve_place(Place(postcode="28700"), gaz)
    places = (gare, vague, nowhere, postcode)
    out, improved, failed = await online_pass(places, online.geocoder)
    assert out == places
    assert (improved, failed) == (0, 0)
    assert len(online.api.queries) == 4  # all asked, none answered usefully
    assert online.api.queries[3]["q"] == "28700"


async def test_api_failure_keeps_the_offline_answer_and_is_counted(
    online: Online, gaz: Gazetteer, caplog: pytest.LogCaptureFixture
) -> None:
    panne, _ = resolve_place(replace(RENNES, address="3 rue de la Panne"), gaz)
    paix, _ = resolve_place(replace(RENNES, address="12 rue de la Paix"), gaz)
    with caplog.at_level("WARNING", logger="essaim.geo"):
        out, improved, failed = await online_pass((panne, paix, panne), online.geocoder)
    assert (improved, failed) == (1, 2)
    assert out[0] == panne and out[2] == panne
    assert out[1].precision == Precision.ADDRESS  # one failure does not stop the others
    assert "offline answer kept" in caplog.text and "500" in caplog.text


async def test_online_pass_refused_target_counts_as_a_failure(gaz: Gazetteer) -> None:
    """Without the allow-list the outbound client refuses loopback: a failure, never an exception."""
    async with OutboundClient(OutboundConfig(total_timeout=5)) as client:
        geocoder = AddressApiGeocoder(client.get, base_url="http://127.0.0.1:9/", gazetteer=gaz)
        paix, _ = resolve_place(replace(RENNES, address="12 rue de la Paix"), gaz)
        assert await online_pass((paix,), geocoder) == ((paix,), 0, 1)


# --------------------------------------------------------------------------- the importer's online hook


MAPPING = """
[fields]
local_id = "id"
title = "titre"
place_address = "adresse"
place_postcode = "cp"
place_commune = "commune"
"""


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_importer_online_hook(kind: str, online: Online, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oai_support, "PG_DATABASE", oai_support.PG_DATABASE + "_node")  # not the one other suites empty
    mapping = tmp_path / "adresses.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    data = tmp_path / "adresses.csv"
    with data.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(
            [
                ["id", "titre", "adresse", "cp", "commune"],
                ["1", "Atelier vélo", "12 rue de la Paix", "35000", "Rennes"],
                ["2", "Café réparation", "3 rue de la Panne", "35000", "Rennes"],
                ["3", "Jardin", "", "29200", "Brest"],
                ["4", "Sans lieu", "", "", ""],
            ]
        )

    async def hook(places: tuple[Place, ...]) -> tuple[tuple[Place, ...], int, int]:
        return await online_pass(places, online.geocoder)

    async with open_database(kind) as db:
        store = SheetStore(db, base_url="https://noeud.essaim.test", clock=Clock(T0))
        importer = Importer(
            store,
            load_mapping(str(mapping)),
            partner=Partner(name="Réseau"),
            licence="https://www.etalab.gouv.fr/licence-ouverte-open-licence",
            resolver=make_resolver(),
            online=hook,
        )
        report = await importer.run(data, dry_run=True)
        assert report.geocoding == {"commune": 3, "online": 1, "online_failed": 1}
        assert await store.count() == 0

        report = await importer.run(data)
        assert report.created == 4
        assert report.geocoding == {"commune": 3, "online": 1, "online_failed": 1}
        atelier, cafe, jardin = [await store.get(i) for i in ("1", "2", "3")]
        assert isinstance(atelier, Sheet) and isinstance(cafe, Sheet) and isinstance(jardin, Sheet)
        assert atelier.places[0].precision == Precision.ADDRESS
        assert (atelier.places[0].lat, atelier.places[0].lon) == PAIX_POINT
        assert cafe.places[0].precision == Precision.COMMUNE  # the offline answer, kept
        assert jardin.places[0].insee == "29019"
        asked = [q["q"] for q in online.api.queries]
        assert asked == ["12 rue de la Paix 35000 Rennes", "3 rue de la Panne 35000 Rennes"] * 2
