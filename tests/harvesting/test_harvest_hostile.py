"""Hostile and broken providers (small real aiohttp servers): every one ends in a clear error naming the URL
and the reason, the pages committed before stay intact, and once the provider recovers the harvest resumes
from the checkpoint and loses nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from harvesting.harvester import HarvestConfig, ResumptionLoop, Source
from harvesting.transport import (
    BadResumptionToken,
    MalformedResponse,
    RetryExhausted,
    TransportConfig,
    TransportError,
    parse_oai,
)
from node.db import Database
from node.storage import SheetStore
from protocol.sheet import Sheet
from tests.harvesting.conftest import HUB_URL, harvester_for
from tests.harvesting.providers import (
    BILLION_LAUGHS,
    EXTERNAL_ENTITY,
    Scripted,
    connection_cut,
    html_page,
    http_date,
    huge_record,
    identifier,
    latin1_declared_utf8_body,
    malformed,
    oai_error,
    record_xml,
    repeated_token,
    serve,
    sheets_pages,
    slow,
    truncated_document,
    unavailable,
    utf8_declared_latin1_body,
    with_doctype,
)
from tests.oai_support import make_sheet

COUNT, PER_PAGE = 12, 4  # three pages


def source_of(url: str) -> Source:
    return Source(key="scripted", base_url=url)


async def live_ids(db: Database) -> list[str]:
    rows = await db.fetch("SELECT local_id FROM sheet WHERE source = ? AND deleted = ?", ["scripted", False])
    return sorted(str(r["local_id"]) for r in rows)


def first(n: int) -> list[str]:
    return sorted(identifier(i) for i in range(n))


HOSTILE: dict[str, tuple[Any, type[Exception], str]] = {
    "malformed-xml": (malformed, MalformedResponse, "xml-syntax"),
    "truncated-document": (truncated_document, MalformedResponse, "xml-syntax"),
    "connection-cut-mid-body": (connection_cut, TransportError, "connectionerror"),
    "latin1-declared-over-utf8": (latin1_declared_utf8_body, MalformedResponse, "encoding"),
    "utf8-declared-over-latin1": (utf8_declared_latin1_body, MalformedResponse, "xml-syntax"),
    "billion-laughs": (with_doctype(BILLION_LAUGHS, "&lol3;"), MalformedResponse, "doctype"),
    "external-entity": (with_doctype(EXTERNAL_ENTITY, "&xxe;"), MalformedResponse, "doctype"),
    "html-200": (html_page("text/html; charset=utf-8"), MalformedResponse, "html"),
    "html-as-xml": (html_page("text/xml"), MalformedResponse, "html"),
    "not-xml-content-type": (html_page("application/json"), MalformedResponse, "content-type"),
    "bad-resumption-token": (oai_error("badResumptionToken"), BadResumptionToken, "oai:badResumptionToken"),
    "http-404": (unavailable(None, status=404), TransportError, "http-404"),
    "slow": (slow(3.0), TransportError, "timeout"),
    "record-over-body-cap": (huge_record(200_000), TransportError, "toolarge"),
}


# Pages that reach the XML parser: with harvest worker processes, the worker parses them and its
# error comes back to the hub's process (pickled) with its class, URL and reason.
PARSED = [
    "malformed-xml",
    "truncated-document",
    "latin1-declared-over-utf8",
    "billion-laughs",
    "html-as-xml",
    "bad-resumption-token",
]


@pytest.mark.parametrize(
    ("name", "processes"), [(n, 0) for n in HOSTILE] + [pytest.param(n, 1, id=f"{n}-worker") for n in PARSED]
)
async def test_hostile_page_is_a_clear_error_and_nothing_is_lost(
    name: str, processes: int, sqlite_hub: Database, caplog: pytest.LogCaptureFixture
) -> None:
    behaviour, error_type, reason = HOSTILE[name]
    provider = Scripted(sheets_pages(COUNT, PER_PAGE))
    provider.on(2, behaviour, times=1)
    caplog.set_level(logging.WARNING, "essaim.harvest")
    async with serve(provider.handle) as server:
        url = str(server.make_url("/oai"))
        options: dict[str, Any] = {"max_body_bytes": 100_000, "read_timeout": 0.5, "total_timeout": 1.0}
        async with harvester_for(sqlite_hub, server.port, processes=processes, **options) as harvester:
            failed = await harvester.harvest(source_of(url))
            assert not failed.complete and failed.pages == 1 and failed.added == PER_PAGE
            assert isinstance(failed.failure, error_type), failed.errors
            assert failed.failure.reason == reason
            assert failed.failure.url.startswith(url) and "resumptionToken=page-2" in failed.failure.url
            assert "page-2" in failed.errors[0]
            assert await live_ids(sqlite_hub) == first(PER_PAGE)  # page 1 is committed and intact
            events = [r for r in caplog.records if getattr(r, "event", "") == "harvest.page_rejected"]
            assert events and events[0].reason == reason and events[0].source == "scripted"
            state = await harvester.state(source_of(url))
            assert state["token"] == "page-2" and state["last_error"].startswith(reason)

            # The provider recovers: the harvest resumes at page 2 and nothing is missing or doubled.
            resumed = await harvester.harvest(source_of(url))
            assert resumed.ok and resumed.resumed, resumed.errors
            assert (resumed.pages, resumed.added, resumed.updated) == (2, COUNT - PER_PAGE, 0)
            assert await live_ids(sqlite_hub) == first(COUNT)


async def test_endless_repeated_token_is_detected(sqlite_hub: Database) -> None:
    provider = Scripted(sheets_pages(COUNT, PER_PAGE))
    provider.on(2, repeated_token("page-2"))  # page 2 says "next is page 2", forever
    async with serve(provider.handle) as server:
        url = str(server.make_url("/oai"))
        async with harvester_for(sqlite_hub, server.port) as harvester:
            stats = await harvester.harvest(source_of(url))
            assert isinstance(stats.failure, ResumptionLoop) and "page-2" in str(stats.failure)
            assert stats.pages == 1 and len(provider.requests) == 2
            assert await live_ids(sqlite_hub) == first(PER_PAGE)
            # A loop abandons the run: the next attempt starts again rather than looping from the checkpoint.
            assert (await harvester.state(source_of(url)))["token"] is None


async def test_fresh_tokens_forever_stop_at_max_pages(sqlite_hub: Database) -> None:
    provider = Scripted(sheets_pages(40, 1))
    async with serve(provider.handle) as server:
        url = str(server.make_url("/oai"))
        async with harvester_for(sqlite_hub, server.port, config=HarvestConfig(max_pages=5)) as harvester:
            stats = await harvester.harvest(source_of(url))
    assert stats.failure is not None and stats.failure.reason == "too-many-pages" and stats.pages == 5


@pytest.mark.parametrize("kind", ["seconds", "http-date"])
async def test_retry_after_is_honoured(kind: str, sqlite_hub: Database) -> None:
    provider = Scripted(sheets_pages(COUNT, PER_PAGE))
    # An HTTP-date has whole seconds: 1.9 s from the answer is 0.9 to 1.9 s away once truncated.
    provider.on(2, unavailable("1" if kind == "seconds" else lambda: http_date(1.9)), times=1)
    async with serve(provider.handle) as server:
        url = str(server.make_url("/oai"))
        transport = TransportConfig(max_retries=2, retry_after_cap=5.0)
        async with harvester_for(sqlite_hub, server.port, transport=transport) as harvester:
            stats = await harvester.harvest(source_of(url))
    assert stats.ok and stats.added == COUNT, stats.errors
    times = [t for t, q in provider.requests if q.get("resumptionToken") == "page-2"]
    assert len(times) == 2
    assert 0.9 <= times[1] - times[0] < 2.5


async def test_retry_after_is_capped_and_retries_are_bounded(sqlite_hub: Database) -> None:
    provider = Scripted(sheets_pages(COUNT, PER_PAGE))
    provider.on(2, unavailable("86400", status=429))  # never recovers
    async with serve(provider.handle) as server:
        url = str(server.make_url("/oai"))
        transport = TransportConfig(max_retries=3, retry_after_cap=0.1)
        async with harvester_for(sqlite_hub, server.port, transport=transport) as harvester:
            stats = await harvester.harvest(source_of(url))
    assert isinstance(stats.failure, RetryExhausted) and "86400" in str(stats.failure)
    assert sum(1 for _, q in provider.requests if q.get("resumptionToken") == "page-2") == 4
    assert stats.duration < 2
    assert await live_ids(sqlite_hub) == first(PER_PAGE)


async def test_no_records_match_is_an_empty_complete_run(sqlite_hub: Database) -> None:
    provider = Scripted(sheets_pages(COUNT, PER_PAGE))
    provider.on(1, oai_error("noRecordsMatch"))
    async with serve(provider.handle) as server:
        url = str(server.make_url("/oai"))
        async with harvester_for(sqlite_hub, server.port) as harvester:
            stats = await harvester.harvest(source_of(url))
            assert stats.ok and stats.pages == 1 and stats.added == 0
            assert (await harvester.state(source_of(url)))["next_from"] == provider.response_date


async def test_gzip_pages_and_incremental_from(sqlite_hub: Database) -> None:
    provider = Scripted(sheets_pages(COUNT, PER_PAGE), gzip=True)
    async with serve(provider.handle) as server:
        url = str(server.make_url("/oai"))
        async with harvester_for(sqlite_hub, server.port) as harvester:
            assert (await harvester.harvest(source_of(url))).ok
            provider.response_date = "2024-07-01T00:00:00Z"
            again = await harvester.harvest(source_of(url))
    assert again.ok and again.unchanged == COUNT and again.added == 0
    first_query = [q for _, q in provider.requests if "resumptionToken" not in q]
    assert "from" not in first_query[0] and first_query[1]["from"] == "2024-06-01T00:00:00Z"
    assert await live_ids(sqlite_hub) == first(COUNT)


async def test_invalid_records_are_rejected_and_counted(sqlite_hub: Database, caplog: pytest.LogCaptureFixture) -> None:
    bad_title = (
        record_xml(1)
        .replace("<title>", "<title>   ")
        .replace(make_sheet(1).title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"), "")
    )
    no_datestamp = record_xml(2).replace("<datestamp>2024-01-02T03:04:05Z</datestamp>", "")
    wrong_format = record_xml(3).replace("https://essaim.org/ns/sheet/1.0", "urn:other")
    page = [record_xml(0), bad_title, no_datestamp, wrong_format, record_xml(4), record_xml(5, deleted=True)]
    provider = Scripted([page])
    caplog.set_level(logging.WARNING, "essaim.harvest")
    async with serve(provider.handle) as server:
        url = str(server.make_url("/oai"))
        async with harvester_for(sqlite_hub, server.port) as harvester:
            stats = await harvester.harvest(source_of(url))
    assert stats.ok and (stats.added, stats.rejected) == (2, 3), stats
    assert await live_ids(sqlite_hub) == [identifier(0), identifier(4)]
    events = {r.identifier: r.reason for r in caplog.records if getattr(r, "event", "") == "harvest.record_rejected"}
    assert set(events) == {identifier(1), identifier(2), identifier(3)}
    assert "title" in events[identifier(1)] and "datestamp" in events[identifier(2)]
    assert all(
        getattr(r, "source", None) == "scripted"
        for r in caplog.records
        if getattr(r, "event", "") == "harvest.record_rejected"
    )
    sheet = await SheetStore(sqlite_hub, base_url=HUB_URL, source="scripted", hub=True).get(identifier(0))
    assert isinstance(sheet, Sheet) and sheet.title == make_sheet(0).title


def test_parser_refuses_doctype_even_without_entities() -> None:
    body = b'<?xml version="1.0"?><!DOCTYPE OAI-PMH SYSTEM "http://evil.test/x.dtd"><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"/>'
    with pytest.raises(MalformedResponse) as info:
        parse_oai(body, url="http://x.test/oai")
    assert info.value.reason == "doctype" and "http://x.test/oai" in str(info.value)
