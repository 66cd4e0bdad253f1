"""Sets of a sheet, and the two metadata formats (oai_dc and the native essaim format)."""

from __future__ import annotations

import dataclasses
import enum

from lxml import etree

from protocol.oai.metadata import METADATA_FORMATS, html_to_text, render_formats
from protocol.oai.native import native_to_dict, parse_native, schema_bytes
from protocol.oai.sets import SET_SPEC, set_catalogue, set_specs
from protocol.sheet import (
    MatchDirection,
    MatchKind,
    MatchStatus,
    Partner,
    Place,
    Precision,
    Scope,
    Sheet,
    Stage,
    sheet_to_dict,
)
from protocol.taxonomy import default_taxonomy
from tests.oai_support import NS, make_sheet, oai_schema

NATIVE = etree.XMLSchema(etree.fromstring(schema_bytes()))


def test_set_specs_carry_the_hierarchy_and_places() -> None:
    sheet = make_sheet(0, places=(Place(postcode="35000"), Place(departement="2a"), Place(postcode="97110")))
    assert set_specs(sheet) == (
        "theme",
        "theme:SOL",
        "theme:SOL:GRA",
        "region",
        "region:53",
        "departement",
        "departement:35",
        "region:94",
        "departement:2A",
        "region:01",
        "departement:971",
        "stage",
        "stage:idee",
    )
    assert set_specs(sheet, hub=True)[-2:] == ("partner", "partner:reseau-test")


def test_partner_slug_falls_back_to_the_id_and_specs_are_legal() -> None:
    sheet = make_sheet(1, partner=Partner(name="Œuvre «  »", id="https://ex.test/@nœud"))
    specs = set_specs(sheet, hub=True)
    assert "partner:oeuvre" in specs
    odd = make_sheet(1, partner=Partner(name="«»", id="https://ex.test/actor"))
    assert "partner:https-ex-test-actor" in set_specs(odd, hub=True)
    assert all(SET_SPEC.match(s) for s in specs)


def test_set_catalogue_names_every_set_a_sheet_can_have() -> None:
    tax = default_taxonomy()
    node = dict(set_catalogue(tax, hub=False))
    assert len([s for s in node if s.count(":") == 1 and s.startswith("theme:")]) == 16
    assert len([s for s in node if s.count(":") == 2]) == 37
    assert node["theme:SOL"] == "Solidarité" and node["departement:35"] == "Ille-et-Vilaine (35)"
    assert not any(s.startswith("partner") for s in node)
    for n in range(40):
        assert set(set_specs(make_sheet(n))) <= set(node)
    hub = dict(set_catalogue(tax, hub=True, partners=[Partner(name="Réseau Test"), Partner(name="Réseau test")]))
    assert hub["partner:reseau-test"] == "Réseau Test" and "partner" in hub
    assert all(SET_SPEC.match(s) for s in hub)


def test_oai_dc_is_valid_text_only_dublin_core() -> None:
    schema = oai_schema()
    for n in range(8):
        dc = etree.fromstring(render_formats(make_sheet(n))["oai_dc"])
        schema.assertValid(dc)
        assert all(len(el) == 0 for el in dc), "Dublin Core elements hold text only"
    dc = etree.fromstring(render_formats(make_sheet(2))["oai_dc"])
    assert dc.xpath("dc:description/text()", namespaces=NS) == ["Résumé du projet 2", "Un projet 2.\nun\ndeux"]
    assert "Solidarité" not in dc.xpath("dc:subject/text()", namespaces=NS)
    assert "Innovation pédagogique" in dc.xpath("dc:subject/text()", namespaces=NS)
    assert dc.xpath("dc:coverage/text()", namespaces=NS) == ["Rennes, Paris (75), Île-de-France"]


def test_html_to_text() -> None:
    assert html_to_text("<p>a &amp; <em>b</em></p><p>c<br>d</p><script>x</script>") == "a & b\nc\nd"


def test_control_characters_never_break_the_xml() -> None:
    sheet = make_sheet(3, title="bell\x07 and nul\x00", summary="vertical\x0btab")
    formats = render_formats(sheet)
    NATIVE.assertValid(etree.fromstring(formats["essaim"]))
    assert etree.fromstring(formats["essaim"]).findtext("{*}title") == "bell and nul"


def test_native_format_carries_the_whole_sheet_and_validates() -> None:
    for n in range(12):
        sheet = make_sheet(n)
        element = etree.fromstring(render_formats(sheet)["essaim"])
        NATIVE.assertValid(element)
        assert native_to_dict(element) == sheet_to_dict(sheet)
        assert parse_native(element) == sheet
    minimal = Sheet(id="https://x.test/1", local_id="1", title="t", partner=Partner(name="p"))
    element = etree.fromstring(render_formats(minimal)["essaim"])
    NATIVE.assertValid(element)
    assert parse_native(element) == minimal


def test_every_sheet_field_is_declared_in_the_schema() -> None:
    from protocol.oai.native import LIST_ITEMS

    xsd = etree.fromstring(schema_bytes())
    xs = {"xs": "http://www.w3.org/2001/XMLSchema"}
    declared = set(xsd.xpath("//xs:complexType[@name='sheetType']//xs:element/@name", namespaces=xs))
    for field in dataclasses.fields(Sheet):
        assert LIST_ITEMS.get(field.name, field.name) in declared, field.name


def test_schema_enumerations_match_the_python_enums() -> None:
    xsd = etree.fromstring(schema_bytes())
    xs = {"xs": "http://www.w3.org/2001/XMLSchema"}
    kinds: dict[str, type[enum.Enum]] = {
        "stageType": Stage,
        "precisionType": Precision,
        "scopeType": Scope,
        "matchKindType": MatchKind,
        "matchDirectionType": MatchDirection,
        "matchStatusType": MatchStatus,
    }
    for name, kind in kinds.items():
        values = xsd.xpath(f"//xs:simpleType[@name='{name}']//xs:enumeration/@value", namespaces=xs)
        assert values == [m.value for m in kind], name


def test_format_list() -> None:
    assert [(f.prefix, f.namespace) for f in METADATA_FORMATS] == [
        ("oai_dc", "http://www.openarchives.org/OAI/2.0/oai_dc/"),
        ("essaim", "https://essaim.org/ns/sheet/1.0"),
    ]
    assert METADATA_FORMATS[1].schema_url("https://n.test") == "https://n.test/schemas/essaim-sheet-1.0.xsd"
    assert set(render_formats(make_sheet(0))) == {f.prefix for f in METADATA_FORMATS}
