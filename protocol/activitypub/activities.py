"""Builders for activities, the ``Service`` actor document and paged ordered collections.

Documents are plain dicts ready for ``json.dumps``; ``@context`` sits on the
outermost document only. Ids are given by the caller: every activity id must be
dereferenceable on our host (peers re-fetch an embedded Follow, ARCHITECTURE §3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from protocol.activitypub.context import DEFAULT_CONTEXT, PUBLIC
from protocol.sheet import format_datestamp


def _bare(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "@context"}


def _document(body: dict[str, Any]) -> dict[str, Any]:
    return {"@context": list(DEFAULT_CONTEXT), **body}


def create_activity(obj: Mapping[str, Any], *, activity_id: str, actor_id: str) -> dict[str, Any]:
    """``Create`` wrapping ``obj``; addressing copied from the object, as Mastodon expects."""
    body: dict[str, Any] = {"id": activity_id, "type": "Create", "actor": actor_id}
    for key in ("published", "to", "cc"):
        if key in obj:
            body[key] = obj[key]
    body["object"] = _bare(obj)
    return _document(body)


def update_activity(obj: Mapping[str, Any], *, activity_id: str, actor_id: str, updated: datetime) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": activity_id,
        "type": "Update",
        "actor": actor_id,
        "published": format_datestamp(updated),
    }
    for key in ("to", "cc"):
        if key in obj:
            body[key] = obj[key]
    body["object"] = _bare(obj)
    return _document(body)


def tombstone(object_id: str, *, deleted: datetime, former_type: str = "Note") -> dict[str, Any]:
    """What a deleted sheet's URL serves (with HTTP 410), and the object of its ``Delete``."""
    return {"id": object_id, "type": "Tombstone", "formerType": former_type, "deleted": format_datestamp(deleted)}


def delete_activity(
    object_id: str,
    *,
    activity_id: str,
    actor_id: str,
    followers_url: str,
    deleted: datetime,
    former_type: str = "Note",
) -> dict[str, Any]:
    return _document(
        {
            "id": activity_id,
            "type": "Delete",
            "actor": actor_id,
            "published": format_datestamp(deleted),
            "to": [PUBLIC],
            "cc": [followers_url],
            "object": tombstone(object_id, deleted=deleted, former_type=former_type),
        }
    )


def follow_activity(*, activity_id: str, actor_id: str, target_id: str) -> dict[str, Any]:
    return _document({"id": activity_id, "type": "Follow", "actor": actor_id, "object": target_id})


def undo_activity(inner: Mapping[str, Any], *, activity_id: str, actor_id: str) -> dict[str, Any]:
    return _document({"id": activity_id, "type": "Undo", "actor": actor_id, "object": _bare(inner)})


def accept_activity(follow: Mapping[str, Any], *, activity_id: str, actor_id: str) -> dict[str, Any]:
    """``Accept`` embedding the peer's ``Follow`` (Mastodon matches on its id, some on its body)."""
    return _document({"id": activity_id, "type": "Accept", "actor": actor_id, "object": _bare(follow)})


def reject_activity(follow: Mapping[str, Any], *, activity_id: str, actor_id: str) -> dict[str, Any]:
    return _document({"id": activity_id, "type": "Reject", "actor": actor_id, "object": _bare(follow)})


def announce_activity(
    object_id: str, *, activity_id: str, actor_id: str, followers_url: str, published: datetime
) -> dict[str, Any]:
    """A feed actor (theme, territory) re-publishing a sheet by reference."""
    return _document(
        {
            "id": activity_id,
            "type": "Announce",
            "actor": actor_id,
            "published": format_datestamp(published),
            "to": [PUBLIC],
            "cc": [followers_url],
            "object": object_id,
        }
    )


# ------------------------------------------------------------------- actor


@dataclass(frozen=True, slots=True)
class ActorProfile:
    """Everything a ``Service`` actor document says; URLs are absolute."""

    id: str
    username: str  # preferredUsername; with our host, the WebFinger handle
    name: str
    summary: str  # HTML
    url: str  # the profile page (HTML)
    inbox: str
    outbox: str
    followers: str
    following: str
    featured: str
    shared_inbox: str
    public_key_pem: str
    icon_url: str | None = None
    icon_media_type: str = "image/png"
    discoverable: bool = True
    manually_approves_followers: bool = False
    published: datetime | None = None

    @property
    def key_id(self) -> str:
        return f"{self.id}#main-key"


def service_actor(profile: ActorProfile) -> dict[str, Any]:
    """The actor document: ``Service`` for node and feed actors (ARCHITECTURE §3)."""
    body: dict[str, Any] = {
        "id": profile.id,
        "type": "Service",
        "preferredUsername": profile.username,
        "name": profile.name,
        "summary": profile.summary,
        "url": profile.url,
        "inbox": profile.inbox,
        "outbox": profile.outbox,
        "followers": profile.followers,
        "following": profile.following,
        "featured": profile.featured,
        "endpoints": {"sharedInbox": profile.shared_inbox},
        "publicKey": {"id": profile.key_id, "owner": profile.id, "publicKeyPem": profile.public_key_pem},
        "discoverable": profile.discoverable,
        "indexable": profile.discoverable,
        "manuallyApprovesFollowers": profile.manually_approves_followers,
    }
    if profile.icon_url:
        body["icon"] = {"type": "Image", "mediaType": profile.icon_media_type, "url": profile.icon_url}
    if profile.published is not None:
        body["published"] = format_datestamp(profile.published)
    return _document(body)


# ------------------------------------------------------------- collections


def ordered_collection(
    collection_id: str,
    *,
    total: int,
    first: str | None = None,
    last: str | None = None,
    items: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """The collection head: ``totalItems`` and ``first``/``last`` page links (or inline items when small)."""
    body: dict[str, Any] = {"id": collection_id, "type": "OrderedCollection", "totalItems": total}
    if items is not None:
        body["orderedItems"] = list(items)
    if first is not None:
        body["first"] = first
    if last is not None:
        body["last"] = last
    return _document(body)


def ordered_collection_page(
    page_id: str,
    *,
    part_of: str,
    items: Sequence[Any],
    next_id: str | None = None,
    prev_id: str | None = None,
    start_index: int | None = None,
    total: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": page_id,
        "type": "OrderedCollectionPage",
        "partOf": part_of,
        "orderedItems": [_bare(i) if isinstance(i, Mapping) else i for i in items],
    }
    if total is not None:
        body["totalItems"] = total
    if start_index is not None:
        body["startIndex"] = start_index
    if next_id is not None:
        body["next"] = next_id
    if prev_id is not None:
        body["prev"] = prev_id
    return _document(body)
