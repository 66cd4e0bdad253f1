"""What storage hands back to the pure core: typed results, one per verb, rendered by :mod:`response`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    """A header, the stored ``<metadata>`` child (None when deleted) and optional provenance JSON."""

    header: Header
    metadata: str | None = None
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
    query: ListQuery
    records: tuple[Record, ...]
    resumption: ResumptionInfo | None = field(default=None)


def make_page(
    query: ListQuery, fetched: Sequence[Record], complete_size: int, config: OaiConfig, now: int
) -> PageResult:
    """Cut a page from ``fetched`` (up to page_size + 1 rows: one more tells whether a next page exists).

    Spec §3.5: every page of a list split in several carries a resumptionToken
    element with ``cursor`` (records sent before this page) and ``completeListSize``;
    the last page carries it empty. A list that fits one page carries none.
    """
    records = tuple(fetched[: config.page_size])
    more = len(fetched) > config.page_size
    if not more and query.after is None:
        return PageResult(query, records)
    if not more:
        return PageResult(query, records, ResumptionInfo("", complete_size, query.cursor))
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
    return PageResult(query, records, ResumptionInfo(token, complete_size, query.cursor, expires))


OaiResult = IdentifyResult | FormatsResult | SetsResult | RecordResult | PageResult
