"""Pure parts: text analysis, the sheet → document mapping, geohashes, synonym files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources

from protocol.sheet import Image, Partner, Place, Sheet
from search import geo
from search.schema import SCHEMA_VERSION, collection_name, collection_schema, document_from_sheet, document_id
from search.synonyms import load_synonyms, taxonomy_synonyms
from search.text import html_to_text, stem_query, stem_text


def test_stemming_folds_plurals_elisions_and_apostrophes() -> None:
    assert stem_text("Les jardins") == stem_text("le jardin")
    assert stem_text("chevaux") == stem_text("cheval")
    assert stem_text("l’école") == stem_text("l'école") == stem_text("école")
    assert stem_query("l’ecole") == stem_query("ecole") == "ecol"


def test_stem_query_keeps_phrases_and_exclusions() -> None:
    assert stem_query('"jardins partagés" -chevaux') == '"jardin partag" -cheval'
    assert stem_query("") == stem_query("*") == stem_query("  ,;  ") == "*"


def test_html_to_text_drops_markup_and_scripts() -> None:
    assert html_to_text("<p>Aide <b>alimentaire</b></p><p>et&amp;lien</p><script>x()</script>") == (
        "Aide alimentaire et&lien"
    )
    assert "x()" not in html_to_text("<p>a</p><script>x()</script><style>p{}</style>")
    assert html_to_text("<p>l’atelier</p>") == "l'atelier"


def test_document_from_sheet() -> None:
    sheet = Sheet(
        id="https://n.example/s/1",
        local_id="1",
        title="L’atelier  vélo",
        partner=Partner(name="P", id="urn:p"),
        summary="Un   résumé",
        description="<p>Texte <i>riche</i></p>",
        places=(
            Place(commune="Rennes", insee="35238", departement="35", region="53"),
            Place(commune="Brest", lat=48.39, lon=-4.48),
            Place(commune="Paris", lat=48.85, lon=2.35),
        ),
        images=(Image(url="https://i.example/x.png"),),
        datestamp=datetime(2024, 5, 1, tzinfo=UTC),
    )
    doc = document_from_sheet(sheet, cluster="c1")
    assert doc == document_from_sheet(sheet, cluster="c1")  # pure
    assert doc["id"] == document_id(sheet.id) and len(doc["id"]) == 32
    assert doc["title"] == "L'atelier vélo" and doc["summary"] == "Un résumé"
    assert doc["description"] == "Texte riche"
    assert doc["location"] == [48.39, -4.48] and doc["locations"] == [[48.39, -4.48], [48.85, 2.35]]
    assert doc["gh3"] == geo.encode(48.39, -4.48, 3) and doc["gh5"].startswith(doc["gh4"])
    assert doc["communes"] == ["Rennes", "Brest", "Paris"] and doc["insee"] == ["35238"]
    assert doc["duplicate_cluster"] == "c1" and doc["created"] == doc["datestamp"] == 1714521600
    assert doc["image"] == "https://i.example/x.png" and doc["partner_id"] == "urn:p"
    assert doc["stemmed"] == stem_text("L'atelier vélo Un résumé Texte riche")
    declared = {f["name"] for f in collection_schema("x")["fields"]}
    assert {"uri", "url", "image", "partner_id", "local_id"}.isdisjoint(declared)


def test_collection_name_is_versioned() -> None:
    name = collection_name(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert name == f"sheets_v{SCHEMA_VERSION}_20250102030405"


def test_geohash_round_trip() -> None:
    assert geo.encode(57.64911, 10.40744, 11) == "u4pruydqqvj"  # the reference example
    lat, lon = geo.cell_centre("u4pruydqqvj")
    assert abs(lat - 57.64911) < 1e-5 and abs(lon - 10.40744) < 1e-5
    assert [geo.precision_for_zoom(z) for z in (3, 6, 9, 11, 15)] == [2, 3, 4, 5, 6]


def test_taxonomy_synonym_file_is_in_sync() -> None:
    text = resources.files("search.synonyms").joinpath("taxonomy.json").read_text(encoding="utf-8")
    assert json.loads(text) == taxonomy_synonyms()


def test_synonyms_are_loaded_stemmed() -> None:
    synonyms = load_synonyms()
    assert synonyms["curated-fr-1-velo"]["synonyms"][:2] == ["vélo", "bicyclet"]
    assert synonyms["curated-fr-1-ehpad"]["root"] == "ehpad"
    assert all(len(body["synonyms"]) >= 1 for body in synonyms.values())
    assert any(key.startswith("taxonomy-2019-1-") for key in synonyms)
