"""Exports on both backends: CSV safe to open in a spreadsheet, native JSON that re-imports
to the very same sheets, valid GeoJSON, and output streamed chunk by chunk."""

from __future__ import annotations

import csv
import inspect
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.db import Database
from node.export import CSV_COLUMNS, FORMATS, csv_row, export_chunks, neutralise
from node.geocode import make_resolver
from node.importer import Importer
from node.mapping import load_mapping
from node.storage import SheetStore
from protocol.sheet import Contact, Holder, Partner, Place, Precision, Sheet, TagMapping, sheet_to_dict
from tests import oai_support
from tests.oai_support import T0, Clock, make_sheet, open_database

DATA = Path(__file__).resolve().parents[3] / "shared/data/cis-bdd-apcis-ffe-303.csv"
BASE = "https://noeud.essaim.test"
PG_DATABASE = oai_support.PG_DATABASE + "_node"
LICENCE = "https://www.etalab.gouv.fr/licence-ouverte-open-licence"
PARTNER = Partner(name="Réseau Test", url="https://reseau.test", id="https://reseau.test/actor")
DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Database]:
    # A PostgreSQL database of these suites' own: other suites empty theirs, maybe while these run.
    monkeypatch.setattr(oai_support, "PG_DATABASE", PG_DATABASE)
    async with open_database(request.param) as database:
        yield database


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(db: Database, clock: Clock) -> SheetStore:
    return SheetStore(db, base_url=BASE, clock=clock)


async def export_text(store: SheetStore, fmt: str) -> str:
    return "".join([chunk async for chunk in export_chunks(store, fmt, licence=LICENCE, source=BASE)])


async def fill(store: SheetStore, count: int) -> None:
    async with store.db.transaction() as tx:
        await store.upsert_many([make_sheet(n, id="") for n in range(count)], tx=tx)


async def wipe(db: Database) -> None:
    for table in ("sheet_set", "sheet_format", "sheet"):
        await db.execute(f"DELETE FROM {table}")


def readable(sheet: Sheet) -> dict[str, Any]:
    data = sheet_to_dict(sheet)
    data.pop("datestamp")
    return data


# --------------------------------------------------------------------------- CSV


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ('=HYPERLINK("https://evil.test","clic")', '\'=HYPERLINK("https://evil.test","clic")'),
        ("+33 6 12 34 56 78", "'+33 6 12 34 56 78"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=cmd|' /C calc'!A0", "'\t=cmd|' /C calc'!A0"),
        ("\r=1", "'\r=1"),
        ("a = b", "a = b"),
        ("Jardin - partagé", "Jardin - partagé"),
        ("", ""),
        (None, ""),
        (-1.6794, "-1.6794"),  # numbers are numbers, not formulas
        (48.11, "48.11"),
        (0, "0"),
    ],
)
def test_neutralise(value: Any, cell: str) -> None:
    assert neutralise(value) == cell


async def test_csv_export_neutralises_formula_injection(store: SheetStore) -> None:
    evil = make_sheet(
        1,
        id="",
        title='=HYPERLINK("https://evil.test","Cliquez")',
        summary="+33 6 12 34 56 78",
        description="<p>=1+2</p><p>suite</p>",
        partner=Partner(name="@Réseau"),
        holder=Holder(name="-2+3", legal_form="\tassociation"),
        contact=Contact(name="\r=cmd", email="=contact@evil.test", phone="+33 1 23 45 67 89"),
        tags=(TagMapping("=tag"), TagMapping("propre")),
        places=(Place(address="-1 rue du Port", commune="Brest", lat=48.39, lon=-4.49, precision=Precision.COMMUNE),),
    )
    await store.upsert(evil)
    await store.upsert(make_sheet(2, id=""))
    text = await export_text(store, "csv")
    assert "\r\n" in text  # spreadsheet line ends
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == CSV_COLUMNS
    assert len(rows) == 3
    for row in rows[1:]:
        assert len(row) == len(CSV_COLUMNS)
        for column, cell in zip(CSV_COLUMNS, row, strict=True):
            if cell.startswith(DANGEROUS):
                assert column in ("lat", "lon"), (column, cell)
                float(cell)  # only a plain number may start with a minus sign

    first = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert first["title"] == "'" + evil.title
    assert first["summary"] == "'+33 6 12 34 56 78"
    assert first["description"] == "'=1+2\nsuite"
    assert first["partner"] == "'@Réseau"
    assert first["holder"] == "'-2+3"
    assert first["holder_legal_form"] == "association"  # stored text is trimmed: the tab is gone already
    assert first["contact_name"] == "'=cmd" and first["contact_email"] == "'=contact@evil.test"
    assert first["contact_phone"] == "'+33 1 23 45 67 89"
    assert first["tags"] == "'=tag;propre"
    assert first["address"] == "'-1 rue du Port"
    assert (first["lat"], first["lon"]) == ("48.39", "-4.49")
    assert first["id"] == store.make_uri("projet-1") and first["local_id"] == "projet-1"
    assert first["datestamp"] == "2023-11-14T22:13:20Z"
    second = dict(zip(CSV_COLUMNS, rows[2], strict=True))
    assert second["themes"] == "EDU" and second["subthemes"] == "INN"
    assert second["precision"] == "commune" and second["departement"] == "75"


def test_csv_row_neutralises_tab_and_carriage_return() -> None:
    # Sheets built in memory (not read back from storage) may still carry them.
    sheet = make_sheet(1, holder=Holder(name="\t=1+1", legal_form="\r@x"), summary="\t")
    row = dict(zip(CSV_COLUMNS, csv_row(sheet), strict=True))
    assert row["holder"] == "'\t=1+1" and row["holder_legal_form"] == "'\r@x" and row["summary"] == "'\t"
    assert row["lon"] == "-1.68" and row["lat"] == "48.11"


async def test_csv_export_of_an_empty_node_is_the_header(store: SheetStore) -> None:
    assert await export_text(store, "csv") == ",".join(CSV_COLUMNS) + "\r\n"
    assert json.loads(await export_text(store, "json")) == []
    assert json.loads(await export_text(store, "geojson"))["features"] == []
    assert await export_text(store, "jsonl") == ""


# --------------------------------------------------------------------------- JSON round trip


async def test_json_export_reimports_to_identical_sheets(db: Database, store: SheetStore, tmp_path: Path) -> None:
    await fill(store, 12)
    await store.upsert(make_sheet(99, id="", places=(), tags=(), matches=(), holder=None, contact=None))
    await store.delete("projet-3")  # tombstones are not exported
    before = {s.local_id: readable(s) async for s in store.iter_sheets()}
    assert len(before) == 12

    exported = tmp_path / "export.json"
    exported.write_text(await export_text(store, "json"), encoding="utf-8")
    items = json.loads(exported.read_text(encoding="utf-8"))
    assert [i["local_id"] for i in items] == list(before)

    await wipe(db)
    native = Importer(store, load_mapping("native"), partner=PARTNER, licence=LICENCE)
    report = await native.run(exported)
    assert (report.rows, report.created, report.error_count) == (12, 12, 0)
    after = {s.local_id: readable(s) async for s in store.iter_sheets()}
    assert after == before  # ids included: they derive from the partner's ids

    report = await native.run(exported)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 12)

    lines = tmp_path / "export.jsonl"
    lines.write_text(await export_text(store, "jsonl"), encoding="utf-8")
    await wipe(db)
    report = await native.run(lines)
    assert report.created == 12
    assert {s.local_id: readable(s) async for s in store.iter_sheets()} == before


@pytest.mark.skipif(not DATA.exists(), reason=f"the APCIS dataset is not at {DATA}")
async def test_real_export_round_trip_with_geocoding(db: Database, store: SheetStore, tmp_path: Path) -> None:
    resolver = make_resolver()
    partner = Partner(name="Carrefour des innovations sociales")
    await Importer(store, load_mapping("apcis"), partner=partner, licence=LICENCE, resolver=resolver).run(DATA)
    before = {s.local_id: readable(s) async for s in store.iter_sheets()}
    exported = tmp_path / "carrefour.json"
    exported.write_text(await export_text(store, "json"), encoding="utf-8")

    native = Importer(store, load_mapping("native"), partner=partner, licence=LICENCE, resolver=resolver)
    # Into the same node: nothing moves (resolving a resolved place, sanitising sanitised HTML: no change).
    report = await native.run(exported)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 150)
    # Into an empty one: the same sheets.
    await wipe(db)
    report = await native.run(exported)
    assert report.created == 150
    assert {s.local_id: readable(s) async for s in store.iter_sheets()} == before


# --------------------------------------------------------------------------- GeoJSON


async def test_geojson_is_a_feature_collection_of_lon_lat_points(store: SheetStore) -> None:
    two_places = make_sheet(
        1,
        id="",
        places=(
            Place(commune="Rennes", departement="35", region="53", lat=48.1147, lon=-1.6794),
            Place(commune="Quelque part"),  # not located: no feature
            Place(commune="Saint-Denis", departement="974", lat=-20.8823, lon=55.4504),
        ),
    )
    await store.upsert(two_places)
    await store.upsert(make_sheet(2, id="", places=()))
    await store.upsert(make_sheet(3, id="", places=(Place(commune="Ajaccio", departement="2A", lat=41.92, lon=8.74),)))

    document = json.loads(await export_text(store, "geojson"))
    assert document["type"] == "FeatureCollection"
    assert document["metadata"] == {"licence": LICENCE, "source": BASE}
    features = document["features"]
    assert len(features) == 3
    assert len({f["id"] for f in features}) == 3
    for feature in features:
        assert feature["type"] == "Feature"
        assert feature["geometry"]["type"] == "Point"
        lon, lat = feature["geometry"]["coordinates"]
        assert isinstance(lon, float) and isinstance(lat, float)
        assert -180 <= lon <= 180 and -90 <= lat <= 90
        assert set(feature["properties"]) >= {"sheet", "title", "partner", "themes", "commune", "licence"}

    rennes, reunion, ajaccio = features
    assert rennes["geometry"]["coordinates"] == [-1.6794, 48.1147]  # RFC 7946: longitude first
    assert reunion["geometry"]["coordinates"] == [55.4504, -20.8823]
    assert ajaccio["geometry"]["coordinates"] == [8.74, 41.92]
    assert rennes["properties"]["sheet"] == store.make_uri("projet-1") == reunion["properties"]["sheet"]
    assert rennes["id"].endswith("#place-0") and reunion["id"].endswith("#place-2")
    assert reunion["properties"]["departement"] == "974"
    assert ajaccio["properties"]["themes"] == ["NUM"]


@pytest.mark.skipif(not DATA.exists(), reason=f"the APCIS dataset is not at {DATA}")
async def test_geojson_of_the_real_export(store: SheetStore) -> None:
    partner = Partner(name="Carrefour des innovations sociales")
    await Importer(store, load_mapping("apcis"), partner=partner, licence=LICENCE, resolver=make_resolver()).run(DATA)
    places = {}
    async for sheet in store.iter_sheets():
        for index, place in enumerate(sheet.places):
            places[f"{sheet.id}#place-{index}"] = place
    features = json.loads(await export_text(store, "geojson"))["features"]
    assert len(features) == 303 == len(places)
    for feature in features:
        place = places[feature["id"]]
        assert feature["geometry"]["coordinates"] == [place.lon, place.lat]
        assert feature["properties"]["region"] == place.region


# --------------------------------------------------------------------------- streaming


async def test_exports_are_streamed(db: Database, store: SheetStore) -> None:
    await fill(store, 150)
    for fmt in FORMATS:
        assert inspect.isasyncgen(export_chunks(store, fmt, licence=LICENCE, source=BASE))

    # CSV: several chunks of about 64 KiB, never one string of everything.
    chunks = [c async for c in export_chunks(store, "csv", licence=LICENCE, source=BASE)]
    assert len(chunks) >= 2
    assert all(len(c) < 80 * 1024 for c in chunks)
    assert len(list(csv.reader(io.StringIO("".join(chunks), newline="")))) == 151

    # JSON: one chunk per sheet, produced as the sheets are read.
    pulled = 0

    class CountingStore(SheetStore):
        async def iter_sheets(self, *, batch: int = 1000) -> AsyncIterator[Sheet]:
            nonlocal pulled
            async for sheet in super().iter_sheets(batch=25):
                pulled += 1
                yield sheet

    counting = CountingStore(db, base_url=BASE)
    stream = export_chunks(counting, "json", licence=LICENCE, source=BASE)
    assert await anext(stream) == "[\n"
    first = await anext(stream)
    assert json.loads(first)["local_id"] == "projet-0"
    assert pulled == 1
    rest = [c async for c in stream]
    assert pulled == 150 and len(rest) == 150  # 149 sheets and the closing bracket
    assert json.loads("[\n" + first + "".join(rest))[-1]["local_id"] == "projet-149"

    lines = (await export_text(store, "jsonl")).splitlines()
    assert len(lines) == 150
    stored = {s.local_id: sheet_to_dict(s) async for s in store.iter_sheets()}
    assert all(json.loads(line) == stored[json.loads(line)["local_id"]] for line in lines)


async def test_unknown_format_is_refused(store: SheetStore) -> None:
    with pytest.raises(ValueError, match="unknown export format 'xlsx'"):
        await anext(export_chunks(store, "xlsx", licence=LICENCE, source=BASE))


def test_csv_columns_cover_the_sheet() -> None:
    covered = set(CSV_COLUMNS) | {"place", "places", "tags", "matches", "partner", "holder", "contact"}
    names = {name for name in Sheet.__dataclass_fields__}
    assert names - covered == set(), names - covered
    assert len(CSV_COLUMNS) == len(set(CSV_COLUMNS))
