"""Configuration of one OAI-PMH data provider (a node, or the hub re-exposing its nodes)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# repositoryIdentifier of the oai-identifier scheme (oai-identifier.xsd): a domain name with a dot.
REPOSITORY_ID = re.compile(r"^[a-zA-Z][a-zA-Z0-9\-]*(\.[a-zA-Z][a-zA-Z0-9\-]*)+$")
# Used when the base URL's host cannot be a repositoryIdentifier (an IP, ``localhost``): a dev setup.
FALLBACK_REPOSITORY_ID = "localhost.localdomain"
DELETED_RECORD_POLICIES = ("no", "persistent", "transient")


@dataclass(frozen=True, slots=True)
class OaiConfig:
    """Deploy-time settings of the provider; ``token_secret`` signs resumption tokens (keep it private).

    ``base_url`` is the OAI-PMH base URL (``https://node.example/oai``); ``site_url``
    is where the node serves ``/schemas/...`` and defaults to ``base_url`` without its
    last path segment. ``repository_identifier`` defaults to the base URL's host.
    """

    repository_name: str
    base_url: str
    admin_emails: tuple[str, ...]
    token_secret: bytes
    page_size: int = 100
    token_ttl: int = 24 * 3600
    hub: bool = False
    friends: tuple[str, ...] = ()
    deleted_record: str = "persistent"
    site_url: str | None = None
    repository_identifier: str | None = None
    stylesheet: str | None = None  # URL of an XSLT for browsers, or None

    def __post_init__(self) -> None:
        if not self.admin_emails:
            raise ValueError("OAI-PMH Identify needs at least one admin e-mail (spec §4.2)")
        if len(self.token_secret) < 16:
            raise ValueError("token_secret must be at least 16 bytes")
        if self.page_size < 1 or self.token_ttl < 1:
            raise ValueError("page_size and token_ttl must be positive")
        if self.deleted_record not in DELETED_RECORD_POLICIES:
            raise ValueError(f"deleted_record must be one of {DELETED_RECORD_POLICIES}")
        if self.repository_identifier is not None and not REPOSITORY_ID.match(self.repository_identifier):
            raise ValueError(f"repository_identifier {self.repository_identifier!r} is not a domain name")
        if urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an http(s) URL, not {self.base_url!r}")

    @property
    def repo_id(self) -> str:
        """The ``repositoryIdentifier`` of our ``oai:`` identifiers."""
        if self.repository_identifier:
            return self.repository_identifier
        host = urlsplit(self.base_url).hostname or ""
        return host if REPOSITORY_ID.match(host) else FALLBACK_REPOSITORY_ID

    @property
    def site(self) -> str:
        if self.site_url:
            return self.site_url.rstrip("/")
        return self.base_url.rstrip("/").rsplit("/", 1)[0]
