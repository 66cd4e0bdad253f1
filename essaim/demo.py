"""The README's main command: three demo partner nodes and a hub harvesting them, browsable at once.

``essaim demo`` prepares ``var/demo/node-1..3`` (each its own SQLite database, partner,
port and seed of generated sheets) and ``var/demo/hub`` (role hub, allowed to reach the
nodes on loopback), starts every node as an ``essaim node serve`` subprocess (a process
holds one Tortoise database context, so nodes cannot share the hub's process), registers
the nodes as the hub's sources, harvests them at once, then serves the hub (its
scheduler keeps harvesting). Ctrl-C stops the hub and every node.

Idempotent: running it again re-imports the same generated files (nothing changes, no
datestamp moves), keeps the registered sources and harvests incrementally.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from essaim.settings import Settings, load_settings, render_toml

DEMO_EMAIL = "demo@essaim.example"
DEMO_PASSWORD = "demo-essaim-2026"  # printed at start; for the local demo only


@dataclass(frozen=True)
class DemoNode:
    number: int
    name: str
    username: str

    @property
    def seed(self) -> int:
        return 7 * self.number


NODES = (
    DemoNode(1, "Réseau Solidaire de Bretagne", "bretagne"),
    DemoNode(2, "Fondation Territoires Engagés", "territoires"),
    DemoNode(3, "Plateforme Innovation Sociale Occitanie", "occitanie"),
)
HUB_NAME = "Essaim — hub de démonstration"


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ESSAIM_")}


def prepare(
    data_dir: Path,
    *,
    port: int,
    count: int = 0,
    name: str = "Réseau Essaim de démonstration",
    username: str = "demo",
    role: str = "node",
    overrides: dict[str, Any] | None = None,
) -> Settings:
    config = data_dir / "essaim.toml"
    if not config.exists():
        settings = Settings(data_dir=str(data_dir), port=port, base_url=f"http://127.0.0.1:{port}", role=role)
        settings.partner.name = name
        settings.partner.username = username
        data_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(render_toml(settings), encoding="utf-8")
    settings = load_settings(
        config,
        environ=_clean_environ(),
        overrides={
            "port": port,
            "base_url": f"http://127.0.0.1:{port}",
            "data_dir": str(data_dir),
            **(overrides or {}),
        },
    )
    from node.keys import ensure_actor_key

    ensure_actor_key(settings.data_path)
    for secret in ("session", "oai-token"):
        settings.secret(secret)
    return settings


async def load(settings: Settings, count: int, *, seed: int = 7, handwritten: bool = True, prefix: str = "demo") -> Any:
    from essaim.app import node_context
    from node.auth import create_user
    from node.db import Database
    from node.demo import write_demo_file
    from node.mapping import load_mapping

    demo_file = settings.data_path / "demo-sheets.jsonl"
    write_demo_file(
        demo_file, count, seed=seed, partner=settings.partner.name, with_handwritten=handwritten, prefix=prefix
    )
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


# --------------------------------------------------------------------- node processes


def start_node(settings: Settings) -> subprocess.Popen[bytes]:
    """``essaim node serve`` for one demo node; its log goes to DATA_DIR/serve.log."""
    log = (settings.data_path / "serve.log").open("ab")
    try:
        return subprocess.Popen(  # noqa: S603 (our own command line)
            [sys.executable, "-m", "essaim.cli", "node", "serve", "--data-dir", settings.data_dir],
            env={**_clean_environ(), "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the demo node behind {url} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the demo node behind {url} did not answer within {timeout:.0f} s")


def stop_nodes(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------- hub


async def harvest_nodes(hub_settings: Settings, nodes: list[Settings]) -> list[Any]:
    """Register every demo node (once) as a source of the hub, then harvest them all now."""
    from essaim.hub import open_hub
    from node.db import Database

    db = Database(hub_settings.effective_database_url)
    await db.upgrade()
    await db.open()
    try:
        async with open_hub(hub_settings, db) as hub:
            known = {r["base_url"] for r in await hub.registry.all()}
            for node in nodes:
                if f"{node.base_url}/oai" not in known:
                    await hub.register(node.base_url, interval=hub_settings.hub.harvest_interval)
            return await hub.harvest_all()
    finally:
        await db.close()


def run_demo(args: argparse.Namespace) -> int:
    base = Path(args.data_dir or "var/demo")
    port = args.port
    per_node = max(1, args.count)
    nodes: list[Settings] = []
    for spec in NODES:
        settings = prepare(
            base / f"node-{spec.number}", port=port + spec.number, name=spec.name, username=spec.username
        )
        report = asyncio.run(
            load(settings, per_node, seed=spec.seed, handwritten=spec.number == 1, prefix=f"n{spec.number}")
        )
        print(f"{spec.name}: {report.summary()}")
        nodes.append(settings)
    allow = [f"127.0.0.1:{n.port}" for n in nodes]
    hub_settings = prepare(
        base / "hub", port=port, name=HUB_NAME, username="hub", role="hub", overrides={"outbound": {"allow": allow}}
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for settings in nodes:
            processes.append(start_node(settings))
        for settings, process in zip(nodes, processes, strict=True):
            wait_ready(settings.base_url, process)
        time.sleep(max(0.0, 1.05 - time.time() % 1))  # a node lists the records of past seconds only
        for stats in asyncio.run(harvest_nodes(hub_settings, nodes)):
            errors = f", errors: {'; '.join(stats.errors)}" if stats.errors else ""
            print(
                f"harvested {stats.source}: {stats.added} added, {stats.updated} updated, {stats.deleted} deleted,"
                f" {stats.rejected} rejected in {stats.duration:.1f}s{errors}"
            )
        print(f"\n  Essaim demo hub:  {hub_settings.base_url}/   (every node's sheets, harvested)")
        for settings in nodes:
            print(f"  node {settings.partner.name}: {settings.base_url}/  (OAI-PMH: {settings.base_url}/oai)")
        print(f"  node admin:       {nodes[0].base_url}/admin   ({DEMO_EMAIL} / {DEMO_PASSWORD})")
        print("  sources:          essaim hub sources list --data-dir", hub_settings.data_dir, "\n")
        if args.no_serve:
            return 0
        from aiohttp import web

        from essaim.app import build_app
        from essaim.logs import setup_logging

        setup_logging("text", "INFO")
        web.run_app(
            build_app(hub_settings), host=hub_settings.host, port=hub_settings.port, print=None, access_log=None
        )
        return 0
    finally:
        stop_nodes(processes)
