"""OAI-PMH response envelopes built with lxml elements (spec §3.2, §4).

Metadata fragments come pre-rendered from storage (one per format and sheet,
see :func:`protocol.oai.metadata.render_formats`). A list page is the hot path of
a harvest: its envelope is built with lxml, and its records are written as text
around the stored fragments, spliced in as they are (they come from our own
serialiser only, are well-formed and declare their namespaces); parsing and
re-serialising 100 fragments per page cost more than the rest of the request.
GetRecord still parses its single fragment (without entity expansion or network
access) and appends it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from lxml import etree

from protocol.oai.config import OaiConfig
from protocol.oai.errors import BARE_REQUEST_CODES, OaiError
from protocol.oai.namespaces import (
    FRIENDS,
    FRIENDS_SCHEMA,
    OAI,
    OAI_IDENTIFIER,
    OAI_IDENTIFIER_SCHEMA,
    OAI_SCHEMA,
    PROVENANCE,
    PROVENANCE_SCHEMA,
    XSI,
    qn,
)
from protocol.oai.native import _NOT_XML, escape_xml
from protocol.oai.requests import ListQuery
from protocol.oai.results import (
    FormatsResult,
    IdentifyResult,
    OaiResult,
    PageResult,
    Record,
    RecordResult,
    SetsResult,
)

GRANULARITY = "YYYY-MM-DDThh:mm:ssZ"
COMPRESSIONS = ("gzip", "deflate")

_EPOCH = date(1970, 1, 1)
_FRAGMENT_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False, huge_tree=False)


@lru_cache(maxsize=1024)
def _day(days: int) -> str:
    return (_EPOCH + timedelta(days=days)).strftime("%Y-%m-%d")


def datestamp(stamp: int) -> str:
    """``YYYY-MM-DDThh:mm:ssZ`` of an epoch second (a page holds a hundred distinct ones: no strftime each)."""
    days, seconds = divmod(stamp, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_day(days)}T{hours:02d}:{minutes:02d}:{seconds:02d}Z"


def _sub(parent: etree._Element, name: str, text: str | None = None, ns: str = OAI) -> etree._Element:
    el = etree.SubElement(parent, qn(ns, name))
    if text is not None:
        el.text = text
    return el


def _envelope(config: OaiConfig, now: int, request_args: Mapping[str, str] | None) -> etree._Element:
    root = etree.Element(qn(OAI, "OAI-PMH"), nsmap={None: OAI, "xsi": XSI})
    root.set(qn(XSI, "schemaLocation"), f"{OAI} {OAI_SCHEMA}")
    _sub(root, "responseDate", datestamp(now))
    request = _sub(root, "request", config.base_url)
    for name, value in (request_args or {}).items():
        request.set(name, value)
    return root


def _serialise(root: etree._Element, config: OaiConfig) -> bytes:
    tree = etree.ElementTree(root)
    if config.stylesheet:
        pi = etree.ProcessingInstruction("xml-stylesheet", f'type="text/xsl" href="{config.stylesheet}"')
        root.addprevious(pi)
    body: bytes = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    return body


def render_error(error: OaiError, config: OaiConfig, now: int, request_args: Mapping[str, str]) -> bytes:
    """``<error code=…>`` in a 200 body; badVerb / badArgument echo no arguments (spec §3.2)."""
    echoed = None if error.code in BARE_REQUEST_CODES else request_args
    root = _envelope(config, now, echoed)
    _sub(root, "error", error.message).set("code", error.code.value)
    return _serialise(root, config)


# --------------------------------------------------------------------------- verbs


def _identify(parent: etree._Element, result: IdentifyResult, config: OaiConfig) -> None:
    body = _sub(parent, "Identify")
    _sub(body, "repositoryName", config.repository_name)
    _sub(body, "baseURL", config.base_url)
    _sub(body, "protocolVersion", "2.0")
    for email in config.admin_emails:
        _sub(body, "adminEmail", email)
    _sub(body, "earliestDatestamp", datestamp(result.earliest_stamp))
    _sub(body, "deletedRecord", config.deleted_record)
    _sub(body, "granularity", GRANULARITY)
    for compression in COMPRESSIONS:
        _sub(body, "compression", compression)
    ident = etree.SubElement(
        _sub(body, "description"), qn(OAI_IDENTIFIER, "oai-identifier"), nsmap={None: OAI_IDENTIFIER, "xsi": XSI}
    )
    ident.set(qn(XSI, "schemaLocation"), f"{OAI_IDENTIFIER} {OAI_IDENTIFIER_SCHEMA}")
    _sub(ident, "scheme", "oai", OAI_IDENTIFIER)
    _sub(ident, "repositoryIdentifier", config.repo_id, OAI_IDENTIFIER)
    _sub(ident, "delimiter", ":", OAI_IDENTIFIER)
    _sub(ident, "sampleIdentifier", f"oai:{config.repo_id}:projet-42", OAI_IDENTIFIER)
    if config.hub:
        # Friends guidelines: a hub points harvesters at the nodes it aggregates.
        friends = etree.SubElement(_sub(body, "description"), qn(FRIENDS, "friends"), nsmap={None: FRIENDS, "xsi": XSI})
        friends.set(qn(XSI, "schemaLocation"), f"{FRIENDS} {FRIENDS_SCHEMA}")
        for url in config.friends:
            _sub(friends, "baseURL", url, FRIENDS)


def _formats(parent: etree._Element, result: FormatsResult, config: OaiConfig) -> None:
    body = _sub(parent, "ListMetadataFormats")
    for fmt in result.formats:
        el = _sub(body, "metadataFormat")
        _sub(el, "metadataPrefix", fmt.prefix)
        _sub(el, "schema", fmt.schema_url(config.site))
        _sub(el, "metadataNamespace", fmt.namespace)


def _sets(parent: etree._Element, result: SetsResult, config: OaiConfig) -> None:
    body = _sub(parent, "ListSets")
    for spec, name in result.sets:
        el = _sub(body, "set")
        _sub(el, "setSpec", spec)
        _sub(el, "setName", name)


def _header(parent: etree._Element, record: Record) -> None:
    header = _sub(parent, "header")
    if record.header.deleted:
        header.set("status", "deleted")
    _sub(header, "identifier", record.header.identifier)
    _sub(header, "datestamp", datestamp(record.header.stamp))
    for spec in record.header.sets:
        _sub(header, "setSpec", spec)


def _provenance(parent: etree._Element, data: Mapping[str, Any]) -> None:
    """Provenance guidelines: where a re-exposed record was harvested from."""
    about = _sub(parent, "about")
    prov = etree.SubElement(about, qn(PROVENANCE, "provenance"), nsmap={None: PROVENANCE, "xsi": XSI})
    prov.set(qn(XSI, "schemaLocation"), f"{PROVENANCE} {PROVENANCE_SCHEMA}")
    origin = _sub(prov, "originDescription", ns=PROVENANCE)
    origin.set("harvestDate", str(data["harvestDate"]))
    origin.set("altered", "true" if data.get("altered") else "false")
    for key in ("baseURL", "identifier", "datestamp", "metadataNamespace"):
        _sub(origin, key, str(data[key]), PROVENANCE)


def _record(parent: etree._Element, record: Record) -> None:
    el = _sub(parent, "record")
    _header(el, record)
    if record.header.deleted or record.metadata is None:
        return  # spec §2.5.1: a deleted record has a header and no metadata
    _sub(el, "metadata").append(etree.fromstring(record.metadata, _FRAGMENT_PARSER))
    if record.provenance:
        _provenance(el, record.provenance)


def _get_record(parent: etree._Element, result: RecordResult, config: OaiConfig) -> None:
    _record(_sub(parent, "GetRecord"), result.record)


def _page(parent: etree._Element, result: PageResult, config: OaiConfig) -> None:
    body = _sub(parent, result.query.verb)
    for record in result.records:
        if result.query.headers_only:
            _header(body, record)
        else:
            _record(body, record)
    info = result.resumption
    if info is not None:
        token = _sub(body, "resumptionToken", info.token or None)
        token.set("completeListSize", str(info.complete_size))
        token.set("cursor", str(info.cursor))
        if info.token and info.expires is not None:
            token.set("expirationDate", datestamp(info.expires))


# ---------------------------------------------------------------- list pages, as text

_MARK = "essaim-records-go-here"
# One character class (``_NOT_XML``'s, plus the characters escape_xml rewrites): sre searches a single
# class with its fast charset loop, where the alternation of two classes tried both at every position
# (a fifth of a page's instructions).
_NEEDS_ESCAPE = re.compile("[&<>\r" + _NOT_XML.pattern[1:])


def _text(value: str) -> str:
    """``escape_xml`` for the common case of text with nothing to escape, at the cost of one search."""
    if value.isascii() and value.isprintable():
        # Identifiers and set specs: printable ASCII ('\r' is not printable), so only the markup
        # characters may need escaping; three memchr are cheaper than a character-class search.
        return escape_xml(value) if "&" in value or "<" in value or ">" in value else value
    return escape_xml(value) if _NEEDS_ESCAPE.search(value) else value


def _header_text(record: Record, out: list[str]) -> None:
    header = record.header
    out.append('<header status="deleted">' if header.deleted else "<header>")
    out.append(f"<identifier>{_text(header.identifier)}</identifier><datestamp>{datestamp(header.stamp)}</datestamp>")
    sets = header.sets
    if sets:
        # setSpecs are unreserved URI characters (SET_SPEC): one search over them all, escape only if needed.
        joined = "".join(sets)
        specs = map(escape_xml, sets) if _text(joined) is not joined else sets
        out.append("<setSpec>" + "</setSpec><setSpec>".join(specs) + "</setSpec>")
    out.append("</header>")


def render_records(records: Sequence[Record], query: ListQuery) -> bytes:
    """The records (or headers, for ListIdentifiers) of a list page as UTF-8 XML, without the envelope.

    The stored fragments are bytes as the database holds them: they are joined, never decoded
    and encoded again (that was a tenth of a page's time); only the headers are text.
    """
    text: list[str] = []
    if query.headers_only:
        for record in records:
            _header_text(record, text)
        return "".join(text).encode("utf-8")
    out: list[bytes] = []
    for record in records:
        text.append("<record>")
        _header_text(record, text)
        if not record.header.deleted and record.metadata is not None:
            text.append("<metadata>")
            out.append("".join(text).encode("utf-8"))
            out.append(record.metadata)
            text.clear()
            text.append("</metadata>")
            if record.provenance:
                holder = etree.Element(qn(OAI, "holder"), nsmap={None: OAI})
                _provenance(holder, record.provenance)
                about = etree.tostring(holder, encoding="unicode")
                text.append(about[about.index(">") + 1 : about.rindex("<")])
        text.append("</record>")
    out.append("".join(text).encode("utf-8"))
    return b"".join(out)


def render_page(result: PageResult, config: OaiConfig, now: int, request_args: Mapping[str, str]) -> bytes:
    """A ListRecords / ListIdentifiers page: lxml envelope, records written as text around the fragments."""
    root = _envelope(config, now, request_args)
    _sub(root, result.query.verb).text = _MARK
    head, _, tail = _serialise(root, config).partition(_MARK.encode("ascii"))
    out = [
        head,
        result.records_text if result.records_text is not None else render_records(result.records, result.query),
    ]
    info = result.resumption
    if info is not None:
        attrs = f'completeListSize="{info.complete_size}" cursor="{info.cursor}"'
        if info.token and info.expires is not None:
            attrs += f' expirationDate="{datestamp(info.expires)}"'
        if info.token:
            out.append(f"<resumptionToken {attrs}>{escape_xml(info.token)}</resumptionToken>".encode())
        else:
            out.append(f"<resumptionToken {attrs}/>".encode())
    out.append(tail)
    return b"".join(out)


Renderer = Callable[[etree._Element, Any, OaiConfig], None]
RENDERERS: Mapping[type, Renderer] = {
    IdentifyResult: _identify,
    FormatsResult: _formats,
    SetsResult: _sets,
    RecordResult: _get_record,
    PageResult: _page,
}


def render_result(result: OaiResult, config: OaiConfig, now: int, request_args: Mapping[str, str]) -> bytes:
    if isinstance(result, PageResult):
        return render_page(result, config, now, request_args)
    root = _envelope(config, now, request_args)
    RENDERERS[type(result)](root, result, config)
    return _serialise(root, config)
