"""The registry of the hub's sources (table ``harvest_source``): probing, registration, claims.

Sources live in the table ``harvest_source``. A worker (the scheduler inside ``essaim
node serve`` of a hub, or ``essaim hub harvest``) *claims* a source before harvesting it:
the claim names the worker and lapses at ``claimed_until`` unless the worker renews it,
so two hub processes sharing one PostgreSQL database never harvest the same source at
once, and a worker that dies leaves a claim that frees itself. On PostgreSQL the due rows
are picked with ``SELECT … FOR UPDATE SKIP LOCKED`` inside a transaction; on SQLite (one
writer at a time) a conditional ``UPDATE … WHERE id = ? AND claimed_until < now`` is
checked by its row count.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from yarl import URL

from harvesting.harvester import HarvestStats, Source
from harvesting.transport import HarvestError, MalformedResponse, OaiTransport
from node.db import Database
from node.outbound import OutboundClient, OutboundError
from protocol.oai.namespaces import OAI, qn

KINDS = ("essaim", "oai", "file", "crawl")
FAILURE_RETRY = 600  # seconds before a failed source is tried again (at most its interval)


class SourceError(ValueError):
    """A source cannot be registered or found; the message is for the operator."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def slug(text: str) -> str:
    text = text.replace("œ", "oe").replace("Œ", "Oe").replace("æ", "ae").replace("Æ", "Ae")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")[:100] or "source"


def oai_endpoint(url: str) -> str:
    """``https://node.example`` and ``https://node.example/oai`` both name the node's OAI-PMH endpoint."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise SourceError(f"{url!r}: not an http(s) URL")
    return url if url.endswith("/oai") else f"{url}/oai"


def source_of(row: Mapping[str, Any]) -> Source:
    return Source(
        key=str(row["key"]),
        base_url=str(row["base_url"]),
        prefix=str(row["prefix"]),
        set_spec=row["set_spec"] or None,
        name=str(row["name"] or ""),
        granularity=str(row["granularity"] or "seconds"),
    )


def stats_dict(stats: HarvestStats) -> dict[str, Any]:
    return {
        "pages": stats.pages,
        "added": stats.added,
        "updated": stats.updated,
        "unchanged": stats.unchanged,
        "deleted": stats.deleted,
        "rejected": stats.rejected,
        "places_resolved": stats.places_resolved,
        "unmapped_tags": stats.unmapped_tags,
        "errors": list(stats.errors),
        "duration": round(stats.duration, 3),
        "complete": stats.complete,
        "resumed": stats.resumed,
    }


# --------------------------------------------------------------------- probing


@dataclass(frozen=True, slots=True)
class Probe:
    """What Identify and ListMetadataFormats say about an endpoint."""

    base_url: str
    name: str
    granularity: str
    prefixes: tuple[str, ...]

    @property
    def kind(self) -> str:
        return "essaim" if "essaim" in self.prefixes else "oai"


def endpoint_candidates(url: str) -> list[str]:
    """Where the OAI-PMH endpoint named by ``url`` may be: the URL itself when it has a path (any
    provider's base URL, such as ``…/oai/request``), then ``…/oai`` (an Essaim node named by its site)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise SourceError(f"{url!r}: not an http(s) URL")
    if url.endswith("/oai") or URL(url).path in ("", "/"):
        return [oai_endpoint(url)]
    return [url, f"{url}/oai"]


async def probe(transport: OaiTransport, url: str) -> Probe:
    """Identify the endpoint (strictly: any defect is a :class:`HarvestError`) and list its formats.

    The candidates of :func:`endpoint_candidates` are tried in turn; when none answers, the error
    is the one of the URL as given.
    """
    first: HarvestError | None = None
    for base_url in endpoint_candidates(url):
        try:
            return await _probe(transport, base_url)
        except HarvestError as exc:
            first = first or exc
    assert first is not None
    raise first


async def _probe(transport: OaiTransport, base_url: str) -> Probe:
    request_url, root = await transport.fetch(base_url, {"verb": "Identify"})
    identify = root.find(qn(OAI, "Identify"))
    if identify is None:
        raise MalformedResponse("no Identify element in the answer", url=request_url, reason="envelope")
    name = (identify.findtext(qn(OAI, "repositoryName")) or "").strip()
    granularity_text = (identify.findtext(qn(OAI, "granularity")) or "").strip()
    granularity = "day" if granularity_text == "YYYY-MM-DD" else "seconds"
    request_url, root = await transport.fetch(base_url, {"verb": "ListMetadataFormats"})
    prefixes = tuple((el.text or "").strip() for el in root.iter(qn(OAI, "metadataPrefix")) if (el.text or "").strip())
    if not prefixes:
        raise MalformedResponse("ListMetadataFormats lists no format", url=request_url, reason="no-formats")
    return Probe(base_url=base_url, name=name, granularity=granularity, prefixes=prefixes)


NODEINFO_RELS = (
    "http://nodeinfo.diaspora.software/ns/schema/2.1",
    "http://nodeinfo.diaspora.software/ns/schema/2.0",
)


def site_of(oai_url: str) -> str:
    """The site root of an OAI endpoint (``…/oai`` stripped): where ``/.well-known/`` lives."""
    return oai_url[: -len("/oai")] if oai_url.endswith("/oai") else oai_url.rstrip("/")


async def nodeinfo(client: OutboundClient, site: str) -> dict[str, Any]:
    """NodeInfo 2.x of a site (what software, how many posts), through the hardened client.

    Returns ``{"software": …, "usage": …, "metadata": …}`` or ``{"error": reason}``: a plain
    OAI-PMH provider has no NodeInfo, which is not a reason to refuse it. The document must sit
    on the site's own host (a link elsewhere is not followed).
    """
    try:
        links = (await client.get(f"{site}/.well-known/nodeinfo", max_bytes=64 * 1024)).json()
        hrefs = [
            str(link.get("href", ""))
            for rel in NODEINFO_RELS
            for link in (links.get("links") or [])
            if isinstance(link, dict) and link.get("rel") == rel
        ]
        if not hrefs:
            return {"error": "no NodeInfo 2.x link"}
        if URL(hrefs[0]).host != URL(site).host:
            return {"error": f"NodeInfo link on another host: {hrefs[0][:200]}"}
        doc = (await client.get(hrefs[0], max_bytes=256 * 1024)).json()
    except OutboundError as exc:
        return {"error": str(exc)[:300]}
    except (ValueError, AttributeError, TypeError) as exc:
        return {"error": f"not a NodeInfo document: {str(exc)[:200]}"}
    if not isinstance(doc, dict) or not isinstance(doc.get("software"), dict):
        return {"error": "not a NodeInfo document (no software)"}
    return {k: doc.get(k) for k in ("version", "software", "protocols", "usage", "metadata") if k in doc}


# --------------------------------------------------------------------- registry


class SourceRegistry:
    """The rows of ``harvest_source``: add, list, remove, claim, finish."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def now(self) -> int:
        return int(self.clock())

    async def add(
        self,
        *,
        base_url: str,
        name: str,
        kind: str = "essaim",
        prefix: str | None = None,
        set_spec: str = "",
        granularity: str = "seconds",
        interval: int = 3600,
        key: str | None = None,
        enabled: bool = True,
        config: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        if kind not in KINDS:
            raise SourceError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if interval < 1:
            raise SourceError("the interval is a number of seconds, at least 1")
        prefix = prefix or ("essaim" if kind == "essaim" else "oai_dc")
        existing = await self.db.fetchone(
            "SELECT key FROM harvest_source WHERE base_url = ? AND prefix = ? AND set_spec = ?",
            [base_url, prefix, set_spec],
        )
        if existing:
            raise SourceError(f"{base_url} ({prefix}) is already registered as {existing['key']!r}")
        if key:
            if len(key) > 128 or await self.get(key):
                raise SourceError(f"the key {key!r} is taken or too long")
        else:
            base = slug(name or base_url)
            key, n = base, 1
            while await self.get(key):
                n += 1
                key = f"{base}-{n}"
        now = self.now()
        await self.db.execute(
            "INSERT INTO harvest_source (key, base_url, kind, prefix, set_spec, name, granularity, interval, enabled,"
            " next_run, last_run, last_stats, last_error, running_by, claimed_until, created, config, info)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, 0, ?, ?, ?)",
            [
                key,
                base_url,
                kind,
                prefix,
                set_spec,
                name,
                granularity,
                interval,
                enabled,
                now,
                now,
                json.dumps(dict(config), ensure_ascii=False) if config else None,
                json.dumps(dict(info), ensure_ascii=False) if info else None,
            ],
        )
        row = await self.get(key)
        assert row is not None
        return row

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self.db.fetchone("SELECT * FROM harvest_source WHERE key = ?", [key])

    async def all(self) -> list[dict[str, Any]]:
        return await self.db.fetch("SELECT * FROM harvest_source ORDER BY key")

    async def remove(self, key: str) -> bool:
        """Forget the source and its checkpoints (its harvested sheets stay, under their source key)."""
        async with self.db.transaction() as tx:
            count = await self.db.execute("DELETE FROM harvest_source WHERE key = ?", [key], conn=tx)
            await self.db.execute("DELETE FROM harvest_state WHERE source = ?", [key], conn=tx)
        return count > 0

    async def claim_due(self, worker: str, *, ttl: int, limit: int = 1) -> list[dict[str, Any]]:
        """Claim up to ``limit`` enabled sources whose run is due and that nobody holds."""
        if limit <= 0:
            return []
        now = self.now()
        if self.db.dialect == "postgres":
            async with self.db.transaction() as tx:
                rows = await self.db.fetch(
                    "SELECT id FROM harvest_source WHERE enabled = ? AND next_run <= ? AND claimed_until < ?"
                    " ORDER BY next_run, id LIMIT ? FOR UPDATE SKIP LOCKED",
                    [True, now, now, limit],
                    conn=tx,
                )
                ids = [int(r["id"]) for r in rows]
                for row_id in ids:
                    await self.db.execute(
                        "UPDATE harvest_source SET running_by = ?, claimed_until = ? WHERE id = ?",
                        [worker, now + ttl, row_id],
                        conn=tx,
                    )
        else:
            candidates = await self.db.fetch(
                "SELECT id FROM harvest_source WHERE enabled = ? AND next_run <= ? AND claimed_until < ?"
                " ORDER BY next_run, id LIMIT ?",
                [True, now, now, limit],
            )
            ids = []
            for row in candidates:
                if await self._claim_id(int(row["id"]), worker, now, ttl):
                    ids.append(int(row["id"]))
        return [r for r in [await self._by_id(i) for i in ids] if r is not None]

    async def claim(self, key: str, worker: str, *, ttl: int) -> dict[str, Any]:
        """Claim one source now, due or not (``essaim hub harvest KEY``)."""
        row = await self.get(key)
        if row is None:
            raise SourceError(f"no source {key!r} (see essaim hub sources list)")
        if not await self._claim_id(int(row["id"]), worker, self.now(), ttl):
            raise SourceError(f"{key!r} is being harvested by {row['running_by'] or 'another worker'}")
        claimed = await self._by_id(int(row["id"]))
        assert claimed is not None
        return claimed

    async def renew(self, row: Mapping[str, Any], worker: str, *, ttl: int) -> bool:
        """Extend this worker's claim (the heartbeat of a long harvest); False if it was lost."""
        count = await self.db.execute(
            "UPDATE harvest_source SET claimed_until = ? WHERE id = ? AND running_by = ?",
            [self.now() + ttl, row["id"], worker],
        )
        return count == 1

    async def _claim_id(self, row_id: int, worker: str, now: int, ttl: int) -> bool:
        count = await self.db.execute(
            "UPDATE harvest_source SET running_by = ?, claimed_until = ? WHERE id = ? AND claimed_until < ?",
            [worker, now + ttl, row_id, now],
        )
        return count == 1

    async def _by_id(self, row_id: int) -> dict[str, Any] | None:
        return await self.db.fetchone("SELECT * FROM harvest_source WHERE id = ?", [row_id])

    async def finish(self, row: Mapping[str, Any], worker: str, stats: HarvestStats | None) -> int:
        """Record the run, release the claim, schedule the next run; returns the next run's epoch."""
        now = self.now()
        interval = int(row["interval"])
        if stats is None:  # interrupted before the end (shutdown): try again soon
            next_run, last_stats, error = now, row["last_stats"], row["last_error"]
        else:
            failed = bool(stats.errors) or not stats.complete
            next_run = now + (min(interval, FAILURE_RETRY) if failed else interval)
            last_stats = json.dumps(stats_dict(stats), ensure_ascii=False)
            error = "; ".join(stats.errors)[:2000] if stats.errors else None
        await self.db.execute(
            "UPDATE harvest_source SET next_run = ?, last_run = ?, last_stats = ?, last_error = ?, running_by = NULL,"
            " claimed_until = 0 WHERE id = ? AND running_by = ?",
            [next_run, now if stats is not None else row["last_run"], last_stats, error, row["id"], worker],
        )
        return next_run
