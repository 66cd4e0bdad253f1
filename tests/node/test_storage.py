"""Sheet storage on both backends: datestamps that move only on a real change, tombstones, listing.

Every test runs on SQLite (a temporary file) and on PostgreSQL (skipped, with the
reason, when the server at 127.0.0.1:5432 is unreachable).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import typing
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.db import Database
from node.storage import BATCH, Change, SheetStore, _hashed_json, _to_json, prepare, sheet_counts
from protocol.oai.metadata import render_formats
from protocol.oai.sets import set_specs
from protocol.sheet import Partner, Place, Sheet, Stage, Tombstone, sheet_replacer, sheet_to_dict
from tests import oai_support
from tests.oai_support import T0, Clock, make_sheet, open_database

BASE = "https://noeud.essaim.test"
PG_DATABASE = oai_support.PG_DATABASE + "_node"


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Database]:
    # A PostgreSQL database of these suites' own: other suites empty theirs, maybe while these run.
    monkeypatch.setattr(oai_support, "PG_DATABASE", PG_DATABASE)
    async with open_database(request.param) as database:
        yield database


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(db: Database, clock: Clock) -> SheetStore:
    return SheetStore(db, base_url=BASE + "/", clock=clock)


def fresh(n: int, **overrides: Any) -> Sheet:
    """A complete sheet without an id: storage derives it from the local id."""
    return make_sheet(n, id="", **overrides)


def visible(sheet: Sheet | Tombstone | None) -> dict[str, Any]:
    """What a reader compares: everything but the storage's own datestamp."""
    assert isinstance(sheet, Sheet), sheet
    data = sheet_to_dict(sheet)
    data.pop("datestamp", None)
    return data


def at(stamp: float) -> datetime:
    return datetime.fromtimestamp(int(stamp), tz=UTC)


async def row_of(db: Database, local_id: str) -> dict[str, Any]:
    row = await db.fetchone("SELECT pk_id, uri, stamp, deleted, data, title FROM sheet WHERE local_id = ?", [local_id])
    assert row is not None, f"no row for {local_id}"
    return row


async def sets_of(db: Database, pk: int) -> dict[str, int]:
    rows = await db.fetch("SELECT spec, stamp FROM sheet_set WHERE sheet_pk = ?", [pk])
    return {str(r["spec"]): int(r["stamp"]) for r in rows}


async def formats_of(db: Database, pk: int) -> set[str]:
    rows = await db.fetch("SELECT prefix FROM sheet_format WHERE sheet_pk = ?", [pk])
    return {str(r["prefix"]) for r in rows}


# --------------------------------------------------------------------------- create


async def test_upsert_creates_with_stable_uri_and_second_precision_datestamp(
    db: Database, store: SheetStore, clock: Clock
) -> None:
    clock.now = T0 + 0.987  # a fraction of a second must not reach the datestamp
    result = await store.upsert(fresh(1))

    assert result.status == "created"
    assert result.stamp == T0
    assert result.local_id == "projet-1"
    assert result.uri.startswith(BASE + "/sheets/")
    assert "//sheets" not in result.uri  # trailing slash of base_url removed
    # Derived from the partner's id alone: the same on every call and every store of this node.
    assert result.uri == store.make_uri("projet-1")
    assert result.uri == SheetStore(db, base_url=BASE).make_uri("projet-1")
    assert store.make_uri("projet-2") != result.uri
    assert SheetStore(db, base_url="https://autre.test").make_uri("projet-1") != result.uri
    assert SheetStore(db, base_url=BASE, source="https://a.test/oai").make_uri("projet-1") != result.uri

    stored = await store.get("projet-1")
    assert isinstance(stored, Sheet)
    assert stored.id == result.uri
    assert stored.datestamp == at(T0)
    assert stored.datestamp.tzinfo is not None and stored.datestamp.utcoffset().total_seconds() == 0
    assert stored.datestamp.microsecond == 0
    assert stored.created == datetime(2020, 1, 1, tzinfo=UTC)  # the partner's own creation date is kept
    assert stored.modified == at(T0)  # none given: the write's instant
    assert visible(stored) == visible(replace(fresh(1), id=result.uri, modified=at(T0)))
    assert await store.get_by_uri(result.uri) == stored
    assert await store.get("projet-404") is None
    assert await store.get_by_uri(BASE + "/sheets/nothing") is None

    row = await row_of(db, "projet-1")
    assert int(row["stamp"]) == T0
    assert not row["deleted"]
    assert row["title"] == fresh(1).title
    assert json.loads(row["data"])["datestamp"] == "2023-11-14T22:13:20Z"
    assert await store.count() == 1


async def test_sheet_without_created_date_gets_the_write_instant(store: SheetStore, clock: Clock) -> None:
    await store.upsert(fresh(1, created=None))
    clock.tick(120)
    await store.upsert(fresh(1, created=None, title="Nouveau titre"))
    stored = await store.get("projet-1")
    assert isinstance(stored, Sheet)
    assert stored.created == at(T0)  # kept from the first write, not moved by the update
    assert stored.modified == at(T0 + 120)
    assert stored.datestamp == at(T0 + 120)


# --------------------------------------------------------------------------- change detection


async def test_identical_upsert_leaves_the_datestamp_alone(db: Database, store: SheetStore, clock: Clock) -> None:
    first = await store.upsert(fresh(1))
    before = await store.get("projet-1")
    clock.tick(3600)
    # Bookkeeping dates and the id a caller may carry are not content.
    again = replace(fresh(1), datestamp=at(T0 + 50), modified=at(T0 + 60), id="https://ailleurs.test/x")
    result = await store.upsert(again)

    assert result.status == "unchanged"
    assert result.stamp == T0
    assert result.uri == first.uri  # the stored URI wins over the one the caller sent
    after = await store.get("projet-1")
    assert after == before
    assert isinstance(after, Sheet) and after.datestamp == at(T0)
    row = await row_of(db, "projet-1")
    assert int(row["stamp"]) == T0
    assert set((await sets_of(db, int(row["pk_id"]))).values()) == {T0}


async def test_real_change_bumps_the_datestamp(db: Database, store: SheetStore, clock: Clock) -> None:
    created = await store.upsert(fresh(1))
    clock.tick(90)
    result = await store.upsert(fresh(1, title="Un autre titre"))

    assert result.status == "updated"
    assert result.stamp == T0 + 90
    assert result.uri == created.uri
    stored = await store.get("projet-1")
    assert isinstance(stored, Sheet)
    assert stored.title == "Un autre titre"
    assert stored.datestamp == at(T0 + 90)
    assert stored.created == datetime(2020, 1, 1, tzinfo=UTC)
    row = await row_of(db, "projet-1")
    assert int(row["stamp"]) == T0 + 90
    assert row["title"] == "Un autre titre"
    # Set memberships carry the new datestamp too (selective harvests page on it).
    assert set((await sets_of(db, int(row["pk_id"]))).values()) == {T0 + 90}
    assert await store.count() == 1

    clock.tick(10)  # a nested change counts as much as a title
    changed_place = (Place(commune="Brest", departement="29", lat=48.39, lon=-4.49),)
    assert (await store.upsert(fresh(1, title="Un autre titre", places=changed_place))).status == "updated"
    assert (await store.get("projet-1")).datestamp == at(T0 + 100)  # type: ignore[union-attr]


# --------------------------------------------------------------------------- deletion


async def test_delete_leaves_a_tombstone(db: Database, store: SheetStore, clock: Clock) -> None:
    created = await store.upsert(fresh(1))
    await store.upsert(fresh(2))
    pk = int((await row_of(db, "projet-1"))["pk_id"])
    assert await formats_of(db, pk)  # pre-rendered metadata exists while the sheet lives
    clock.tick(30)

    result = await store.delete("projet-1")
    assert result.status == "deleted"
    assert result.uri == created.uri
    assert result.stamp == T0 + 30

    tomb = await store.get("projet-1")
    assert isinstance(tomb, Tombstone)
    assert tomb == Tombstone(id=created.uri, local_id="projet-1", datestamp=at(T0 + 30))
    assert await store.get_by_uri(created.uri) == tomb
    assert await store.count() == 1
    assert await store.count(include_deleted=True) == 2
    assert await store.local_ids() == {"projet-2"}
    assert [s.local_id async for s in store.iter_sheets()] == ["projet-2"]
    assert (await store.search_titles("projet"))[0] == 1

    row = await row_of(db, "projet-1")
    assert row["deleted"] and row["data"] is None and int(row["stamp"]) == T0 + 30
    assert await formats_of(db, pk) == set()
    # Memberships stay, stamped with the deletion, so a selective harvest announces it.
    memberships = await sets_of(db, pk)
    assert memberships and set(memberships.values()) == {T0 + 30}

    clock.tick(30)
    again = await store.delete("projet-1")
    assert again.status == "missing" and again.uri == created.uri
    assert (await store.get("projet-1")).datestamp == at(T0 + 30)  # type: ignore[union-attr]
    unknown = await store.delete("jamais-vu")
    assert unknown.status == "missing" and unknown.uri == "" and unknown.stamp is None


async def test_recreating_after_deletion_revives_the_same_uri(db: Database, store: SheetStore, clock: Clock) -> None:
    created = await store.upsert(fresh(1, created=None))
    clock.tick(10)
    await store.delete("projet-1")
    clock.tick(10)

    result = await store.upsert(fresh(1, created=None))  # the very same content as before the deletion
    assert result.status == "created"
    assert result.uri == created.uri
    assert result.stamp == T0 + 20
    stored = await store.get("projet-1")
    assert isinstance(stored, Sheet)
    assert stored.datestamp == at(T0 + 20)
    assert stored.created == at(T0 + 20)  # a new life: the tombstone kept no creation date
    assert await store.count() == 1 and await store.count(include_deleted=True) == 1
    pk = int((await row_of(db, "projet-1"))["pk_id"])
    assert await formats_of(db, pk)
    assert set((await sets_of(db, pk)).values()) == {T0 + 20}

    clock.tick(10)
    assert (await store.upsert(fresh(1, created=None))).status == "unchanged"


async def test_sheet_counts_follow_writes_deletions_and_revivals(store: SheetStore, clock: Clock) -> None:
    """The index-only counts of /metrics and doctor agree with the sheet table's deleted flags."""
    db = store.db
    assert await sheet_counts(db) == (0, 0)
    for n in range(1, 5):
        await store.upsert(fresh(n))
    assert await sheet_counts(db) == (4, 0)
    clock.tick(1)
    await store.delete("projet-2")
    await store.delete("projet-3")
    assert await sheet_counts(db) == (2, 2)
    clock.tick(1)
    await store.upsert(fresh(2))  # revived
    await store.upsert(fresh(1, title="Autre titre"))  # rewritten: its fragments replaced, not added
    rows = await db.fetch("SELECT deleted, COUNT(*) AS n FROM sheet GROUP BY deleted")
    by_flag = {bool(r["deleted"]): int(r["n"]) for r in rows}
    assert await sheet_counts(db) == (by_flag.get(False, 0), by_flag.get(True, 0)) == (3, 1)


# --------------------------------------------------------------------------- transactions


async def test_batch_writes_commit_together(db: Database, store: SheetStore, clock: Clock) -> None:
    async with db.transaction() as tx:
        results = await store.upsert_many([fresh(n) for n in range(5)], tx=tx)
        deleted = await store.delete_many(["projet-3", "projet-3", "projet-404"], tx=tx)
    assert [r.status for r in results] == ["created"] * 5
    assert [r.status for r in deleted] == ["deleted", "missing", "missing"]  # a repeated id is deleted once
    assert await store.count() == 4
    assert await store.count(include_deleted=True) == 5

    with pytest.raises(ValueError, match="appears twice"):
        async with db.transaction() as tx:
            await store.upsert_many([fresh(7), fresh(8), fresh(7)], tx=tx)
    assert await store.get("projet-7") is None


async def test_rows_of_a_batch_are_numbered_in_the_order_given(db: Database, store: SheetStore) -> None:
    """OAI-PMH lists one datestamp's sheets by row number: a batch's order is kept (PostgreSQL inserts
    a batch as one statement of arrays)."""
    order = [7, 2, 9, 0, 5, 11, 3]
    async with db.transaction() as tx:
        await store.upsert_many([fresh(n) for n in order], tx=tx)
    rows = await db.fetch("SELECT local_id FROM sheet ORDER BY pk_id")
    assert [r["local_id"] for r in rows] == [f"projet-{n}" for n in order]
    sets = await db.fetch("SELECT s.local_id, t.spec FROM sheet_set t JOIN sheet s ON s.pk_id = t.sheet_pk")
    assert {r["local_id"] for r in sets} == {f"projet-{n}" for n in order}
    formats = await db.fetch("SELECT sheet_pk, prefix FROM sheet_format")
    assert len(formats) == 2 * len(order)


async def test_rollback_leaves_nothing(db: Database, store: SheetStore, clock: Clock) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction() as tx:
            results = await store.upsert_many([fresh(n) for n in range(12)], tx=tx)
            assert [r.status for r in results] == ["created"] * 12
            await store.delete_many(["projet-1", "projet-2"], tx=tx)
            raise Boom

    assert await store.count(include_deleted=True) == 0
    for table in ("sheet", "sheet_set", "sheet_format"):
        row = await db.fetchone(f"SELECT COUNT(*) AS n FROM {table}")
        assert row is not None and int(row["n"]) == 0, table

    # A rollback of changes to existing rows restores them exactly.
    await store.upsert(fresh(1))
    clock.tick(5)
    with pytest.raises(Boom):
        async with db.transaction() as tx:
            await store.upsert_many([fresh(1, title="Changé")], tx=tx)
            await store.delete_many(["projet-1"], tx=tx)
            raise Boom
    stored = await store.get("projet-1")
    assert isinstance(stored, Sheet) and stored.title == fresh(1).title and stored.datestamp == at(T0)


async def test_listeners_run_inside_the_writing_transaction(db: Database, store: SheetStore, clock: Clock) -> None:
    seen: list[tuple[str, str, int, bool]] = []

    async def record(tx: Any, changes: Sequence[Change]) -> None:
        # The listener sees the uncommitted row through the transaction it is given.
        for c in changes:
            row = await db.fetchone("SELECT deleted FROM sheet WHERE pk_id = ?", [c.pk], conn=tx)
            assert row is not None
            seen.append((c.kind, c.local_id, c.stamp, c.sheet is None))

    store.listeners.append(record)
    await store.upsert(fresh(1))
    await store.upsert(fresh(1))  # unchanged: nobody is told
    clock.tick(1)
    await store.upsert(fresh(1, title="B"))
    await store.delete("projet-1")
    await store.upsert(fresh(1, title="B"))
    assert seen == [
        ("create", "projet-1", T0, False),
        ("update", "projet-1", T0 + 1, False),
        ("delete", "projet-1", T0 + 1, True),
        ("create", "projet-1", T0 + 1, False),
    ]

    async def refuse(tx: Any, changes: Sequence[Change]) -> None:
        raise RuntimeError("outbox is full")

    store.listeners.append(refuse)
    with pytest.raises(RuntimeError, match="outbox"):
        await store.upsert(fresh(2))
    assert await store.get("projet-2") is None  # the failing listener undid the write


# --------------------------------------------------------------------------- reading


async def test_iter_sheets_streams_by_keyset_over_several_batches(
    db: Database, store: SheetStore, clock: Clock
) -> None:
    total = BATCH + 37  # more than one storage batch too
    async with db.transaction() as tx:
        results = await store.upsert_many([fresh(n, places=(), matches=()) for n in range(total)], tx=tx)
    assert sum(r.status == "created" for r in results) == total
    clock.tick(1)
    await store.upsert(fresh(5, places=(), matches=(), title="modifié"))  # moves to the end of the stamp order
    clock.tick(1)
    await store.delete("projet-6")

    ids = [s.local_id async for s in store.iter_sheets(batch=100)]
    assert len(ids) == len(set(ids)) == total - 1
    assert "projet-6" not in ids
    assert ids[-1] == "projet-5"
    assert ids[:3] == ["projet-0", "projet-1", "projet-2"]  # equal stamps: insertion (pk) order
    assert [s.local_id async for s in store.iter_sheets()] == ids  # one batch gives the same order
    assert [s.local_id async for s in store.iter_sheets(batch=1)][:4] == ids[:4]
    first = await anext(aiter(store.iter_sheets(batch=7)))
    assert isinstance(first, Sheet) and first.datestamp == at(T0)


async def test_search_titles(store: SheetStore, clock: Clock) -> None:
    titles = {
        "ecole": "École du numérique",
        "epicerie": "Épicerie solidaire de Saint-Malo",
        "jardin": "Jardin partagé",
        "bio": "100% bio",
        "ecolo": "Éco-lieu ÉCOLOGIQUE",
    }
    for n, (local_id, title) in enumerate(titles.items()):
        await store.upsert(fresh(n, local_id=local_id, title=title))
        clock.tick(1)
    await store.upsert(fresh(9, local_id="supprime", title="École fermée"))
    await store.delete("supprime")

    async def ids(text: str, **kw: int) -> tuple[int, list[str]]:
        total, rows = await store.search_titles(text, **kw)
        return total, [r["local_id"] for r in rows]

    # Case, accents and hyphens do not matter, in SQLite as in PostgreSQL.
    assert await ids("école") == (1, ["ecole"])
    assert await ids("ECOLE") == (1, ["ecole"])
    assert await ids("ecol") == (2, ["ecolo", "ecole"])  # newest first
    assert await ids("écologique") == (1, ["ecolo"])
    assert await ids("saint malo") == (1, ["epicerie"])
    assert await ids("PARTAGÉ") == (1, ["jardin"])
    # The partner's id matches too.
    assert await ids("jardin") == (1, ["jardin"])
    assert await ids("epicer") == (1, ["epicerie"])
    # SQL wildcards are plain characters.
    assert await ids("%") == (1, ["bio"])
    assert await ids("_") == (0, [])
    assert await ids("nulle part") == (0, [])

    total, rows = await store.search_titles("", limit=2)
    assert total == 5 and [r["local_id"] for r in rows] == ["ecolo", "bio"]
    assert set(rows[0]) >= {"uri", "local_id", "title", "stamp"}
    assert rows[0]["uri"] == store.make_uri("ecolo") and rows[0]["title"] == titles["ecolo"]
    assert await ids("", limit=2, offset=2) == (5, ["jardin", "epicerie"])
    assert await ids("i", limit=2, offset=1) == (5, ["bio", "jardin"])
    assert await ids("i", limit=10, offset=10) == (5, [])


async def test_local_ids(db: Database, store: SheetStore) -> None:
    assert await store.local_ids() == set()
    for n in range(4):
        await store.upsert(fresh(n))
    await store.delete("projet-2")
    assert await store.local_ids() == {"projet-0", "projet-1", "projet-3"}
    other = SheetStore(db, base_url=BASE, source="https://autre.test/oai")
    await other.upsert(make_sheet(9))
    assert await other.local_ids() == {"projet-9"}  # sources are kept apart
    assert await store.local_ids() == {"projet-0", "projet-1", "projet-3"}
    assert await store.count() == 3 and await other.count() == 1
    async with db.transaction() as tx:  # readable inside a writing transaction (one SQLite connection)
        await store.upsert_many([fresh(5)], tx=tx)
        assert await store.local_ids(conn=tx) == {"projet-0", "projet-1", "projet-3", "projet-5"}


# --------------------------------------------------------------------------- derived rows


async def test_set_memberships_are_written(db: Database, store: SheetStore, clock: Clock) -> None:
    sheet = fresh(
        1,
        themes=("SOL",),
        subthemes=("GRA",),
        stage=Stage.ESSAIMAGE,
        places=(
            Place(commune="Rennes", departement="35", region="53", lat=48.11, lon=-1.68),
            Place(postcode="29200", commune="Brest"),  # département and région from the postcode
        ),
    )
    await store.upsert(sheet)
    pk = int((await row_of(db, "projet-1"))["pk_id"])
    assert await sets_of(db, pk) == dict.fromkeys(
        [
            "theme",
            "theme:SOL",
            "theme:SOL:GRA",
            "region",
            "region:53",
            "departement",
            "departement:35",
            "departement:29",
            "stage",
            "stage:essaimage",
        ],
        T0,
    )
    row = await row_of(db, "projet-1")
    sets_column = await db.fetchone("SELECT sets FROM sheet WHERE pk_id = ?", [pk])
    assert sets_column is not None and "theme:SOL:GRA" in str(sets_column["sets"]).split()
    assert await formats_of(db, pk) >= {"oai_dc"}
    assert json.loads(row["data"])["themes"] == ["SOL"]

    # A change replaces the memberships: nothing stale stays behind.
    clock.tick(60)
    await store.upsert(replace(sheet, themes=("ENV",), subthemes=(), stage=None, places=()))
    assert await sets_of(db, pk) == {"theme": T0 + 60, "theme:ENV": T0 + 60}

    # A hub also files sheets by partner.
    hub = SheetStore(db, base_url=BASE, source="https://partenaire.test/oai", hub=True, clock=clock)
    await hub.upsert(make_sheet(2, partner=Partner(name="Réseau Œuvre & Cie")))
    hub_pk = int(
        (await db.fetchone("SELECT pk_id FROM sheet WHERE source = ?", ["https://partenaire.test/oai"]))["pk_id"]  # type: ignore[index]
    )
    assert {"partner", "partner:reseau-oeuvre-cie"} <= set(await sets_of(db, hub_pk))


async def test_sets_of_all_sheets_listed_by_spec(db: Database, store: SheetStore) -> None:
    async with db.transaction() as tx:
        await store.upsert_many([fresh(n) for n in range(8)], tx=tx)
    rows = await db.fetch("SELECT spec, COUNT(*) AS n FROM sheet_set GROUP BY spec")
    counts = {str(r["spec"]): int(r["n"]) for r in rows}
    # make_sheet cycles through four theme pairs and five départements.
    assert counts["theme"] == 8
    assert counts["theme:SOL"] == 2 and counts["theme:ENV"] == 2
    assert counts["departement:35"] == 2 and counts["departement:2A"] == 1
    assert counts["stage"] == 8


async def test_storage_settings(db: Database) -> None:
    settings = await db.pragmas()
    if db.dialect == "sqlite":
        assert str(settings["journal_mode"]).lower() == "wal"
        assert int(settings["synchronous"]) == 2  # FULL
        assert int(settings["foreign_keys"]) == 1
        assert int(settings["busy_timeout"]) >= 1000
    else:
        assert settings["server_version"]
        assert settings["synchronous_commit"] in ("on", "remote_apply", "remote_write", "local")


def _checkpointers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "sqlite-checkpointer" and t.is_alive()}


async def test_the_wal_is_copied_back_by_the_checkpointer_not_by_the_writer(tmp_path: Path) -> None:
    """Commits wake the checkpointer thread, which copies the WAL into the database file. The writer's own
    automatic checkpoint is only a safety net, 10,000 pages away: here the file grows after a few dozen."""
    before = _checkpointers()
    db = Database(f"sqlite:///{tmp_path}/essaim.sqlite3")
    await db.upgrade()
    await db.open()
    try:
        mine = _checkpointers() - before
        assert len(mine) == 1
        row = await db.fetchone("PRAGMA wal_autocheckpoint")
        assert row is not None and int(next(iter(row.values()))) == 10000
        store = SheetStore(db, base_url="https://noeud.essaim.test")
        main = tmp_path / "essaim.sqlite3"
        await asyncio.sleep(0.2)  # the migrations' own pages copied back
        size = main.stat().st_size
        for batch in range(3):
            async with db.transaction() as tx:
                await store.upsert_many([fresh(batch * 10 + n) for n in range(10)], tx=tx)
        for _ in range(100):  # the checkpointer runs right after each commit
            if main.stat().st_size > size:
                break
            await asyncio.sleep(0.05)
        assert main.stat().st_size > size, "nothing was copied back into the database file"
        frames = await db.fetchone("PRAGMA wal_checkpoint(PASSIVE)")
        assert frames is not None
        _blocked, logged, _copied = frames.values()
        assert int(logged) < 1000  # below SQLite's default autocheckpoint: the writer did not copy them
        assert await store.count() == 30
    finally:
        await db.close()
    for thread in mine:
        assert not thread.is_alive()  # stopped with its database


# --------------------------------------------------------------------------- writes prepared elsewhere


async def _stored_rows(db: Database) -> list[Any]:
    return [
        await db.fetch(
            "SELECT uri, local_id, stamp, deleted, content_hash, title, data, sets FROM sheet ORDER BY pk_id"
        ),
        await db.fetch(
            "SELECT s.local_id, f.prefix, f.xml FROM sheet_format f JOIN sheet s ON s.pk_id = f.sheet_pk"
            " ORDER BY s.local_id, f.prefix"
        ),
        await db.fetch(
            "SELECT s.local_id, t.spec, t.stamp FROM sheet_set t JOIN sheet s ON s.pk_id = t.sheet_pk"
            " ORDER BY s.local_id, t.spec"
        ),
    ]


async def test_prepared_writes_end_as_direct_ones_even_when_the_worker_guessed_wrong(
    db: Database, store: SheetStore, clock: Clock
) -> None:
    """A worker's write (node.pipeline) that the row disagrees with is computed again: a stale
    "unchanged" hint (no formats), another stamp, a stored creation date to keep, a tombstone."""
    async with db.transaction() as tx:
        await store.upsert_many([fresh(n) for n in range(6)], tx=tx)
        await store.delete_many(["projet-5"], tx=tx)
    clock.tick(30)
    stamp = store.now()
    edited = [
        fresh(0, title="Changé, mais annoncé inchangé"),  # hint: the new hash is the stored one (wrong)
        fresh(1, title="Changé, sans date de création", created=None),  # the stored one is kept
        fresh(2, title="Changé, préparé à une autre heure"),
        fresh(3),  # unchanged
        fresh(5, title="Revenue"),  # a tombstone written again
        fresh(9),  # new
    ]
    prepared = []
    for sheet in edited:
        uri = store.make_uri(sheet.local_id)
        p = prepare(sheet, uri, stamp - 5 if sheet.local_id == "projet-2" else stamp)
        if sheet.local_id == "projet-0":
            p = prepare(sheet, uri, stamp, stored=p.digest)
            assert p.formats is None
        prepared.append(p)
    async with db.transaction() as tx:
        results = await store.upsert_prepared(prepared, tx=tx, stamp=stamp)
    assert sorted((r.local_id, r.status) for r in results) == [
        ("projet-0", "updated"),
        ("projet-1", "updated"),
        ("projet-2", "updated"),
        ("projet-3", "unchanged"),
        ("projet-5", "created"),
        ("projet-9", "created"),
    ]
    ours = await _stored_rows(db)
    # The same history written directly, from an empty database.
    for table in ("sheet_set", "sheet_format", "sheet"):
        await db.execute(f"DELETE FROM {table}")
    clock.now = T0
    async with db.transaction() as tx:
        await store.upsert_many([fresh(n) for n in range(6)], tx=tx)
        await store.delete_many(["projet-5"], tx=tx)
    clock.tick(30)
    async with db.transaction() as tx:
        await store.upsert_many(edited, tx=tx)
    assert ours == await _stored_rows(db)
    kept = await store.get("projet-1")
    first = fresh(1).created
    assert isinstance(kept, Sheet) and first is not None and kept.created == first  # the stored one, kept


@pytest.mark.parametrize("hub", [False, True])
@pytest.mark.parametrize(
    "dates",
    [
        {},  # the sheet's own creation and modification dates
        {"created": None},
        {"modified": None},
        {"created": None, "modified": None},
        {"datestamp": datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)},  # replaced by the write's
    ],
)
def test_prepare_is_the_dated_sheet_as_stored(dates: dict[str, Any], hub: bool) -> None:
    """``prepare`` takes shortcuts (own dates kept in place, no dated copy of the sheet for its sets):
    what it computes is still that of the sheet under its URI with every date set."""
    sheet = fresh(4, **dates)
    uri = "https://noeud.essaim.test/sheets/x"
    stamp = int(T0) + 3600
    now = datetime.fromtimestamp(stamp, tz=UTC)
    dated = replace(sheet, id=uri, created=sheet.created or now, modified=sheet.modified or now, datestamp=now)
    p = prepare(sheet, uri, stamp, hub=hub)
    assert json.loads(p.text) == sheet_to_dict(dated)
    assert list(json.loads(p.text)) == list(sheet_to_dict(dated))  # field order too
    assert p.dated() == dated
    assert p.sets == set_specs(dated, hub=hub)
    assert (p.own_created, p.own_modified) == (sheet.created is not None, sheet.modified is not None)
    assert p.formats == ({} if hub else render_formats(dated))


def test_sheet_replacer_is_replace() -> None:
    sheet = make_sheet(3)
    rekey = sheet_replacer("local_id", "title", "datestamp")
    assert rekey(sheet, "autre", "Autre titre", None) == replace(
        sheet, local_id="autre", title="Autre titre", datestamp=None
    )
    for names in [(), ("title", "title"), ("titre",)]:
        with pytest.raises(ValueError, match="not distinct Sheet fields"):
            sheet_replacer(*names)


# A sheet's dict holds no float but its places' coordinates (checked below); any other value may be anywhere.
_JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.text()
_COORDINATES = st.floats(min_value=-180, max_value=180) | st.sampled_from([0.0, -0.0, 1e-05, -3e-05, 1e-4, 9.9e-05])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(), st.recursive(_JSON_LEAVES, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner))
    ),
    st.lists(st.fixed_dictionaries({"lat": _COORDINATES, "lon": _COORDINATES, "commune": st.text()}), max_size=3),
)
def test_content_hashes_are_taken_of_the_same_bytes_as_ever(data: dict[str, Any], places: list[Any]) -> None:
    """The hashed text is written by orjson when it gives json.dumps's bytes (stored hashes stay valid):
    tiny coordinates, integers beyond 64 bits and the rest must not change a byte."""
    if places:
        data = {**data, "places": places}
    expected = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    try:
        blob = expected.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no hash before either
        with pytest.raises(UnicodeEncodeError):
            _hashed_json(data)
        return
    assert _hashed_json(data) == blob
    assert json.loads(_to_json(data)) == data  # the stored text, compact: the same values


def test_content_hash_of_a_stored_sheet_is_unchanged() -> None:
    """A sheet hashed before orjson keeps its hash: the re-harvest of an unchanged source writes nothing."""
    sheet = replace(
        fresh(2),
        places=(Place(commune="Villers-sur-Mer", lat=49.32, lon=-3e-05), Place(commune="Rennes", lat=48.1, lon=-1.68)),
    )
    data = sheet_to_dict(sheet)
    visible = {k: v for k, v in data.items() if k not in ("datestamp", "modified", "created")}
    old = json.dumps(visible, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    assert b"-3e-05" in old and _hashed_json(visible) == old


def _float_fields(kind: type, path: str = "") -> set[str]:
    """Paths of the float-typed fields of a dataclass, nested dataclasses included."""
    found: set[str] = set()

    def walk(hint: Any, where: str) -> None:
        if hint is float:
            found.add(where)
        elif dataclasses.is_dataclass(hint) and isinstance(hint, type):
            found.update(_float_fields(hint, where + "."))
        for arg in typing.get_args(hint):
            walk(arg, where)

    for name, hint in typing.get_type_hints(kind).items():
        walk(hint, path + name)
    return found


def test_only_coordinates_are_floats() -> None:
    """``_hashed_json`` checks the places' coordinates alone for floats orjson writes differently."""
    assert _float_fields(Sheet) == {"places.lat", "places.lon"}
