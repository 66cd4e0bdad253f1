"""The node's federation state: its actor, its key, the outbound client and the remote key cache."""

from __future__ import annotations

import html
import json
import logging
import mimetypes
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from federation.actors import LocalActor, feed_actors, feed_codes
from federation.config import FederationSettings, Identity
from node.db import Database
from node.outbound import OutboundClient, OutboundError
from protocol.activitypub.activities import ActorProfile
from protocol.activitypub.discovery import ACTIVITY_JSON, LD_JSON_AS
from protocol.activitypub.errors import KeyFormatError, SignatureRejected
from protocol.activitypub.keys import load_public_key
from protocol.activitypub.sigbase import SignaturePolicy, authority
from protocol.activitypub.signatures import sign_request
from protocol.taxonomy import Taxonomy, default_taxonomy

log = logging.getLogger("essaim.federation")

ACCEPT_AP = f"{ACTIVITY_JSON}, {LD_JSON_AS}"


@dataclass(frozen=True, slots=True)
class RemoteKey:
    key_id: str
    owner: str
    pem: str
    inbox: str | None
    shared_inbox: str | None


@dataclass
class Federation:
    """Everything the federation handlers and the worker share (one per app)."""

    conf: FederationSettings
    identity: Identity
    db: Database
    client: OutboundClient
    private_pem: str
    public_pem: str
    clock: Callable[[], float] = time.time
    wake: Any = None  # an asyncio.Event set when deliveries are enqueued
    health: Any = None  # the worker's DomainHealth (inbound activity from a host revives it)
    inbox_writer: Any = None  # federation.inbox.InboxWriter, created on first use
    # async (activity, document, tx) -> None: what a hub does with a Create / Update / Delete of content
    # (harvesting.push.PushIngest, installed by the app shell); None on a node: kept in ap_inbox only.
    content_handler: Any = None
    # Remote keys in memory too (key id -> (key, fetched)): the table is the durable cache,
    # this one spares the inbox a database round trip per request.
    _keys: dict[str, tuple[RemoteKey, int]] = field(default_factory=dict, init=False, repr=False)
    stats: dict[str, int] = field(default_factory=dict)
    taxonomy: Taxonomy = field(default_factory=default_taxonomy)
    feeds: dict[str, LocalActor] = field(init=False)
    node_actor: LocalActor = field(init=False)

    def __post_init__(self) -> None:
        me = self.identity
        self.node_actor = LocalActor(
            id=f"{self.base_url}/actor",
            username=me.username,
            name=me.name,
            summary_text=me.description,
            profile_url=f"{self.base_url}/",
        )
        codes = feed_codes(self.conf.feeds, self.taxonomy)
        self.feeds = feed_actors(self.base_url, me.name, codes, self.taxonomy)
        taken = {me.username.lower()}
        for feed in self.feeds.values():
            if feed.username.lower() in taken:  # handles must be unique on the host (WebFinger)
                raise ValueError(f"federation.feeds: the handle {feed.username} is already taken")
            taken.add(feed.username.lower())

    # ------------------------------------------------------------ identity

    @property
    def base_url(self) -> str:
        return self.identity.base_url.rstrip("/")

    @property
    def host(self) -> str:
        return authority(self.base_url)

    @property
    def actor_id(self) -> str:
        return self.node_actor.id

    @property
    def key_id(self) -> str:
        return self.node_actor.key_id

    @property
    def followers_url(self) -> str:
        return self.node_actor.followers_url

    @property
    def username(self) -> str:
        return self.node_actor.username

    def local_actors(self) -> list[LocalActor]:
        return [self.node_actor, *self.feeds.values()]

    def local_actor(self, actor_id: str | None) -> LocalActor | None:
        """Our actor with this id, if it is one."""
        for local in self.local_actors():
            if local.id == actor_id:
                return local
        return None

    def profile(self, local: LocalActor | None = None) -> ActorProfile:
        local = local or self.node_actor
        return ActorProfile(
            id=local.id,
            username=local.username,
            name=local.name,
            summary=f"<p>{_escape(local.summary_text)}</p>",
            url=local.profile_url,
            inbox=local.inbox,
            outbox=local.outbox,
            followers=local.followers_url,
            following=local.following_url,
            featured=local.featured_url,
            shared_inbox=f"{self.base_url}/inbox",
            public_key_pem=self.public_pem,
            # Mastodon shows a raster avatar: the partner's logo, else Essaim's own icon
            icon_url=self.identity.logo or f"{self.base_url}/static/essaim-icon.png",
            icon_media_type=_media_type(self.identity.logo) if self.identity.logo else "image/png",
            discoverable=True,
            manually_approves_followers=self.conf.manually_approves_followers,
        )

    def new_activity_id(self) -> str:
        return f"{self.base_url}/activities/{uuid.uuid4()}"

    def now(self) -> int:
        return int(self.clock())

    def policy(self) -> SignaturePolicy:
        return SignaturePolicy(
            max_age=timedelta(seconds=self.conf.signature_max_age),
            max_future=timedelta(seconds=self.conf.signature_max_future),
        )

    def count(self, name: str, by: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + by

    # ------------------------------------------------------------ outbound

    def signed_headers(self, method: str, url: str, body: bytes | None, key_id: str | None = None) -> dict[str, str]:
        """Signed afresh at each call: the receiver's Date window is short. ``key_id``: which actor signs."""
        return sign_request(
            method=method,
            target_uri=url,
            body=body,
            key_id=key_id or self.key_id,
            private_key_pem=self.private_pem,
            now=datetime.fromtimestamp(self.clock(), UTC),
        )

    async def fetch_json(self, url: str) -> dict[str, Any]:
        """A signed GET (authorized-fetch peers demand it) of an ActivityPub document."""
        headers = {"Accept": ACCEPT_AP, **self.signed_headers("GET", url, None)}
        response = await self.client.get(url, headers=headers, max_bytes=1024 * 1024)
        document = response.json()
        if not isinstance(document, dict):
            raise OutboundError(f"{url} did not answer a JSON object", url=url)
        return document

    # ------------------------------------------------------------ remote keys

    async def remote_key(self, key_id: str, *, refresh: bool = False) -> RemoteKey:
        """The public key ``key_id`` names: from the cache, else fetched (signed GET) and cached."""
        if not refresh:
            cached = self._keys.get(key_id)
            if cached is not None and self.now() - cached[1] < self.conf.key_cache_ttl:
                return cached[0]
            row = await self.db.fetchone("SELECT * FROM ap_remote_actor WHERE key_id = ?", [key_id])
            if row is not None and self.now() - int(row["fetched"]) < self.conf.key_cache_ttl:
                self._keys[key_id] = (_remote(row), int(row["fetched"]))
                return _remote(row)
        url = key_id.split("#", 1)[0]
        try:
            document = await self.fetch_json(url)
        except (OutboundError, ValueError) as exc:
            raise SignatureRejected(f"cannot fetch the key {key_id}: {exc}") from exc
        key = _key_of(document, key_id)
        owner = key.get("owner")
        if not isinstance(owner, str) or authority(owner) != authority(key_id):
            raise SignatureRejected(f"key {key_id} has no owner on its host")
        actor = document if document.get("id") == owner else None
        if actor is None:  # the key was served apart: its owner must list it
            try:
                actor = await self.fetch_json(owner)
            except (OutboundError, ValueError) as exc:
                raise SignatureRejected(f"cannot fetch the key owner {owner}: {exc}") from exc
            listed = _key_of(actor, key_id)
            if listed.get("publicKeyPem") != key.get("publicKeyPem"):
                raise SignatureRejected(f"{owner} does not publish the key {key_id}")
        pem = key.get("publicKeyPem")
        if not isinstance(pem, str):
            raise SignatureRejected(f"key {key_id} has no publicKeyPem")
        try:
            load_public_key(pem)
        except KeyFormatError as exc:
            raise SignatureRejected(str(exc)) from exc
        endpoints = actor.get("endpoints")
        shared = endpoints.get("sharedInbox") if isinstance(endpoints, dict) else None
        remote = RemoteKey(
            key_id=key_id,
            owner=owner,
            pem=pem,
            inbox=actor.get("inbox") if isinstance(actor.get("inbox"), str) else None,
            shared_inbox=shared if isinstance(shared, str) else None,
        )
        await self.store_key(remote, username=actor.get("preferredUsername"))
        return remote

    def forget_keys(self, actor: str) -> None:
        """Drop an actor's keys from memory (its Update or Delete changed the table)."""
        for key_id in [k for k, (remote, _) in self._keys.items() if remote.owner == actor]:
            del self._keys[key_id]

    async def store_key(self, remote: RemoteKey, *, username: Any = None, conn: Any = None) -> None:
        self._keys[remote.key_id] = (remote, self.now())
        params = [
            remote.owner,
            remote.pem,
            remote.inbox,
            remote.shared_inbox,
            username if isinstance(username, str) else None,
            self.now(),
            remote.key_id,
        ]
        updated = await self.db.execute(
            "UPDATE ap_remote_actor SET actor = ?, public_key_pem = ?, inbox = ?, shared_inbox = ?, username = ?,"
            " fetched = ? WHERE key_id = ?",
            params,
            conn=conn,
        )
        if not updated:
            await self.db.execute(
                "INSERT INTO ap_remote_actor (actor, public_key_pem, inbox, shared_inbox, username, fetched, key_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                params,
                conn=conn,
            )

    async def actor_inboxes(self, actor_id: str) -> tuple[str, str | None]:
        """(inbox, shared inbox) of a remote actor: the key cache, else its document."""
        row = await self.db.fetchone(
            "SELECT inbox, shared_inbox FROM ap_remote_actor WHERE actor = ? AND inbox IS NOT NULL", [actor_id]
        )
        if row is not None:
            return str(row["inbox"]), row["shared_inbox"]
        document = await self.fetch_json(actor_id)
        if document.get("id") != actor_id or not isinstance(document.get("inbox"), str):
            raise OutboundError(f"{actor_id} is not an actor with an inbox", url=actor_id)
        endpoints = document.get("endpoints")
        shared = endpoints.get("sharedInbox") if isinstance(endpoints, dict) else None
        return str(document["inbox"]), shared if isinstance(shared, str) else None

    # ------------------------------------------------------------ storage helpers

    async def record_activity(self, activity: dict[str, Any], *, conn: Any, public: bool = True) -> int:
        obj = activity.get("object")
        object_uri = obj.get("id") if isinstance(obj, dict) else obj
        await self.db.execute(
            "INSERT INTO ap_activity (uri, kind, object_uri, public, payload, created) VALUES (?, ?, ?, ?, ?, ?)",
            [
                activity["id"],
                activity["type"],
                object_uri if isinstance(object_uri, str) else None,
                public,
                json.dumps(activity, ensure_ascii=False),
                self.now(),
            ],
            conn=conn,
        )
        row = await self.db.fetchone("SELECT id FROM ap_activity WHERE uri = ?", [activity["id"]], conn=conn)
        assert row is not None
        return int(row["id"])

    async def enqueue(self, activity_pk: int, inboxes: list[str], *, conn: Any) -> int:
        """One delivery per distinct inbox (callers pass shared inboxes already de-duplicated)."""
        now = self.now()
        unique = list(dict.fromkeys(inboxes))
        await self.db.executemany(
            "INSERT INTO ap_delivery (activity_id, inbox, host, status, attempts, next_attempt, created)"
            " VALUES (?, ?, ?, 'pending', 0, ?, ?)",
            [(activity_pk, inbox, authority(inbox), now, now) for inbox in unique],
            conn=conn,
        )
        if unique and self.wake is not None:
            self.wake.set()
        return len(unique)

    async def follower_inboxes(self, local: LocalActor | None = None, *, conn: Any = None) -> list[str]:
        """Where a public activity of ``local`` goes: each follower's shared inbox, else its own (de-duplicated)."""
        table, cond, params = (local or self.node_actor).followers_sql()
        rows = await self.db.fetch(
            f"SELECT inbox, shared_inbox FROM {table} WHERE status = 'accepted' AND {cond} ORDER BY id",
            params,
            conn=conn,
        )
        return list(dict.fromkeys(str(r["shared_inbox"] or r["inbox"]) for r in rows))


def _remote(row: dict[str, Any]) -> RemoteKey:
    return RemoteKey(
        key_id=str(row["key_id"]),
        owner=str(row["actor"]),
        pem=str(row["public_key_pem"]),
        inbox=row["inbox"],
        shared_inbox=row["shared_inbox"],
    )


def _key_of(document: dict[str, Any], key_id: str) -> dict[str, Any]:
    if document.get("id") == key_id and "publicKeyPem" in document:
        return document
    keys = document.get("publicKey")
    for key in keys if isinstance(keys, list) else [keys]:
        if isinstance(key, dict) and key.get("id") == key_id:
            return key
    raise SignatureRejected(f"{key_id} is not published by the fetched document")


def _media_type(url: str) -> str:
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    return guessed if guessed and guessed.startswith("image/") else "image/png"


def _escape(text: str) -> str:
    return html.escape(text)


FEDERATION = web.AppKey("federation", Federation)
