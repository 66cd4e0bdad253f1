"""``essaim demo --no-serve``: three real node processes, a hub that registers and harvests them all."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from essaim.cli import main


def free_block(size: int = 4) -> int:
    """A base port such that base..base+size-1 are free on loopback (at the time of asking)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + size > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    pytest.skip("no block of free loopback ports")


def live_counts(path: Path, table_sql: str) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute(table_sql).fetchall())


def test_demo_no_serve_harvests_every_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "demo"
    port = free_block()
    assert main(["demo", "--no-serve", "--data-dir", str(base), "--port", str(port), "--count", "20"]) == 0
    out = capsys.readouterr().out
    assert out.count("harvested ") == 3 and "errors" not in out

    hub = live_counts(
        base / "hub" / "essaim.sqlite3", "SELECT source, COUNT(*) FROM sheet WHERE deleted = 0 GROUP BY source"
    )
    sources = live_counts(base / "hub" / "essaim.sqlite3", "SELECT base_url, key FROM harvest_source")
    assert len(sources) == 3
    # Registration read Identify and NodeInfo: the nodes say they run Essaim.
    infos = live_counts(base / "hub" / "essaim.sqlite3", "SELECT key, info FROM harvest_source")
    for info in map(json.loads, infos.values()):  # type: ignore[arg-type]
        assert info["nodeinfo"]["software"]["name"] == "essaim" and "essaim" in info["formats"]
    for n in (1, 2, 3):
        node = live_counts(base / f"node-{n}" / "essaim.sqlite3", "SELECT 'all', COUNT(*) FROM sheet WHERE deleted = 0")
        assert node["all"] >= 20
        assert hub[sources[f"http://127.0.0.1:{port + n}/oai"]] == node["all"]

    # No node process outlives the command.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(base) not in ps

    # Again: idempotent, incremental, nothing new.
    assert main(["demo", "--no-serve", "--data-dir", str(base), "--port", str(port), "--count", "20"]) == 0
    out = capsys.readouterr().out
    assert out.count(": 0 added, 0 updated, 0 deleted") == 3
