"""``essaim hub push``: the nodes the hub follows, what push delivered, what the harvest had to repair."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any


def cmd_hub_push(args: argparse.Namespace) -> int:
    from essaim.cli import _settings, _with_db
    from essaim.fedhub import status, sync

    settings = _settings(args)

    async def work(db: Any) -> Any:
        if args.follow:
            await sync(settings, db)
        return await status(settings, db)

    result = asyncio.run(_with_db(settings, work))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    for row in result:
        repaired = row.get("repaired_by_harvest", "-")
        print(
            f"{row['source']}  {row['actor']}  follow={row['follow']}  pushed={row['pushed']}"
            f"  repaired_by_harvest={repaired}"
        )
    return 0


def add_fedhub_parsers(hub: Any, common: argparse.ArgumentParser) -> None:
    p = hub.add_parser("push", parents=[common], help="live ingest: the nodes the hub follows and their health")
    p.add_argument("--follow", action="store_true", help="first follow every Essaim source not followed yet")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_hub_push)
