"""A strict OAI-PMH page fetcher over the hardened outbound client (ARCHITECTURE §2.8, §3 "Harvesting hazards").

Every page either parses completely and is a well-formed OAI-PMH answer, or the
fetch ends in a :class:`HarvestError` naming the URL and the reason. Never
"0 records, done": sickle's recover-mode parser silently truncates pages and
records; here lxml runs with ``recover=False``, no DTD, no entity resolution, no
network, and a document carrying a DOCTYPE is refused outright (entity
expansion tricks start there). ``noRecordsMatch`` (spec §3.6) is the one OAI
error that is a normal, empty result.

503 and 429 answers are retried a bounded number of times, waiting what
``Retry-After`` asks (seconds or HTTP-date, RFC 9110 §10.2.3) capped by a
tunable: sickle crashes on an HTTP-date and sleeps through ``Retry-After: 86400``.
Timeouts, the body cap and the address policy are the outbound client's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lxml import etree
from yarl import URL

from node.outbound import OutboundClient, OutboundError, OutboundHTTPError, OutboundResponse, parse_retry_after
from protocol.oai.namespaces import OAI, qn

logger = logging.getLogger("essaim.harvest")

_XML_TYPES = frozenset({"text/xml", "application/xml"})
_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*\bencoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_UTF8_NAMES = frozenset({"utf-8", "utf8"})
# Single-byte encodings a UTF-8 body is often mislabelled with.
_SINGLE_BYTE = frozenset({"iso-8859-1", "latin-1", "latin1", "iso-8859-15", "windows-1252", "cp1252", "us-ascii"})
_MULTIBYTE_UTF8 = re.compile(rb"[\xc2-\xf4][\x80-\xbf]")


# --------------------------------------------------------------------- errors


class HarvestError(Exception):
    """Root of the harvest errors; ``url`` is the request, ``reason`` a short machine-readable cause."""

    reason = "harvest-error"

    def __init__(self, message: str, *, url: str = "", reason: str | None = None) -> None:
        super().__init__(f"{message} ({url})" if url else message)
        self.url = url
        if reason is not None:
            self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # A page decoded in a worker process (harvesting.pipeline) raises there: the error comes back
        # pickled, whatever the arguments of its class's __init__.
        return (_rebuild_error, (type(self), self.args, self.__dict__))


def _rebuild_error(cls: type[HarvestError], args: tuple[Any, ...], state: dict[str, Any]) -> HarvestError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class TransportError(HarvestError):
    """The HTTP exchange failed: connection, timeout, body cap, refused target, HTTP status."""

    reason = "transport"


class RetryExhausted(TransportError):
    """The provider kept answering 503/429 after every allowed retry."""

    reason = "retry-exhausted"


class MalformedResponse(HarvestError):
    """The body is not a complete, well-formed OAI-PMH document (or not XML at all)."""

    reason = "malformed"


class OaiProtocolError(HarvestError):
    """The provider answered with an OAI-PMH ``<error>`` (spec §3.6)."""

    reason = "oai-error"
    code = ""

    def __init__(self, code: str, message: str, *, url: str = "") -> None:
        super().__init__(f"OAI-PMH error {code}: {message}", url=url, reason=f"oai:{code}")
        self.code = code
        self.oai_message = message


class BadArgument(OaiProtocolError):
    pass


class BadResumptionToken(OaiProtocolError):
    pass


class BadVerb(OaiProtocolError):
    pass


class CannotDisseminateFormat(OaiProtocolError):
    pass


class IdDoesNotExist(OaiProtocolError):
    pass


class NoSetHierarchy(OaiProtocolError):
    pass


class NoMetadataFormats(OaiProtocolError):
    pass


OAI_ERRORS: Mapping[str, type[OaiProtocolError]] = {
    "badArgument": BadArgument,
    "badResumptionToken": BadResumptionToken,
    "badVerb": BadVerb,
    "cannotDisseminateFormat": CannotDisseminateFormat,
    "idDoesNotExist": IdDoesNotExist,
    "noSetHierarchy": NoSetHierarchy,
    "noMetadataFormats": NoMetadataFormats,
}


# --------------------------------------------------------------------- pages


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Tunables (ARCHITECTURE §4): tests shrink them to run in seconds."""

    max_retries: int = 3  # extra attempts after a 503/429
    retry_after_cap: float = 300.0  # longest wait honoured, seconds
    default_retry_after: float = 10.0  # wait when a 503/429 has no usable Retry-After


@dataclass(frozen=True, slots=True)
class ListPage:
    """One ListRecords page; ``token`` is None on the last page (empty or absent resumptionToken)."""

    url: str
    response_date: datetime
    response_date_text: str
    records: tuple[etree._Element, ...]
    token: str | None
    complete_size: int | None = None
    cursor: int | None = None
    # The page's records decoded by a harvest worker process (harvesting.pipeline.DecodedPage), which
    # parsed the page itself: ``records`` is then empty.
    decoded: Any = None

    @property
    def size(self) -> int:
        """How many records the page holds."""
        return len(self.records) if self.decoded is None else int(self.decoded.size)


@dataclass(frozen=True, slots=True)
class RawPage:
    """A fetched answer that passed the HTTP checks (status, content type), not parsed yet."""

    url: str
    body: bytes
    content_type: str


# Reads a fetched ListRecords answer into its page (read_list_page, or a harvest worker process).
PageReader = Callable[[RawPage], Awaitable[ListPage]]


def _parser() -> etree.XMLParser:
    # One per parse: lxml parsers are not safe to share between threads, and cheap to make.
    return etree.XMLParser(
        recover=False,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,  # keeps libxml2's depth and text-node size limits
        remove_blank_text=False,
    )


def parse_oai(body: bytes, *, url: str = "", content_type: str | None = None) -> etree._Element:
    """Parse strictly and check the envelope; raises :class:`MalformedResponse` or :class:`OaiProtocolError`.

    ``noRecordsMatch`` is not raised: the caller reads it as an empty list.
    """
    if not body.strip():
        raise MalformedResponse("empty body", url=url, reason="empty")
    _check_encoding(body, url, content_type)
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as exc:
        raise MalformedResponse(f"XML does not parse: {str(exc)[:200]}", url=url, reason="xml-syntax") from exc
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise MalformedResponse("a DOCTYPE is not allowed in an OAI-PMH response", url=url, reason="doctype")
    if root.tag != qn(OAI, "OAI-PMH"):
        local = etree.QName(root).localname.lower() if isinstance(root.tag, str) else ""
        if local == "html":
            raise MalformedResponse("an HTML page, not an OAI-PMH response", url=url, reason="html")
        raise MalformedResponse(f"root element is {root.tag!r}, not OAI-PMH", url=url, reason="not-oai")
    if next(root.iter(etree.Entity), None) is not None:  # the walk runs in libxml2, not in Python
        # An entity reference left unresolved: the document relied on a DTD.
        raise MalformedResponse("unresolved entity reference", url=url, reason="entity")
    errors = root.findall(qn(OAI, "error"))
    codes = [(str(e.get("code", "")), (e.text or "").strip()) for e in errors]
    for code, message in codes:
        if code == "noRecordsMatch":
            continue
        raise OAI_ERRORS.get(code, OaiProtocolError)(code, message, url=url)
    return root


def _check_encoding(body: bytes, url: str, content_type: str | None) -> None:
    """Refuse the encoding lies a parser cannot see: the XML declaration disagreeing with HTTP's charset,
    or a single-byte declaration over a body that is plainly UTF-8 (every accent would come out doubled)."""
    match = _DECLARED_ENCODING.match(body)
    declared = match.group(1).decode("ascii").lower() if match else None
    charset = None
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip('"').lower()
    if declared and charset and _norm(declared) != _norm(charset):
        raise MalformedResponse(
            f"XML declares encoding {declared!r} but HTTP says charset {charset!r}", url=url, reason="encoding"
        )
    if declared in _SINGLE_BYTE and _MULTIBYTE_UTF8.search(body):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return
        raise MalformedResponse(f"XML declares encoding {declared!r} but the body is UTF-8", url=url, reason="encoding")


def _norm(name: str) -> str:
    name = name.replace("_", "-")
    return "utf-8" if name in _UTF8_NAMES else name


def _parse_response_date(root: etree._Element, url: str) -> tuple[datetime, str]:
    text = (root.findtext(qn(OAI, "responseDate")) or "").strip()
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedResponse(f"responseDate {text!r} is not a UTC date-time", url=url, reason="envelope") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC), text


def list_page(root: etree._Element, url: str) -> ListPage:
    """The records and resumption token of a parsed ListRecords answer."""
    response_date, date_text = _parse_response_date(root, url)
    if any(e.get("code") == "noRecordsMatch" for e in root.findall(qn(OAI, "error"))):
        return ListPage(url, response_date, date_text, (), None)
    body = root.find(qn(OAI, "ListRecords"))
    if body is None:
        raise MalformedResponse("neither ListRecords nor error in the response", url=url, reason="envelope")
    records = tuple(body.findall(qn(OAI, "record")))
    token_el = body.find(qn(OAI, "resumptionToken"))
    token = (token_el.text or "").strip() if token_el is not None else ""

    def number(name: str) -> int | None:
        raw = token_el.get(name) if token_el is not None else None
        return int(raw) if raw is not None and raw.strip().isdigit() else None

    if token and not records:
        # A page with a token but no record would let a provider keep us busy for nothing.
        raise MalformedResponse("a page with a resumptionToken but no record", url=url, reason="empty-page")
    return ListPage(url, response_date, date_text, records, token or None, number("completeListSize"), number("cursor"))


def read_list_page(raw: RawPage) -> ListPage:
    """A fetched ListRecords answer, parsed strictly (:func:`parse_oai`), as its page."""
    return list_page(parse_oai(raw.body, url=raw.url, content_type=raw.content_type), raw.url)


# --------------------------------------------------------------------- fetcher


Sleep = Callable[[float], Awaitable[None]]


class OaiTransport:
    """Fetches and checks OAI-PMH answers through an :class:`OutboundClient` (which owns the timeouts)."""

    def __init__(
        self, client: OutboundClient, config: TransportConfig | None = None, *, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.client = client
        self.config = config or TransportConfig()
        self._sleep = sleep

    @staticmethod
    def request_url(base_url: str, arguments: Mapping[str, str]) -> str:
        return str(URL(base_url).update_query(dict(arguments)))

    async def fetch(self, base_url: str, arguments: Mapping[str, str]) -> tuple[str, etree._Element]:
        """GET one request; returns (url, checked root element)."""
        raw = await self._fetch_raw(base_url, arguments)
        return raw.url, parse_oai(raw.body, url=raw.url, content_type=raw.content_type)

    async def _fetch_raw(self, base_url: str, arguments: Mapping[str, str]) -> RawPage:
        url = self.request_url(base_url, arguments)
        response = await self._get(url)
        ctype = response.headers.get("Content-Type", "")
        mime = ctype.split(";", 1)[0].strip().lower()
        if mime == "text/html" or mime == "application/xhtml+xml":
            raise MalformedResponse(
                f"an HTML page (HTTP {response.status}, {mime}), not an OAI-PMH response", url=url, reason="html"
            )
        if mime not in _XML_TYPES and not mime.endswith("+xml"):
            raise MalformedResponse(f"content type {ctype!r} is not XML", url=url, reason="content-type")
        return RawPage(url, response.body, ctype)

    async def list_records(
        self, base_url: str, arguments: Mapping[str, str], *, reader: PageReader | None = None
    ) -> ListPage:
        """One ListRecords page; ``reader`` (default :func:`read_list_page`) parses and checks it."""
        raw = await self._fetch_raw(base_url, {"verb": "ListRecords", **arguments})
        return read_list_page(raw) if reader is None else await reader(raw)

    async def _get(self, url: str) -> OutboundResponse:
        attempts = self.config.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await self.client.get(url, headers={"Accept": "text/xml, application/xml;q=0.9"})
            except OutboundHTTPError as exc:
                if exc.status not in (429, 503):
                    raise TransportError(f"HTTP {exc.status}", url=url, reason=f"http-{exc.status}") from exc
                asked = parse_retry_after(
                    exc.headers.get("Retry-After"), cap=math.inf, default=self.config.default_retry_after
                )
                wait = min(asked if asked is not None else self.config.default_retry_after, self.config.retry_after_cap)
                if attempt == attempts:
                    raise RetryExhausted(
                        f"HTTP {exc.status} after {attempts} attempts (last Retry-After {asked:.0f} s)", url=url
                    ) from exc
                logger.warning(
                    "harvest.retry",
                    extra={
                        "event": "harvest.retry",
                        "url": url,
                        "status": exc.status,
                        "retry_after": asked,
                        "wait": wait,
                        "attempt": attempt,
                    },
                )
                await self._sleep(wait)
            except OutboundError as exc:
                reason = type(exc).__name__.removeprefix("Outbound").lower() or "transport"
                raise TransportError(str(exc), url=url, reason=reason) from exc
        raise AssertionError("unreachable")  # pragma: no cover
