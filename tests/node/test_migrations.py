"""Schema migrations that move stored rows: nothing is lost, and the new schema answers the queries it is for."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from node.db import Database
from node.storage import SheetStore
from protocol.sheet import Partner, Sheet, Stage
from tests.oai_support import sqlite_migrated_to

MEMBERSHIPS = [
    (7, "theme", 100),
    (7, "theme:SAN", 100),
    (7, "stage:idee", 100),
    (9, "theme", 90),
    (9, "theme:EDU", 90),
    (9, "stage:idee", 120),
]


async def _migrated_to_0011(path: Path) -> None:
    sheets = [(7, "https://hub.test/sheets/a", "a", "1"), (9, "https://hub.test/sheets/b", "b", "2")]
    await sqlite_migrated_to(path, "node.0011_hub_match_by_sheet", sheets)
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO sheet_set (sheet_pk, spec, stamp) VALUES (?, ?, ?)", MEMBERSHIPS)
        conn.executemany(
            "INSERT INTO hub_sheet_match (sheet_pk, uri, source, block, title_key, cluster) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (7, "https://hub.test/sheets/a", "a", "c:rennes|jardins", "jardin partage", "dup-1"),
                (9, "https://hub.test/sheets/b", "b", "c:rennes|jardins", "jardin partage", "dup-1"),
            ],
        )


def _sheet(theme: str) -> Sheet:
    return Sheet(id="", local_id="x", title="Jardin", partner=Partner(name="Réseau"), themes=(theme,), stage=Stage.IDEE)


async def _plan(db: Database, sql: str, params: list[object]) -> str:
    rows = await db.fetch("EXPLAIN QUERY PLAN " + sql, params)
    return " / ".join(str(r["detail"]) for r in rows)


async def test_migration_0012_clusters_set_memberships_on_their_keyset(tmp_path: Path) -> None:
    """SQLite: the memberships move whole into a WITHOUT ROWID table keyed (spec, stamp, sheet_pk), still
    unique per (sheet, spec); the provider's keyset read and the harvest's block read need no sort."""
    path = tmp_path / "hub.sqlite3"
    await _migrated_to_0011(path)
    db = Database(f"sqlite:///{path}")
    try:
        assert "node.0012_sqlite_clustered_sets" in await db.upgrade()
        await db.open()
        rows = await db.fetch("SELECT sheet_pk, spec, stamp FROM sheet_set")
        assert sorted(tuple(r.values()) for r in rows) == sorted(MEMBERSHIPS)
        table = await db.fetchone("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'sheet_set'")
        assert table is not None and "WITHOUT ROWID" in table["sql"]
        with pytest.raises(Exception, match="UNIQUE"):
            await db.execute("INSERT INTO sheet_set (sheet_pk, spec, stamp) VALUES (7, 'theme', 130)")

        keyset = await _plan(
            db,
            "SELECT sheet_pk FROM sheet_set WHERE spec = ? AND stamp <= ? AND (stamp, sheet_pk) > (?, ?)"
            " ORDER BY stamp, sheet_pk LIMIT 10",
            ["stage:idee", 200, 100, 7],
        )
        assert "PRIMARY KEY" in keyset and "TEMP B-TREE" not in keyset
        ordered = await db.fetch(
            "SELECT sheet_pk, stamp FROM sheet_set WHERE spec = ? ORDER BY stamp, sheet_pk", ["stage:idee"]
        )
        assert [(r["sheet_pk"], r["stamp"]) for r in ordered] == [(7, 100), (9, 120)]

        block = await _plan(
            db,
            "SELECT block, source, title_key, cluster, MIN(uri) AS uri, COUNT(*) AS n FROM hub_sheet_match"
            " WHERE block IN (?, ?) GROUP BY block, source, title_key, cluster",
            ["c:rennes|jardins", "c:brest|atelier"],
        )
        assert "COVERING INDEX hub_sheet_match_group" in block and "TEMP B-TREE" not in block
        names = await db.fetch("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'hub_sheet_match'")
        assert "hub_sheet_match_block" not in {r["name"] for r in names}

        # Storage writes and rewrites memberships in the new table (an update replaces a sheet's sets).
        store = SheetStore(db, base_url="https://hub.test")
        await store.upsert(_sheet("SAN"))
        await store.upsert(_sheet("EDU"))
        written = await db.fetch(
            "SELECT ss.spec FROM sheet_set ss JOIN sheet s ON s.pk_id = ss.sheet_pk WHERE s.local_id = 'x'"
        )
        specs = {r["spec"] for r in written}
        assert "theme:EDU" in specs and "theme:SAN" not in specs and "stage:idee" in specs
    finally:
        await db.close()
