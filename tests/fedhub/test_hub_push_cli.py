"""``essaim hub sources add URL`` of an Essaim node makes the hub follow the node's actor; ``essaim hub push``
shows it (the running hub's worker delivers the queued Follow)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.federation.conftest import REPO, Node, free_port


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    (tmp_path / "node").mkdir()
    n = Node(free_port(), tmp_path / "node", "delta", "")
    n.start()
    try:
        yield n
    finally:
        n.stop()


def essaim(tmp_path: Path, node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ESSAIM_ROLE": "hub",
        "ESSAIM_DATA_DIR": str(tmp_path / "hub"),
        "ESSAIM_BASE_URL": "http://127.0.0.1:9",
        "ESSAIM_OUTBOUND_ALLOW": f"127.0.0.1:{node.port}",
    }
    return subprocess.run(
        [sys.executable, "-m", "essaim.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_sources_add_follows_the_node(node: Node, tmp_path: Path) -> None:
    added = essaim(tmp_path, node, "hub", "sources", "add", node.base)
    assert added.returncode == 0, added.stderr
    assert f"following {node.actor}" in added.stdout
    database = next((tmp_path / "hub").glob("*.sqlite3"))
    with sqlite3.connect(database) as db:
        ((source, actor, kind, repo_id),) = db.execute("SELECT source, actor, kind, repo_id FROM hub_push_source")
        assert (actor, kind, repo_id) == (node.actor, "node", "localhost.localdomain")
        assert db.execute("SELECT actor, status FROM ap_following").fetchall() == [(node.actor, "pending")]
        ((payload,),) = db.execute("SELECT a.payload FROM ap_delivery d JOIN ap_activity a ON a.id = d.activity_id")
        assert json.loads(payload)["type"] == "Follow" and json.loads(payload)["object"] == node.actor
    status = essaim(tmp_path, node, "hub", "push", "--json")
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)
    assert row["source"] == source and row["follow"] == "pending" and row["pushed"] == 0
