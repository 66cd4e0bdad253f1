"""The hub's admin pages, driven like a browser against a hub app and a real node process:
sources with their health, add, harvest now, remove; the crosswalk and its unmapped-tag queue;
"also listed by" on the hub's sheet pages."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from aiohttp.test_utils import TestClient

from essaim.settings import load_settings
from harvesting.admin import HUB
from tests.harvesting.conftest import NodeProcess
from tests.node_support import admin_user, context, node_client, sign_in

COUNT = 12


async def wait_for(check, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def last_stats(client: TestClient, key: str) -> dict[str, object] | None:
    row = await context(client).db.fetchone("SELECT last_stats, running_by FROM harvest_source WHERE key = ?", [key])
    return json.loads(row["last_stats"]) if row and row["last_stats"] and not row["running_by"] else None


async def test_hub_admin_pages(node: NodeProcess, tmp_path: Path) -> None:
    await node.ctl("reset")
    await node.ctl("seed", count=COUNT)
    await asyncio.sleep(1.05 - time.time() % 1)
    (tmp_path / "essaim.toml").write_text(
        f'role = "hub"\nbase_url = "http://127.0.0.1:8999"\ndata_dir = "{tmp_path}"\n'
        f'[outbound]\nallow = ["127.0.0.1:{node.port}"]\n[hub]\npoll = 0.1\nharvest_interval = 600\n',
        encoding="utf-8",
    )
    settings = load_settings(tmp_path / "essaim.toml", environ={})
    async with node_client(settings) as client:
        page = await client.get("/admin/hub/sources", allow_redirects=False)
        assert page.status == 303 and page.headers["Location"].startswith("/admin/login")
        await admin_user(client)
        csrf = await sign_in(client)
        assert 'href="/admin/hub/sources"' in await (await client.get("/admin")).text()

        # Add a node by its URL; a dead URL is refused with the reason; a POST without token is 403.
        refused = await client.post(
            "/admin/hub/sources", data={"csrf": csrf, "kind": "oai", "url": "http://127.0.0.1:9/"}
        )
        assert "127.0.0.1:9" in await refused.text()
        assert (await client.post("/admin/hub/sources", data={"kind": "oai", "url": node.oai_url})).status == 403
        added = await client.post(
            "/admin/hub/sources", data={"csrf": csrf, "kind": "oai", "url": node.oai_url, "interval": "600"}
        )
        text = await added.text()
        assert "ajoutée" in text and "nœud de test" in text
        key = "banque-de-l-innovation-sociale-noeud-de-test"
        stats = await wait_for(lambda: last_stats(client, key))
        assert stats["added"] == COUNT  # type: ignore[index]
        text = await (await client.get("/admin/hub/sources")).text()
        assert re.search(r"<td>ok</td>\s*<td>[^<]+</td><td>12</td><td>0</td><td>0</td><td>0</td>", text), text

        # The queue shows the node's tag that nothing maps; a rule takes it out and re-harvests in full.
        text = await (await client.get(f"/admin/hub/crosswalk?source={key}")).text()
        assert "inclassable" in text
        bad = await client.post(
            "/admin/hub/crosswalk", data={"csrf": csrf, "source": key, "tag": "inclassable", "more": "ZZZ"}
        )
        assert "unknown taxonomy code" in await bad.text()
        done = await client.post(
            "/admin/hub/crosswalk", data={"csrf": csrf, "source": key, "tag": "inclassable", "more": "EDU", "back": key}
        )
        text = await done.text()
        assert "associé" in text and "Aucun mot-clé en attente" in text and "<td>EDU</td>" in text

        async def rerun() -> dict[str, object] | None:
            stats = await last_stats(client, key)
            return stats if stats and stats["updated"] == COUNT else None

        stats = await wait_for(rerun)  # the rule made the source due; the scheduler ran it in full
        row = await context(client).db.fetchone("SELECT data FROM sheet WHERE source = ? LIMIT 1", [key])
        assert row and "EDU" in json.loads(row["data"])["themes"]

        # "Harvest now" makes a source due at once.
        await context(client).db.execute("UPDATE harvest_source SET next_run = ?", [int(time.time()) + 9999])
        response = await client.post(f"/admin/hub/sources/{key}/harvest", data={"csrf": csrf})
        assert "prochain passage" in await response.text()
        row = await context(client).db.fetchone("SELECT next_run FROM harvest_source WHERE key = ?", [key])
        assert row and row["next_run"] <= time.time() + 1

        # The same projects from a second source: each sheet page lists the other as "also listed by".
        await client.server.app[HUB].register(node.oai_url, key="dc", prefix="oai_dc")
        await wait_for(lambda: last_stats(client, "dc"))
        row = await context(client).db.fetchone("SELECT uri FROM sheet WHERE source = ? LIMIT 1", [key])
        assert row is not None
        sheet = await client.get(row["uri"].removeprefix("http://127.0.0.1:8999"))
        text = await sheet.text()
        twin = await context(client).db.fetchone(
            "SELECT m.uri FROM hub_sheet_match m JOIN hub_sheet_match me ON me.cluster = m.cluster"
            " WHERE me.uri = ? AND m.source = ?",
            [row["uri"], "dc"],
        )
        assert twin is not None
        twin_path = twin["uri"].removeprefix("http://127.0.0.1:8999")
        assert sheet.status == 200 and "Aussi référencé par" in text and f'href="{twin_path}"' in text

        response = await client.post(f"/admin/hub/sources/{key}/delete", data={"csrf": csrf})
        text = await response.text()
        assert "retirée" in text and f"<code>{key}</code>" not in text
