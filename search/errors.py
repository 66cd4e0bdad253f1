"""Errors of the search package, one hierarchy so the hub maps them to HTTP in one place.

``QueryError`` and ``FilterError`` are the caller's fault (HTTP 400); the others
are the search service's (HTTP 502/503).
"""

from __future__ import annotations

from dataclasses import dataclass


class SearchError(Exception):
    """Base class of every error raised by ``search``."""


class QueryError(SearchError, ValueError):
    """A search request the hub refuses (bad parameter, unknown facet, cap exceeded)."""


class FilterError(QueryError):
    """A filter that cannot be built safely (unknown field, wrong kind, empty value)."""


class ServerError(SearchError):
    """The embedded server could not be started or did not become ready."""


class NodesUnavailable(SearchError):
    """No Typesense node answered (connection errors, timeouts or 503 on every node)."""


class ApiError(SearchError):
    """Typesense answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Typesense {status}: {message}")
        self.status = status
        self.message = message


class NotFound(ApiError):
    pass


@dataclass(frozen=True, slots=True)
class RowFailure:
    """One imported document Typesense refused."""

    index: int  # position in the caller's sequence
    id: str | None
    code: int | None
    error: str


class ImportFailed(SearchError):
    """Some rows of an import failed; ``failures`` lists each one."""

    def __init__(self, failures: list[RowFailure], imported: int) -> None:
        first = failures[0]
        super().__init__(f"{len(failures)} document(s) refused (first: #{first.index} {first.id}: {first.error})")
        self.failures = failures
        self.imported = imported
