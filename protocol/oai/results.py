"""What storage hands back to the pure core: typed results, one per verb, rendered by :mod:`response`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from protocol.oai.config import OaiConfig
from protocol.oai.metadata import MetadataFormat
from protocol.oai.requests import ListQuery
from protocol.oai.tokens import TokenState, encode_token


@dataclass(frozen=True, slots=True)
class Header:
    identifier: str
    stamp: int  # UTC epoch seconds
    sets: tuple[str, ...] = ()
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    """A header, the stored ``<metadata>`` child (UTF-8; None when deleted) and optional provenance JSON."""

    header: Header
    metadata: bytes | None = None
    provenance: Mapping[str, Any] | None = None
    key: tuple[int, int] = (0, 0)  # (stamp, pk): the keyset position of this record


@dataclass(frozen=True, slots=True)
class IdentifyResult:
    earliest_stamp: int


@dataclass(frozen=True, slots=True)
class FormatsResult:
    formats: tuple[MetadataFormat, ...]


@dataclass(frozen=True, slots=True)
class SetsResult:
    sets: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RecordResult:
    record: Record


@dataclass(frozen=True, slots=True)
class ResumptionInfo:
    """The ``<resumptionToken>`` element: ``token`` is '' on the last page of a multi-page list."""

    token: str
    complete_size: int
    cursor: int
    expires: int | None = None


@dataclass(frozen=True, slots=True)
class PageResult:
    """One page of a list; ``records_text`` is the records already written as UTF-8 XML, when the
    caller rendered them ahead of the request (see :func:`protocol.oai.response.render_records`)."""

    query: ListQuery
    records: tuple[Record, ...]
    resumption: ResumptionInfo | None = field(default=None)
    records_text: bytes | None = None


def next_query(query: ListQuery, fetched: Sequence[Record], complete_size: int, config: OaiConfig) -> ListQuery | None:
    """The query the resumption token of this page will resume (None on the last page).

    It equals ``ListQuery.resume`` of the token that :func:`make_page` issues, so a
    provider can start reading the next page before the harvester asks for it.
    """
    if len(fetched) <= config.page_size:
        return None
    return replace(
        query,
        after=fetched[config.page_size - 1].key,
        complete_size=complete_size,
        cursor=query.cursor + config.page_size,
    )


def make_page(
    query: ListQuery,
    fetched: Sequence[Record],
    complete_size: int,
    config: OaiConfig,
    now: int,
    records_text: bytes | None = None,
) -> PageResult:
    """Cut a page from ``fetched`` (up to page_size + 1 rows: one more tells whether a next page exists).

    Spec §3.5: every page of a list split in several carries a resumptionToken
    element with ``cursor`` (records sent before this page) and ``completeListSize``;
    the last page carries it empty. A list that fits one page carries none.
    """
    records = tuple(fetched[: config.page_size])
    more = len(fetched) > config.page_size
    if not more and query.after is None:
        return PageResult(query, records, records_text=records_text)
    if not more:
        return PageResult(query, records, ResumptionInfo("", complete_size, query.cursor), records_text)
    last = records[-1].key
    expires = now + config.token_ttl
    state = TokenState(
        verb=query.verb,
        prefix=query.prefix,
        set_spec=query.set_spec,
        from_stamp=query.from_stamp,
        until_stamp=query.until_stamp,
        last_stamp=last[0],
        last_pk=last[1],
        complete_size=complete_size,
        cursor=query.cursor + len(records),
        expires=expires,
    )
    token = encode_token(state, config.token_secret)
    return PageResult(query, records, ResumptionInfo(token, complete_size, query.cursor, expires), records_text)


OaiResult = IdentifyResult | FormatsResult | SetsResult | RecordResult | PageResult
