"""What a running node needs, assembled once by the app shell and passed to handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from node.auth import SessionSigner
from node.db import Database
from node.importer import Importer, OnlinePass, PlaceResolver
from node.mapping import ImportMapping
from node.storage import SheetStore
from protocol.sheet import Partner
from protocol.taxonomy import Crosswalk


@dataclass
class NodeContext:
    db: Database
    store: SheetStore
    partner: Partner
    base_url: str
    licence: str
    signer: SessionSigner
    resolver: PlaceResolver | None = None
    online: OnlinePass | None = None  # the national address API, when [geo] online = true
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    max_upload: int = 50 * 1024 * 1024
    secure_cookies: bool = False
    write_workers: int = 0  # [node] write_workers: worker processes of an import (node.pipeline)
    counters: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # Parts built on the node (federation...) add their own Prometheus lines to /metrics here.
    metrics: list[Callable[[], Awaitable[list[str]]]] = field(default_factory=list)

    def count(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

    def importer(
        self,
        mapping: ImportMapping,
        *,
        crosswalk: Crosswalk | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Importer:
        """An importer writing to this node with its partner, licence and geocoding."""
        return Importer(
            self.store,
            mapping,
            partner=self.partner,
            licence=self.licence,
            resolver=self.resolver,
            online=self.online,
            crosswalk=crosswalk,
            progress=progress,
            workers=self.write_workers,
        )

    async def close(self) -> None:
        """Release what the context opened besides the database (the outbound client)."""
        for closer in reversed(self.closers):
            await closer()
        self.closers.clear()


NODE = web.AppKey("node", NodeContext)


def request_key(name: str, kind: type) -> Any:
    """A typed per-request key (``web.RequestKey``, aiohttp 3.12+), or the plain name on older aiohttp."""
    factory = getattr(web, "RequestKey", None)
    return factory(name, kind) if factory is not None else name


TOKEN_NAME = request_key("token_name", str)  # the API token that authenticated the request
USER = request_key("user", int)  # the signed-in admin user's id
CSRF = request_key("csrf", str)  # the CSRF token of the admin's forms
