"""Imports with worker processes ([node] write_workers) write exactly what in-process imports write.

Both paths run on the same file with the same clock into two SQLite databases, and
every stored row (sheet JSON, content hashes, stamps, OAI fragments, set rows) is
compared, as are the reports: errors with their lines, repeats across chunks, progress.
"""

from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from node import pipeline
from node.db import Database
from node.demo import write_demo_file
from node.geocode import make_resolver
from node.importer import Importer, ImportFailed, ImportReport
from node.mapping import load_mapping
from node.storage import Change, SheetStore
from protocol.sheet import Partner
from tests import oai_support
from tests.oai_support import T0, Clock, open_database

BASE = "https://noeud.essaim.test"
PARTNER = Partner(name="Réseau test", id=BASE + "/actor")
LICENCE = "https://creativecommons.org/licenses/by/4.0/"
TABLES = (
    "SELECT uri, source, local_id, stamp, deleted, content_hash, title, data, sets FROM sheet ORDER BY local_id",
    "SELECT s.local_id, f.prefix, f.xml FROM sheet_format f JOIN sheet s ON s.pk_id = f.sheet_pk"
    " ORDER BY s.local_id, f.prefix",
    "SELECT s.local_id, t.spec, t.stamp FROM sheet_set t JOIN sheet s ON s.pk_id = t.sheet_pk"
    " ORDER BY s.local_id, t.spec",
)


@pytest.fixture(autouse=True)
def every_file_goes_to_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "MIN_BYTES", 0)


async def _run(
    tmp: Path, name: str, files: list[Path], workers: int, backend: str = "sqlite"
) -> tuple[list[Any], list[Any], list[Any]]:
    """Import ``files`` one after the other; (reports or errors, every stored row, what listeners saw)."""
    if backend == "postgres":
        async with open_database("postgres") as db:  # emptied when opened
            return await _imports(db, files, workers)
    db = Database(f"sqlite:///{tmp}/{name}.sqlite3")
    await db.upgrade()
    await db.open()
    try:
        return await _imports(db, files, workers)
    finally:
        await db.close()


async def _imports(db: Database, files: list[Path], workers: int) -> tuple[list[Any], list[Any], list[Any]]:
    store = SheetStore(db, base_url=BASE, clock=Clock(T0))
    changes: list[Any] = []

    async def listener(tx: Any, batch: Sequence[Change]) -> None:
        changes.extend((c.kind, c.uri, c.local_id, c.stamp, c.sheet, c.source) for c in batch)

    store.listeners.append(listener)
    progress: list[int] = []
    importer = Importer(
        store,
        load_mapping("native"),
        partner=PARTNER,
        licence=LICENCE,
        resolver=make_resolver(),
        progress=progress.append,
        batch=150,
        workers=workers,
    )
    if workers:
        used = importer._pipeline(files[0])
        assert used is not None, "the import would not use the workers"
        used.close()
    reports: list[Any] = []
    for file in files:
        try:
            report = await importer.run(file)
        except ImportFailed as failed:
            report = failed.report
        reports.append(_comparable(report) | {"progress": progress[:]})
        progress.clear()
    rows = [await db.fetch(sql) for sql in TABLES]
    return reports, rows, sorted(changes, key=lambda c: (c[3], c[2]))


def _comparable(report: ImportReport) -> dict[str, Any]:
    data = report.as_dict()
    for volatile in ("file", "seconds"):
        data.pop(volatile)
    return data


def _edited(source: Path, target: Path) -> None:
    """Some sheets changed (with and without their own creation date), one removed, one new."""
    out = []
    for number, text in enumerate(source.read_text(encoding="utf-8").splitlines()):
        item = json.loads(text)
        if number == 3:
            continue
        if number % 7 == 0:
            item["title"] = item["title"] + " (mis à jour)"
            if number % 14 == 0:
                item.pop("created", None)  # storage keeps the stored creation date: done in-process
        out.append(json.dumps(item, ensure_ascii=False))
    out.append(json.dumps({"local_id": "nouvelle", "title": "Une fiche de plus", "themes": ["SOL"]}))
    target.write_text("\n".join(out) + "\n", encoding="utf-8")


async def test_workers_write_byte_for_byte_what_one_process_writes(tmp_path: Path) -> None:
    first = tmp_path / "first.jsonl"
    write_demo_file(first, 700, seed=21, partner=PARTNER.name)
    second = tmp_path / "second.jsonl"
    _edited(first, second)
    files = [first, first, second]
    alone = await _run(tmp_path, "alone", files, workers=0)
    workers = await _run(tmp_path, "workers", files, workers=2)
    assert workers[0] == alone[0]
    assert [r["created"] for r in alone[0]] == [alone[0][0]["sheets"], 0, 1]
    assert alone[0][1]["unchanged"] == alone[0][1]["sheets"]
    assert alone[0][2]["updated"] > 0
    for ours, theirs in zip(workers[1], alone[1], strict=True):
        assert ours == theirs
    # Change listeners (outbox, search queue) are handed the same sheets, decoded from the worker's JSON.
    assert len(alone[2]) == alone[0][0]["sheets"] + alone[0][2]["updated"] + 1
    assert workers[2] == alone[2]
    assert len(alone[1][1]) == 2 * alone[0][0]["sheets"] + 2  # two formats per sheet, and the new one
    assert alone[0][0]["progress"] == list(range(1, alone[0][0]["rows"] + 1))


async def test_workers_on_postgresql_write_what_one_process_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on PostgreSQL, where the workers read the stored hashes through their own connection."""
    monkeypatch.setattr(oai_support, "PG_DATABASE", oai_support.PG_DATABASE + "_pipeline")
    first = tmp_path / "first.jsonl"
    write_demo_file(first, 300, seed=23, partner=PARTNER.name)
    second = tmp_path / "second.jsonl"
    _edited(first, second)
    files = [first, first, second]
    alone = await _run(tmp_path, "alone", files, workers=0, backend="postgres")
    workers = await _run(tmp_path, "workers", files, workers=2, backend="postgres")
    assert alone[0][1]["unchanged"] == alone[0][1]["sheets"]
    assert alone[0][2]["updated"] > 0
    assert workers == alone


async def test_refused_lines_are_reported_with_their_numbers_and_nothing_is_written(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    write_demo_file(good, 400, seed=22, partner=PARTNER.name)
    lines = good.read_text(encoding="utf-8").splitlines()
    lines[4] = '{"local_id": "cassée", "title": '  # line 5: not JSON
    bad = json.loads(lines[199])
    bad["places"] = [{"lat": "nord"}]  # line 200: a field error
    lines[199] = json.dumps(bad, ensure_ascii=False)
    lines[349] = lines[10]  # line 350: line 11's id again, three chunks later
    lines.insert(300, "   ")  # a blank line still counts in the numbering
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")
    alone = await _run(tmp_path, "alone", [broken], workers=0)
    workers = await _run(tmp_path, "workers", [broken], workers=2)
    for key in alone[0][0]:
        assert workers[0][0][key] == alone[0][0][key], key
    assert workers == alone
    report = alone[0][0]
    assert not report["ok"]
    assert [(e["line"], e["field"]) for e in report["errors"]] == [
        (5, "line"),
        (200, "places[0].lat"),
        (351, "local_id"),
    ]
    assert "already used at item 11" in report["errors"][2]["message"]
    assert alone[1][0] == []  # all or nothing


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_worker_reads_the_committed_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """What lets a re-import skip rendering unchanged sheets: the hashes as committed, tombstones left out."""
    monkeypatch.setattr(oai_support, "PG_DATABASE", oai_support.PG_DATABASE + "_pipeline")
    file = tmp_path / "sheets.jsonl"
    write_demo_file(file, 20, seed=24, partner=PARTNER.name)
    async with open_database(backend) as db:
        store = SheetStore(db, base_url=BASE, clock=Clock(T0))
        importer = Importer(store, load_mapping("native"), partner=PARTNER, licence=LICENCE, workers=2)
        await importer.run(file)
        await store.delete("main-verte-rennes")
        spec = pipeline.spec_of(importer)
        assert spec is not None
        # As in a worker process: out of any running event loop (the PostgreSQL lookup runs its own).
        worker_spec = pickle.loads(spec)
        lookup = await asyncio.to_thread(pipeline.StoredHashes, worker_spec.sqlite_path, worker_spec.postgres_url)
        rows = await db.fetch("SELECT local_id, content_hash FROM sheet WHERE deleted = ?", [False])
        ids = [str(r["local_id"]) for r in rows]
        assert ids and "main-verte-rennes" not in ids
        assert await asyncio.to_thread(lookup.of, "", [*ids, "main-verte-rennes", "absent"]) == {
            str(r["local_id"]): str(r["content_hash"]) for r in rows
        }
        assert await asyncio.to_thread(lookup.of, "another-source", ids) == {}
        await asyncio.to_thread(lookup.close)
