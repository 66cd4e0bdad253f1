"""The embedded server: key file, loopback binding, supervision after kill -9."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest

from search.query import SearchQuery, run_search
from search.server import TypesenseNodes, raft_nodes_line

pytestmark = pytest.mark.asyncio(loop_scope="session")


def listening(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp, hex little-endian IPv4)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                out.add(addr)
    return out


async def test_key_file_and_loopback_binding(typesense) -> None:
    key_file = typesense.data_dir / "api-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == typesense.api_key and len(typesense.api_key) >= 40
    cmdline = Path(f"/proc/{typesense.pid}/cmdline").read_bytes().decode()
    assert typesense.api_key not in cmdline  # passed through the environment
    for port in (typesense.port, typesense.peering_port):
        assert listening(port) == {"0100007F"}, port  # 127.0.0.1 only
    saved = json.loads((typesense.data_dir / "ports.json").read_text())
    assert saved == {"api": typesense.port, "peering": typesense.peering_port}


async def test_supervisor_restarts_after_kill_9(typesense, client, collection, docs) -> None:
    before = typesense.pid
    os.kill(before, signal.SIGKILL)
    await typesense.wait_restarted(within=30)
    assert typesense.pid != before and typesense.restarts >= 1
    # /health alone is not readiness: wait for the documents to be loaded again.
    await typesense.wait_ready({collection: len(docs)}, ready_within=30)
    result = await run_search(client, SearchQuery(q="jardins"))  # the pooled session reconnects
    assert {h["document"]["local_id"] for h in result["hits"]} == {"1"}
    assert await client.get_alias("sheets") == collection


async def test_node_settings() -> None:
    nodes = TypesenseNodes.parse("http://10.0.0.1:8108, http://10.0.0.2:8108/,http://10.0.0.3:8108", "k")
    assert nodes.urls == ("http://10.0.0.1:8108", "http://10.0.0.2:8108", "http://10.0.0.3:8108")
    for bad in ("", "ftp://x", "10.0.0.1:8108"):
        with pytest.raises(ValueError):
            TypesenseNodes.parse(bad, "k")
    with pytest.raises(ValueError):
        TypesenseNodes(("http://a:1",), "")
    assert raft_nodes_line([("10.0.0.1", 8107, 8108), ("10.0.0.2", 8107, 8108)]) == (
        "10.0.0.1:8107:8108,10.0.0.2:8107:8108"
    )
