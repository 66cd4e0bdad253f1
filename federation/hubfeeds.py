"""The hub's feed actors: one per theme, one per région, one per saved search, announcing matching sheets.

Each is a :class:`~federation.actors.LocalActor` in ``Federation.feeds`` (so WebFinger, the
actor document, its inbox, outbox, followers and featured collections are the node's own
code), with a code that names it in ``ap_feed_follower`` / ``ap_feed_item``: the theme code
(``ENV``: the ``[federation] feeds`` of the hub), ``region-53``, ``search-{slug}``.

Harvested and pushed sheets (the writing store has a source) are queued by a sheet listener
in the writing transaction (``hub_feed_queue``), and announced after the commit by
:class:`HubFeedWorker`, once the provenance is written too: the ``Announce`` names the
node's own object (the sheet URI on the node, ``sheetId`` of the provenance), so a
fediverse reply goes to the partner node that owns the sheet, whose inbox keeps it for the
partner (``ap_message``). A sheet that stops matching is taken back (``Undo(Announce)``); a
sheet is announced once per feed however many times it changes (``ap_feed_item`` is unique
per feed and sheet), and a harvest that confirms a pushed sheet changes nothing, so
announces nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from federation.actors import LocalActor, slug
from federation.outbox import _withdraw
from federation.service import Federation
from node.db import Database
from node.storage import Change, SheetStore
from protocol.activitypub.activities import announce_activity, create_activity, delete_activity, update_activity
from protocol.activitypub.objects import sheet_note
from protocol.oai.identifiers import make_identifier
from protocol.sheet import Sheet
from protocol.taxonomy import Taxonomy

log = logging.getLogger("essaim.federation.hubfeeds")

REGION_PREFIX = "region-"
SEARCH_PREFIX = "search-"
RELAY = "relay"
ALL = "*"

SearchMatcher = Callable[[str, Sheet], bool]  # (saved query string, sheet) -> matches


def region_codes(configured: list[str], taxonomy: Taxonomy) -> list[str]:
    if ALL in configured:
        return list(taxonomy.regions)
    unknown = [c for c in configured if c not in taxonomy.regions]
    if unknown:
        known = ", ".join(taxonomy.regions)
        raise ValueError(f"fedhub.regions: unknown région code(s) {', '.join(unknown)} (known: {known})")
    return list(dict.fromkeys(configured))


def region_actor(base_url: str, hub_name: str, code: str, taxonomy: Taxonomy) -> LocalActor:
    label = taxonomy.regions[code].label("fr")
    return LocalActor(
        id=f"{base_url}/feeds/{REGION_PREFIX}{code}",
        username=f"region-{slug(label) or code}",
        name=f"{hub_name} · {label}",
        summary_text=f"Les fiches projets de la région {label} réunies par {hub_name}.",
        profile_url=f"{base_url}/feeds/{REGION_PREFIX}{code}",
        feed=f"{REGION_PREFIX}{code}",
    )


def search_actor(base_url: str, hub_name: str, row: dict[str, Any]) -> LocalActor:
    code = str(row["code"])
    return LocalActor(
        id=f"{base_url}/feeds/{code}",
        username=str(row["username"]),
        name=f"{hub_name} · {row['label']}",
        summary_text=f"Les nouvelles fiches projets de la recherche « {row['label']} » sur {hub_name}.",
        profile_url=f"{base_url}/feeds/{code}",
        feed=code,
    )


class HubFeeds:
    """Which feed actors a sheet belongs to; installs the queue listener and the saved searches."""

    def __init__(
        self,
        fed: Federation,
        *,
        regions: list[str],
        search_matcher: SearchMatcher | None,
        relay_repo_id: str | None = None,
    ) -> None:
        """``relay_repo_id``: the hub's own OAI ``repositoryIdentifier``, to run the relay actor (None: no relay)."""
        self.fed = fed
        self.themes = [code for code in fed.feeds]  # the [federation] feeds of the hub: theme codes
        self.regions = region_codes(regions, fed.taxonomy)
        self.search_matcher = search_matcher
        self.searches: dict[str, str] = {}  # code -> query string
        for code in self.regions:
            self._add(region_actor(fed.base_url, fed.identity.name, code, fed.taxonomy))
        self.relay_repo_id = relay_repo_id
        self.relay: LocalActor | None = None
        if relay_repo_id is not None:
            self.relay = LocalActor(
                id=f"{fed.base_url}/feeds/{RELAY}",
                username=RELAY,
                name=f"{fed.identity.name} · relais",
                summary_text=f"Toutes les fiches projets réunies par {fed.identity.name}, pour d'autres hubs.",
                profile_url=f"{fed.base_url}/feeds/{RELAY}",
                feed=RELAY,
            )
            self._add(self.relay)

    def _add(self, actor: LocalActor) -> None:
        taken = {a.username.lower() for a in self.fed.local_actors() if a.id != actor.id}
        if actor.username.lower() in taken:
            raise ValueError(f"the handle {actor.username} is already taken on this hub")
        assert actor.feed is not None
        self.fed.feeds[actor.feed] = actor

    def add_search(self, row: dict[str, Any]) -> LocalActor:
        actor = search_actor(self.fed.base_url, self.fed.identity.name, row)
        self._add(actor)
        self.searches[str(row["code"])] = str(row["query"])
        return actor

    async def load_searches(self) -> None:
        for row in await self.fed.db.fetch("SELECT * FROM hub_saved_search ORDER BY id"):
            self.add_search(row)

    def matching(self, sheet: Sheet) -> set[str]:
        codes = {code for code in self.themes if code in sheet.themes}
        regions = {p.region for p in sheet.places if p.region}
        codes |= {f"{REGION_PREFIX}{code}" for code in self.regions if code in regions}
        if self.search_matcher is not None:
            codes |= {code for code, query in self.searches.items() if self.search_matcher(query, sheet)}
        return codes

    def codes(self) -> list[str]:
        return [*self.themes, *(f"{REGION_PREFIX}{c}" for c in self.regions), *self.searches]


def install_feed_queue(db: Database, wake: asyncio.Event | None = None) -> None:
    """Queue every harvested or pushed change for the hub's feed actors, in the writing transaction.

    Installed by the hub's server (with its worker's ``wake``) and by the hub's commands that write
    sheets (``essaim hub harvest``): the running server's worker drains the queue either way.
    Idempotent: a second call replaces the first listener.
    """

    async def listener(tx: BaseDBAsyncClient, changes: Sequence[Change]) -> None:
        rows = [(c.uri, int(c.stamp)) for c in changes if c.source]
        if rows:
            await db.executemany("INSERT INTO hub_feed_queue (sheet_uri, enqueued) VALUES (?, ?)", rows, conn=tx)
            if wake is not None:
                wake.set()

    listener.essaim_hub_feeds = True  # type: ignore[attr-defined]
    db.sheet_listeners[:] = [x for x in db.sheet_listeners if not getattr(x, "essaim_hub_feeds", False)]
    db.sheet_listeners.append(listener)


def make_code(label: str, taken: set[str]) -> str:
    base = f"{SEARCH_PREFIX}{slug(label)[:40].strip('-') or 'recherche'}"
    code, n = base, 1
    while code in taken:
        n += 1
        code = f"{base}-{n}"
    return code


class HubFeedWorker:
    """Drains ``hub_feed_queue``: announces newly matching sheets, takes back those that stopped matching."""

    def __init__(self, feeds: HubFeeds, *, poll: float = 1.0, batch: int = 200) -> None:
        self.feeds = feeds
        self.fed = feeds.fed
        self.poll = poll
        self.batch = batch
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                done = await self.drain_once()
            except Exception:
                log.exception("hub feeds batch failed", extra={"event": "hubfeeds.failed"})
                done = 0
            if done < self.batch:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.poll)
                except TimeoutError:
                    pass

    async def drain_once(self) -> int:
        """One batch in one transaction (queue rows removed with the announcements they caused)."""
        db = self.fed.db
        async with db.transaction() as tx:
            rows = await db.fetch("SELECT id, sheet_uri FROM hub_feed_queue ORDER BY id LIMIT ?", [self.batch], conn=tx)
            if not rows:
                return 0
            inboxes: dict[str, list[str]] = {}
            for uri in dict.fromkeys(str(r["sheet_uri"]) for r in rows):
                await self._one(uri, inboxes, tx)
            # exactly the rows read: on PostgreSQL a lower id may still be committing (ids are not commit order)
            ids = [int(r["id"]) for r in rows]
            await db.execute(f"DELETE FROM hub_feed_queue WHERE id IN ({', '.join('?' for _ in ids)})", ids, conn=tx)
        return len(rows)

    async def _followers(self, code: str, inboxes: dict[str, list[str]], tx: BaseDBAsyncClient) -> list[str]:
        if code not in inboxes:
            inboxes[code] = await self.fed.follower_inboxes(self.fed.feeds[code], conn=tx)
        return inboxes[code]

    async def _one(self, uri: str, inboxes: dict[str, list[str]], tx: BaseDBAsyncClient) -> None:
        fed = self.fed
        row = await fed.db.fetchone(
            "SELECT uri, source, local_id, stamp, deleted, data, provenance FROM sheet WHERE uri = ?", [uri], conn=tx
        )
        item = SheetStore._decode(row) if row is not None else None  # read in tx: no second connection
        sheet = item if isinstance(item, Sheet) else None
        matching = self.feeds.matching(sheet) if sheet is not None else set()
        announced_rows = await fed.db.fetch("SELECT feed FROM ap_feed_item WHERE sheet_uri = ?", [uri], conn=tx)
        announced = {str(r["feed"]) for r in announced_rows} & set(fed.feeds)
        provenance = json.loads(row["provenance"]) if row is not None and row["provenance"] else {}
        if self.feeds.relay is not None and row is not None:
            await self._relay(self.feeds.relay, row, sheet, provenance, RELAY in announced, inboxes, tx)
        announced.discard(RELAY)
        # The node's own object when the sheet came from an Essaim node (replies then reach its owner).
        target = str(provenance.get("sheetId") or uri)
        now = datetime.fromtimestamp(fed.now(), UTC)
        for code in sorted(matching - announced):
            feed = fed.feeds[code]
            announce = announce_activity(
                target,
                activity_id=fed.new_activity_id(),
                actor_id=feed.id,
                followers_url=feed.followers_url,
                published=now,
            )
            pk = await fed.record_activity(announce, conn=tx, public=False)
            await fed.db.execute(
                "INSERT INTO ap_feed_item (feed, sheet_uri, activity_id, created) VALUES (?, ?, ?, ?)",
                [code, uri, pk, fed.now()],
                conn=tx,
            )
            targets = await self._followers(code, inboxes, tx)
            if targets:
                await fed.enqueue(pk, targets, conn=tx)
            fed.count("hub_feed_announces_total")
        for code in sorted(announced - matching):
            await _withdraw(fed, fed.feeds[code], uri, await self._followers(code, inboxes, tx), tx, undo=True)
            fed.count("hub_feed_withdrawals_total")

    async def _relay(
        self,
        relay: LocalActor,
        row: dict[str, Any],
        sheet: Sheet | None,
        provenance: dict[str, Any],
        relayed: bool,
        inboxes: dict[str, list[str]],
        tx: BaseDBAsyncClient,
    ) -> None:
        """Another hub following the relay gets every record as Create / Update / Delete of our copy, keyed
        by our OAI identifier (the key its harvest of our OAI-PMH uses), with our provenance."""
        fed, uri = self.fed, str(row["uri"])
        assert self.feeds.relay_repo_id is not None
        targets = await self._followers(RELAY, inboxes, tx)
        if not targets:  # no hub follows the relay: nothing to record (a later follower's harvest has it all)
            return
        identifier = make_identifier(self.feeds.relay_repo_id, str(row["source"]), str(row["local_id"]))
        when = datetime.fromtimestamp(int(row["stamp"]), UTC)
        activity: dict[str, Any] | None = None
        if sheet is not None:
            note = sheet_note(
                replace(sheet, local_id=identifier),
                actor_id=relay.id,
                followers_url=relay.followers_url,
                base_url=fed.base_url,
                taxonomy=fed.taxonomy,
            )
            note["oaiProvenance"] = provenance
            if relayed:
                activity = update_activity(note, activity_id=fed.new_activity_id(), actor_id=relay.id, updated=when)
            else:
                activity = create_activity(note, activity_id=fed.new_activity_id(), actor_id=relay.id)
        elif row["deleted"]:  # also when never relayed: the follower may hold it from its harvest of us
            activity = delete_activity(
                uri,
                activity_id=fed.new_activity_id(),
                actor_id=relay.id,
                followers_url=relay.followers_url,
                deleted=when,
            )
        if activity is None:
            return
        pk = await fed.record_activity(activity, conn=tx, public=False)
        await fed.db.execute("DELETE FROM ap_feed_item WHERE feed = ? AND sheet_uri = ?", [RELAY, uri], conn=tx)
        if sheet is not None:
            await fed.db.execute(
                "INSERT INTO ap_feed_item (feed, sheet_uri, activity_id, created) VALUES (?, ?, ?, ?)",
                [RELAY, uri, pk, fed.now()],
                conn=tx,
            )
        await fed.enqueue(pk, targets, conn=tx)
        fed.count("hub_relay_activities_total")
