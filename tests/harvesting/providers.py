"""Small real OAI-PMH providers for the harvester tests: a scripted, paged provider whose pages can turn hostile.

The pages are built with lxml from the factories of ``tests.oai_support`` and the
native format writer, so a page that is not hostile is a correct OAI-PMH answer.
A behaviour replaces the answer for one page number (1-based); it may stay on
(``times=None``) or fire a number of times and then let the page through, which
is how a provider "recovers".
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.test_utils import TestServer
from lxml import etree

from protocol.oai.namespaces import OAI
from protocol.oai.native import native_xml
from protocol.sheet import Sheet
from tests.oai_support import make_sheet

Behaviour = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]
REPO = "oai:scripted.test"


def identifier(n: int) -> str:
    return f"{REPO}:projet-{n}"


def record_xml(
    n: int, sheet: Sheet | None = None, *, deleted: bool = False, stamp: str = "2024-01-02T03:04:05Z"
) -> str:
    status = ' status="deleted"' if deleted else ""
    header = f"<header{status}><identifier>{identifier(n)}</identifier><datestamp>{stamp}</datestamp></header>"
    if deleted:
        return f"<record>{header}</record>"
    return f"<record>{header}<metadata>{native_xml(sheet or make_sheet(n))}</metadata></record>"


def page_xml(records: list[str], token: str | None, *, complete: int, cursor: int, response_date: str) -> bytes:
    token_el = ""
    if token is not None:
        token_el = f'<resumptionToken completeListSize="{complete}" cursor="{cursor}">{token}</resumptionToken>'
    elif cursor:
        token_el = f'<resumptionToken completeListSize="{complete}" cursor="{cursor}"/>'
    text = (
        f'<?xml version="1.0" encoding="UTF-8"?><OAI-PMH xmlns="{OAI}"><responseDate>{response_date}</responseDate>'
        f'<request verb="ListRecords" metadataPrefix="essaim">http://scripted.test/oai</request>'
        f"<ListRecords>{''.join(records)}{token_el}</ListRecords></OAI-PMH>"
    )
    etree.fromstring(text.encode())  # a scripted page is well-formed unless a behaviour says otherwise
    return text.encode()


def error_xml(code: str, message: str, response_date: str = "2024-06-01T00:00:00Z") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><OAI-PMH xmlns="{OAI}"><responseDate>{response_date}</responseDate>'
        f'<request>http://scripted.test/oai</request><error code="{code}">{message}</error></OAI-PMH>'
    ).encode()


@dataclass
class Scripted:
    """``pages[i]`` lists the records of page i+1 (record XML strings)."""

    pages: list[list[str]]
    behaviours: dict[int, tuple[Behaviour, int | None]] = field(default_factory=dict)
    requests: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    response_date: str = "2024-06-01T00:00:00Z"
    gzip: bool = False

    def on(self, page: int, behaviour: Behaviour, times: int | None = None) -> None:
        self.behaviours[page] = (behaviour, times)

    def body(self, number: int) -> bytes:
        total = sum(len(p) for p in self.pages)
        token = f"page-{number + 1}" if number < len(self.pages) else None
        cursor = sum(len(p) for p in self.pages[: number - 1])
        return page_xml(self.pages[number - 1], token, complete=total, cursor=cursor, response_date=self.response_date)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.requests.append((asyncio.get_running_loop().time(), query))
        token = query.get("resumptionToken")
        if token is None:
            number = 1
        elif token.startswith("page-") and token[5:].isdigit() and 1 < int(token[5:]) <= len(self.pages):
            number = int(token[5:])
        else:
            return web.Response(body=error_xml("badResumptionToken", "unknown token"), content_type="text/xml")
        body = self.body(number)
        entry = self.behaviours.get(number)
        if entry is not None:
            behaviour, times = entry
            if times is None or times > 0:
                if times is not None:
                    self.behaviours[number] = (behaviour, times - 1)
                return await behaviour(request, body)
        if self.gzip:
            response = web.Response(body=gzip.compress(body), content_type="text/xml", charset="utf-8")
            response.headers["Content-Encoding"] = "gzip"
            return response
        return web.Response(body=body, content_type="text/xml", charset="utf-8")


def sheets_pages(count: int, per_page: int) -> list[list[str]]:
    return [[record_xml(n) for n in range(start, min(start + per_page, count))] for start in range(0, count, per_page)]


@asynccontextmanager
async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_route("*", "/oai", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


# --------------------------------------------------------------------- hostile behaviours


def xml_response(body: bytes, content_type: str = "text/xml; charset=utf-8", status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers={"Content-Type": content_type})


async def malformed(request: web.Request, body: bytes) -> web.StreamResponse:
    return xml_response(body.replace(b"</ListRecords>", b"</ListRecord>"))


async def truncated_document(request: web.Request, body: bytes) -> web.StreamResponse:
    """An honest Content-Length over a document cut in the middle of a record."""
    return xml_response(body[: len(body) // 2])


async def connection_cut(request: web.Request, body: bytes) -> web.StreamResponse:
    """Content-Length announces the whole page, the connection closes half-way."""
    response = web.StreamResponse(headers={"Content-Type": "text/xml; charset=utf-8"})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    assert request.transport is not None
    request.transport.close()
    return response


def repeated_token(token: str) -> Behaviour:
    async def behaviour(request: web.Request, body: bytes) -> web.StreamResponse:
        root = etree.fromstring(body)
        el = root.find(f"{{{OAI}}}ListRecords/{{{OAI}}}resumptionToken")
        assert el is not None
        el.text = token
        return xml_response(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))

    return behaviour


def unavailable(retry_after: str | Callable[[], str] | None, status: int = 503) -> Behaviour:
    """A 503 (or ``status``) with ``Retry-After``; a callable is evaluated when the answer is sent
    (an HTTP-date must be computed then, not when the test was set up)."""

    async def behaviour(request: web.Request, body: bytes) -> web.StreamResponse:
        value = retry_after() if callable(retry_after) else retry_after
        headers = {"Retry-After": value} if value is not None else {}
        return web.Response(status=status, text="busy", headers=headers)

    return behaviour


def http_date(seconds_from_now: float) -> str:
    from email.utils import format_datetime

    return format_datetime(datetime.fromtimestamp(datetime.now(UTC).timestamp() + seconds_from_now, UTC), usegmt=True)


def slow(seconds: float) -> Behaviour:
    async def behaviour(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return xml_response(body)

    return behaviour


async def latin1_declared_utf8_body(request: web.Request, body: bytes) -> web.StreamResponse:
    return xml_response(body.replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"'), "text/xml")


async def utf8_declared_latin1_body(request: web.Request, body: bytes) -> web.StreamResponse:
    return xml_response(body.decode("utf-8").encode("latin-1", errors="replace"), "text/xml")


BILLION_LAUGHS = (
    '<!DOCTYPE OAI-PMH [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
)
EXTERNAL_ENTITY = '<!DOCTYPE OAI-PMH [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'


def with_doctype(doctype: str, entity: str) -> Behaviour:
    async def behaviour(request: web.Request, body: bytes) -> web.StreamResponse:
        head, sep, rest = body.partition(b"?>")
        text = head + sep + doctype.encode() + rest
        text = text.replace(b"<title>", b"<title>" + entity.encode(), 1)
        return xml_response(text)

    return behaviour


def html_page(content_type: str) -> Behaviour:
    async def behaviour(request: web.Request, body: bytes) -> web.StreamResponse:
        page = b"<html><head><title>Maintenance</title></head><body><p>Back soon</p></body></html>"
        return xml_response(page, content_type)

    return behaviour


def oai_error(code: str) -> Behaviour:
    async def behaviour(request: web.Request, body: bytes) -> web.StreamResponse:
        return xml_response(error_xml(code, f"scripted {code}"))

    return behaviour


def huge_record(size: int) -> Behaviour:
    async def behaviour(request: web.Request, body: bytes) -> web.StreamResponse:
        filler = ("x" * 100 + " ") * (size // 101 + 1)
        return xml_response(body.replace(b"<summary>", b"<summary>" + filler.encode(), 1))

    return behaviour
