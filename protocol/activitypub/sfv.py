"""The subset of RFC 8941 Structured Field Values that RFC 9421 and RFC 9530 need.

Parses Dictionaries (``Signature-Input``, ``Signature``, ``Content-Digest``) whose
members are Items or Inner Lists with Parameters, and serialises Inner Lists back:
the ``@signature-params`` line of the signature base is the *serialised* inner
list (RFC 9421 §2.3), so it must be canonical. Strict: any syntax error raises
:class:`SFError` (the caller maps it to a malformed signature, HTTP 400).
"""

from __future__ import annotations

import base64
import binascii
import string
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias

_KEY_START = string.ascii_lowercase + "*"
_KEY_CHARS = string.ascii_lowercase + string.digits + "_-.*"
_TOKEN_START = string.ascii_letters + "*"
_TOKEN_CHARS = string.ascii_letters + string.digits + ":/!#$%&'*+-.^_`|~"
_BASE64_CHARS = string.ascii_letters + string.digits + "+/="


class SFError(ValueError):
    """Invalid structured field syntax (RFC 8941 §4.2)."""


@dataclass(frozen=True, slots=True)
class Token:
    value: str


BareItem: TypeAlias = int | Decimal | str | bytes | bool | Token


@dataclass(frozen=True, slots=True)
class Item:
    value: BareItem
    params: tuple[tuple[str, BareItem], ...] = ()

    def param(self, name: str) -> BareItem | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class InnerList:
    items: tuple[Item, ...]
    params: tuple[tuple[str, BareItem], ...] = ()

    def param(self, name: str) -> BareItem | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


Member = Item | InnerList


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.i += 1

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise SFError(f"expected {char!r} at {self.i} in {self.s!r}")
        self.i += 1

    def key(self) -> str:
        if not self.peek() or self.peek() not in _KEY_START:
            raise SFError(f"bad key at {self.i}")
        start = self.i
        while self.peek() and self.peek() in _KEY_CHARS:
            self.i += 1
        return self.s[start : self.i]

    def bare_item(self) -> BareItem:
        c = self.peek()
        if c == '"':
            return self.string()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            self.i += 1
            flag = self.peek()
            if flag not in ("0", "1"):
                raise SFError("bad boolean")
            self.i += 1
            return flag == "1"
        if c == "-" or c.isdigit():
            return self.number()
        if c and c in _TOKEN_START:
            start = self.i
            while self.peek() and self.peek() in _TOKEN_CHARS:
                self.i += 1
            return Token(self.s[start : self.i])
        raise SFError(f"bad item at {self.i} in {self.s!r}")

    def string(self) -> str:
        self.expect('"')
        out: list[str] = []
        while True:
            c = self.peek()
            if not c:
                raise SFError("unterminated string")
            self.i += 1
            if c == "\\":
                nxt = self.peek()
                if nxt not in ('"', "\\"):
                    raise SFError("bad escape in string")
                out.append(nxt)
                self.i += 1
            elif c == '"':
                return "".join(out)
            elif not (" " <= c <= "~"):
                raise SFError("non-printable character in string")
            else:
                out.append(c)

    def byte_sequence(self) -> bytes:
        self.expect(":")
        end = self.s.find(":", self.i)
        if end < 0:
            raise SFError("unterminated byte sequence")
        chunk = self.s[self.i : end]
        self.i = end + 1
        if any(ch not in _BASE64_CHARS for ch in chunk):
            raise SFError("bad base64 in byte sequence")
        try:
            return base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True)
        except binascii.Error as exc:
            raise SFError(f"bad base64: {exc}") from exc

    def number(self) -> int | Decimal:
        start = self.i
        if self.peek() == "-":
            self.i += 1
        while self.peek().isdigit() or self.peek() == ".":
            self.i += 1
        text = self.s[start : self.i]
        if text.count(".") > 1 or text in ("", "-") or len(text.lstrip("-").split(".")[0]) > 15:
            raise SFError(f"bad number {text!r}")
        return Decimal(text) if "." in text else int(text)

    def params(self) -> tuple[tuple[str, BareItem], ...]:
        out: dict[str, BareItem] = {}
        while self.peek() == ";":
            self.i += 1
            self.skip(" ")
            name = self.key()
            value: BareItem = True
            if self.peek() == "=":
                self.i += 1
                value = self.bare_item()
            out[name] = value  # RFC 8941 §4.2.3.2: a repeated key overwrites, order of first kept
        return tuple(out.items())

    def member(self) -> Member:
        if self.peek() == "(":
            self.i += 1
            items: list[Item] = []
            while True:
                self.skip(" ")
                if self.peek() == ")":
                    self.i += 1
                    return InnerList(tuple(items), self.params())
                items.append(Item(self.bare_item(), self.params()))
                if self.peek() not in (" ", ")"):
                    raise SFError("bad inner list")
        return Item(self.bare_item(), self.params())


def parse_dictionary(text: str) -> dict[str, Member]:
    """Parse an RFC 8941 §4.2.2 Dictionary (duplicates: last wins, as the RFC says)."""
    p = _Parser(text.strip(" \t"))
    out: dict[str, Member] = {}
    while p.peek():
        name = p.key()
        if p.peek() == "=":
            p.i += 1
            out[name] = p.member()
        else:
            out[name] = Item(True, p.params())
        p.skip(" \t")
        if not p.peek():
            break
        p.expect(",")
        p.skip(" \t")
        if not p.peek():
            raise SFError("trailing comma")
    return out


def serialize_bare_item(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value.quantize(Decimal("0.001")).normalize(), "f")
    if isinstance(value, Token):
        return value.value
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_params(params: tuple[tuple[str, BareItem], ...]) -> str:
    return "".join(f";{k}" if v is True else f";{k}={serialize_bare_item(v)}" for k, v in params)


def serialize_item(item: Item) -> str:
    return serialize_bare_item(item.value) + serialize_params(item.params)


def serialize_inner_list(inner: InnerList) -> str:
    return "(" + " ".join(serialize_item(i) for i in inner.items) + ")" + serialize_params(inner.params)
