"""The README's main command: a demo node with its own data, browsable at once.

Idempotent: running it again re-imports the same generated file (nothing
changes, no datestamp moves) and serves the same node.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from essaim.settings import Settings, load_settings, render_toml

DEMO_EMAIL = "demo@essaim.example"
DEMO_PASSWORD = "demo-essaim-2026"  # printed at start; for the local demo only


def prepare(data_dir: Path, *, port: int, count: int) -> Settings:
    config = data_dir / "essaim.toml"
    if not config.exists():
        settings = Settings(data_dir=str(data_dir), port=port, base_url=f"http://127.0.0.1:{port}")
        settings.partner.name = "Réseau Essaim de démonstration"
        settings.partner.username = "demo"
        data_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(render_toml(settings), encoding="utf-8")
    settings = load_settings(
        config,
        environ={k: v for k, v in os.environ.items() if not k.startswith("ESSAIM_")},
        overrides={"port": port, "base_url": f"http://127.0.0.1:{port}"},
    )
    from node.keys import ensure_actor_key

    ensure_actor_key(settings.data_path)
    return settings


async def load(settings: Settings, count: int) -> Any:
    from essaim.app import node_context
    from node.auth import create_user
    from node.db import Database
    from node.demo import write_demo_file
    from node.mapping import load_mapping

    demo_file = settings.data_path / "demo-sheets.jsonl"
    write_demo_file(demo_file, count, seed=7, partner=settings.partner.name)
    db = Database(settings.effective_database_url)
    await db.upgrade()
    await db.open()
    try:
        ctx = node_context(settings, db)
        try:
            report = await ctx.importer(load_mapping("native")).run(demo_file)
        finally:
            await ctx.close()
        await create_user(db, DEMO_EMAIL, DEMO_PASSWORD)
        return report
    finally:
        await db.close()


def run_demo(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or "var/demo")
    settings = prepare(data_dir, port=args.port, count=args.count)
    report = asyncio.run(load(settings, args.count))
    print(report.summary())
    print(f"\n  Essaim demo node: {settings.base_url}/")
    print(f"  admin:            {settings.base_url}/admin   ({DEMO_EMAIL} / {DEMO_PASSWORD})")
    print(f"  OAI-PMH:          {settings.base_url}/oai?verb=Identify\n")
    if args.no_serve:
        return 0
    from aiohttp import web

    from essaim.app import build_app
    from essaim.logs import setup_logging

    setup_logging("text", "INFO")
    web.run_app(build_app(settings), host=settings.host, port=settings.port, print=None, access_log=None)
    return 0
