"""Inbox (per actor and shared): size limit, parse, verify, persist, then act; answers 202.

Persisting and acting happen in one transaction per batch (:class:`InboxWriter`, a group
commit), after which each request of the batch is answered.

Order of the checks, each refusing with nothing persisted: body size (413), JSON
(400), HTTP signature, draft-cavage or RFC 9421 (the key fetched by a signed GET,
the cache re-fetched once on a mismatch; Date window; Digest, algorithm name
case-insensitive) (401), the activity itself (ids on the actor's host: 403), the
signer's key owner = the activity's actor (401).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from federation.actors import LocalActor
from federation.service import FEDERATION, Federation
from node.outbound import OutboundError
from protocol.activitypub import parser as ap
from protocol.activitypub.activities import accept_activity, reject_activity
from protocol.activitypub.errors import ActivityPubError, ActorMismatch, SignatureMismatch, SignatureRejected
from protocol.activitypub.sigbase import authority
from protocol.activitypub.signatures import prepare_verification

log = logging.getLogger("essaim.federation.inbox")


def _reject(fed: Federation, request: web.Request, status: int, reason: str) -> web.Response:
    fed.count("inbox_rejected_total")
    log.warning(
        "inbox rejected", extra={"event": "inbox.rejected", "status": status, "reason": reason, "path": request.path}
    )
    return web.json_response({"error": reason}, status=status)


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    if request.content_length is not None and request.content_length > limit:
        return None
    body = await request.content.read(limit + 1)
    return None if len(body) > limit else body


async def inbox(request: web.Request) -> web.Response:
    fed = request.app[FEDERATION]
    body = await _read_body(request, fed.conf.max_inbox_body)
    if body is None:
        return _reject(fed, request, 413, f"body larger than {fed.conf.max_inbox_body} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        return _reject(fed, request, 400, "body is not JSON")
    if not isinstance(document, dict):
        return _reject(fed, request, 400, "an activity must be a JSON object")
    target = fed.base_url + request.path_qs
    now = datetime.fromtimestamp(fed.clock(), UTC)
    try:
        pending = prepare_verification("POST", target, request.headers.items(), body, now=now, policy=fed.policy())
        try:
            key = await fed.remote_key(pending.key_id)
            try:
                pending.verify(key.pem)
            except SignatureMismatch:  # keys rotate: re-fetch once
                key = await fed.remote_key(pending.key_id, refresh=True)
                pending.verify(key.pem)
        except SignatureRejected:
            if _deletes_itself(document):  # a deleted actor's key is gone (410): nothing to do
                return web.Response(status=202)
            raise
        claimed = document.get("actor")
        claimed = claimed.get("id") if isinstance(claimed, dict) else claimed
        if claimed != key.owner:  # before anything else is believed (Mastodon CVE-2024-23832)
            raise ActorMismatch(f"signed by {key.owner}, but the actor is {claimed!r}")
        activity = ap.parse_activity(document)
    except ActivityPubError as exc:
        return _reject(fed, request, exc.http_status, f"{type(exc).__name__}: {exc}")
    if fed.health is not None:  # a host that talks to us is up: its paused deliveries resume
        if await fed.health.succeeded(authority(key.owner), fed.now()) and fed.wake is not None:
            fed.wake.set()
    if isinstance(activity, ap.Unsupported):
        log.info("inbox ignored", extra={"event": "inbox.ignored", "type": activity.type, "reason": activity.reason})
        return web.Response(status=202)
    if isinstance(activity, ap.Follow) and key.inbox is None:  # network before the transaction, never in it
        try:
            inbox_url, shared = await fed.actor_inboxes(activity.actor)
        except (OutboundError, ValueError) as exc:
            return _reject(fed, request, 401, f"cannot resolve the inbox of {activity.actor}: {exc}")
        key = replace(key, inbox=inbox_url, shared_inbox=shared)
    if await writer_of(fed).submit(activity, document, key):
        fed.count("inbox_accepted_total")
    return web.Response(status=202)


class InboxWriter:
    """Group commit: the activities verified meanwhile are persisted and handled in one transaction.

    Each request still answers 202 only once its own activity is committed, but
    concurrent requests share one commit (one fsync on SQLite) instead of paying one
    each. A batch that fails is replayed one activity per transaction, so one bad
    activity never takes the others down with it.
    """

    def __init__(self, fed: Federation, max_batch: int = 200) -> None:
        self.fed = fed
        self.max_batch = max_batch
        self._queue: list[tuple[Any, dict[str, Any], Any, asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, activity: Any, document: dict[str, Any], key: Any) -> bool:
        """Persist and act on one activity; False when it was a repeat (already handled)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((activity, document, key, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await asyncio.shield(future)

    async def _one(self, activity: Any, document: dict[str, Any], key: Any, tx: Any) -> bool:
        if not await _persist(self.fed, activity, document, tx):
            return False
        await handle(self.fed, activity, document, key, tx)
        return True

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                async with self.fed.db.transaction() as tx:
                    results = [await self._one(a, d, k, tx) for a, d, k, _ in batch]
            except Exception:
                log.exception("inbox batch failed; replaying one by one", extra={"event": "inbox.batch_failed"})
                for activity, document, key, future in batch:
                    try:
                        async with self.fed.db.transaction() as tx:
                            result = await self._one(activity, document, key, tx)
                    except Exception as exc:
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        if not future.done():
                            future.set_result(result)
                continue
            for (_, _, _, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


def writer_of(fed: Federation) -> InboxWriter:
    if fed.inbox_writer is None:
        fed.inbox_writer = InboxWriter(fed)
    writer: InboxWriter = fed.inbox_writer
    return writer


def _deletes_itself(document: dict[str, Any]) -> bool:
    obj = document.get("object")
    obj_id = obj.get("id") if isinstance(obj, dict) else obj
    return document.get("type") == "Delete" and isinstance(obj_id, str) and obj_id == document.get("actor")


async def _persist(fed: Federation, activity: Any, document: dict[str, Any], tx: Any) -> bool:
    if await fed.db.fetchone("SELECT id FROM ap_inbox WHERE uri = ?", [activity.id], conn=tx):
        return False
    obj = document.get("object")
    object_uri = obj.get("id") if isinstance(obj, dict) else obj
    await fed.db.execute(
        "INSERT INTO ap_inbox (uri, actor, kind, object_uri, payload, received) VALUES (?, ?, ?, ?, ?, ?)",
        [
            activity.id,
            activity.actor,
            str(document.get("type"))[:32],
            object_uri if isinstance(object_uri, str) else None,
            json.dumps(document, ensure_ascii=False),
            fed.now(),
        ],
        conn=tx,
    )
    return True


async def handle(fed: Federation, activity: Any, document: dict[str, Any], key: Any, tx: Any) -> None:
    db = fed.db
    if isinstance(activity, ap.Follow):
        local = fed.local_actor(activity.object)
        if local is None:
            return
        inbox, shared = key.inbox, key.shared_inbox  # resolved before the transaction when not cached
        status = "pending" if fed.conf.manually_approves_followers else "accepted"
        table, cond, params = local.followers_sql()
        await db.execute(f"DELETE FROM {table} WHERE actor = ? AND {cond}", [activity.actor, *params], conn=tx)
        columns = "actor, inbox, shared_inbox, follow_id, follow, status, created"
        values = [activity.actor, inbox, shared, activity.id, json.dumps(document), status, fed.now()]
        if local.feed is not None:
            columns, values = f"feed, {columns}", [local.feed, *values]
        await db.execute(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' for _ in values)})", values, conn=tx)
        if status == "accepted":
            await send_accept(fed, local, document, inbox, tx)
    elif isinstance(activity, ap.UndoFollow):
        # An Undo names the Follow by id; an embedded Follow also names whom it followed.
        targets = [fed.local_actor(activity.object)] if activity.object else fed.local_actors()
        for local in targets:
            if local is None:
                continue
            table, cond, params = local.followers_sql()
            await db.execute(
                f"DELETE FROM {table} WHERE actor = ? AND {cond} AND (follow_id = ? OR ? = ?)",
                [activity.actor, *params, activity.follow_id, activity.object or "", local.id],
                conn=tx,
            )
    elif isinstance(activity, ap.Accept | ap.Reject):
        status = "accepted" if isinstance(activity, ap.Accept) else "rejected"
        await db.execute(
            "UPDATE ap_following SET status = ? WHERE actor = ? AND follow_id = ?",
            [status, activity.actor, activity.follow_id],
            conn=tx,
        )
    elif isinstance(activity, ap.DeleteActor):
        fed.forget_keys(activity.actor)
        for table in ("ap_follower", "ap_feed_follower", "ap_following", "ap_remote_actor"):
            await db.execute(f"DELETE FROM {table} WHERE actor = ?", [activity.actor], conn=tx)
    elif isinstance(activity, ap.UpdateActor):
        fed.forget_keys(activity.actor)  # re-read from the table, which this Update changes
        if activity.key_id and activity.public_key_pem:
            await db.execute(
                "UPDATE ap_remote_actor SET public_key_pem = ?, inbox = COALESCE(?, inbox),"
                " shared_inbox = COALESCE(?, shared_inbox), fetched = ? WHERE key_id = ? AND actor = ?",
                [
                    activity.public_key_pem,
                    activity.inbox,
                    activity.shared_inbox,
                    fed.now(),
                    activity.key_id,
                    activity.actor,
                ],
                conn=tx,
            )
        if activity.inbox:
            for table in ("ap_follower", "ap_feed_follower"):
                await db.execute(
                    f"UPDATE {table} SET inbox = ?, shared_inbox = ? WHERE actor = ?",
                    [activity.inbox, activity.shared_inbox, activity.actor],
                    conn=tx,
                )
    elif isinstance(activity, ap.Reply):
        reply_to = activity.object.in_reply_to or ""
        if reply_to.startswith(f"{fed.base_url}/sheets/"):
            await db.execute(
                "INSERT INTO ap_message (uri, actor, in_reply_to, content, payload, received, read)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    activity.object.id,
                    activity.actor,
                    reply_to,
                    activity.object.content or "",
                    json.dumps(document, ensure_ascii=False),
                    fed.now(),
                    False,
                ],
                conn=tx,
            )
    elif isinstance(activity, ap.Create | ap.Update | ap.Delete) and fed.content_handler is not None:
        # On a hub: a followed node's sheet, ingested like a harvested record (harvesting.push).
        await fed.content_handler(activity, document, tx)
    # Otherwise Create / Update / Delete / Announce of content: kept in ap_inbox (persisted above).


async def send_accept(fed: Federation, local: LocalActor, follow: dict[str, Any], inbox: str, tx: Any) -> None:
    accept = accept_activity(follow, activity_id=fed.new_activity_id(), actor_id=local.id)
    pk = await fed.record_activity(accept, conn=tx, public=False)
    await fed.enqueue(pk, [inbox], conn=tx)


async def answer_follower(fed: Federation, local: LocalActor, actor: str, *, accept: bool) -> bool:
    """Accept or reject a pending follower of ``local`` (manual approval); False when there is none."""
    table, cond, params = local.followers_sql()
    async with fed.db.transaction() as tx:
        row = await fed.db.fetchone(
            f"SELECT inbox, follow FROM {table} WHERE actor = ? AND status = 'pending' AND {cond}",
            [actor, *params],
            conn=tx,
        )
        if row is None:
            return False
        follow = json.loads(row["follow"])
        if accept:
            await fed.db.execute(
                f"UPDATE {table} SET status = 'accepted' WHERE actor = ? AND {cond}", [actor, *params], conn=tx
            )
            await send_accept(fed, local, follow, str(row["inbox"]), tx)
        else:
            await fed.db.execute(f"DELETE FROM {table} WHERE actor = ? AND {cond}", [actor, *params], conn=tx)
            reject = reject_activity(follow, activity_id=fed.new_activity_id(), actor_id=local.id)
            pk = await fed.record_activity(reject, conn=tx, public=False)
            await fed.enqueue(pk, [str(row["inbox"])], conn=tx)
    return True


async def approve_follower(fed: Federation, actor: str) -> bool:
    """Accept a pending follower of the node actor (manual approval)."""
    return await answer_follower(fed, fed.node_actor, actor, accept=True)
