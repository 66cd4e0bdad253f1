"""What the federation is given by the app shell: its ``[federation]`` settings and the node's identity.

The shell (``essaim.settings``) loads ``FederationSettings`` as the ``[federation]`` section
of its settings file and environment (``ESSAIM_FEDERATION_<KEY>``), then hands it down with
an :class:`Identity`; nothing in ``federation/`` imports the shell (ARCHITECTURE §1).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FederationSettings:
    enabled: bool = True  # ActivityPub: discovery, actor, inbox, outbox, delivery worker
    manually_approves_followers: bool = False
    max_inbox_body: int = 256 * 1024  # bytes; a larger inbox POST is refused with 413
    signature_max_age: int = 3600  # seconds a signed Date may be old
    signature_max_future: int = 300  # seconds of clock skew tolerated
    key_cache_ttl: int = 86_400  # seconds a fetched remote key is trusted before a re-fetch
    retry_base: float = 60.0  # first delivery retry delay (seconds), then times retry_factor
    retry_factor: float = 2.0
    retry_max: float = 6 * 3600.0  # cap of one retry delay
    retry_after_cap: float = 6 * 3600.0  # cap of a peer's Retry-After
    max_attempts: int = 12  # a delivery is given up after this many attempts...
    max_age: int = 3 * 86_400  # ... or this many seconds after it was enqueued
    poll: float = 2.0  # seconds between two looks for due deliveries
    lease: int = 300  # seconds a claimed delivery stays invisible (a crashed worker's claim lapses)
    per_host: int = 2  # concurrent deliveries to one host
    workers: int = 8  # concurrent deliveries in all
    page_size: int = 20  # items per outbox / followers page
    featured: int = 10  # recent sheets in the featured collection
    feeds: list[str] = field(default_factory=list)  # theme codes with their own feed actor; ["*"] = every theme
    unavailable_after: int = 7 * 86_400  # seconds of failures in a row before a host is marked unavailable
    probe_interval: int = 3600  # seconds between two probe deliveries to an unavailable host


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the node is, as far as federation is concerned (from the shell's settings)."""

    base_url: str  # public URL, e.g. https://fiches.example.org
    username: str  # the node actor's preferredUsername
    name: str  # the partner's name
    description: str = ""
    logo: str = ""  # URL of the partner's logo (the actors' icon)
    homepage: str = ""  # the partner's own site (NodeInfo metadata)
    software_version: str = "0"  # Essaim's version (NodeInfo)
