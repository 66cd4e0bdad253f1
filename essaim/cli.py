"""The ``essaim`` command line: one entry point for partners and hub operators."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from essaim import __version__
from essaim.logs import setup_logging
from essaim.settings import Settings, SettingsError, load_settings, render_toml

log = logging.getLogger("essaim.cli")


class CliError(Exception):
    """A user-facing failure: printed without a traceback, exit status 1 (or ``code``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- helpers


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    env = dict(os.environ)
    if getattr(args, "data_dir", None):
        env["ESSAIM_DATA_DIR"] = args.data_dir
        overrides.setdefault("data_dir", args.data_dir)
    return load_settings(getattr(args, "config", None), environ=env, overrides=overrides)


async def _with_db(settings: Settings, work: Callable[[Any], Awaitable[Any]], *, migrate: bool = True) -> Any:
    from node.db import Database

    db = Database(settings.effective_database_url)
    if migrate:
        await db.upgrade()
    await db.open()
    if settings.role == "hub":  # every sheet this command writes reaches the search index
        from search.indexer import install_queue

        install_queue(db)
        if settings.federation.enabled:  # and the hub's feed actors (announced by the running server)
            from federation.hubfeeds import install_feed_queue

            install_feed_queue(db)
    try:
        return await work(db)
    finally:
        await db.close()


def _store(settings: Settings, db: Any) -> Any:
    from essaim.app import node_context

    return node_context(settings, db)


# ---------------------------------------------------------------------- node


def cmd_node_init(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or os.environ.get("ESSAIM_DATA_DIR", "var/node"))
    config_path = data_dir / "essaim.toml"
    if config_path.exists() and not args.force:
        print(f"{config_path} exists already (use --force to overwrite); upgrading the database only.")
    else:
        settings = Settings(data_dir=str(data_dir))
        if args.base_url:
            settings.base_url = args.base_url.rstrip("/")
        settings.port = args.port or settings.port
        if args.name:
            settings.partner.name = args.name
        if args.database_url:
            settings.database_url = args.database_url
        if args.role:
            settings.role = args.role
        data_dir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(render_toml(settings), encoding="utf-8")
        print(f"wrote {config_path}")
    settings = load_settings(config_path, environ={k: v for k, v in os.environ.items() if k != "ESSAIM_CONFIG"})
    for name in ("session", "oai-token"):
        settings.secret(name)
    from node.keys import ensure_actor_key

    ensure_actor_key(settings.data_path)
    asyncio.run(_with_db(settings, lambda db: asyncio.sleep(0), migrate=True))
    print(f"database ready: {settings.effective_database_url.split('?')[0]}")
    print("next: essaim admin create-user YOU@EXAMPLE.ORG, then essaim node serve --data-dir", settings.data_dir)
    return 0


def cmd_node_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from essaim.app import build_app

    overrides = {"host": args.host, "port": args.port}
    settings = _settings(args, **overrides)
    setup_logging(settings.log_format, settings.log_level)
    app = build_app(settings, migrate=not args.no_migrate)
    log.info(
        "serving", extra={"event": "node.serve", "url": settings.base_url, "host": settings.host, "port": settings.port}
    )
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None, handler_cancellation=True)
    return 0


def _progress_bar(enabled: bool) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(unit=" rows", file=sys.stderr, mininterval=0.5, dynamic_ncols=True)

    def update(rows: int) -> None:
        bar.n = rows
        if rows % 500 == 0:
            bar.refresh()

    return update, bar.close


def cmd_node_import(args: argparse.Namespace) -> int:
    from node.importer import ImportFailed
    from node.mapping import MappingError, load_mapping
    from protocol.taxonomy import Crosswalk

    settings = _settings(args)
    path = Path(args.file)
    if not path.exists():
        raise CliError(f"{path}: no such file")
    try:
        mapping = load_mapping(args.mapping)
    except MappingError as exc:
        raise CliError(str(exc)) from None
    crosswalk = None
    if args.crosswalk:
        try:
            crosswalk = Crosswalk.from_dict(json.loads(Path(args.crosswalk).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise CliError(f"{args.crosswalk}: {exc}") from None
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    progress, close = _progress_bar(show)

    async def work(db: Any) -> Any:
        ctx = _store(settings, db)
        try:
            importer = ctx.importer(mapping, crosswalk=crosswalk, progress=progress)
            return await importer.run(path, dry_run=args.dry_run, delete_missing=args.delete_missing)
        finally:
            await ctx.close()

    try:
        report = asyncio.run(_with_db(settings, work))
    except ImportFailed as exc:
        close()
        print(exc.report.summary(), file=sys.stderr)
        if args.json:
            print(json.dumps(exc.report.as_dict(), ensure_ascii=False, indent=2))
        return 2
    except MappingError as exc:
        close()
        raise CliError(str(exc)) from None
    close()
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        print(report.summary())
        if report.unmapped_tags:
            print(
                f"unmapped tags ({len(report.unmapped_tags)}): "
                + ", ".join(f"{t} ×{n}" for t, n in sorted(report.unmapped_tags.items()))
            )
        if report.unknown_codes:
            print("unknown taxonomy codes: " + ", ".join(f"{c} ×{n}" for c, n in sorted(report.unknown_codes.items())))
        if report.geocoding:
            print("places: " + ", ".join(f"{how} {n}" for how, n in sorted(report.geocoding.items())))
        if report.unresolved_places:
            print("unresolved places: " + "; ".join(report.unresolved_places[:30]))
    return 0


def cmd_node_export(args: argparse.Namespace) -> int:
    from node.export import export_chunks

    settings = _settings(args)

    async def work(db: Any) -> None:
        ctx = _store(settings, db)
        out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: ASYNC230 (CLI: nothing else runs)
        try:
            async for chunk in export_chunks(ctx.store, args.format, licence=ctx.licence, source=settings.base_url):
                out.write(chunk)
        finally:
            if out is not sys.stdout:
                out.close()

    asyncio.run(_with_db(settings, work))
    return 0


# ---------------------------------------------------------------------- tokens, users, db


def cmd_token(args: argparse.Namespace) -> int:
    from node.auth import create_token, revoke_token

    settings = _settings(args)

    async def work(db: Any) -> Any:
        if args.token_command == "create":
            return await create_token(db, args.name)
        if args.token_command == "revoke":
            return await revoke_token(db, args.name)
        return await db.fetch("SELECT name, created, last_used, revoked FROM api_token ORDER BY name")

    try:
        result = asyncio.run(_with_db(settings, work))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.token_command == "create":
        print(result)
        print("keep it now: it is shown only once", file=sys.stderr)
    elif args.token_command == "revoke":
        if not result:
            raise CliError(f"no token named {args.name!r}")
        print(f"revoked {args.name}")
    else:
        for row in result:
            print(f"{row['name']}\t{'revoked' if row['revoked'] else 'active'}")
    return 0


def cmd_admin_create_user(args: argparse.Namespace) -> int:
    from node.auth import create_user

    settings = _settings(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password (10 characters or more): ")
    try:
        asyncio.run(_with_db(settings, lambda db: create_user(db, args.email, password)))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"admin user {args.email} ready: sign in at {settings.base_url}/admin")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from node.db import Database

    settings = _settings(args)

    async def upgrade() -> list[str]:
        db = Database(settings.effective_database_url)
        try:
            return await db.upgrade()
        finally:
            await db.close()  # an open SQLite connection keeps the process alive at exit

    applied = asyncio.run(upgrade())
    print("applied: " + (", ".join(applied) if applied else "nothing, the schema is current"))
    return 0


SQLITE_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
SQLITE_ON_OFF = {0: "OFF", 1: "ON"}


def _readable_pragmas(pragmas: dict[str, Any]) -> dict[str, Any]:
    """SQLite answers numbers for some pragmas: name them as the settings do (``synchronous: FULL``)."""
    out = dict(pragmas)
    if isinstance(out.get("synchronous"), int):
        out["synchronous"] = SQLITE_SYNCHRONOUS.get(out["synchronous"], out["synchronous"])
    if isinstance(out.get("foreign_keys"), int):
        out["foreign_keys"] = SQLITE_ON_OFF.get(out["foreign_keys"], out["foreign_keys"])
    return out


def _mask_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@")))
    return url


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print the effective settings and the database's state; exit 1 when the database is not usable."""
    settings = _settings(args)

    async def work(db: Any) -> dict[str, Any]:
        from node.storage import sheet_counts

        live, deleted = await sheet_counts(db)
        return {
            "database": {"url": db.safe_url(), "dialect": db.dialect, "pragmas": _readable_pragmas(await db.pragmas())},
            "sheets": {"live": live, "deleted": deleted},
        }

    shown = settings.as_dict()
    shown["database_url"] = _mask_password(shown["database_url"])
    report: dict[str, Any] = {"version": __version__, "settings": shown}
    status = 0
    try:
        report.update(asyncio.run(_with_db(settings, work, migrate=False)))
    except Exception as exc:  # doctor reports, it does not crash
        message = str(exc)
        if "no such table" in message or "does not exist" in message:
            message += " (the schema is missing: run essaim db upgrade)"
        report["database"] = {"url": _mask_password(settings.effective_database_url), "error": message}
        status = 1
    print(json.dumps(report, ensure_ascii=False, indent=2, default=str))
    return status


# ---------------------------------------------------------------------- hub (harvested sources)


def _when(epoch: Any) -> str:
    if not epoch:
        return "-"
    import time as _time

    return _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(int(epoch)))


def _source_summary(row: dict[str, Any]) -> dict[str, Any]:
    stats = json.loads(row["last_stats"]) if row.get("last_stats") else {}
    return {
        "key": row["key"],
        "name": row["name"],
        "base_url": row["base_url"],
        "kind": row["kind"],
        "prefix": row["prefix"],
        "set": row["set_spec"] or None,
        "config": json.loads(row["config"]) if row.get("config") else None,
        "info": json.loads(row["info"]) if row.get("info") else None,
        "interval": int(row["interval"]),
        "enabled": bool(row["enabled"]),
        "last_run": row["last_run"],
        "stats": stats,
        "last_error": row["last_error"],
        "next_run": row["next_run"],
        "running_by": row["running_by"],
    }


def cmd_hub_sources(args: argparse.Namespace) -> int:
    from essaim.hub import open_hub
    from harvesting.hub import SourceError
    from harvesting.transport import HarvestError

    settings = _settings(args)
    action = args.sources_command

    async def work(db: Any) -> Any:
        async with open_hub(settings, db) as hub:
            if action == "add":
                interval = args.every or settings.hub.harvest_interval
                if args.kind == "file":
                    return await hub.register_file(
                        args.url,
                        mapping=args.mapping or "",
                        name=args.name,
                        interval=interval,
                        key=args.key,
                        partner=args.partner,
                        licence=args.licence,
                    )
                if args.kind == "crawl":
                    return await hub.register_crawl(
                        args.url,
                        name=args.name,
                        interval=interval,
                        key=args.key,
                        sitemap=args.sitemap,
                        rules=args.rules,
                        delay=args.delay,
                        max_pages=args.max_pages,
                        partner=args.partner,
                    )
                row = await hub.register(args.url, name=args.name, prefix=args.prefix, interval=interval, key=args.key)
                if row["kind"] == "essaim":  # the hub follows the node's actor: its changes arrive live
                    from essaim.fedhub import follow_new_source

                    row = {**row, "followed": [f["actor"] for f in await follow_new_source(settings, db, row["key"])]}
                return row
            if action == "remove":
                return await hub.registry.remove(args.key)
            return await hub.registry.all()

    try:
        result = asyncio.run(_with_db(settings, work))
    except (SourceError, HarvestError) as exc:
        raise CliError(str(exc)) from None
    if action == "add":
        where = f"{result['base_url']}, {result['prefix']}"
        print(f"added {result['key']}: {result['name']} ({where}), every {result['interval']} s")
        for actor in result.get("followed", []):
            print(f"following {actor}: its Create / Update / Delete are ingested as they happen")
    elif action == "remove":
        if not result:
            raise CliError(f"no source {args.key!r}")
        print(f"removed {args.key} (its harvested sheets stay on the hub)")
    elif args.json:
        print(json.dumps([_source_summary(r) for r in result], ensure_ascii=False, indent=2))
    else:
        header = tuple("key|name|last run|added|updated|deleted|rejected|errors|duration|next run".split("|"))
        lines = [header]
        for row in result:
            s = _source_summary(row)["stats"]
            lines.append(
                (
                    row["key"],
                    row["name"][:40],
                    _when(row["last_run"]),
                    *(str(s.get(k, "-")) for k in ("added", "updated", "deleted", "rejected")),
                    str(len(s["errors"])) if "errors" in s else "-",
                    f"{s['duration']:.1f}s" if "duration" in s else "-",
                    "running" if row["running_by"] else _when(row["next_run"]) if row["enabled"] else "disabled",
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for line in lines:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0


def cmd_hub_harvest(args: argparse.Namespace) -> int:
    from essaim.hub import open_hub
    from harvesting.hub import SourceError, stats_dict

    settings = _settings(args)
    if not args.key and not args.all:
        raise CliError("name a source KEY, or --all")
    show = sys.stderr.isatty() if args.progress is None else args.progress
    bars: dict[str, Any] = {}

    def on_page(key: str, records: int, total: int | None) -> None:
        from tqdm import tqdm

        bar = bars.get(key)
        if bar is None:
            bar = bars[key] = tqdm(desc=key, unit=" records", file=sys.stderr, dynamic_ncols=True)
        if total is not None:
            bar.total = total
        bar.update(records)

    async def work(db: Any) -> Any:
        async with open_hub(settings, db) as hub:
            hook = on_page if show else None
            if args.all:
                return await hub.harvest_all(hook)
            return [await hub.harvest_now(args.key, hook)]

    try:
        results = asyncio.run(_with_db(settings, work))
    except SourceError as exc:
        raise CliError(str(exc)) from None
    finally:
        for bar in bars.values():
            bar.close()
    failed = 0
    for stats in results:
        data = stats_dict(stats)
        failed += 0 if stats.ok else 1
        if args.json:
            print(json.dumps({"source": stats.source, **data}, ensure_ascii=False))
        else:
            print(
                f"{stats.source}: {stats.pages} pages, {stats.added} added, {stats.updated} updated,"
                f" {stats.deleted} deleted, {stats.rejected} rejected, {len(stats.errors)} errors"
                f" in {stats.duration:.1f}s" + ("" if stats.ok else f" ({'; '.join(stats.errors)})")
            )
    return 1 if failed else 0


def _index_worker(settings: Settings, db: Any, client: Any) -> Any:
    from essaim.hub import search_config
    from search.indexer import IndexWorker

    conf = search_config(settings)
    return IndexWorker(db, client, config=conf.indexer_config, clusters=conf.clusters)


def cmd_hub_reindex(args: argparse.Namespace) -> int:
    """Build a new collection from the database, swap the alias, drain the queue."""
    from essaim.hub import open_search, search_config
    from search.maintenance import reindex

    settings = _settings(args)
    if settings.role != "hub":
        raise CliError("reindex is for a hub (role = hub in the settings)")

    async def work(db: Any) -> Any:
        async with open_search(settings) as client:
            clusters = search_config(settings).clusters
            report = await reindex(db, client, batch=args.batch, drop_grace=args.grace, clusters=clusters)
            drained = await _index_worker(settings, db, client).drain()
            return {**report.as_dict(), "queue_drained": drained}

    result = asyncio.run(_with_db(settings, work))
    print(json.dumps(result, ensure_ascii=False))
    return 1 if result["refused_count"] else 0


def cmd_hub_reconcile(args: argparse.Namespace) -> int:
    """Compare database and index (ids and datestamps); repair unless --dry-run."""
    from essaim.hub import open_search
    from search.maintenance import reconcile

    settings = _settings(args)
    if settings.role != "hub":
        raise CliError("reconcile is for a hub (role = hub in the settings)")

    async def work(db: Any) -> Any:
        async with open_search(settings) as client:
            result = await reconcile(db, client, repair=not args.dry_run)
            if not args.dry_run:
                result["queue_drained"] = await _index_worker(settings, db, client).drain()
            return result

    result = asyncio.run(_with_db(settings, work))
    print(json.dumps(result, ensure_ascii=False))
    differs = result["missing"] or result["stale"] or result["extra"]
    return 1 if args.dry_run and differs else 0


# ---------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from essaim.demo import run_demo

    return run_demo(args)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from node.demo import write_demo_file

    count = write_demo_file(Path(args.output), args.count, seed=args.seed, partner=args.partner)
    print(f"wrote {count} sheets to {args.output}")
    return 0


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="essaim", description="Essaim: federated bank of social-innovation sheets")
    parser.add_argument("--version", action="version", version=f"essaim {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="settings file (default: DATA_DIR/essaim.toml, or $ESSAIM_CONFIG)")
    common.add_argument("--data-dir", help="data directory (default: var/node, or $ESSAIM_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run and manage a partner node").add_subparsers(
        dest="node_command", required=True
    )
    p = node.add_parser("init", parents=[common], help="create settings, keys and the database")
    p.add_argument("--base-url", help="public URL of the node")
    p.add_argument("--port", type=int)
    p.add_argument("--name", help="the partner's name")
    p.add_argument("--database-url", help="postgres://… (default: SQLite in the data directory)")
    p.add_argument("--role", choices=["node", "hub"])
    p.add_argument("--force", action="store_true", help="overwrite an existing settings file")
    p.set_defaults(func=cmd_node_init)
    p = node.add_parser("serve", parents=[common], help="serve the node over HTTP")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations at start")
    p.set_defaults(func=cmd_node_serve)
    p = node.add_parser("import", parents=[common], help="import a CSV or JSON file (all or nothing)")
    p.add_argument("file")
    p.add_argument("--mapping", required=True, help="a built-in mapping (apcis, simple, native) or a .toml file")
    p.add_argument("--crosswalk", help="JSON file mapping the partner's tags to taxonomy codes")
    p.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    p.add_argument("--delete-missing", action="store_true", help="delete sheets absent from the file")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    p.set_defaults(func=cmd_node_import)
    p = node.add_parser("export", parents=[common], help="export every sheet")
    p.add_argument("--format", choices=["csv", "json", "jsonl", "geojson"], default="json")
    p.add_argument("--output", "-o", help="file to write (default: standard output)")
    p.set_defaults(func=cmd_node_export)

    token = sub.add_parser("token", help="API bearer tokens").add_subparsers(dest="token_command", required=True)
    for name, help_text in (("create", "create a token (printed once)"), ("revoke", "revoke a token")):
        p = token.add_parser(name, parents=[common], help=help_text)
        p.add_argument("name")
        p.set_defaults(func=cmd_token)
    p = token.add_parser("list", parents=[common], help="list tokens")
    p.set_defaults(func=cmd_token)

    admin = sub.add_parser("admin", help="admin users").add_subparsers(dest="admin_command", required=True)
    p = admin.add_parser("create-user", parents=[common], help="create a user (or reset the password)")
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_admin_create_user)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    p = db.add_parser("upgrade", parents=[common], help="apply pending migrations")
    p.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("doctor", parents=[common], help="effective settings and database pragmas as JSON")
    p.set_defaults(func=cmd_doctor)

    hub = sub.add_parser("hub", help="the hub: harvested sources, search index").add_subparsers(
        dest="hub_command", required=True
    )
    sources = hub.add_parser("sources", help="the sources the hub harvests").add_subparsers(
        dest="sources_command", required=True
    )
    p = sources.add_parser(
        "add", parents=[common], help="add a source: an OAI-PMH endpoint (an Essaim node), a file, a site to crawl"
    )
    p.add_argument("url", help="the node's URL (or its /oai endpoint), the file's URL, or the site to crawl")
    p.add_argument(
        "--kind",
        choices=["oai", "file", "crawl"],
        default="oai",
        help="oai (default: Essaim node or any OAI-PMH provider, probed), file (CSV/JSON), crawl (sitemap pages)",
    )
    p.add_argument("--mapping", help="file: the import mapping (built-in name or .toml path)")
    p.add_argument("--partner", help="file, crawl: partner name for the sheets (default: the source's name)")
    p.add_argument("--licence", help="file: licence URL of the sheets (default: Licence Ouverte 2.0)")
    p.add_argument("--sitemap", help="crawl: sitemap URL (default: robots.txt Sitemap lines, else /sitemap.xml)")
    p.add_argument("--rules", help="crawl: the site's extraction rules file (TOML; default: schema.org data)")
    p.add_argument("--delay", type=float, default=1.0, help="crawl: seconds between two pages (default 1)")
    p.add_argument("--max-pages", type=int, default=10_000, help="crawl: pages per run at most")
    p.add_argument("--name", help="display name (default: the repositoryName of Identify)")
    p.add_argument("--every", type=int, help="seconds between harvests (default: [hub] harvest_interval)")
    p.add_argument("--prefix", help="metadataPrefix (default: essaim when offered, else oai_dc)")
    p.add_argument("--key", help="source key (default: from the name)")
    p.set_defaults(func=cmd_hub_sources)
    p = sources.add_parser("list", parents=[common], help="sources and their last run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_hub_sources)
    p = sources.add_parser("remove", parents=[common], help="forget a source (its sheets stay)")
    p.add_argument("key")
    p.set_defaults(func=cmd_hub_sources)
    p = hub.add_parser("harvest", parents=[common], help="harvest a source (or --all) now")
    p.add_argument("key", nargs="?")
    p.add_argument("--all", action="store_true", help="every enabled source")
    p.add_argument("--json", action="store_true", help="one JSON line of stats per source")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bars (default: on a terminal)"
    )
    p.set_defaults(func=cmd_hub_harvest)
    from essaim.cli_hub import add_crosswalk_parsers, add_rules_parsers

    add_crosswalk_parsers(hub, common)
    from essaim.cli_fedhub import add_fedhub_parsers

    add_fedhub_parsers(hub, common)
    add_rules_parsers(hub)
    p = hub.add_parser("reindex", parents=[common], help="rebuild the search index from the database (no downtime)")
    p.add_argument("--batch", type=int, default=1000, help="sheets per import batch")
    p.add_argument("--grace", type=float, default=5.0, help="seconds before the old collection is dropped")
    p.set_defaults(func=cmd_hub_reindex)
    p = hub.add_parser("reconcile", parents=[common], help="compare database and search index, and repair")
    p.add_argument("--dry-run", action="store_true", help="only report (exit status 1 when they differ)")
    p.set_defaults(func=cmd_hub_reconcile)

    p = sub.add_parser("demo", parents=[common], help="set up demo data and serve it (the README's main command)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--count", type=int, default=300, help="generated sheets per demo node")
    p.add_argument("--no-serve", action="store_true", help="prepare and harvest, then stop (no server)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("demo-data", help="generate plausible French demo sheets (JSON lines)")
    p.add_argument("output")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--partner", default="Réseau de démonstration")
    p.set_defaults(func=cmd_demo_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, SettingsError) as exc:
        print(f"essaim: {exc}", file=sys.stderr)
        return getattr(exc, "code", 1)
    except OSError as exc:  # an unreadable file, an unreachable database server...
        print(f"essaim: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from node.db import DatabaseError

        if isinstance(exc, DatabaseError):
            print(f"essaim: {exc}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
