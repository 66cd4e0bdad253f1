"""Resumption tokens: signed, stateless, bound to their verb, expiring (spec §3.5)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from protocol.oai.errors import ErrorCode, OaiError
from protocol.oai.requests import ListQuery, parse_request
from protocol.oai.results import Header, Record, make_page
from protocol.oai.tokens import TokenState, decode_token, encode_token
from tests.oai_support import SECRET, T0, make_config, query

STATE = TokenState(
    verb="ListRecords",
    prefix="oai_dc",
    set_spec="theme:SOL",
    from_stamp=None,
    until_stamp=T0,
    last_stamp=T0 - 10,
    last_pk=42,
    complete_size=100,
    cursor=7,
    expires=T0 + 3600,
)


def _rejects(token: str, *, verb: str = "ListRecords", now: int = T0, secret: bytes = SECRET) -> str:
    with pytest.raises(OaiError) as caught:
        decode_token(token, secret, verb=verb, now=now)
    assert caught.value.code == ErrorCode.BAD_RESUMPTION_TOKEN
    return caught.value.message


def test_round_trip_and_url_safety() -> None:
    token = encode_token(STATE, SECRET)
    assert decode_token(token, SECRET, verb="ListRecords", now=T0) == STATE
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert encode_token(STATE, SECRET) == token  # deterministic: same state, same token


def test_tampering_is_detected() -> None:
    token = encode_token(STATE, SECRET)
    body, _, mac = token.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["k"] = 1  # jump elsewhere in the list
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode() + "." + mac
    assert "not issued" in _rejects(forged)
    assert "not issued" in _rejects(token, secret=b"another-secret-0123456789")
    for garbage in ("", ".", "abc", "abc.", ".abc", "%%%.%%%", token[:-3], "a" * 5000 + "." + mac):
        _rejects(garbage)


def test_signed_but_malformed_payload_is_rejected() -> None:
    from protocol.oai.tokens import _b64, _mac

    payload = b'{"v":"ListRecords"}'
    _rejects(f"{_b64(payload)}.{_b64(_mac(SECRET, payload))}")


def test_verb_binding_and_expiry() -> None:
    token = encode_token(STATE, SECRET)
    assert "ListRecords" in _rejects(token, verb="ListIdentifiers")
    assert decode_token(token, SECRET, verb="ListRecords", now=T0 + 3600) == STATE
    assert "expired" in _rejects(token, now=T0 + 3601)


def _records(count: int, start: int = 0) -> list[Record]:
    return [Record(Header(f"oai:x.test:{i}", T0 + i), b"<x/>", key=(T0 + i, i)) for i in range(start, start + count)]


def test_pages_carry_cursor_size_and_the_keyset_position() -> None:
    config = make_config(page_size=7)
    first = parse_request(query("ListRecords", metadataPrefix="oai_dc"), config, T0 + 100)
    assert isinstance(first, ListQuery)
    page = make_page(first, _records(8), 20, config, T0 + 100)
    assert len(page.records) == 7 and page.resumption is not None
    assert (page.resumption.cursor, page.resumption.complete_size) == (0, 20)
    assert page.resumption.expires == T0 + 100 + config.token_ttl
    resumed = parse_request(query("ListRecords", resumptionToken=page.resumption.token), config, T0 + 200)
    assert resumed == replace(first, after=(T0 + 6, 6), complete_size=20, cursor=7)
    assert isinstance(resumed, ListQuery)
    last = make_page(resumed, _records(6, 7), 20, config, T0 + 200)
    assert last.resumption is not None and last.resumption.token == "" and last.resumption.cursor == 7
    single = make_page(first, _records(7), 7, config, T0 + 100)
    assert single.resumption is None
