"""Argument validation of every verb, before any storage access (spec §3.1, §3.3.1, §3.6, §4)."""

from __future__ import annotations

import pytest

from protocol.oai.errors import ErrorCode, OaiError
from protocol.oai.requests import GetRecord, Identify, ListMetadataFormats, ListQuery, ListSets, parse_request
from tests.oai_support import T0, make_config, query

CONFIG = make_config()
NOW = T0 + 1000


def code_of(arguments: dict[str, list[str]] | object) -> ErrorCode:
    with pytest.raises(OaiError) as caught:
        parse_request(arguments, CONFIG, NOW)  # type: ignore[arg-type]
    return caught.value.code


BAD_ARG = ErrorCode.BAD_ARGUMENT
ID = "oai:noeud.essaim.test:projet-1"


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        (query(), ErrorCode.BAD_VERB),
        (query("Explode"), ErrorCode.BAD_VERB),
        (query("identify"), ErrorCode.BAD_VERB),  # verbs are case-sensitive
        ({"verb": ["Identify", "Identify"]}, ErrorCode.BAD_VERB),
        ({"verb": []}, ErrorCode.BAD_VERB),
        # Identify takes nothing else
        (query("Identify", metadataPrefix="oai_dc"), BAD_ARG),
        (query("Identify", resumptionToken="x"), BAD_ARG),
        # ListMetadataFormats: optional identifier only
        (query("ListMetadataFormats", metadataPrefix="oai_dc"), BAD_ARG),
        (query("ListMetadataFormats", identifier=[ID, ID]), BAD_ARG),
        (query("ListMetadataFormats", identifier=""), BAD_ARG),
        # ListSets: exclusive resumptionToken, nothing else
        (query("ListSets", set="theme"), BAD_ARG),
        (query("ListSets", resumptionToken="abc", set="theme"), BAD_ARG),
        (query("ListSets", resumptionToken="abc"), ErrorCode.BAD_RESUMPTION_TOKEN),
        # GetRecord: both required, nothing else
        (query("GetRecord"), BAD_ARG),
        (query("GetRecord", identifier=ID), BAD_ARG),
        (query("GetRecord", metadataPrefix="oai_dc"), BAD_ARG),
        (query("GetRecord", identifier=ID, metadataPrefix="oai_dc", set="theme"), BAD_ARG),
        (query("GetRecord", identifier=ID, metadataPrefix=["oai_dc", "essaim"]), BAD_ARG),
        (query("GetRecord", identifier=ID, metadataPrefix="marc21"), ErrorCode.CANNOT_DISSEMINATE_FORMAT),
        (query("GetRecord", identifier=ID, metadataPrefix="oai dc"), BAD_ARG),
        (query("GetRecord", identifier=ID, metadataPrefix="oai_dc", resumptionToken="x"), BAD_ARG),
    ],
)
def test_argument_matrix_of_simple_verbs(arguments: dict[str, list[str]], code: ErrorCode) -> None:
    assert code_of(arguments) == code


@pytest.mark.parametrize("verb", ["ListIdentifiers", "ListRecords"])
@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({}, BAD_ARG),  # metadataPrefix missing
        ({"set": "theme"}, BAD_ARG),
        ({"metadataPrefix": ["oai_dc", "oai_dc"]}, BAD_ARG),
        ({"metadataPrefix": "oai_dc", "identifier": ID}, BAD_ARG),
        ({"metadataPrefix": "oai_dc", "verbose": "1"}, BAD_ARG),
        ({"metadataPrefix": "oai_dc", "set": ["theme", "region"]}, BAD_ARG),
        ({"metadataPrefix": "oai_dc", "set": "bad set"}, BAD_ARG),
        ({"metadataPrefix": "oai_dc", "set": "theme:"}, BAD_ARG),
        ({"metadataPrefix": "oai_dc", "from": ""}, BAD_ARG),
        ({"metadataPrefix": "oai_dc", "resumptionToken": "x"}, BAD_ARG),  # exclusive
        ({"resumptionToken": "x", "from": "2023-01-01"}, BAD_ARG),
        ({"resumptionToken": ["x", "y"]}, BAD_ARG),
        ({"resumptionToken": "x"}, ErrorCode.BAD_RESUMPTION_TOKEN),
        ({"metadataPrefix": "mods"}, ErrorCode.CANNOT_DISSEMINATE_FORMAT),
        # dates: syntax, granularity, order (spec §3.3.1)
        ({"metadataPrefix": "oai_dc", "from": "2023-11-14T22:13:20.5Z"}, BAD_ARG),  # fractional seconds
        ({"metadataPrefix": "oai_dc", "from": "2023-11-14T22:13:20+01:00"}, BAD_ARG),  # offset
        ({"metadataPrefix": "oai_dc", "from": "2023-11-14T22:13:20"}, BAD_ARG),  # no Z
        ({"metadataPrefix": "oai_dc", "from": "2023-11-14T22:13Z"}, BAD_ARG),  # minutes
        ({"metadataPrefix": "oai_dc", "from": "2023-11"}, BAD_ARG),
        ({"metadataPrefix": "oai_dc", "until": "2023-02-30"}, BAD_ARG),
        ({"metadataPrefix": "oai_dc", "until": "2023-11-14T25:00:00Z"}, BAD_ARG),
        ({"metadataPrefix": "oai_dc", "from": "2023-11-14", "until": "2023-11-15T00:00:00Z"}, BAD_ARG),
        ({"metadataPrefix": "oai_dc", "from": "2023-11-15T00:00:00Z", "until": "2023-11-14T00:00:00Z"}, BAD_ARG),
        ({"metadataPrefix": "oai_dc", "from": "2023-11-15", "until": "2023-11-14"}, BAD_ARG),
    ],
)
def test_argument_matrix_of_list_verbs(verb: str, arguments: dict[str, str | list[str]], code: ErrorCode) -> None:
    assert code_of(query(verb, **arguments)) == code


def test_valid_requests_are_typed() -> None:
    assert parse_request(query("Identify"), CONFIG, NOW) == Identify()
    assert parse_request(query("ListSets"), CONFIG, NOW) == ListSets()
    assert parse_request(query("ListMetadataFormats"), CONFIG, NOW) == ListMetadataFormats(None)
    assert parse_request(query("ListMetadataFormats", identifier=ID), CONFIG, NOW) == ListMetadataFormats(ID)
    assert parse_request(query("GetRecord", identifier=ID, metadataPrefix="essaim"), CONFIG, NOW) == GetRecord(
        ID, "essaim"
    )


def test_until_is_inclusive_and_frozen_before_the_response_date() -> None:
    later = T0 + 3 * 86_400
    day = parse_request(
        query("ListRecords", metadataPrefix="oai_dc", from_="2023-11-14", until="2023-11-14"), CONFIG, later
    )
    assert isinstance(day, ListQuery)
    # 2023-11-14 at day granularity covers the whole day, up to 23:59:59 included.
    assert (day.from_stamp, day.until_stamp) == (1_699_920_000, 1_699_920_000 + 86_399)
    sec = parse_request(query("ListIdentifiers", metadataPrefix="oai_dc", until="2023-11-14T22:13:20Z"), CONFIG, NOW)
    assert isinstance(sec, ListQuery) and sec.until_stamp == T0 and sec.headers_only
    # No until: frozen one second before the responseDate, so changes during the harvest
    # are left to the next incremental harvest (from = this responseDate).
    open_ended = parse_request(query("ListRecords", metadataPrefix="oai_dc", set="theme:SOL"), CONFIG, NOW)
    assert isinstance(open_ended, ListQuery)
    assert open_ended.until_stamp == NOW - 1 and open_ended.set_spec == "theme:SOL" and open_ended.after is None
    future = parse_request(query("ListRecords", metadataPrefix="oai_dc", until="2999-01-01"), CONFIG, NOW)
    assert isinstance(future, ListQuery) and future.until_stamp == NOW - 1


def test_equal_from_and_until_are_accepted() -> None:
    req = parse_request(
        query("ListRecords", metadataPrefix="oai_dc", from_="2023-11-14T22:13:20Z", until="2023-11-14T22:13:20Z"),
        CONFIG,
        NOW,
    )
    assert isinstance(req, ListQuery) and req.from_stamp == req.until_stamp == T0
