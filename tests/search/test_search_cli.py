"""``essaim hub reindex`` and ``essaim hub reconcile``, run as commands beside a running hub, and without it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from node.context import NODE
from search.schema import document_id
from tests.oai_support import make_sheet
from tests.search.hub_support import eventually, found, hub_client, hub_settings, runtime

REPO = Path(__file__).resolve().parents[2]


def write_config(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    (data / "essaim.toml").write_text(
        f'role = "hub"\ndata_dir = "{data}"\nbase_url = "http://hub.essaim.test"\n',
        encoding="utf-8",
    )


async def essaim(data: Path, *argv: str) -> tuple[int, dict, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "essaim.cli",
        *argv,
        "--data-dir",
        str(data),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    return proc.returncode or 0, json.loads(lines[-1]) if lines else {}, err.decode()


async def test_reindex_and_reconcile_commands(tmp_path) -> None:
    data = tmp_path / "hub"
    write_config(data)
    settings = hub_settings(data)
    async with hub_client(settings) as client:
        ctx = client.server.app[NODE]
        rt = runtime(client)
        assert rt.client is not None
        async with ctx.db.transaction() as tx:
            await ctx.store.upsert_many([make_sheet(n, id="") for n in range(30)], tx=tx)
        await eventually(lambda: _is(found(client, q="projet"), 30))
        before = await rt.client.get_alias("sheets")

        code, report, err = await essaim(data, "hub", "reindex", "--grace", "0.2")
        assert code == 0, err
        assert report["documents"] == 30 and report["previous"] == before
        assert await rt.client.get_alias("sheets") == report["collection"] != before
        assert await found(client, q="projet") == 30

        # Damage: one document missing, one foreign.
        uri = (await ctx.store.get("projet-3")).id
        await rt.client.delete_documents("sheets", [document_id(uri)])
        foreign = {
            "id": "f" * 32,
            "title": "intrus",
            "stemmed": "intrus",
            "partner": "x",
            "datestamp": 1,
            "created": 1,
            "rotation": 1,
        }
        await rt.client.import_documents("sheets", [foreign])
        code, report, err = await essaim(data, "hub", "reconcile", "--dry-run")
        assert code == 1, err
        assert (report["missing"], report["stale"], report["extra"], report["queued"]) == (1, 0, 1, 0)
        code, report, err = await essaim(data, "hub", "reconcile")
        assert code == 0, err
        assert report["queued"] == 1 and report["deleted"] == 1
        await eventually(lambda: _is(found(client, q="projet"), 30))
        assert await found(client, q="intrus") == 0

    # The hub is stopped: the command starts the embedded server for its own run.
    code, report, err = await essaim(data, "hub", "reconcile", "--dry-run")
    assert code == 0, err
    assert report["sheets"] == report["documents"] == 30


async def _is(awaitable, value) -> bool:
    return (await awaitable) == value


async def test_commands_refuse_a_node(tmp_path) -> None:
    data = tmp_path / "node"
    data.mkdir()
    (data / "essaim.toml").write_text(f'role = "node"\ndata_dir = "{data}"\n', encoding="utf-8")
    code, _, err = await essaim(data, "hub", "reindex")
    assert code == 1 and "role = hub" in err
