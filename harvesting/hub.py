"""The hub as a running program: harvesting claimed sources of every kind, and the scheduler.

The registry of sources and its claims are in :mod:`harvesting.sources` (re-exported here).
A worker renews its claim while a harvest runs (every third of ``claim_ttl``), so a long
harvest keeps its source and a killed worker's source is free again ``claim_ttl`` seconds
later; the next worker resumes the harvest from its last checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

from yarl import URL

from harvesting.harvester import HarvestConfig, Harvester, HarvestStats
from harvesting.pipeline import HarvestPipeline
from harvesting.sources import (
    FAILURE_RETRY,
    KINDS,
    Probe,
    SourceError,
    SourceRegistry,
    nodeinfo,
    oai_endpoint,
    probe,
    site_of,
    slug,
    source_of,
    stats_dict,
    worker_id,
)
from harvesting.transport import ListPage, OaiTransport, PageReader
from node.db import Database
from node.outbound import OutboundError

__all__ = [
    "FAILURE_RETRY",
    "KINDS",
    "Hub",
    "Probe",
    "SourceError",
    "SourceRegistry",
    "nodeinfo",
    "oai_endpoint",
    "probe",
    "run_scheduler",
    "site_of",
    "slug",
    "source_of",
    "stats_dict",
    "worker_id",
]

logger = logging.getLogger("essaim.hub")

# Progress of a harvest (CLI progress bars): source key, records just read, total when the source says.
PageHook = Callable[[str, int, int | None], None]
Counter = Callable[[str, int], None]


# --------------------------------------------------------------------- running


class _ObservedTransport(OaiTransport):
    """The transport, telling ``hook`` about every ListRecords page (progress bars)."""

    def __init__(self, inner: OaiTransport, key: str, hook: PageHook) -> None:
        super().__init__(inner.client, inner.config)
        self._key = key
        self._hook = hook

    async def list_records(
        self, base_url: str, arguments: Mapping[str, str], *, reader: PageReader | None = None
    ) -> ListPage:
        page = await super().list_records(base_url, arguments, reader=reader)
        self._hook(self._key, page.size, page.complete_size)
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
        pipeline: HarvestPipeline | None = None,
    ) -> None:
        """``pipeline``: worker processes decoding harvested pages for every OAI-PMH source (the
        caller owns it and closes it); None decodes in this process."""
        self.db = db
        self.pipeline = pipeline
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
            return await files.harvest(row, on_progress=on_page)
        if kind == "crawl":
            from harvesting.crawler import Crawler

            crawler = Crawler(self.db, self.transport.client, hub_base_url=self.hub_base_url, clock=self.clock)
            return await crawler.harvest(row, on_progress=on_page)
        transport = _ObservedTransport(self.transport, str(row["key"]), on_page) if on_page else self.transport
        harvester = Harvester(
            self.db,
            transport,
            hub_base_url=self.hub_base_url,
            config=self.config,
            clock=self.clock,
            pipeline=self.pipeline,
        )
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
