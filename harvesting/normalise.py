"""Normalisation of harvested sheets on the hub: the per-source crosswalk, the unmapped-tag queue, places.

Every harvested record (OAI-PMH, file, crawl) goes through :meth:`Normaliser.sheet`
before it is stored:

- **tags**: each partner tag is mapped through the hub operator's crosswalk for that
  source (table ``hub_crosswalk``, edited with ``essaim hub crosswalk`` or in the
  admin), which wins over the mapping the node itself sent; a tag without a rule
  keeps the node's codes, else maps to a taxonomy label it spells, else goes to the
  queue of unmapped tags (table ``hub_unmapped_tag``) for the operator. Mapped codes
  become themes and sub-themes (parents completed by the taxonomy);
- **places**: a place without coordinates or without an INSEE code is completed with
  the node's offline gazetteer (:func:`node.geocode.resolve_place`), the same resolver
  imports use; a place given only as text (``dc:coverage``, a crawled address) is read
  as ``[postcode] commune`` first.

A crosswalk edit applies to what is harvested afterwards: :func:`set_rule` makes the
source's next run a full one (checkpoint's ``from`` cleared, run due now), so every
stored record is normalised again; the sheets whose result does not change are not
rewritten (the store compares content hashes).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from node.db import Database
from protocol.sheet import Place, Sheet, TagMapping
from protocol.taxonomy import Crosswalk, Taxonomy, default_taxonomy, fold

PlaceResolver = Callable[[Place], tuple[Place, str]]

_POSTCODE = re.compile(r"\b(\d{5})\b")
_DEPARTEMENT = re.compile(r"\((\d{2,3}|2[AB])\)")
_COMMUNE = re.compile(r"^[^\d()]{2,80}$")


def parse_place_text(text: str) -> tuple[str | None, str | None, str | None]:
    """``(postcode, commune, département)`` read from a place written as text.

    Handles what harvested records carry: ``"35000 Rennes"``, ``"Rennes (35)"``, and the
    ``dc:coverage`` of an Essaim node, ``"Rennes, Ille-et-Vilaine (35), Bretagne"``.
    """
    parts = [p.strip() for p in re.split(r"[,;]", text) if p.strip()]
    if not parts:
        return None, None, None
    postcode_match = _POSTCODE.search(parts[0])
    dep_match = _DEPARTEMENT.search(text)
    first = _DEPARTEMENT.sub("", _POSTCODE.sub("", parts[0])).strip(" -")
    commune = first if _COMMUNE.match(first) else None
    return (postcode_match[1] if postcode_match else None), commune, (dep_match[1] if dep_match else None)


# Entries of a normaliser's memos (folded tags, completed theme sets) before they start again.
_MEMO = 65536


class CrosswalkError(ValueError):
    """A crosswalk rule is refused (unknown code, empty tag); the message is for the operator."""


def _default_resolver() -> PlaceResolver:
    from node.geocode import make_resolver

    return make_resolver()  # the node's own: the default gazetteer, remembered per place


@dataclass
class Normalised:
    sheet: Sheet
    unmapped: list[str] = field(default_factory=list)  # spellings of the tags nothing maps
    places_resolved: int = 0


class Normaliser:
    """Normalises the sheets of one source with its crosswalk rules (folded tag → codes)."""

    def __init__(
        self,
        rules: Mapping[str, tuple[str, ...]] | None = None,
        *,
        taxonomy: Taxonomy | None = None,
        resolver: PlaceResolver | None = None,
    ) -> None:
        self.taxonomy = taxonomy or default_taxonomy()
        self.crosswalk = Crosswalk(partner="", rules=dict(rules or {}))
        self.resolver = resolver or _default_resolver()
        # Crosswalk.labels_fallback as one dict lookup (it folds every label on each call): same
        # precedence, sub-themes first, then themes, the first term of a table winning.
        self._labels: dict[str, str] = {}
        for table in (self.taxonomy.subthemes, self.taxonomy.themes):
            for term in table.values():
                for key in (fold(term.fr), fold(term.en), term.code.lower()):
                    self._labels.setdefault(key, term.code)
        # A source repeats the same few tags and theme combinations: folded and completed once each.
        self._folded: dict[str, str] = {}
        self._completed: dict[tuple[Any, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def _fold(self, tag: str) -> str:
        key = self._folded.get(tag)
        if key is None:
            if len(self._folded) >= _MEMO:
                self._folded.clear()
            key = self._folded[tag] = fold(tag)
        return key

    def _complete(
        self, themes: tuple[str, ...], subthemes: tuple[str, ...], codes: tuple[str, ...]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        memo = (themes, subthemes, codes)
        done = self._completed.get(memo)
        if done is None:
            if len(self._completed) >= _MEMO:
                self._completed.clear()
            done = self._completed[memo] = self.taxonomy.complete([*themes, *codes], [*subthemes, *codes])
        return done

    def sheet(self, sheet: Sheet) -> Normalised:
        unmapped: list[str] = []
        tags: list[TagMapping] = []
        codes: list[str] = []
        for tag in sheet.tags:
            key = self._fold(tag.tag)
            rule = self.crosswalk.rules.get(key)
            if rule is not None:
                mapped = rule
            elif tag.codes:
                mapped = tag.codes
            else:
                label = self._labels.get(key)
                mapped = (label,) if label else ()
                if not mapped:
                    unmapped.append(tag.tag)
            mapped = tuple(c for c in mapped if self.taxonomy.classify(c))
            tags.append(TagMapping(tag=tag.tag, codes=mapped) if mapped != tag.codes else tag)
            codes.extend(mapped)
        themes, subthemes = self._complete(sheet.themes, sheet.subthemes, tuple(codes))
        places, resolved = self.places(sheet.places)
        new_tags = tuple(tags)
        if (new_tags, themes, subthemes, places) == (sheet.tags, sheet.themes, sheet.subthemes, sheet.places):
            return Normalised(sheet, unmapped, resolved)  # already canonical (the usual native record)
        out = replace(sheet, tags=new_tags, themes=themes, subthemes=subthemes, places=places)
        return Normalised(out, unmapped, resolved)

    def places(self, places: Sequence[Place]) -> tuple[tuple[Place, ...], int]:
        out: list[Place] = []
        resolved = 0
        for place in places:
            if place.insee and place.lat is not None and place.lon is not None:
                out.append(place)  # already placed by its node: nothing to check
                continue
            candidate = place
            if not (place.commune or place.insee or place.postcode or place.departement) and place.address:
                postcode, commune, departement = parse_place_text(place.address)
                if postcode or commune:
                    candidate = replace(place, postcode=postcode, commune=commune, departement=departement)
            try:
                completed, how = self.resolver(candidate)
            except ValueError:
                completed, how = place, "unresolved"
            if how in ("unresolved", "given") and candidate is not place:
                completed = place  # the text guess found nothing: keep what the source said
            if completed != place:
                resolved += 1
            out.append(completed)
        return tuple(out), resolved


# --------------------------------------------------------------------- the crosswalk table


def _codes_text(codes: Iterable[str]) -> str:
    return " ".join(codes)


async def rules_of(db: Database, source: str, *, conn: BaseDBAsyncClient | None = None) -> dict[str, tuple[str, ...]]:
    """The crosswalk of one source: folded tag → codes."""
    rows = await db.fetch("SELECT tag_key, codes FROM hub_crosswalk WHERE source = ?", [source], conn=conn)
    return {str(r["tag_key"]): tuple(str(r["codes"]).split()) for r in rows}


async def rules(db: Database, source: str | None = None) -> list[dict[str, Any]]:
    """Rules for the operator (one source, or all), ordered by source and tag."""
    if source:
        return await db.fetch("SELECT * FROM hub_crosswalk WHERE source = ? ORDER BY tag_key", [source])
    return await db.fetch("SELECT * FROM hub_crosswalk ORDER BY source, tag_key")


async def set_rule(
    db: Database,
    source: str,
    tag: str,
    codes: Sequence[str],
    *,
    taxonomy: Taxonomy | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Map ``tag`` of ``source`` to ``codes`` (empty: ignore the tag); the source's next run is full."""
    taxonomy = taxonomy or default_taxonomy()
    tag = " ".join(tag.split())
    key = fold(tag)
    if not key:
        raise CrosswalkError("the tag is empty")
    if len(tag) > 255:
        raise CrosswalkError("the tag is longer than 255 characters")
    clean = [c.strip().upper() for c in codes if c.strip()]
    unknown = [c for c in clean if taxonomy.classify(c) is None]
    if unknown:
        raise CrosswalkError(f"unknown taxonomy code(s): {', '.join(unknown)} (see the themes and sub-themes)")
    now = int(clock())
    async with db.transaction() as tx:
        if not await db.fetchone("SELECT 1 AS x FROM harvest_source WHERE key = ?", [source], conn=tx):
            raise CrosswalkError(f"no source {source!r} (see essaim hub sources list)")
        await db.execute(
            "INSERT INTO hub_crosswalk (source, tag_key, tag, codes, updated) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (source, tag_key) DO UPDATE SET tag = excluded.tag, codes = excluded.codes,"
            " updated = excluded.updated",
            [source, key, tag, _codes_text(clean), now],
            conn=tx,
        )
        await db.execute("DELETE FROM hub_unmapped_tag WHERE source = ? AND tag_key = ?", [source, key], conn=tx)
        await _full_next_run(db, source, now, tx)
    return {"source": source, "tag": tag, "tag_key": key, "codes": clean}


async def remove_rule(db: Database, source: str, tag: str, *, clock: Callable[[], float] = time.time) -> bool:
    async with db.transaction() as tx:
        count = await db.execute(
            "DELETE FROM hub_crosswalk WHERE source = ? AND tag_key = ?", [source, fold(tag)], conn=tx
        )
        if count:
            await _full_next_run(db, source, int(clock()), tx)
    return count > 0


async def _full_next_run(db: Database, source: str, now: int, tx: BaseDBAsyncClient) -> None:
    # Only ``next_from``: a run in progress keeps its token and finishes; the one after is full.
    await db.execute("UPDATE harvest_state SET next_from = NULL WHERE source = ?", [source], conn=tx)
    # File and crawl sources skip what they fetched unchanged: forget the validators too.
    await db.execute("UPDATE harvest_source SET fetch_state = NULL WHERE key = ?", [source], conn=tx)
    await db.execute(
        "UPDATE harvest_source SET next_run = ? WHERE key = ? AND next_run > ?", [now, source, now], conn=tx
    )


async def unmapped(db: Database, source: str | None = None, *, limit: int = 200) -> list[dict[str, Any]]:
    """The operator's queue: most frequent first."""
    where, params = ("WHERE source = ?", [source]) if source else ("", [])
    return await db.fetch(
        f"SELECT * FROM hub_unmapped_tag {where} ORDER BY occurrences DESC, source, tag_key LIMIT ?",
        [*params, limit],
    )


async def record_unmapped(
    db: Database,
    source: str,
    seen: Mapping[str, tuple[str, int, str]],
    *,
    now: int,
    tx: BaseDBAsyncClient,
) -> None:
    """Add to the queue ``seen``: folded tag → (spelling, occurrences, example sheet URI)."""
    await db.executemany(
        "INSERT INTO hub_unmapped_tag (source, tag_key, tag, occurrences, first_seen, last_seen, example)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, tag_key) DO UPDATE SET"
        " occurrences = hub_unmapped_tag.occurrences + excluded.occurrences, last_seen = excluded.last_seen,"
        " example = excluded.example",
        [(source, key[:255], tag[:255], n, now, now, example[:512]) for key, (tag, n, example) in seen.items()],
        conn=tx,
    )
