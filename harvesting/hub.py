"""The hub as a running program: the registry of harvested sources, claims, and the scheduler.

Sources live in the table ``harvest_source``. A worker (the scheduler inside ``essaim
node serve`` of a hub, or ``essaim hub harvest``) *claims* a source before harvesting it:
the claim names the worker and lapses at ``claimed_until``, so two hub processes sharing
one PostgreSQL database never harvest the same source at once, and a worker that dies
leaves a claim that frees itself. On PostgreSQL the due rows are picked with
``SELECT … FOR UPDATE SKIP LOCKED`` inside a transaction; on SQLite (one writer at a
time) a conditional ``UPDATE … WHERE id = ? AND claimed_until < now`` is checked by its
row count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from yarl import URL

from harvesting.harvester import HarvestConfig, Harvester, HarvestStats, Source
from harvesting.transport import ListPage, MalformedResponse, OaiTransport
from node.db import Database
from node.outbound import OutboundClient, OutboundError
from protocol.oai.namespaces import OAI, qn

logger = logging.getLogger("essaim.hub")

KINDS = ("essaim", "oai", "file", "crawl")
FAILURE_RETRY = 600  # seconds before a failed source is tried again (at most its interval)

PageHook = Callable[[str, ListPage], None]
Counter = Callable[[str, int], None]


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


async def probe(transport: OaiTransport, url: str) -> Probe:
    """Identify the endpoint (strictly: any defect is a :class:`HarvestError`) and list its formats."""
    base_url = oai_endpoint(url)
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


# --------------------------------------------------------------------- running


class _ObservedTransport(OaiTransport):
    """The transport, telling ``hook`` about every ListRecords page (progress bars)."""

    def __init__(self, inner: OaiTransport, key: str, hook: PageHook) -> None:
        super().__init__(inner.client, inner.config)
        self._key = key
        self._hook = hook

    async def list_records(self, base_url: str, arguments: Mapping[str, str]) -> ListPage:
        page = await super().list_records(base_url, arguments)
        self._hook(self._key, page)
        return page


class Hub:
    """Harvests registered sources into the hub's database, on demand or on schedule."""

    def __init__(
        self,
        db: Database,
        transport: OaiTransport,
        *,
        hub_base_url: str,
        claim_ttl: int = 120,
        config: HarvestConfig | None = None,
        count: Counter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.transport = transport
        self.hub_base_url = hub_base_url
        self.claim_ttl = claim_ttl
        self.config = config
        self.registry = SourceRegistry(db, clock=clock)
        self.worker = worker_id()
        self._count = count
        self.clock = clock

    def count(self, name: str, by: int = 1) -> None:
        if self._count is not None and by:
            self._count(name, by)

    async def register(
        self,
        url: str,
        *,
        name: str | None = None,
        prefix: str | None = None,
        interval: int = 3600,
        set_spec: str = "",
        key: str | None = None,
    ) -> dict[str, Any]:
        """Check the endpoint (Identify, ListMetadataFormats, NodeInfo) and add it as a source.

        It is an Essaim node when it offers the native ``essaim`` format or its NodeInfo names
        the ``essaim`` software; what both said is kept in the source's ``info``.
        """
        found = await probe(self.transport, url)
        about = await nodeinfo(self.transport.client, site_of(found.base_url))
        software = str(((about.get("software") or {}).get("name")) or "").lower()
        kind = "essaim" if found.kind == "essaim" or software == "essaim" else "oai"
        chosen = prefix or ("essaim" if kind == "essaim" else "oai_dc")
        if chosen not in found.prefixes:
            raise SourceError(f"{found.base_url} does not offer the metadata format {chosen!r} ({found.prefixes})")
        info = {
            "identify": {"repositoryName": found.name, "granularity": found.granularity},
            "formats": list(found.prefixes),
            "nodeinfo": about,
        }
        return await self.registry.add(
            base_url=found.base_url,
            name=name or found.name or found.base_url,
            kind=kind,
            prefix=chosen,
            set_spec=set_spec,
            granularity=found.granularity,
            interval=interval,
            key=key,
            info=info,
        )

    async def register_file(
        self,
        url: str,
        *,
        mapping: str,
        name: str | None = None,
        interval: int = 3600,
        key: str | None = None,
        partner: str | None = None,
        licence: str | None = None,
    ) -> dict[str, Any]:
        """Add a CSV or JSON file published at ``url``, read with an import mapping; fetched once to check."""
        from harvesting.files import check_config

        if not url.startswith(("http://", "https://")):
            raise SourceError(f"{url!r}: not an http(s) URL")
        try:
            config = check_config({"mapping": mapping, "partner": partner, "licence": licence})
        except ValueError as exc:
            raise SourceError(str(exc)) from None
        try:
            response = await self.transport.client.get(url, max_bytes=1024 * 1024 * 200)
        except OutboundError as exc:
            raise SourceError(f"{url}: {exc}") from None
        size = len(response.body)
        stem = URL(url).name or URL(url).host or url
        return await self.registry.add(
            base_url=url,
            name=name or partner or stem,
            kind="file",
            prefix="file",
            interval=interval,
            key=key,
            config=config,
            info={"content_type": response.headers.get("Content-Type"), "bytes": size},
        )

    async def register_crawl(
        self,
        site: str,
        *,
        name: str | None = None,
        interval: int = 86_400,
        key: str | None = None,
        sitemap: str | None = None,
        rules: str | None = None,
        delay: float = 1.0,
        max_pages: int = 10_000,
        partner: str | None = None,
    ) -> dict[str, Any]:
        """Add a partner site to crawl (sitemap + schema.org data or a rules file)."""
        from harvesting.crawler import check_config

        site = site.strip().rstrip("/")
        if not site.startswith(("http://", "https://")):
            raise SourceError(f"{site!r}: not an http(s) URL")
        try:
            config = check_config(
                {"sitemap": sitemap, "rules": rules, "delay": delay, "max_pages": max_pages, "partner": partner}
            )
        except ValueError as exc:
            raise SourceError(str(exc)) from None
        return await self.registry.add(
            base_url=site,
            name=name or partner or (URL(site).host or site),
            kind="crawl",
            prefix="crawl",
            interval=interval,
            key=key,
            config=config,
        )

    async def _harvest_row(self, row: Mapping[str, Any], on_page: PageHook | None) -> HarvestStats:
        kind = str(row["kind"])
        if kind == "file":
            from harvesting.files import FileHarvester

            files = FileHarvester(self.db, self.transport.client, hub_base_url=self.hub_base_url, clock=self.clock)
            return await files.harvest(row)
        if kind == "crawl":
            from harvesting.crawler import Crawler

            crawler = Crawler(self.db, self.transport.client, hub_base_url=self.hub_base_url, clock=self.clock)
            return await crawler.harvest(row)
        transport = _ObservedTransport(self.transport, str(row["key"]), on_page) if on_page else self.transport
        harvester = Harvester(self.db, transport, hub_base_url=self.hub_base_url, config=self.config, clock=self.clock)
        return await harvester.harvest(source_of(row))

    async def run_claimed(self, row: Mapping[str, Any], on_page: PageHook | None = None) -> HarvestStats:
        """Harvest a source this worker has claimed, then record the run and release the claim."""
        heartbeat = asyncio.create_task(self._heartbeat(row), name=f"claim {row['key']}")
        try:
            stats = await self._harvest_row(row, on_page)
        except asyncio.CancelledError:
            # Shutdown: the committed pages stay, the claim is released, the run is due again.
            await asyncio.shield(self.registry.finish(row, self.worker, None))
            raise
        except Exception as exc:  # a bug or a database failure: recorded, retried later
            logger.exception("hub.run_crashed", extra={"event": "hub.run_crashed", "source": row["key"]})
            stats = HarvestStats(source=str(row["key"]), errors=[f"crash: {type(exc).__name__}: {exc}"])
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        next_run = await self.registry.finish(row, self.worker, stats)
        self.count("harvest_runs_total")
        self.count("harvest_failures_total", 0 if stats.ok else 1)
        for name in ("pages", "added", "updated", "deleted", "rejected"):
            self.count(f"harvest_{name}_total", getattr(stats, name))
        logger.info(
            "hub.source_done",
            extra={
                "event": "hub.source_done",
                "source": row["key"],
                "ok": stats.ok,
                "next_run": next_run,
                **{k: v for k, v in stats_dict(stats).items() if k != "errors"},
                "errors": len(stats.errors),
            },
        )
        return stats

    async def _heartbeat(self, row: Mapping[str, Any]) -> None:
        """Renew the claim every third of its lifetime: a live worker keeps its source however long the
        harvest takes, while the claim of a killed worker lapses after ``claim_ttl`` seconds."""
        while True:
            await asyncio.sleep(max(0.5, self.claim_ttl / 3))
            try:
                if not await self.registry.renew(row, self.worker, ttl=self.claim_ttl):
                    logger.warning("hub.claim_lost", extra={"event": "hub.claim_lost", "source": row["key"]})
                    return
            except Exception:
                logger.exception("hub.claim_renew_failed", extra={"event": "hub.claim_renew_failed"})

    async def harvest_now(self, key: str, on_page: PageHook | None = None) -> HarvestStats:
        row = await self.registry.claim(key, self.worker, ttl=self.claim_ttl)
        return await self.run_claimed(row, on_page)

    async def harvest_all(self, on_page: PageHook | None = None) -> list[HarvestStats]:
        """Every enabled source, one after another, due or not (``essaim hub harvest --all``)."""
        out = []
        for row in await self.registry.all():
            if row["enabled"]:
                out.append(await self.harvest_now(str(row["key"]), on_page))
        return out

    async def run_due(self, limit: int = 1) -> list[HarvestStats]:
        """Claim and harvest up to ``limit`` due sources concurrently (one scheduler tick)."""
        rows = await self.registry.claim_due(self.worker, ttl=self.claim_ttl, limit=limit)
        return list(await asyncio.gather(*(self.run_claimed(r) for r in rows)))


async def run_scheduler(hub: Hub, *, workers: int, poll: float, stop: asyncio.Event | None = None) -> None:
    """Loop until cancelled (or ``stop`` is set): claim due sources, harvest up to ``workers`` at once."""
    stop = stop or asyncio.Event()
    running: set[asyncio.Task[HarvestStats]] = set()
    logger.info("hub.scheduler_started", extra={"event": "hub.scheduler_started", "worker": hub.worker})
    try:
        while not stop.is_set():
            try:
                rows = await hub.registry.claim_due(hub.worker, ttl=hub.claim_ttl, limit=workers - len(running))
            except Exception:
                logger.exception("hub.claim_failed", extra={"event": "hub.claim_failed"})
                rows = []
            for row in rows:
                task = asyncio.create_task(hub.run_claimed(row), name=f"harvest {row['key']}")
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(_log_crash)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)
    finally:
        for task in list(running):
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        logger.info("hub.scheduler_stopped", extra={"event": "hub.scheduler_stopped", "worker": hub.worker})


def _log_crash(task: asyncio.Task[HarvestStats]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "hub.run_crashed",
            exc_info=task.exception(),
            extra={"event": "hub.run_crashed", "task": task.get_name()},
        )
