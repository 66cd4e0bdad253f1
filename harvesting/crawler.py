"""Partner sites without a node: a polite crawler of the sitemap's pages.

A ``crawl`` source names a site. Each run, through the hardened outbound client:

1. reads ``/robots.txt`` (RFC 9309: a 4xx means no rules, a 5xx or an unreachable file
   stops the run, since the site's wishes are unknown) and obeys its ``Disallow`` and
   ``Crawl-delay`` for the user agent ``essaim``;
2. reads the sitemap (the configured URL, else the robots ``Sitemap:`` lines, else
   ``/sitemap.xml``; a sitemap index is followed one level), strictly parsed like OAI-PMH
   (no DTD, no entities); only pages on the site's host are kept, and only those matching
   the rules file's ``match`` when there is one;
3. fetches the pages one at a time, ``delay`` seconds apart (at least the Crawl-delay),
   skipping a page whose ``<lastmod>`` is the one of the last complete run;
4. extracts each page's project (:mod:`harvesting.extract`: the site's rules file, else
   schema.org JSON-LD, else microdata) into an import row, and stores the rows through the
   node importer (identity mapping) and the hub's write path, like a file source.

A page gone from the sitemap, or answering 404/410, becomes a tombstone. A page that
fails (HTTP error, timeout, not HTML, no project, invalid values) keeps its previous
sheet, is counted as rejected and logged (``harvest.page_rejected`` /
``harvest.record_rejected``), and is fetched again next run.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.robotparser import RobotFileParser

from lxml import etree
from yarl import URL

from harvesting.extract import RulesError, SiteRules, extract, load_rules
from harvesting.files import Progress, read_into
from harvesting.harvester import HarvestStats
from harvesting.ingest import write_batch
from harvesting.normalise import Normaliser, rules_of
from harvesting.transport import _parser
from node.db import Database
from node.importer import Importer
from node.mapping import LIST_TARGETS, SCALAR_TARGETS, parse_mapping
from node.outbound import OutboundClient, OutboundError
from node.storage import SheetStore
from protocol.sheet import LICENCE_OUVERTE_2, Partner

logger = logging.getLogger("essaim.harvest")

AGENT = "essaim"
SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemaps.org limit, uncompressed
MAX_PAGE_BYTES = 5 * 1024 * 1024
MAX_DELAY = 60.0

Sleep = Callable[[float], Awaitable[None]]


class CrawlError(ValueError):
    """The crawl cannot go on (robots.txt unreachable, sitemap unreadable); the message says why."""


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a crawl source's config; raises ``ValueError`` for the operator."""
    out: dict[str, Any] = {}
    if config.get("sitemap"):
        sitemap = str(config["sitemap"])
        if not sitemap.startswith(("http://", "https://")):
            raise ValueError(f"the sitemap {sitemap!r} is not an http(s) URL")
        out["sitemap"] = sitemap
    if config.get("rules"):
        rules = Path(str(config["rules"])).resolve()
        load_rules(rules)  # RulesError names the problem
        out["rules"] = str(rules)
    delay = float(config.get("delay", 1.0))
    if not 0 <= delay <= MAX_DELAY:
        raise ValueError(f"the delay between two pages is 0 to {MAX_DELAY:.0f} seconds, not {delay}")
    out["delay"] = delay
    max_pages = int(config.get("max_pages", 10_000))
    if max_pages < 1:
        raise ValueError("max_pages must be at least 1")
    out["max_pages"] = max_pages
    for key in ("partner", "licence"):
        if config.get(key):
            out[key] = str(config[key])
    return out


def identity_mapping(description_format: str = "text") -> Any:
    """An import mapping whose columns are the targets themselves (what :mod:`harvesting.extract` emits)."""
    targets = sorted(SCALAR_TARGETS | LIST_TARGETS)
    return parse_mapping(
        {
            "name": "crawl",
            "format": "json",
            "description_format": description_format,
            "fields": {t: t for t in targets},
        },
        "crawl",
    )


def _decompress(body: bytes, limit: int) -> bytes:
    if body[:2] != b"\x1f\x8b":
        return body
    inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit:
        raise CrawlError(f"a gzipped sitemap larger than {limit} bytes once inflated")
    return out


def parse_sitemap(body: bytes, url: str) -> tuple[list[str], list[tuple[str, str | None]]]:
    """``(child sitemaps, [(page URL, lastmod)])`` of a sitemap or sitemap index; strict XML."""
    try:
        root = etree.fromstring(_decompress(body, MAX_SITEMAP_BYTES), _parser())
    except (etree.XMLSyntaxError, zlib.error, gzip.BadGzipFile) as exc:
        raise CrawlError(f"{url}: the sitemap does not parse: {str(exc)[:200]}") from None
    if root.getroottree().docinfo.doctype:
        raise CrawlError(f"{url}: a DOCTYPE is not allowed in a sitemap")
    local = etree.QName(root).localname if isinstance(root.tag, str) else ""
    ns = {"s": SITEMAP_NS}
    if local == "sitemapindex":
        return [(t or "").strip() for t in root.xpath("s:sitemap/s:loc/text()", namespaces=ns)], []
    if local != "urlset":
        raise CrawlError(f"{url}: root element {local!r} is neither urlset nor sitemapindex")
    pages = []
    for entry in root.findall(f"{{{SITEMAP_NS}}}url"):
        loc = (entry.findtext(f"{{{SITEMAP_NS}}}loc") or "").strip()
        lastmod = (entry.findtext(f"{{{SITEMAP_NS}}}lastmod") or "").strip() or None
        if loc:
            pages.append((loc, lastmod))
    return [], pages


class Crawler:
    """Harvests one ``crawl`` source (a row of ``harvest_source``) into the hub's database."""

    def __init__(
        self,
        db: Database,
        client: OutboundClient,
        *,
        hub_base_url: str,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.client = client
        self.hub_base_url = hub_base_url
        self._sleep = sleep
        self.clock = clock
        self._last_request = 0.0
        self._progress: Progress | None = None
        self.requests: list[str] = []  # every URL asked for in this run, in order (tests, logs)

    async def harvest(self, row: Mapping[str, Any], on_progress: Progress | None = None) -> HarvestStats:
        stats = HarvestStats(source=str(row["key"]))
        started = time.monotonic()
        self._progress = on_progress
        try:
            await self._run(row, stats)
        except (CrawlError, RulesError, OutboundError) as exc:
            stats.errors.append(f"crawl: {exc}"[:2000])
            logger.warning(
                "harvest.page_rejected",
                extra={
                    "event": "harvest.page_rejected",
                    "source": row["key"],
                    "url": row["base_url"],
                    "error": str(exc),
                },
            )
        stats.duration = time.monotonic() - started
        return stats

    async def _get(self, url: str, delay: float, max_bytes: int) -> Any:
        """One request, at least ``delay`` seconds after the previous one (one host, one at a time)."""
        wait = self._last_request + delay - time.monotonic()
        if self._last_request and wait > 0:
            await self._sleep(wait)
        self._last_request = time.monotonic()
        self.requests.append(url)
        # The client's own User-Agent ("Essaim/…", [outbound] user_agent): robots.txt groups match its
        # product token, "essaim".
        return await self.client.get(url, max_bytes=max_bytes, raise_for_status=False)

    async def _robots(self, site: str, delay: float) -> RobotFileParser:
        robots = RobotFileParser()
        url = f"{site}/robots.txt"
        try:
            response = await self._get(url, delay, 512 * 1024)
        except OutboundError as exc:
            raise CrawlError(
                f"{url} is unreachable ({exc}): the site's rules are unknown, nothing is crawled"
            ) from None
        if 400 <= response.status < 500:
            robots.allow_all = True
        elif response.status >= 500:
            raise CrawlError(f"{url} answers HTTP {response.status}: the site's rules are unknown, nothing is crawled")
        else:
            robots.parse(response.text().splitlines())
        return robots

    async def _sitemap_pages(
        self, site: str, robots: RobotFileParser, config: Mapping[str, Any], delay: float
    ) -> list[tuple[str, str | None]]:
        roots = [config["sitemap"]] if config.get("sitemap") else (robots.site_maps() or [f"{site}/sitemap.xml"])
        host = URL(site).host
        pages: dict[str, str | None] = {}
        queue = [(u, 0) for u in roots]
        while queue:
            url, depth = queue.pop(0)
            response = await self._get(url, delay, MAX_SITEMAP_BYTES)
            if response.status != 200:
                raise CrawlError(f"{url}: the sitemap answers HTTP {response.status}")
            children, found = parse_sitemap(response.body, url)
            if children and depth >= 1:
                raise CrawlError(f"{url}: a sitemap index inside a sitemap index")
            queue.extend((c, depth + 1) for c in children if URL(c).host == host)
            for loc, lastmod in found:
                if URL(loc).host == host:
                    pages[loc] = lastmod
        return list(pages.items())

    async def _run(self, row: Mapping[str, Any], stats: HarvestStats) -> None:
        key = str(row["key"])
        site = str(row["base_url"]).rstrip("/")
        config = json.loads(row["config"] or "{}")
        rules: SiteRules | None = load_rules(config["rules"]) if config.get("rules") else None
        previous = (json.loads(row.get("fetch_state") or "{}")).get("pages", {})
        self._last_request = 0.0
        robots = await self._robots(site, float(config.get("delay", 1.0)))
        delay = min(MAX_DELAY, max(float(config.get("delay", 1.0)), float(robots.crawl_delay(AGENT) or 0)))
        listed = await self._sitemap_pages(site, robots, config, delay)
        listed = [(u, m) for u, m in listed if (rules is None or rules.wants(u)) and robots.can_fetch(AGENT, u)]
        limit = int(config.get("max_pages", 10_000))
        keep: set[str] = set()  # pages whose sheet stays (fetched, skipped, failed or left for later)
        if len(listed) > limit:
            stats.errors.append(f"the sitemap lists {len(listed)} pages, only the first {limit} are crawled")
            keep.update(u for u, _ in listed[limit:])
            listed = listed[:limit]
        done: dict[str, str | None] = {}  # pages to remember as harvested at this lastmod
        rows: list[dict[str, Any]] = []
        for url, lastmod in listed:
            if self._progress is not None:
                self._progress(key, 1, len(listed))
            if lastmod is not None and previous.get(url) == lastmod:
                keep.add(url)
                done[url] = lastmod
                continue
            try:
                response = await self._get(url, delay, MAX_PAGE_BYTES)
            except OutboundError as exc:
                self._rejected(stats, key, url, f"unreachable: {exc}")
                keep.add(url)
                continue
            stats.pages += 1
            if response.status in (404, 410):
                continue  # gone: its sheet becomes a tombstone
            ctype = response.headers.get("Content-Type", "")
            mime = ctype.split(";", 1)[0].strip().lower()
            charset = next(
                (
                    v.strip().strip('"')
                    for k, _, v in (p.partition("=") for p in ctype.split(";")[1:])
                    if k.strip().lower() == "charset"
                ),
                None,
            )
            if response.status != 200 or mime not in ("text/html", "application/xhtml+xml"):
                self._rejected(stats, key, url, f"HTTP {response.status} {mime or 'without content type'}")
                keep.add(url)
                continue
            keep.add(url)
            try:
                found, how = extract(response.body, url, rules, charset)
            except ValueError as exc:
                found, how = None, str(exc)
            if found is None:
                self._rejected(stats, key, url, how)
                continue
            rows.append(found)
            done[url] = lastmod
        store = SheetStore(self.db, base_url=self.hub_base_url, source=key, hub=True, clock=self.clock)
        importer = Importer(
            store,
            identity_mapping(rules.description_format if rules else "text"),
            partner=Partner(name=config.get("partner") or str(row["name"] or key), url=site),
            licence=config.get("licence") or LICENCE_OUVERTE_2,
        )
        normaliser = Normaliser(await rules_of(self.db, key))
        origin: dict[str, Any] = {"baseURL": site, "metadataNamespace": "https://schema.org/", "kind": "crawl"}
        if rules is not None:
            origin["rules"], origin["rulesVersion"] = Path(rules.path).name, rules.version
            origin["metadataNamespace"] = f"urn:essaim:site-rules:{Path(rules.path).stem}:{rules.version}"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "pages.json"
            path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
            names = [r["local_id"] for r in rows]
            _, report = await read_into(
                store,
                importer,
                normaliser,
                path,
                stats,
                where=site,
                line_names=lambda n: names[n - 1] if 0 < n <= len(names) else site,
                origin=origin,
            )
        stats.rejected += report.error_count
        for error in report.errors:
            if 0 < error.line <= len(names):
                done.pop(names[error.line - 1], None)  # fetched again next run
        async with self.db.transaction() as tx:
            gone = sorted((await store.local_ids(conn=tx)) - keep)
            counts = await write_batch(store, normaliser, [], gone, tx=tx, origin=origin)
            await self.db.execute(
                "UPDATE harvest_source SET fetch_state = ? WHERE id = ?",
                [json.dumps({"pages": done}, ensure_ascii=False), row["id"]],
                conn=tx,
            )
        stats.deleted += counts.deleted
        stats.complete = True
        if stats.rejected:
            stats.errors.append(f"{stats.rejected} page(s) rejected (see the harvest.*_rejected log events)")

    @staticmethod
    def _rejected(stats: HarvestStats, key: str, url: str, reason: str) -> None:
        stats.rejected += 1
        logger.warning(
            "harvest.page_rejected",
            extra={"event": "harvest.page_rejected", "source": key, "url": url, "reason": reason[:500]},
        )
