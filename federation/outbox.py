"""Outbox: every sheet change becomes a Create / Update / Delete, stored and queued in the same transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from federation.service import Federation
from node.storage import Change
from protocol.activitypub.activities import create_activity, delete_activity, update_activity
from protocol.activitypub.objects import sheet_note
from protocol.sheet import Sheet


def note_of(fed: Federation, sheet: Sheet, uri: str | None = None) -> dict[str, Any]:
    note = sheet_note(sheet, actor_id=fed.actor_id, followers_url=fed.followers_url, base_url=fed.base_url)
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
        for change in changes:
            activity = activity_for(fed, change)
            pk = await fed.record_activity(activity, conn=tx)
            if inboxes:
                await fed.enqueue(pk, inboxes, conn=tx)
        fed.count("outbox_activities_total", len(changes))

    return listener


async def outbox_page(fed: Federation, page: int) -> tuple[int, list[dict[str, Any]]]:
    size = fed.conf.page_size
    total_row = await fed.db.fetchone("SELECT COUNT(*) AS n FROM ap_activity WHERE public = ?", [True])
    rows = await fed.db.fetch(
        "SELECT payload FROM ap_activity WHERE public = ? ORDER BY id DESC LIMIT ? OFFSET ?",
        [True, size, (page - 1) * size],
    )
    return int(total_row["n"]) if total_row else 0, [json.loads(r["payload"]) for r in rows]


async def followers_page(fed: Federation, page: int) -> tuple[int, list[str]]:
    size = fed.conf.page_size
    total_row = await fed.db.fetchone("SELECT COUNT(*) AS n FROM ap_follower WHERE status = 'accepted'")
    rows = await fed.db.fetch(
        "SELECT actor FROM ap_follower WHERE status = 'accepted' ORDER BY id LIMIT ? OFFSET ?",
        [size, (page - 1) * size],
    )
    return int(total_row["n"]) if total_row else 0, [str(r["actor"]) for r in rows]
