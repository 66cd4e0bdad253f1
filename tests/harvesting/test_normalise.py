"""Normalisation on the hub: crosswalk and its queue of unmapped tags, gazetteer places, duplicate clusters.

The hub harvests one real node twice, as two sources (native ``essaim`` and ``oai_dc``): the
same projects listed by two sources, which the duplicate detector must pair, never merge.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from harvesting import duplicates, normalise
from harvesting.hub import Hub
from harvesting.normalise import Normaliser
from harvesting.transport import OaiTransport, TransportConfig
from node.db import Database
from node.outbound import OutboundClient
from protocol.sheet import Holder, Partner, Place, Sheet, TagMapping, sheet_from_dict
from tests.harvesting.conftest import HUB_URL, NodeProcess, outbound_config
from tests.oai_support import sqlite_migrated_to

COUNT = 20


@asynccontextmanager
async def hub_for(db: Database, port: int) -> AsyncIterator[Hub]:
    async with OutboundClient(outbound_config(port)) as client:
        yield Hub(db, OaiTransport(client, TransportConfig(max_retries=1)), hub_base_url=HUB_URL)


def sheet(**kw: object) -> Sheet:
    base = Sheet(id="", local_id="x", title="Un jardin partagé", partner=Partner(name="P"))
    return Sheet(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, **kw})  # type: ignore[arg-type]


def test_normaliser_maps_tags_and_places() -> None:
    n = Normaliser({"potager": ("ALI",), "divers": ()})
    out = n.sheet(
        sheet(
            tags=(
                TagMapping("Potager"),  # the operator's rule
                TagMapping("jardin partagé", ("SOL",)),  # the node's own mapping, no rule: kept
                TagMapping("Divers"),  # deliberately ignored by a rule: not queued
                TagMapping("inclassable"),  # nothing maps it: queued
            ),
            places=(Place(address="35000 Rennes"), Place(address="quelque part")),
        )
    )
    assert [t.codes for t in out.sheet.tags] == [("ALI",), ("SOL",), (), ()]
    assert out.unmapped == ["inclassable"]
    assert "ALI" in out.sheet.subthemes and "SOL" in out.sheet.themes and "ENV" in out.sheet.themes
    rennes, nowhere = out.sheet.places
    assert (rennes.insee, rennes.commune, rennes.departement) == ("35238", "Rennes", "35")
    assert rennes.lat is not None and rennes.address == "35000 Rennes"
    assert nowhere == Place(address="quelque part") and out.places_resolved == 1
    # A sheet its node placed already is left alone; normalising twice changes nothing.
    assert n.sheet(out.sheet).sheet == out.sheet


def test_duplicate_key_and_similarity() -> None:
    a = sheet(holder=Holder("Association Les Jardins"), places=(Place(commune="Rennes", insee="35238"),))
    b = sheet(title="Jardin partagé", holder=Holder("Les jardins"), places=(Place(commune="RENNES"),))
    ka, kb = duplicates.match_key(a), duplicates.match_key(b)
    assert ka and kb and ka.block == kb.block == "c:rennes|jardins"
    assert duplicates.similar(ka.title_key, kb.title_key)
    assert not duplicates.similar(ka.title_key, "ressourcerie solidaire")
    assert duplicates.match_key(sheet(places=(Place(commune="Rennes"),))) is None  # no holder: never clustered


def clusters_by_rows(rows: list[dict[str, str]]) -> dict[str, str | None]:
    """The definition, pair of rows by pair of rows: linked when of two sources and similar titles."""
    groups = [{i} for i in range(len(rows))]
    for i, a in enumerate(rows):
        for j in range(i + 1, len(rows)):
            b = rows[j]
            if a["source"] != b["source"] and duplicates.similar(*sorted((a["title_key"], b["title_key"]))):
                gi = next(g for g in groups if i in g)
                gj = next(g for g in groups if j in g)
                if gi is not gj:
                    gi |= gj
                    groups.remove(gj)
    out: dict[str, str | None] = {}
    for group in groups:
        uris = [rows[i]["uri"] for i in group]
        many = len({rows[i]["source"] for i in group}) > 1
        out.update(dict.fromkeys(uris, duplicates.cluster_id(uris) if many else None))
    return out


def test_duplicate_components_match_the_pairwise_definition() -> None:
    """Blocks are clustered over (title, source) nodes: the same clusters as comparing every pair of rows,
    whatever the rows' order."""
    words = "jardin partage velo atelier reparation cafe ecole quartier solidaire".split()
    draw = random.Random(7)
    for _ in range(500):
        rows = [
            {
                "uri": f"https://hub.test/sheets/{k}",
                "source": draw.choice("abc"),
                "title_key": " ".join(draw.sample(words, draw.randint(1, 4))),
            }
            for k in range(draw.randint(1, 30))
        ]
        assert duplicates.components(rows) == clusters_by_rows(rows)
        draw.shuffle(rows)  # the rows come from the database in no particular order
        assert duplicates.components(rows) == clusters_by_rows(rows)


async def test_clusters_kept_page_by_page_equal_clustering_everything_again(hub_db: Database) -> None:
    """Pages of creations, title changes and deletions from three sources, written one by one: after each,
    the stored clusters are those of clustering every row from scratch (the changed rows are clustered
    in memory with their blocks' stored rows, then inserted once)."""
    words = "jardin partage velo atelier reparation cafe ecole".split()
    blocks = ("c:rennes|jardins", "c:brest|atelier", "c:lyon|cafe")
    draw = random.Random(11)
    live: dict[str, tuple[str, duplicates.MatchKey]] = {}  # uri → (source, key)
    touched: list[str] = []
    # Duplicate keys belong to stored sheets (keyed by their pk): every URI the pages use has its row.
    await hub_db.executemany(
        "INSERT INTO sheet (uri, source, local_id, stamp, deleted, content_hash, title, sets)"
        " VALUES (?, ?, ?, 0, ?, '', '', '')",
        [(f"https://hub.test/sheets/{s}-{n}", s, str(n), False) for s in "abc" for n in range(31)],
    )

    async def touch(tx: object, uris: Sequence[str]) -> None:
        touched.extend(uris)

    hub_db.touch_listeners.append(touch)
    before: dict[str, str | None] = {}
    moves = 0
    for page in range(40):
        source = draw.choice(("a", "b", "c"))
        changed: list[tuple[str, duplicates.MatchKey | None]] = []
        for _ in range(draw.randint(1, 8)):
            uri = f"https://hub.test/sheets/{source}-{draw.randint(0, 30)}"
            if uri in live and draw.random() < 0.25:
                changed.append((uri, None))  # deleted
                continue
            title = " ".join(draw.sample(words, draw.randint(1, 3)))
            changed.append((uri, duplicates.MatchKey(block=draw.choice(blocks), title_key=title)))
        async with hub_db.transaction() as tx:
            await duplicates.update(hub_db, source, changed, tx=tx)
        for uri, key in changed:
            if key is None:
                live.pop(uri, None)
            else:
                live[uri] = (source, key)
        rows = await hub_db.fetch("SELECT uri, source, block, title_key, cluster FROM hub_sheet_match")
        assert sorted(r["uri"] for r in rows) == sorted(live), page
        expected: dict[str, str | None] = {}
        for block in blocks:
            members = [
                {"uri": uri, "source": src, "title_key": key.title_key}
                for uri, (src, key) in live.items()
                if key.block == block
            ]
            expected.update(clusters_by_rows(members))
        assert {r["uri"]: r["cluster"] for r in rows} == expected, page
        # The stored sheets the page did not change but moved to another cluster are touched (their
        # search documents carry the cluster), each once, and no other.
        mine = {uri for uri, _ in changed}
        moved = {u for u, cluster in expected.items() if u in before and u not in mine and before[u] != cluster}
        assert sorted(touched) == sorted(moved), page
        moves += len(moved)
        touched.clear()
        before = expected
    assert moves > 20  # the pages did move stored sheets between clusters


@pytest.fixture
async def seeded(node: NodeProcess) -> NodeProcess:
    await node.ctl("reset")
    await node.ctl("seed", count=COUNT)
    await asyncio.sleep(1.05 - time.time() % 1)
    return node


async def live_sheets(db: Database, source: str) -> dict[str, Sheet]:
    rows = await db.fetch("SELECT uri, data FROM sheet WHERE source = ? AND deleted = ?", [source, False])
    return {r["uri"]: sheet_from_dict(json.loads(r["data"])) for r in rows}


async def test_crosswalk_queue_places_and_duplicates(seeded: NodeProcess, hub_db: Database) -> None:
    db = hub_db
    for table in ("harvest_source", "hub_crosswalk", "hub_unmapped_tag", "hub_sheet_match"):
        await db.execute(f"DELETE FROM {table}")
    async with hub_for(db, seeded.port) as hub:
        await hub.register(seeded.oai_url, key="natif")
        await hub.register(seeded.oai_url, key="dc", prefix="oai_dc")
        for key in ("natif", "dc"):
            stats = await hub.harvest_now(key)
            assert stats.ok and stats.added == COUNT

        # The queue: "inclassable" from both sources; "jardin partagé" only where no node mapping came.
        queue = {(r["source"], r["tag"]): r["occurrences"] for r in await normalise.unmapped(db)}
        assert queue[("natif", "inclassable")] == queue[("dc", "inclassable")] == COUNT
        assert ("natif", "jardin partagé") not in queue and queue[("dc", "jardin partagé")] == COUNT

        # Places: the oai_dc records carry only "Rennes, <département> (NN), <région>": the gazetteer
        # gives them the commune's code and coordinates.
        dc = await live_sheets(db, "dc")
        assert all(s.places[0].commune == "Rennes" and s.places[0].lat is not None for s in dc.values())
        assert sum(1 for s in dc.values() if s.places[0].insee == "35238") >= COUNT // 5

        # Duplicates: each project is listed by both sources, paired, not merged.
        natif = await live_sheets(db, "natif")
        clusters = await duplicates.clusters_of(db, [*natif, *dc])
        assert len(clusters) == 2 * COUNT and len(set(clusters.values())) == COUNT
        uri = next(iter(natif))
        (other,) = await duplicates.also_listed_by(db, uri)
        assert (
            other["source"] == "dc" and other["title"] == natif[uri].title and clusters[other["uri"]] == clusters[uri]
        )
        assert await db.fetchone("SELECT COUNT(*) AS n FROM sheet") == {"n": 2 * COUNT}

        # The operator maps the tag: the queue forgets it, the next run of the source is a full one
        # and re-normalises every stored record.
        with pytest.raises(normalise.CrosswalkError, match="unknown taxonomy code"):
            await normalise.set_rule(db, "dc", "Jardin  Partagé", ["NOPE"])
        await normalise.set_rule(db, "dc", "Jardin  Partagé", ["ENV", "ALI"])
        assert ("dc", "jardin partagé") not in {(r["source"], r["tag"]) for r in await normalise.unmapped(db)}
        row = await hub.registry.get("dc")
        assert row is not None and row["next_run"] <= time.time()
        stats = await hub.harvest_now("dc")
        assert stats.ok and stats.incremental_from is None and stats.updated == COUNT
        dc = await live_sheets(db, "dc")
        assert all("ALI" in s.subthemes and "ENV" in s.themes for s in dc.values())
        mapped = {t.tag: t.codes for s in dc.values() for t in s.tags}
        assert mapped["jardin partagé"] == ("ENV", "ALI")
        # Unchanged since: the next incremental run writes nothing, the clusters stay.
        stats = await hub.harvest_now("dc")
        assert stats.ok and (stats.added, stats.updated, stats.deleted) == (0, 0, 0)
        assert await duplicates.clusters_of(db, [*natif, *dc]) == clusters

        # A project renamed on the node leaves its cluster while only one source has the new title,
        # and is paired again once both have it; a deleted project leaves its partner alone.
        await seeded.ctl("update", n=3, title="Ressourcerie du quartier nord")
        await seeded.ctl("delete", n=4)
        await asyncio.sleep(1.05 - time.time() % 1)
        stats = await hub.harvest_now("natif")
        assert stats.ok and (stats.updated, stats.deleted) == (1, 1)
        after = await duplicates.clusters_of(db, [*natif, *dc])
        assert len(after) == 2 * (COUNT - 2) and len(set(after.values())) == COUNT - 2
        stats = await hub.harvest_now("dc")
        assert stats.ok and (stats.updated, stats.deleted) == (1, 1)
        after = await duplicates.clusters_of(db, [*natif, *dc])
        assert len(after) == 2 * (COUNT - 1) and len(set(after.values())) == COUNT - 1


async def test_migration_0011_keys_the_stored_duplicate_keys_by_their_sheets(tmp_path: Path) -> None:
    """A hub migrated before 0011 keeps its duplicate keys and clusters, now under its sheets' pks; a row
    whose URI no stored sheet has (there should be none) is dropped."""
    path = tmp_path / "hub.sqlite3"
    sheets = [(7, "https://hub.test/sheets/a", "a", "1"), (9, "https://hub.test/sheets/b", "b", "1")]
    await sqlite_migrated_to(path, "node.0010_hub_match_cluster_partial", sheets)
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO hub_sheet_match (uri, source, block, title_key, cluster) VALUES (?, ?, ?, ?, ?)",
            [
                ("https://hub.test/sheets/b", "b", "c:rennes|jardins", "jardin partage", "dup-1"),
                ("https://hub.test/sheets/a", "a", "c:rennes|jardins", "jardin partage", "dup-1"),
                ("https://hub.test/sheets/gone", "a", "c:brest|atelier", "atelier", None),
            ],
        )
    db = Database(f"sqlite:///{path}")
    try:
        assert "node.0011_hub_match_by_sheet" in await db.upgrade()
        await db.open()
        rows = await db.fetch("SELECT sheet_pk, uri, source, block, title_key, cluster FROM hub_sheet_match")
        assert sorted(tuple(r.values()) for r in rows) == [
            (7, "https://hub.test/sheets/a", "a", "c:rennes|jardins", "jardin partage", "dup-1"),
            (9, "https://hub.test/sheets/b", "b", "c:rennes|jardins", "jardin partage", "dup-1"),
        ]
        assert await duplicates.clusters_of(db, ["https://hub.test/sheets/a", "https://hub.test/sheets/b"]) == {
            "https://hub.test/sheets/a": "dup-1",
            "https://hub.test/sheets/b": "dup-1",
        }
        indexes = await db.fetch("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'hub_sheet_match'")
        # Migration 0012 (SQLite) replaced the block index by one covering a block's grouped read.
        assert {"hub_sheet_match_group", "hub_sheet_match_cluster"} <= {r["name"] for r in indexes}
        # An unknown sheet is refused by name, not keyed by a made-up pk.
        async with db.transaction() as tx:
            with pytest.raises(ValueError, match="not stored"):
                await duplicates.update(db, "a", [("https://hub.test/sheets/none", None)], tx=tx)
    finally:
        await db.close()
