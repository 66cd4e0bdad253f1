"""Imports on both backends: the real 303-row Carrefour export, partner mappings, JSON, failures.

The dataset is ``../shared/data/cis-bdd-apcis-ffe-303.csv`` next to the checkout
(tests skip, saying so, when it is absent). Places are resolved with the real
offline gazetteer (``var/gazetteer/gazetteer.json.gz``, built by ``python -m node.geo.build``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.db import Database
from node.geo import Gazetteer, distance_km
from node.geocode import make_resolver
from node.importer import Importer, ImportFailed, ImportReport, RowError
from node.mapping import MappingError, load_mapping
from node.storage import SheetStore
from protocol.sheet import Partner, Precision, Sheet, Stage, Tombstone
from protocol.taxonomy import Crosswalk, default_taxonomy
from tests import oai_support
from tests.oai_support import T0, Clock, open_database

DATA = Path(__file__).resolve().parents[3] / "shared/data/cis-bdd-apcis-ffe-303.csv"
BASE = "https://noeud.essaim.test"
PG_DATABASE = oai_support.PG_DATABASE + "_node"
PARTNER = Partner(name="Carrefour des innovations sociales", url="https://carrefour.test", id=BASE + "/actor")
LICENCE = "https://creativecommons.org/licenses/by/4.0/"  # not the default: proves it is applied

needs_dataset = pytest.mark.skipif(not DATA.exists(), reason=f"the APCIS dataset is not at {DATA}")


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


@pytest.fixture(scope="session")
def gazetteer() -> Gazetteer:
    return Gazetteer.default()


def importer(store: SheetStore, mapping: str | Path = "apcis", **kwargs: Any) -> Importer:
    kwargs.setdefault("resolver", make_resolver())
    return Importer(store, load_mapping(str(mapping)), partner=PARTNER, licence=LICENCE, **kwargs)


async def all_sheets(store: SheetStore) -> dict[str, Sheet]:
    return {s.local_id: s async for s in store.iter_sheets()}


async def table_count(db: Database, table: str) -> int:
    row = await db.fetchone(f"SELECT COUNT(*) AS n FROM {table}")
    assert row is not None
    return int(row["n"])


# --------------------------------------------------------------------------- the dataset, read independently


def dataset_rows() -> list[dict[str, str]]:
    """The export's rows with trimmed column names, read with the csv module alone."""
    with DATA.open(encoding="utf-8-sig", newline="") as handle:
        return [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(handle)]


def dataset_projects() -> dict[str, list[dict[str, str]]]:
    """Rows grouped into projects: adjacent rows sharing the partner's id (else the Carrefour's)."""
    projects: dict[str, list[dict[str, str]]] = {}
    previous = None
    for row in dataset_rows():
        local_id = row["ID interne sourceur"].strip() or row["ID CIS"].strip()
        assert local_id == previous or local_id not in projects, "the export's projects are contiguous"
        projects.setdefault(local_id, []).append(row)
        previous = local_id
    return projects


def codes(row: dict[str, str], level: str) -> set[str]:
    """The CIS codes of a row at one level ("Niveau - 1" themes, "Niveau 2" sub-themes)."""
    return {
        v.strip().upper()
        for k, v in row.items()
        if level in k and k.endswith("CODE") and "ASSEMBLAGE" not in k and v.strip()
    }


# --------------------------------------------------------------------------- the real export


@needs_dataset
async def test_apcis_export_imports_150_projects_in_303_places(
    db: Database, store: SheetStore, gazetteer: Gazetteer
) -> None:
    progress: list[int] = []
    report = await importer(store, progress=progress.append).run(DATA)

    assert report.ok and report.errors == [] and report.error_count == 0
    assert (report.rows, report.sheets, report.created, report.updated, report.unchanged, report.deleted) == (
        303,
        150,
        150,
        0,
        0,
        0,
    )
    assert progress == list(range(1, 304))
    assert report.unmapped_tags == {}  # every SDG tag of the export is in the mapping's crosswalk
    assert report.unknown_codes == {}
    assert report.unresolved_places == []
    assert sum(report.geocoding.values()) == 303  # every place went through the gazetteer
    assert report.geocoding["coordinates_replaced"] > 0
    assert report.geocoding["given"] > report.geocoding["coordinates_replaced"]
    assert report.summary().endswith("303 rows, 150 sheets: 150 were created, 0 updated, 0 unchanged, 0 deleted")
    assert await store.count() == 150

    projects = dataset_projects()
    sheets = await all_sheets(store)
    assert set(sheets) == set(projects) and len(sheets) == 150
    assert sum(len(s.places) for s in sheets.values()) == 303  # one place per row: none lost in the grouping

    taxonomy = default_taxonomy()
    replaced = 0
    without_codes = []
    for local_id, sheet in sheets.items():
        rows = projects[local_id]
        first = rows[0]
        assert sheet.id == store.make_uri(local_id)
        assert sheet.title == first["Nom du projet"].strip()
        assert sheet.partner.name == first["Sourceur"].strip()
        assert sheet.partner.id == PARTNER.id
        assert sheet.licence == LICENCE
        assert sheet.datestamp is not None and sheet.datestamp.timestamp() == T0
        # Taxonomy: the CIS codes of the row, every parent theme, only known codes.
        assert set(sheet.themes) <= set(taxonomy.themes)
        assert set(sheet.subthemes) <= set(taxonomy.subthemes)
        assert codes(first, "Niveau - 1") <= set(sheet.themes)
        assert codes(first, "Niveau 2") <= set(sheet.subthemes)
        assert {taxonomy.subthemes[s].parent for s in sheet.subthemes} <= set(sheet.themes)
        if not sheet.themes:
            without_codes.append(local_id)
        source_tag = first["Tags sourceur"].strip()
        assert [t.tag for t in sheet.tags] == ([source_tag] if source_tag else [])
        for tag in sheet.tags:
            assert tag.codes and set(tag.codes) <= set(sheet.themes) | set(sheet.subthemes)
        # Places: one per row, in the export's order, with codes from the gazetteer.
        assert len(sheet.places) == len(rows)
        for row, place in zip(rows, sheet.places, strict=True):
            assert place.lat is not None and place.lon is not None
            assert place.departement in gazetteer.departements, place
            assert place.region == gazetteer.region_of_departement(place.departement)
            assert place.precision != Precision.UNKNOWN
            if row["lat"].strip():
                partner_point = (float(row["lat"]), float(row["long"]))
                if (place.lat, place.lon) != partner_point:
                    replaced += 1
                    assert distance_km(place.lat, place.lon, *partner_point) > 15
            else:
                assert row["Code postal"].strip() or row["Département_code"].strip()
    # Exactly the places the report says were moved.
    assert replaced == report.geocoding["coordinates_replaced"]
    # One project of the export carries no CIS code and no tag at all: nothing is invented for it.
    blank = [k for k, rows in projects.items() if not codes(rows[0], "Niveau") and not rows[0]["Tags sourceur"].strip()]
    assert without_codes == blank and len(blank) == 1

    # Spot checks against what the file says.
    cravate = sheets["22ae7458-3f1e-52fe-9982-6b1287bf30d2"]
    assert cravate.title == "La Cravate Solidaire"
    assert cravate.holder is not None and cravate.holder.name == "La Cravate Solidaire"
    assert cravate.themes == ("EMP", "SOL") and cravate.subthemes == ("ACE", "GRA", "LUT")
    assert [(t.tag, t.codes) for t in cravate.tags] == [("10- Réduction des inégalités", ("SOL", "LUT"))]
    assert [(a.name, a.year) for a in cravate.awards] == [("Lauréat La France s'engage 2014", 2014)]
    assert {link.rel for link in cravate.links} == {"facebook", "twitter"}
    assert cravate.images == ()  # "default" is in the mapping's null list
    assert cravate.description and cravate.description.startswith("<p>La Cravate Solidaire collecte")
    assert cravate.places[0].postcode == "28700" and cravate.places[0].departement == "28"
    # A description over several lines keeps its line breaks.
    (multiline,) = [k for k, rows in projects.items() if "\n" in rows[0]["Description"]]
    assert "activités : <br>- La collecte" in (sheets[multiline].description or "")
    nightline = sheets["150"]  # the one project without the partner's own id: the Carrefour's stands in
    assert nightline.title == "Nightline France"

    # OAI sets were written for every sheet.
    rows = await db.fetch("SELECT spec, COUNT(*) AS n FROM sheet_set GROUP BY spec")
    members = {str(r["spec"]): int(r["n"]) for r in rows}
    assert members["theme"] == 149
    assert members["departement"] == 150
    assert members["theme:EMP"] == sum("EMP" in s.themes for s in sheets.values())
    assert members["region:11"] == sum(any(p.region == "11" for p in s.places) for s in sheets.values())


@needs_dataset
async def test_second_import_changes_nothing(db: Database, store: SheetStore, clock: Clock) -> None:
    await importer(store).run(DATA)
    before = {k: (s.id, s.datestamp) for k, s in (await all_sheets(store)).items()}
    clock.tick(3600)

    report = await importer(store, batch=7).run(DATA)  # smaller batches, same outcome
    assert (report.created, report.updated, report.unchanged, report.deleted) == (0, 0, 150, 0)
    assert report.sheets == 150
    after = {k: (s.id, s.datestamp) for k, s in (await all_sheets(store)).items()}
    assert after == before
    stamps = await db.fetch("SELECT DISTINCT stamp FROM sheet")
    assert [int(r["stamp"]) for r in stamps] == [T0]


@needs_dataset
async def test_one_broken_row_imports_nothing(db: Database, store: SheetStore, clock: Clock, tmp_path: Path) -> None:
    lines = DATA.read_text(encoding="utf-8-sig").split("\n")
    # Line 253 holds one whole record; lines 245-247 hold one record whose description spans three lines.
    assert lines[252].count(",") == 45
    assert lines[244].count(",") < 45 and lines[246].count(",") < 45
    head, _lat, lon = lines[252].rsplit(",", 2)
    lines[252] = f"{head},abc,{lon}"
    head, lat, _lon = lines[246].rsplit(",", 2)
    lines[246] = f"{head},{lat},999"
    lines[1] = lines[1].replace("La Cravate Solidaire,La Cravate", "La Cravate Renommée,La Cravate", 1)
    broken = tmp_path / "export-casse.csv"
    broken.write_text("\n".join(lines), encoding="utf-8")

    with pytest.raises(ImportFailed) as caught:
        await importer(store).run(broken)
    report = caught.value.report
    assert not report.ok and report.error_count == 2
    assert await store.count(include_deleted=True) == 0
    assert await table_count(db, "sheet_set") == 0

    lat_error, lon_error = sorted(report.errors, key=lambda e: e.field)
    assert (lat_error.line, lat_error.field, lat_error.column) == (253, "place.lat", "lat")
    assert "'abc'" in lat_error.message
    # A record over several lines is named by the line it starts on.
    assert (lon_error.line, lon_error.field, lon_error.column) == (245, "place.lon", "long")
    assert "999" in lon_error.message
    message = str(caught.value)
    assert "nothing was written" in message
    assert f"{broken}: line 253: place.lat (column 'lat'): must be a number, not 'abc'" in message
    assert f"{broken}: line 245: place.lon (column 'long')" in message
    assert report.as_dict()["ok"] is False and report.as_dict()["errors"][0]["line"] in (245, 253)

    # Over a populated node, a refused import changes nothing either (not even the renamed project).
    await importer(store).run(DATA)
    before = await all_sheets(store)
    clock.tick(60)
    with pytest.raises(ImportFailed):
        await importer(store).run(broken, delete_missing=True)
    assert await all_sheets(store) == before
    assert before["22ae7458-3f1e-52fe-9982-6b1287bf30d2"].title == "La Cravate Solidaire"


@needs_dataset
async def test_dry_run_reports_and_writes_nothing(
    db: Database, store: SheetStore, clock: Clock, tmp_path: Path
) -> None:
    report = await importer(store).run(DATA, dry_run=True)
    assert report.dry_run and report.ok
    assert (report.created, report.updated, report.unchanged) == (150, 0, 0)
    assert "150 would be created" in report.summary()
    assert report.geocoding["coordinates_replaced"] > 0
    assert await store.count(include_deleted=True) == 0
    for table in ("sheet", "sheet_set", "sheet_format"):
        assert await table_count(db, table) == 0, table

    await importer(store).run(DATA)
    before = await all_sheets(store)
    changed = tmp_path / "renomme.csv"
    changed.write_text(
        DATA.read_text(encoding="utf-8-sig").replace("La Cravate Solidaire,La Cravate", "Cravate 2,La Cravate", 1),
        encoding="utf-8",
    )
    clock.tick(10)
    report = await importer(store).run(changed, dry_run=True)
    assert (report.created, report.updated, report.unchanged) == (0, 1, 149)
    assert await all_sheets(store) == before


@needs_dataset
async def test_delete_missing(db: Database, store: SheetStore, clock: Clock, tmp_path: Path) -> None:
    await importer(store).run(DATA)
    projects = dataset_projects()
    dropped = ["22ae7458-3f1e-52fe-9982-6b1287bf30d2", "150"]
    with DATA.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        kept = [r for r in reader if (r[4].strip() or r[3].strip()) not in dropped]
    assert len(kept) == 303 - sum(len(projects[k]) for k in dropped)
    smaller = tmp_path / "sans-deux-projets.csv"
    with smaller.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *kept])

    clock.tick(60)
    report = await importer(store).run(smaller)  # without the flag nothing is deleted
    assert (report.deleted, report.unchanged) == (0, 148)
    assert await store.count() == 150

    report = await importer(store).run(smaller, delete_missing=True, dry_run=True)
    assert report.deleted == 2 and await store.count() == 150

    report = await importer(store).run(smaller, delete_missing=True)
    assert (report.created, report.updated, report.unchanged, report.deleted) == (0, 0, 148, 2)
    assert await store.count() == 148
    for local_id in dropped:
        tomb = await store.get(local_id)
        assert isinstance(tomb, Tombstone)
        assert tomb.datestamp.timestamp() == T0 + 60

    clock.tick(60)
    report = await importer(store).run(DATA, delete_missing=True)  # they come back under the same ids
    assert (report.created, report.unchanged, report.deleted) == (2, 148, 0)
    assert (await store.get("150")).id == store.make_uri("150")  # type: ignore[union-attr]


# --------------------------------------------------------------------------- a partner's own mapping


PARTNER_MAPPING = """
# Written by a partner for its own spreadsheet export.
name = "reseau-x"
description = "Export du tableur du réseau X"
format = "csv"
delimiter = ";"
encoding = "cp1252"
description_format = "markdown"
null = ["NC", "?"]

[fields]
local_id = { column = "Référence", fallback = ["Ancienne réf"] }
title = "Nom"
summary = { column = "Résumé", null = ["à compléter"] }
description = "Description"
holder_name = "Porteur"
themes = { column = "Thèmes", split = "," }
tags = { column = "Mots clés", split = "|" }
stage = { column = "Stade", map = { "Idée" = "idee", "En test" = "experimentation", "Déploiement" = "essaimage" } }
awards = { column = "Prix", split = ",", template = "Prix de l'innovation {value}" }
audiences = { columns = ["Public 1", "Public 2"] }
place_postcode = "Code postal"
place_commune = "Commune"
place_lat = "Latitude"
place_lon = "Longitude"
link_website = "Site"
contact_email = "Courriel"
partner_name = { constant = "Réseau X" }

[crosswalk]
"Jardinage" = ["ENV", "ALI"]
"insertion pro" = ["EMP", "FOR"]
"""

PARTNER_ROWS = [
    # Stray spaces, other case and accents in the header: matched all the same.
    [
        " référence ",
        "Ancienne réf",
        "NOM",
        "Résumé",
        "Description",
        "Porteur",
        "Thèmes",
        "Mots  clés",
        "Stade",
        "Prix",
        "Public 1",
        "Public 2",
        "Code postal",
        "Commune",
        "Latitude",
        "Longitude",
        "Site",
        "Courriel",
        "Colonne ignorée",
    ],
    [
        "X-1",
        "",
        "Jardins d'insertion",
        "à compléter",
        "Un **fort** impact.\n\n- un\n- deux",
        "Association Racines",
        "edu, SOL",
        "Jardinage|Insertion Pro|circuits courts",
        "idée",
        "2019, 2021",
        "jeunes",
        "jeunes",
        "5000",
        "Gap",
        "44,5594",
        "6,0786",
        "https://racines.test",
        "contact@racines.test",
        "rien",
    ],
    [
        "",
        "OLD-2",
        "Épicerie mobile",
        "Une épicerie qui roule",
        "",
        "NC",
        "?",
        "",
        "NC",
        "",
        "",
        "seniors",
        "35000",
        "Rennes",
        "",
        "",
        "",
        "",
        "",
    ],
    ["X-3", "", "Le tiers-lieu", "", "", "", "ENV", "", "Déploiement", "", "", "", "", "", "", "", "", "", ""],
]


def write_partner_files(tmp_path: Path, rows: list[list[str]] = PARTNER_ROWS) -> tuple[Path, Path]:
    mapping = tmp_path / "reseau-x.toml"
    mapping.write_text(PARTNER_MAPPING, encoding="utf-8")
    data = tmp_path / "reseau-x.csv"
    with data.open("w", encoding="cp1252", newline="") as handle:
        csv.writer(handle, delimiter=";").writerows(rows)
    return mapping, data


async def test_partner_mapping(store: SheetStore, tmp_path: Path) -> None:
    mapping, data = write_partner_files(tmp_path)
    report = await importer(store, mapping).run(data)
    assert report.mapping == "reseau-x"
    assert (report.rows, report.created) == (3, 3)
    assert report.unmapped_tags == {"circuits courts": 1}
    sheets = await all_sheets(store)
    assert set(sheets) == {"X-1", "OLD-2", "X-3"}  # the fallback column gave OLD-2

    one = sheets["X-1"]
    assert one.title == "Jardins d'insertion"
    assert one.summary is None  # a per-field null value
    assert (
        one.description is not None and "<strong>fort</strong>" in one.description and "<li>un</li>" in one.description
    )
    assert one.holder is not None and one.holder.name == "Association Racines"
    assert one.stage == Stage.IDEE  # mapped after folding case and accents
    assert one.themes == ("EDU", "EMP", "ENV", "SOL")  # given, and from the crosswalked tags
    assert one.subthemes == ("FOR", "ALI")
    assert [(t.tag, t.codes) for t in one.tags] == [
        ("Jardinage", ("ENV", "ALI")),
        ("Insertion Pro", ("EMP", "FOR")),
        ("circuits courts", ()),
    ]
    assert [(a.name, a.year) for a in one.awards] == [
        ("Prix de l'innovation 2019", 2019),
        ("Prix de l'innovation 2021", 2021),
    ]
    assert one.audiences == ("jeunes",)  # several columns, no duplicate
    assert one.partner.name == "Réseau X"  # a constant
    assert [(link.url, link.rel) for link in one.links] == [("https://racines.test", "website")]
    assert one.contact is not None and one.contact.email == "contact@racines.test"
    (place,) = one.places
    assert place.postcode == "05000"  # the leading zero a spreadsheet ate is back
    assert (place.lat, place.lon) == (44.5594, 6.0786)  # decimal commas read
    assert place.departement == "05" and place.region == "93" and place.insee == "05061"

    two = sheets["OLD-2"]
    assert two.holder is None and two.stage is None and two.themes == ()  # the mapping's null values
    assert two.audiences == ("seniors",)
    assert two.places[0].insee == "35238" and two.places[0].lat is not None
    assert sheets["X-3"].stage == Stage.ESSAIMAGE and sheets["X-3"].places == ()
    assert sheets["X-3"].licence == LICENCE


async def test_import_without_resolver_keeps_places_as_given(store: SheetStore, tmp_path: Path) -> None:
    mapping, data = write_partner_files(tmp_path)
    report = await importer(store, mapping, resolver=None).run(data)
    assert report.geocoding == {}
    one = await store.get("X-1")
    assert isinstance(one, Sheet)
    assert one.places[0].insee is None and one.places[0].precision == Precision.UNKNOWN


async def test_row_errors_are_all_reported(store: SheetStore, tmp_path: Path) -> None:
    rows = [list(r) for r in PARTNER_ROWS]
    rows[1][8] = "bientôt"  # no such stage
    rows[2][0] = rows[2][1] = ""  # no id at all
    rows[3][16] = "ftp://site.test"  # not an http(s) link
    rows.append(["X-1", *[""] * 18])  # X-1 again
    rows.append(["X-5", "too", "few"])
    mapping, data = write_partner_files(tmp_path, rows)
    with pytest.raises(ImportFailed) as caught:
        await importer(store, mapping).run(data)
    found = {(e.line, e.field) for e in caught.value.report.errors}
    # The first record's description spans lines 2 to 5: the next ones start on line 6.
    assert found == {(2, "stage"), (6, "local_id"), (7, "links"), (8, "local_id"), (9, "row")}
    by_field = {e.field + str(e.line): e for e in caught.value.report.errors}
    assert by_field["stage2"].column == "Stade" and "bientôt" in by_field["stage2"].message
    assert by_field["local_id6"].column == "Référence"
    assert "already used at line 2" in by_field["local_id8"].message
    assert "3 cells" in by_field["row9"].message
    assert await store.count(include_deleted=True) == 0


async def test_grouped_rows_must_be_adjacent(store: SheetStore, tmp_path: Path) -> None:
    mapping = tmp_path / "groupes.toml"
    mapping.write_text(
        'group_by_local_id = true\n[fields]\nlocal_id = "id"\ntitle = "titre"\nplace_commune = "ville"\n',
        encoding="utf-8",
    )
    data = tmp_path / "groupes.csv"
    data.write_text("id,titre,ville\n1,Un,Rennes\n1,Un,Brest\n2,Deux,Nantes\n1,Un,Lyon\n", encoding="utf-8")
    with pytest.raises(ImportFailed) as caught:
        await importer(store, mapping).run(data)
    (error,) = caught.value.report.errors
    assert error.line == 5 and "adjacent" in error.message
    data.write_text("id,titre,ville\n1,Un,Rennes\n1,Un,Brest\n1,Un,Rennes\n2,Deux,Nantes\n", encoding="utf-8")
    report = await importer(store, mapping).run(data)
    assert report.sheets == 2 and report.rows == 4
    one = await store.get("1")
    assert isinstance(one, Sheet) and [p.commune for p in one.places] == ["Rennes", "Brest"]  # a repeat is one place


async def test_unreadable_files_are_reported(store: SheetStore, tmp_path: Path) -> None:
    mapping = tmp_path / "utf8.toml"
    mapping.write_text('encoding = "utf-8"\n[fields]\nlocal_id = "id"\ntitle = "titre"\n', encoding="utf-8")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("id,titre\n1,Crèche\n".encode("latin-1"))
    with pytest.raises(ImportFailed) as caught:
        await importer(store, mapping).run(latin)
    assert "file: is not valid utf-8" in str(caught.value)
    empty = tmp_path / "vide.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ImportFailed, match="the file is empty"):
        await importer(store, mapping).run(empty)
    quoted = tmp_path / "guillemets.csv"
    quoted.write_text('id,titre\n1,"Un"x\n', encoding="utf-8")
    with pytest.raises(ImportFailed, match="line 2: file: is not valid CSV"):
        await importer(store, mapping).run(quoted)
    assert await store.count(include_deleted=True) == 0


# --------------------------------------------------------------------------- JSON input


JSON_MAPPING = """
format = "json"
[fields]
local_id = "id"
title = "name"
themes = "themes"
tags = { column = "keywords", split = "," }
place_commune = "city"
place_postcode = "zip"
place_lat = "lat"
place_lon = "lon"
start_date = "since"
"""

JSON_ITEMS: list[dict[str, Any]] = [
    {
        "id": 101,
        "name": "Vélo-école",
        "themes": ["edu", "TER"],
        "keywords": "Mobilité, vélo",
        "city": "Rennes",
        "zip": "35000",
        "lat": 48.11,
        "lon": -1.68,
        "since": "2021-09-01",
        "ignored": {"nested": True},
    },
    {"id": "102", "name": "Repair café", "themes": "CON", "keywords": None, "city": "Brest"},
]


@pytest.mark.parametrize("layout", ["array", "lines"])
async def test_json_input(store: SheetStore, tmp_path: Path, layout: str) -> None:
    mapping = tmp_path / "json.toml"
    mapping.write_text(JSON_MAPPING, encoding="utf-8")
    data = tmp_path / "projets.json"
    if layout == "array":
        data.write_text(json.dumps(JSON_ITEMS, ensure_ascii=False, indent=2), encoding="utf-8")
    else:
        data.write_text("\n".join(json.dumps(i, ensure_ascii=False) for i in JSON_ITEMS) + "\n\n", encoding="utf-8")

    report = await importer(store, mapping).run(data)
    assert (report.rows, report.created) == (2, 2)
    assert report.unmapped_tags == {"vélo": 1}
    velo, repair = await store.get("101"), await store.get("102")
    assert isinstance(velo, Sheet) and isinstance(repair, Sheet)
    assert velo.title == "Vélo-école"
    assert velo.themes == ("EDU", "TER")  # a JSON list is several values
    assert velo.subthemes == ("MOB",)  # the tag "Mobilité" is a taxonomy label
    assert velo.start_date is not None and velo.start_date.isoformat() == "2021-09-01"
    assert velo.places[0].insee == "35238" and (velo.places[0].lat, velo.places[0].lon) == (48.11, -1.68)
    assert repair.themes == ("CON",) and repair.tags == ()
    assert repair.places[0].departement == "29"


async def test_json_errors_name_the_item(store: SheetStore, tmp_path: Path) -> None:
    mapping = tmp_path / "json.toml"
    mapping.write_text(JSON_MAPPING, encoding="utf-8")
    data = tmp_path / "projets.jsonl"
    data.write_text('{"id": 1, "name": "Un"}\n[1, 2]\n{"id": 3, "name": "Trois", "lat": "nord", "lon": 2}\n{oops\n')
    with pytest.raises(ImportFailed) as caught:
        await importer(store, mapping).run(data)
    assert {(e.line, e.field) for e in caught.value.report.errors} == {(2, "item"), (3, "place.lat"), (4, "line")}
    broken = tmp_path / "casse.json"
    broken.write_text('[\n  {"id": 1, "name": "Un"},\n  {"id": 2,,}\n]', encoding="utf-8")
    with pytest.raises(ImportFailed) as caught:
        await importer(store, mapping).run(broken)
    (error,) = caught.value.report.errors
    assert error.line == 3 and "not valid JSON" in error.message
    assert await store.count(include_deleted=True) == 0


# --------------------------------------------------------------------------- crosswalks


async def test_partner_crosswalk_maps_tags_and_reports_the_rest(store: SheetStore, tmp_path: Path) -> None:
    mapping = tmp_path / "tags.toml"
    mapping.write_text(
        '[fields]\nlocal_id = "id"\ntitle = "titre"\ntags = { column = "tags", split = ";" }\n'
        '[crosswalk]\n"vélo" = ["EDU"]\n',
        encoding="utf-8",
    )
    data = tmp_path / "tags.csv"
    data.write_text(
        "id,titre,tags\n"
        "1,Un,Vélo;Jardin partagé;Sans-abri\n"
        "2,Deux,jardin partagé;Hors sujet;Grande précarité\n"
        "3,Trois,hors  sujet;EMP\n",
        encoding="utf-8",
    )
    crosswalk = Crosswalk.from_dict(
        {
            "partner": "Réseau X",
            "tags": {"Vélo": ["TER", "MOB"], "jardin partage": ["ENV", "ALI"], "sans abri": ["GRA"], "Hors sujet": []},
        }
    )
    report = await importer(store, mapping, crosswalk=crosswalk).run(data)
    # Deliberately empty rules ("Hors sujet") are mapped to nothing, not reported.
    assert report.unmapped_tags == {}
    one = await store.get("1")
    assert isinstance(one, Sheet)
    assert one.themes == ("ENV", "SOL", "TER")  # the partner's rule wins over the mapping's "vélo" = EDU
    assert one.subthemes == ("ALI", "GRA", "MOB")
    assert [t.codes for t in one.tags] == [("TER", "MOB"), ("ENV", "ALI"), ("GRA",)]
    two = await store.get("2")
    assert isinstance(two, Sheet)
    assert [(t.tag, t.codes) for t in two.tags] == [
        ("jardin partagé", ("ENV", "ALI")),
        ("Hors sujet", ()),
        ("Grande précarité", ("GRA",)),  # a taxonomy label maps without a rule
    ]
    three = await store.get("3")
    assert isinstance(three, Sheet) and three.themes == ("EMP",)  # and so does a code

    report = await importer(store, mapping).run(data)  # without the partner's crosswalk
    # Spellings of one tag are one line of the report, under the first spelling seen.
    assert report.unmapped_tags == {"Jardin partagé": 2, "Sans-abri": 1, "Hors sujet": 2}
    assert (report.updated, report.unchanged) == (2, 1)
    one = await store.get("1")
    assert isinstance(one, Sheet) and one.themes == ("EDU",)
    assert [(t.tag, t.codes) for t in one.tags] == [("Vélo", ("EDU",)), ("Jardin partagé", ()), ("Sans-abri", ())]


async def test_unknown_codes_are_reported_not_stored(store: SheetStore, tmp_path: Path) -> None:
    mapping = tmp_path / "codes.toml"
    mapping.write_text('[fields]\nlocal_id = "id"\ntitle = "t"\nthemes = { column = "c", split = " " }\n')
    data = tmp_path / "codes.csv"
    data.write_text("id,t,c\n1,Un,EDU XYZ gra\n2,Deux,XYZ\n", encoding="utf-8")
    report = await importer(store, mapping).run(data)
    assert report.unknown_codes == {"XYZ": 2}
    one = await store.get("1")
    assert isinstance(one, Sheet) and one.themes == ("EDU", "SOL") and one.subthemes == ("GRA",)


# --------------------------------------------------------------------------- mapping errors


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[fields]\nlocal_id = "id"\ntitle = "t"\ncolour = "c"\n', "unknown target field 'colour'"),
        ('[fields]\ntitle = "t"\n', "local_id"),
        ('[fields]\nlocal_id = "id"\n', "title"),
        ('format = "xml"\n[fields]\nlocal_id = "id"\ntitle = "t"\n', "format must be csv, json or native"),
        ('delimeter = ";"\n[fields]\nlocal_id = "id"\ntitle = "t"\n', "unknown key(s) 'delimeter'"),
        ('delimiter = ";;"\n[fields]\nlocal_id = "id"\ntitle = "t"\n', "delimiter must be one character"),
        ('encoding = "klingon"\n[fields]\nlocal_id = "id"\ntitle = "t"\n', "unknown encoding 'klingon'"),
        ('[fields]\nlocal_id = "id"\ntitle = { columns = ["a", "b"] }\n', "cannot take several columns"),
        ('[fields]\nlocal_id = "id"\ntitle = { colum = "a" }\n', "unknown key(s) colum"),
        ('[fields]\nlocal_id = "id"\ntitle = "t"\ntags = { column = "x", split = "" }\n', "split must be"),
        ('[fields]\nlocal_id = "id"\ntitle = "t"\nthemes = { column = "x", fallback = ["y"] }\n', "fallback only"),
        ('[fields]\nlocal_id = "id"\ntitle = "t"\nstage = { column = "s", map = "idee" }\n', "map must be a table"),
        ('[fields]\nlocal_id = "id"\ntitle = 3\n', "must be a column name or a table"),
        ('[fields\nlocal_id = "id"\n', "reseau.toml"),
    ],
)
def test_mapping_errors(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "reseau.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_mapping(str(path))
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_unknown_mapping_name_lists_the_builtins() -> None:
    with pytest.raises(MappingError, match="apcis, native, simple"):
        load_mapping("nope")
    assert load_mapping("simple").description_format == "markdown"


async def test_missing_header_columns_are_named(store: SheetStore, tmp_path: Path) -> None:
    mapping, _ = write_partner_files(tmp_path)
    data = tmp_path / "incomplet.csv"
    data.write_text("Référence;Nom;Thèmes\nX-1;Un;EDU\n", encoding="cp1252")
    with pytest.raises(MappingError) as caught:
        await importer(store, mapping).run(data)
    message = str(caught.value)
    assert str(data) in message and "reseau-x" in message
    for column in ("Ancienne réf", "Code postal", "Courriel", "Latitude", "Mots clés", "Stade"):
        assert repr(column) in message
    assert "'Nom'" not in message and "'Référence'" not in message
    assert await store.count(include_deleted=True) == 0


# --------------------------------------------------------------------------- the report


def test_report_summary_and_dict() -> None:
    report = ImportReport(file="f.csv", mapping="m", rows=3, sheets=2, created=1, unchanged=1)
    assert (
        report.ok and report.summary() == "f.csv: 3 rows, 2 sheets: 1 were created, 0 updated, 1 unchanged, 0 deleted"
    )
    data = report.as_dict()
    assert data["ok"] is True and data["errors"] == [] and data["created"] == 1
    json.dumps(data)  # serialisable as it is, for the API and the CLI's --json
    failed = ImportReport(file="f.csv", mapping="m")
    for n in range(250):
        failed.add_error(RowError(n + 2, "title", "is required", "Nom"))
    assert failed.error_count == 250 and len(failed.errors) == 200  # the report stays bounded
    assert str(failed.errors[0]) == "line 2: title (column 'Nom'): is required"
    assert failed.summary().count("\n") == 20
