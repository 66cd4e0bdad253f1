"""Cross-source duplicate clusters of harvested sheets: the same project listed by several partners.

Two sheets are listed as the same project when they come from different sources,
sit in the same *block* -- same place (folded commune name, else INSEE code, else
département) and same holder (folded name, legal-form words dropped) -- and their
titles are similar (folded word sets overlapping by at least ``JACCARD``, or a
character ratio of at least ``RATIO``). Clusters are the connected components of
that relation; a cluster's id is derived from its smallest member URI, so it stays
put while that member does.

Records are never merged: each sheet keeps its own row, and the cluster only
feeds the "also listed by" list of a sheet page and the ``duplicate_cluster``
facet of the search index (:func:`clusters_of`). Each harvest page updates the
rows of the sheets it changed, and re-clusters the blocks they left or joined,
in the page's transaction; a page that changes nothing writes nothing here.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from node.db import Database
from protocol.picklable import pickled_by_fields
from protocol.sheet import Sheet
from protocol.taxonomy import fold

JACCARD = 0.6
RATIO = 0.85
MAX_BLOCK = 400  # rows compared pairwise in one block; a larger block is clustered on exact titles only
BATCH = 500

_HOLDER_NOISE = frozenset(
    "association asso assoc sas sasu sarl scop scic sa eurl gip ess collectif cooperative"
    " de des du la le les l d".split()
)
_TITLE_NOISE = frozenset("de des du la le les l d un une et en a au aux pour par sur the of and".split())


@pickled_by_fields  # sent back by harvest workers
@dataclass(frozen=True, slots=True)
class MatchKey:
    block: str
    title_key: str


def match_key(sheet: Sheet) -> MatchKey | None:
    """The block and folded title of a sheet; None when it lacks a holder, a place or a title."""
    if sheet.holder is None or not sheet.title:
        return None
    holder = " ".join(w for w in fold(sheet.holder.name).replace("'", " ").split() if w not in _HOLDER_NOISE)
    if not holder:
        return None
    place = ""
    for p in sheet.places:
        # The commune's name before its code: sources resolve codes differently (one from its
        # coordinates, one from a text), the gazetteer fills the name either way.
        if p.commune:
            place = f"c:{fold(p.commune)}"
        elif p.insee:
            place = f"i:{p.insee}"
        elif p.departement:
            place = f"d:{p.departement}"
        if place:
            break
    if not place:
        return None
    title = " ".join(w for w in fold(sheet.title).replace("'", " ").split() if w not in _TITLE_NOISE)
    return MatchKey(block=f"{place}|{holder}"[:255], title_key=title or fold(sheet.title))


@lru_cache(maxsize=200_000)
def similar(a: str, b: str) -> bool:
    """Whether two folded titles name the same project. Cached: re-clustering a block after each
    page compares the same pairs again (and harvested corpora repeat titles a lot)."""
    if a == b:
        return True
    wa, wb = set(a.split()), set(b.split())
    if wa and wb and len(wa & wb) / len(wa | wb) >= JACCARD:
        return True
    return SequenceMatcher(None, a, b).ratio() >= RATIO


def cluster_id(uris: Sequence[str]) -> str:
    return "dup-" + hashlib.sha256(min(uris).encode("utf-8")).hexdigest()[:16]


def _root(parent: list[int], i: int) -> int:
    """Union-find: the representative of ``i`` (halving the path on the way)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def components(rows: Sequence[Mapping[str, Any]]) -> dict[str, str | None]:
    """uri → cluster id (None for a sheet alone) for the rows of one block; links only across sources.

    A row may stand for a group of rows of one source and title (as :func:`update` reads a block,
    grouped by the database): ``n`` is their number and ``uri`` their smallest URI, which is all
    a cluster id depends on (the smallest URI of its members)."""
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        return _root(parent, i)

    if sum(int(r.get("n", 1)) for r in rows) <= MAX_BLOCK:
        # Rows of one source with the same folded title link to exactly the same rows, so they
        # end in the same component (or each alone, and then without a cluster): the pairs are
        # compared between distinct (title, source) nodes, not between rows.
        nodes: dict[tuple[str, str], int] = {}
        node_of = [nodes.setdefault((str(r["title_key"]), str(r["source"])), len(nodes)) for r in rows]
        keys = list(nodes)
        up = list(range(len(keys)))

        def root(i: int) -> int:
            return _root(up, i)

        for i, (a, source_a) in enumerate(keys):
            for j in range(i + 1, len(keys)):
                b, source_b = keys[j]
                if source_a == source_b or root(i) == root(j):
                    continue  # same source never links; already joined needs no comparison
                if similar(a, b) if a <= b else similar(b, a):
                    up[root(i)] = root(j)
        first_row: dict[int, int] = {}
        for i, node in enumerate(node_of):
            parent[i] = first_row.setdefault(root(node), i)
    else:  # a crowded block (one big holder in one city): exact folded titles only, in linear time
        first: dict[str, int] = {}
        for i, row in enumerate(rows):
            j = first.setdefault(row["title_key"], i)
            if j != i:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(rows)):
        groups.setdefault(find(i), []).append(i)
    out: dict[str, str | None] = {}
    for members in groups.values():
        sources = {rows[i]["source"] for i in members}
        uris = [str(rows[i]["uri"]) for i in members]
        cid = cluster_id(uris) if len(sources) > 1 else None
        for uri in uris:
            out[uri] = cid
    return out


async def update(
    db: Database, source: str, changed: Sequence[tuple[str, Sheet | MatchKey | None]], *, tx: BaseDBAsyncClient
) -> int:
    """Re-key the changed sheets of ``source`` (``None``: deleted) and re-cluster the blocks concerned.

    A changed sheet is given as the sheet, or as its :func:`match_key` computed elsewhere
    (a harvest worker process; a sheet without a key is given as None, like a deletion).

    A block's stored rows are read grouped by (source, title): rows of one source with one title
    always share their cluster, so a group is clustered, and moved, as one. In a harvest's blocks
    (a project listed by several partners, or by one several times) that reads a few groups instead
    of every row of the block for every sheet written in it.

    Returns how many cluster assignments moved.
    """
    if not changed:
        return 0
    uris = list(dict.fromkeys(uri for uri, _ in changed))
    pks = await _sheet_pks(db, uris, tx)
    blocks: set[str] = set()
    for start in range(0, len(uris), BATCH):
        keys = [pks[uri] for uri in uris[start : start + BATCH]]
        marks = ", ".join("?" for _ in keys)
        rows = await db.fetch(f"DELETE FROM hub_sheet_match WHERE sheet_pk IN ({marks}) RETURNING block", keys, conn=tx)
        blocks.update(str(r["block"]) for r in rows)
    fresh: dict[str, tuple[str, str]] = {}
    for uri, sheet in changed:
        key = sheet if isinstance(sheet, MatchKey) else match_key(sheet) if sheet is not None else None
        if key is None:
            fresh.pop(uri, None)
        else:
            fresh[uri] = (key.block, key.title_key)
    blocks.update(block for block, _ in fresh.values())
    await _keep_statistics(db, len(fresh), tx)
    # The changed sheets' rows go in once, with their cluster: they are clustered in memory with the
    # groups their blocks already hold (an INSERT with no cluster, then an UPDATE, wrote them twice).
    fresh_by_block: dict[str, list[dict[str, Any]]] = {}
    for uri, (block, title) in fresh.items():
        row = {"uri": uri, "source": source, "block": block, "title_key": title, "cluster": None}
        fresh_by_block.setdefault(block, []).append(row)
    inserts: list[tuple[int, str, str, str, str, str | None]] = []
    moves: list[tuple[str | None, str, str, str]] = []  # (cluster, block, source, title) of a moved group
    moved = 0
    ordered = sorted(blocks)
    for start in range(0, len(ordered), BATCH):
        chunk = ordered[start : start + BATCH]
        marks = ", ".join("?" for _ in chunk)
        # No ORDER BY: the components, and the cluster ids derived from them, do not depend on the order.
        rows = await db.fetch(
            "SELECT block, source, title_key, cluster, MIN(uri) AS uri, COUNT(*) AS n FROM hub_sheet_match"
            f" WHERE block IN ({marks}) GROUP BY block, source, title_key, cluster",
            chunk,
            conn=tx,
        )
        by_block: dict[str, list[dict[str, Any]]] = {block: [] for block in chunk}
        for row in rows:
            by_block[str(row["block"])].append(row)
        for block, stored in by_block.items():
            new_rows = fresh_by_block.get(block, [])
            assigned = components([*stored, *new_rows])
            for r in stored:
                if assigned[r["uri"]] != r["cluster"]:
                    moves.append((assigned[r["uri"]], block, str(r["source"]), str(r["title_key"])))
                    moved += int(r["n"])
            inserts.extend(
                (pks[r["uri"]], r["uri"], source, block, r["title_key"], assigned[r["uri"]]) for r in new_rows
            )
            moved += sum(1 for r in new_rows if assigned[r["uri"]] is not None)
    await db.executemany(
        "UPDATE hub_sheet_match SET cluster = ? WHERE block = ? AND source = ? AND title_key = ?", moves, conn=tx
    )
    if moves and db.touch_listeners:
        # The stored sheets whose cluster moved: their search documents must be rebuilt (read
        # before this page's rows go in, which their own change notifies already).
        groups = {move[1:] for move in moves}
        moved_blocks = sorted({block for _, block, _, _ in moves})
        touched: list[str] = []
        for start in range(0, len(moved_blocks), BATCH):
            chunk = moved_blocks[start : start + BATCH]
            marks = ", ".join("?" for _ in chunk)
            rows = await db.fetch(
                f"SELECT uri, block, source, title_key FROM hub_sheet_match WHERE block IN ({marks})", chunk, conn=tx
            )
            touched.extend(str(r["uri"]) for r in rows if (r["block"], r["source"], r["title_key"]) in groups)
        await db.touched(touched, tx=tx)
    await db.executemany(
        "INSERT INTO hub_sheet_match (sheet_pk, uri, source, block, title_key, cluster) VALUES (?, ?, ?, ?, ?, ?)",
        inserts,
        conn=tx,
    )
    return moved


async def _sheet_pks(db: Database, uris: Sequence[str], tx: BaseDBAsyncClient) -> dict[str, int]:
    """uri → pk of the stored sheets ``uris`` (every one must be stored: its row, or its tombstone)."""
    out: dict[str, int] = {}
    for start in range(0, len(uris), BATCH):
        chunk = uris[start : start + BATCH]
        marks = ", ".join("?" for _ in chunk)
        rows = await db.fetch(f"SELECT pk_id, uri FROM sheet WHERE uri IN ({marks})", chunk, conn=tx)
        out.update((str(r["uri"]), int(r["pk_id"])) for r in rows)
    missing = [uri for uri in uris if uri not in out]
    if missing:
        raise ValueError(f"duplicate keys of sheets that are not stored: {missing[:5]}")
    return out


_GROWN: weakref.WeakKeyDictionary[Database, list[float]] = weakref.WeakKeyDictionary()


async def _keep_statistics(db: Database, inserted: int, tx: BaseDBAsyncClient) -> None:
    """ANALYZE ``hub_sheet_match`` on PostgreSQL while a first harvest grows it (as
    :meth:`node.db.Database.keep_statistics` does for the sheet tables): before autovacuum's first
    analysis the planner takes the table for empty and scans it whole for every page's lookups."""
    if db.dialect != "postgres" or not inserted:
        return
    state = _GROWN.setdefault(db, [0.0, 0.0])  # [rows at last ANALYZE, rows inserted since]
    state[1] += inserted
    if state[1] >= max(1000.0, state[0]):
        await db.execute("ANALYZE hub_sheet_match", conn=tx)
        state[0] += state[1]
        state[1] = 0.0


async def clusters_of(db: Database, uris: Sequence[str]) -> dict[str, str]:
    """uri → duplicate cluster id, for the given sheet URIs that other sources also list.

    Sheets listed by one source only are absent from the answer. One query per 500 URIs
    on an indexed column: cheap enough to call for every indexing batch.
    """
    out: dict[str, str] = {}
    ids = list(dict.fromkeys(uris))
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        marks = ", ".join("?" for _ in chunk)
        rows = await db.fetch(
            "SELECT s.uri, m.cluster FROM sheet s JOIN hub_sheet_match m ON m.sheet_pk = s.pk_id"
            f" WHERE s.uri IN ({marks}) AND m.cluster IS NOT NULL",
            chunk,
        )
        out.update({str(r["uri"]): str(r["cluster"]) for r in rows})
    return out


async def also_listed_by(db: Database, uri: str) -> list[dict[str, Any]]:
    """The other sheets of the cluster of ``uri``: uri, source key and name, title, original URL."""
    rows = await db.fetch(
        "SELECT m.uri, m.source, s.data, h.name AS source_name FROM sheet mine"
        " JOIN hub_sheet_match me ON me.sheet_pk = mine.pk_id"
        " JOIN hub_sheet_match m ON m.cluster = me.cluster AND m.sheet_pk <> me.sheet_pk"
        " JOIN sheet s ON s.pk_id = m.sheet_pk LEFT JOIN harvest_source h ON h.key = m.source"
        " WHERE mine.uri = ? AND s.deleted = ? ORDER BY m.source, m.uri",
        [uri, False],
    )
    out = []
    for row in rows:
        data = json.loads(row["data"]) if row["data"] else {}
        out.append(
            {
                "uri": row["uri"],
                "source": row["source"],
                "source_name": row["source_name"] or row["source"],
                "title": data.get("title", ""),
                "url": data.get("url"),
                "partner": (data.get("partner") or {}).get("name"),
            }
        )
    return out
