"""Outbox: every sheet change becomes a Create / Update / Delete, stored and queued in the same transaction.

The node actor authors the sheets. A feed actor (one per theme) re-publishes the
sheets of its theme by reference: an ``Announce`` the first time a sheet carries
the theme, an ``Undo(Announce)`` when it loses it. The author's later ``Update``
and ``Delete`` also go to the followers of the feeds that announced the sheet,
since those peers hold a copy of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from federation.actors import LocalActor
from federation.service import Federation
from node.storage import Change
from protocol.activitypub.activities import (
    announce_activity,
    create_activity,
    delete_activity,
    undo_activity,
    update_activity,
)
from protocol.activitypub.objects import sheet_note
from protocol.sheet import Sheet


def note_of(fed: Federation, sheet: Sheet, uri: str | None = None) -> dict[str, Any]:
    note = sheet_note(
        sheet, actor_id=fed.actor_id, followers_url=fed.followers_url, base_url=fed.base_url, taxonomy=fed.taxonomy
    )
    if uri is not None and note["id"] != uri:
        note["id"] = uri
        note["url"] = uri
    return note


def activity_for(fed: Federation, change: Change) -> dict[str, Any]:
    activity_id = fed.new_activity_id()
    when = datetime.fromtimestamp(change.stamp, UTC)
    if change.kind == "delete" or change.sheet is None:
        return delete_activity(
            change.uri, activity_id=activity_id, actor_id=fed.actor_id, followers_url=fed.followers_url, deleted=when
        )
    note = note_of(fed, change.sheet, change.uri)
    if change.kind == "create":
        return create_activity(note, activity_id=activity_id, actor_id=fed.actor_id)
    return update_activity(note, activity_id=activity_id, actor_id=fed.actor_id, updated=when)


def make_listener(fed: Federation, source: str = "") -> Any:
    """The :class:`~node.storage.SheetStore` listener (only the node's own sheets are published)."""

    async def listener(tx: BaseDBAsyncClient, changes: Sequence[Change]) -> None:
        inboxes = await fed.follower_inboxes(conn=tx)
        feed_inboxes = {code: await fed.follower_inboxes(feed, conn=tx) for code, feed in fed.feeds.items()}
        for change in changes:
            activity = activity_for(fed, change)
            pk = await fed.record_activity(activity, conn=tx)
            announced = await _announced_in(fed, change.uri, tx)
            targets = list(inboxes)
            if change.kind != "create":  # peers holding a copy through a feed hear of the change too
                for code in announced:
                    targets += feed_inboxes.get(code, [])
            if targets:
                await fed.enqueue(pk, targets, conn=tx)
            await _feeds_follow(fed, change, announced, feed_inboxes, tx)
        fed.count("outbox_activities_total", len(changes))

    return listener


async def _announced_in(fed: Federation, uri: str, tx: BaseDBAsyncClient) -> list[str]:
    if not fed.feeds:
        return []
    rows = await fed.db.fetch("SELECT feed FROM ap_feed_item WHERE sheet_uri = ?", [uri], conn=tx)
    return [str(r["feed"]) for r in rows]


async def _feeds_follow(
    fed: Federation, change: Change, announced: list[str], inboxes: dict[str, list[str]], tx: BaseDBAsyncClient
) -> None:
    """Announce the sheet on the feeds of its themes; take it back from feeds whose theme it lost."""
    themes = set(change.sheet.themes) if change.sheet is not None and change.kind != "delete" else set()
    when = datetime.fromtimestamp(change.stamp, UTC)
    for code, feed in fed.feeds.items():
        if code in themes and code not in announced:
            announce = announce_activity(
                change.uri,
                activity_id=fed.new_activity_id(),
                actor_id=feed.id,
                followers_url=feed.followers_url,
                published=when,
            )
            pk = await fed.record_activity(announce, conn=tx, public=False)  # listed in the feed's outbox only
            await fed.db.execute(
                "INSERT INTO ap_feed_item (feed, sheet_uri, activity_id, created) VALUES (?, ?, ?, ?)",
                [code, change.uri, pk, fed.now()],
                conn=tx,
            )
            if inboxes.get(code):
                await fed.enqueue(pk, inboxes[code], conn=tx)
        elif code in announced and code not in themes:
            await _withdraw(fed, feed, change.uri, inboxes.get(code, []), tx, undo=change.kind != "delete")


async def _withdraw(
    fed: Federation, feed: LocalActor, uri: str, inboxes: list[str], tx: BaseDBAsyncClient, *, undo: bool
) -> None:
    row = await fed.db.fetchone(
        "SELECT i.id, a.payload FROM ap_feed_item i JOIN ap_activity a ON a.id = i.activity_id"
        " WHERE i.feed = ? AND i.sheet_uri = ?",
        [feed.feed, uri],
        conn=tx,
    )
    if row is None:
        return
    await fed.db.execute("DELETE FROM ap_feed_item WHERE id = ?", [row["id"]], conn=tx)
    if undo:  # a deleted sheet needs no Undo: its Delete reached these followers
        activity = undo_activity(json.loads(row["payload"]), activity_id=fed.new_activity_id(), actor_id=feed.id)
        pk = await fed.record_activity(activity, conn=tx, public=False)
        if inboxes:
            await fed.enqueue(pk, inboxes, conn=tx)


async def outbox_page(fed: Federation, local: LocalActor, page: int) -> tuple[int, list[dict[str, Any]]]:
    size = fed.conf.page_size
    if local.feed is None:
        total_row = await fed.db.fetchone("SELECT COUNT(*) AS n FROM ap_activity WHERE public = ?", [True])
        rows = await fed.db.fetch(
            "SELECT payload FROM ap_activity WHERE public = ? ORDER BY id DESC LIMIT ? OFFSET ?",
            [True, size, (page - 1) * size],
        )
    else:
        total_row = await fed.db.fetchone("SELECT COUNT(*) AS n FROM ap_feed_item WHERE feed = ?", [local.feed])
        rows = await fed.db.fetch(
            "SELECT a.payload FROM ap_feed_item i JOIN ap_activity a ON a.id = i.activity_id WHERE i.feed = ?"
            " ORDER BY i.id DESC LIMIT ? OFFSET ?",
            [local.feed, size, (page - 1) * size],
        )
    return int(total_row["n"]) if total_row else 0, [json.loads(r["payload"]) for r in rows]


async def followers_page(fed: Federation, local: LocalActor, page: int) -> tuple[int, list[str]]:
    size = fed.conf.page_size
    table, cond, params = local.followers_sql()
    total_row = await fed.db.fetchone(f"SELECT COUNT(*) AS n FROM {table} WHERE status = 'accepted' AND {cond}", params)
    rows = await fed.db.fetch(
        f"SELECT actor FROM {table} WHERE status = 'accepted' AND {cond} ORDER BY id LIMIT ? OFFSET ?",
        [*params, size, (page - 1) * size],
    )
    return int(total_row["n"]) if total_row else 0, [str(r["actor"]) for r in rows]


async def featured_uris(fed: Federation, local: LocalActor, source: str) -> list[str]:
    """The most recently changed live sheets of an actor (a feed: those it announced)."""
    if local.feed is None:
        rows = await fed.db.fetch(
            "SELECT uri FROM sheet WHERE source = ? AND deleted = ? ORDER BY stamp DESC, pk_id DESC LIMIT ?",
            [source, False, fed.conf.featured],
        )
        return [str(r["uri"]) for r in rows]
    rows = await fed.db.fetch(
        "SELECT sheet_uri FROM ap_feed_item WHERE feed = ? ORDER BY id DESC LIMIT ?", [local.feed, fed.conf.featured]
    )
    return [str(r["sheet_uri"]) for r in rows]
