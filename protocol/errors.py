"""Errors raised by the pure protocol layer.

The hierarchy is documented so that one middleware can map it to HTTP:
``ProtocolError`` is the root; validation errors carry the path of every
offending field so that importers can name file, line and field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ProtocolError(Exception):
    """Root of every error raised by :mod:`protocol`."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field: ``path`` is dotted, with list indexes (``places[1].lat``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SheetValidationError(ProtocolError, ValueError):
    """A sheet failed validation; ``errors`` lists every bad field."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors) or "invalid sheet")
