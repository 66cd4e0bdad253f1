"""Envelopes rendered by the pure core, validated against the official schemas."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from protocol.oai.errors import ErrorCode, OaiError
from protocol.oai.metadata import METADATA_FORMATS, render_formats
from protocol.oai.requests import ListQuery
from protocol.oai.response import datestamp, render_error, render_result
from protocol.oai.results import FormatsResult, Header, IdentifyResult, PageResult, Record, RecordResult
from tests.oai_support import NS, T0, assert_valid_oai, error_code, make_config, make_sheet, request_attrs

HUB = make_config(
    base_url="https://hub.essaim.test/oai", hub=True, friends=("https://a.essaim.test/oai", "https://b.essaim.test/oai")
)
ARGS = {"verb": "GetRecord", "identifier": "oai:hub.essaim.test:src:1", "metadataPrefix": "essaim"}


def test_hub_identify_lists_friends_and_the_identifier_scheme() -> None:
    root = assert_valid_oai(render_result(IdentifyResult(T0), HUB, T0, {"verb": "Identify"}))
    assert root.xpath("//*[local-name()='friends']/*/text()") == list(HUB.friends)
    assert root.xpath("//*[local-name()='sampleIdentifier']/text()") == ["oai:hub.essaim.test:projet-42"]
    assert root.xpath("//o:adminEmail/text()", namespaces=NS) == ["admin@essaim.test"]


def test_re_exported_record_carries_provenance() -> None:
    provenance = {
        "baseURL": "https://a.essaim.test/oai",
        "identifier": "oai:a.essaim.test:1",
        "datestamp": "2023-11-14T22:13:20Z",
        "metadataNamespace": "https://essaim.org/ns/sheet/1.0",
        "harvestDate": "2023-11-15T00:00:00Z",
        "altered": False,
    }
    fragment = render_formats(make_sheet(0))["essaim"].encode()
    record = Record(Header(ARGS["identifier"], T0, ("theme", "theme:SOL")), fragment, provenance)
    root = assert_valid_oai(render_result(RecordResult(record), HUB, T0, ARGS))
    origin = root.find(".//{http://www.openarchives.org/OAI/2.0/provenance}originDescription")
    assert origin.get("altered") == "false" and origin.get("harvestDate") == "2023-11-15T00:00:00Z"
    assert request_attrs(root) == ARGS


def test_deleted_records_have_no_metadata_and_no_about() -> None:
    query = ListQuery("ListRecords", "essaim", None, None, T0)
    page = PageResult(query, (Record(Header("oai:hub.essaim.test:1", T0, (), True), None, {"baseURL": "x"}, (T0, 1)),))
    root = assert_valid_oai(render_result(page, HUB, T0, {"verb": "ListRecords", "metadataPrefix": "essaim"}))
    assert root.xpath("//o:header/@status", namespaces=NS) == ["deleted"]
    assert not root.xpath("//o:metadata | //o:about", namespaces=NS)


def test_errors_echo_the_request_only_when_it_was_valid() -> None:
    for code in ErrorCode:
        body = render_error(OaiError(code, "message"), HUB, T0, ARGS)
        root = assert_valid_oai(body)
        assert error_code(root) == code.value
        expected = {} if code in (ErrorCode.BAD_VERB, ErrorCode.BAD_ARGUMENT) else ARGS
        assert request_attrs(root) == expected
        assert root.find("{http://www.openarchives.org/OAI/2.0/}request").text == HUB.base_url


def test_stylesheet_processing_instruction() -> None:
    config = make_config(stylesheet="/schemas/essaim-oai.xsl")
    body = render_result(FormatsResult(METADATA_FORMATS), config, T0, {"verb": "ListMetadataFormats"})
    assert_valid_oai(body)
    tree = etree.fromstring(body).getroottree()
    pis = [n for n in tree.getroot().itersiblings(preceding=True)]
    assert pis and pis[0].target == "xml-stylesheet" and "essaim-oai.xsl" in pis[0].text
    from protocol.oai.stylesheet import stylesheet_bytes

    html = etree.XSLT(etree.fromstring(stylesheet_bytes()))(etree.fromstring(body))
    assert "oai_dc" in str(html)


@given(st.integers(min_value=-62_135_596_800, max_value=253_402_300_799))
def test_datestamp_is_the_utc_second(stamp: int) -> None:
    assert datestamp(stamp) == datetime.fromtimestamp(stamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
