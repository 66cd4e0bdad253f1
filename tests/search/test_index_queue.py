"""The index queue on both backends: enqueued in the writer's transaction, claimed once, leases that
lapse, acknowledgements that only remove what was claimed, retries with backoff, set-aside rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from node.db import Database
from node.storage import SheetStore
from search.indexer import IndexerConfig, IndexQueue, build_documents, enqueue_sheets, install_queue, read_sheets
from search.schema import document_id
from tests import oai_support
from tests.oai_support import T0, Clock, make_sheet, open_database


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Database]:
    monkeypatch.setattr(oai_support, "PG_DATABASE", oai_support.PG_DATABASE + "_index")
    async with open_database(request.param) as database:
        await database.execute("DELETE FROM index_queue")
        await database.execute("DELETE FROM index_state")
        yield database


def store(db: Database, source: str = "") -> SheetStore:
    return SheetStore(db, base_url="https://hub.essaim.test", source=source, hub=True, clock=Clock(T0))


async def test_every_store_on_the_database_enqueues_in_its_transaction(db: Database) -> None:
    woken: list[int] = []
    install_queue(db, lambda: woken.append(1))
    install_queue(db, lambda: woken.append(2))  # a second install replaces the first: one row per change
    own, harvested = store(db), store(db, "noeud-a")
    await own.upsert(make_sheet(1, id=""))
    await harvested.upsert(make_sheet(2, id=""))
    await own.upsert(make_sheet(1, id=""))  # unchanged: nothing to index
    await own.delete("projet-1")
    rows = await db.fetch("SELECT sheet_pk, uri, status FROM index_queue ORDER BY id")
    assert len(rows) == 3 and {r["status"] for r in rows} == {"pending"}
    assert woken == [2, 2, 2]
    # A failed transaction leaves no queue row behind.
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await own.upsert_many([make_sheet(3, id="")], tx=tx)
            raise RuntimeError("rollback")
    assert len(await db.fetch("SELECT id FROM index_queue")) == 3


async def test_sqlite_claim_walks_the_queue_in_id_order(db: Database) -> None:
    # Through index_queue_due, SQLite sorted the whole backlog by id for every claim.
    if db.dialect != "sqlite":
        pytest.skip("checks the query plan SQLite chooses for the claim; PostgreSQL plans it on its own")
    sql = IndexQueue(db, IndexerConfig()).claim_sql()
    plan = await db.fetch("EXPLAIN QUERY PLAN " + sql, ["t", 1, 0, 0, 10])
    details = " | ".join(str(r["detail"]) for r in plan)
    assert "TEMP B-TREE" not in details and "index_queue_due" not in details, details


async def test_claims_leases_acks_and_retries(db: Database) -> None:
    install_queue(db)
    async with db.transaction() as tx:
        await store(db).upsert_many([make_sheet(n, id="") for n in range(10)], tx=tx)
    now = [float(T0)]
    queue = IndexQueue(db, IndexerConfig(lease=60, retry_base=10, retry_max=100, max_attempts=2), clock=lambda: now[0])
    # Two claimers at once never share a row.
    (t1, a), (t2, b) = await asyncio.gather(queue.claim(6), queue.claim(6))
    assert len(a) + len(b) == 10 and not {r["id"] for r in a} & {r["id"] for r in b}
    assert (await queue.claim(10))[1] == []  # all leased
    # Only the claimer's own rows are acknowledged.
    await queue.ack(t2, [r["id"] for r in a])
    assert (await queue.counts())["pending"] == 10
    await queue.ack(t1, [r["id"] for r in a[:3]])
    assert (await queue.counts())["pending"] == 7
    # A refused row backs off, then is set aside after max_attempts.
    await queue.retry(t1, a[3:4], "Typesense 400: bad")
    now[0] += 5
    assert (await queue.claim(10))[1] == []  # a[4:] and b still leased, a[3] backing off
    now[0] += 10
    token, again = await queue.claim(10)
    assert [r["id"] for r in again] == [a[3]["id"]] and again[0]["attempts"] == 1
    assert await queue.retry(token, again, "Typesense 400: bad") == 1
    assert (await queue.counts()) == {"pending": 6, "failed": 1}
    # A crashed worker's lease lapses; a released batch is due again at once.
    now[0] += 61
    token, lapsed = await queue.claim(10)
    assert len(lapsed) == 6
    await queue.release(token, 0)
    assert len((await queue.claim(10))[1]) == 6


async def test_enqueue_all_and_documents_of_rows(db: Database) -> None:
    s = store(db)
    async with db.transaction() as tx:
        await s.upsert_many([make_sheet(n, id="") for n in range(5)], tx=tx)
    await s.delete("projet-4")
    assert await enqueue_sheets(db) == 5  # tombstones too: their documents must go
    rows = await db.fetch("SELECT sheet_pk FROM index_queue ORDER BY id")
    sheets = await read_sheets(db, [int(r["sheet_pk"]) for r in rows])
    docs, deletes, broken = build_documents(sheets, {sheets[0]["uri"]: "cluster-1"})
    assert len(docs) == 4 and not broken
    assert deletes == [document_id(str(next(r["uri"] for r in sheets if r["deleted"])))]
    assert docs[0]["duplicate_cluster"] == "cluster-1" and "duplicate_cluster" not in docs[1]
    assert await enqueue_sheets(db, pks=[int(sheets[0]["pk_id"])]) == 1
    assert await enqueue_sheets(db, since=T0 + 3600) == 0
