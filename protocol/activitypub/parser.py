"""Incoming activities parsed into typed, frozen records (ARCHITECTURE §2.11); no storage here.

:func:`parse_activity` dispatches on ``type`` through ``_PARSERS`` (Mastodon's
``ActivityPub::Activity.factory`` idea). Validation done here, because it needs
only the document:

* ids are absolute http(s) URIs; the activity id is on the actor's host;
* objects created, updated or deleted have their id on the actor's host, and an
  embedded ``attributedTo`` is the actor (Mastodon CVE-2024-23832, fedify
  GHSA-q9f8-5hc7-898f): otherwise ``ForeignObject`` / ``ActorMismatch``;
* an ``Update`` of an actor is the actor updating itself (key rotation).

What needs the request is the caller's: the signer's key owner must be the
activity's ``actor`` (:func:`require_signer`). Unknown types, and known types with
objects we do not handle, give an :class:`Unsupported` record, not an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from protocol.activitypub.context import DEFAULT_CONTEXT, ESSAIM_CONTEXT, ESSAIM_VOCAB
from protocol.activitypub.context import canonical_url as context_canonical
from protocol.activitypub.context import compact as ld_compact
from protocol.activitypub.context import expand as ld_expand
from protocol.activitypub.errors import ActivityMalformed, ActorMismatch, ForeignObject
from protocol.activitypub.objects import sheet_from_ld
from protocol.activitypub.sigbase import authority
from protocol.errors import SheetValidationError
from protocol.sheet import Sheet

ACTOR_TYPES = frozenset({"Application", "Group", "Organization", "Person", "Service"})
CONTENT_TYPES = frozenset({"Note", "ProjectSheet"})


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    id: str
    type: str
    attributed_to: str | None
    content: str | None
    in_reply_to: str | None
    url: str | None
    published: str | None
    sheet: Sheet | None  # the full sheet when the object carries one (Essaim peers)


@dataclass(frozen=True, slots=True)
class Follow:
    id: str
    actor: str
    object: str  # the followed actor (ours, checked by the caller)


@dataclass(frozen=True, slots=True)
class UndoFollow:
    id: str
    actor: str
    follow_id: str
    object: str | None  # the followed actor when the Follow was embedded


@dataclass(frozen=True, slots=True)
class Accept:
    id: str
    actor: str
    follow_id: str  # one of our Follow ids, matched by the caller


@dataclass(frozen=True, slots=True)
class Reject:
    id: str
    actor: str
    follow_id: str


@dataclass(frozen=True, slots=True)
class Create:
    id: str
    actor: str
    object: ObjectRecord


@dataclass(frozen=True, slots=True)
class Reply:
    """A ``Create`` of a ``Note`` with ``inReplyTo``: a comment on something, not a sheet."""

    id: str
    actor: str
    object: ObjectRecord


@dataclass(frozen=True, slots=True)
class Update:
    id: str
    actor: str
    object: ObjectRecord


@dataclass(frozen=True, slots=True)
class Delete:
    id: str
    actor: str
    object_id: str


@dataclass(frozen=True, slots=True)
class DeleteActor:
    id: str
    actor: str


@dataclass(frozen=True, slots=True)
class UpdateActor:
    """The actor re-published itself; ``public_key_pem`` may be a rotated key."""

    id: str
    actor: str
    key_id: str | None
    public_key_pem: str | None
    inbox: str | None
    shared_inbox: str | None
    preferred_username: str | None


@dataclass(frozen=True, slots=True)
class Announce:
    id: str
    actor: str
    object_id: str  # a boost may point anywhere; an embedded copy is never trusted


@dataclass(frozen=True, slots=True)
class Unsupported:
    type: str
    id: str | None
    actor: str | None
    reason: str


Activity = (
    Follow
    | UndoFollow
    | Accept
    | Reject
    | Create
    | Reply
    | Update
    | Delete
    | DeleteActor
    | UpdateActor
    | Announce
    | Unsupported
)


# ---------------------------------------------------------------- helpers


def _uri(value: Any, what: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
        raise ActivityMalformed(f"{what} must be an absolute http(s) URI, not {value!r}")
    return value


def _ref(value: Any, what: str) -> tuple[str, Mapping[str, Any] | None]:
    """An id, from a bare URI or an embedded object with ``id``."""
    if isinstance(value, Mapping):
        return _uri(value.get("id"), f"{what}.id"), value
    return _uri(value, what), None


def _type(doc: Mapping[str, Any]) -> str:
    value = doc.get("type")
    if isinstance(value, list):  # JSON-LD allows several types; the first AS one decides
        value = next((v for v in value if isinstance(v, str)), None)
    if not isinstance(value, str) or not value:
        raise ActivityMalformed("type is required")
    return value


def _first_id(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) else None


def _link(value: Any) -> str | None:
    """A URL given as a string, a ``Link`` (``href``) or a list of either."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, Mapping):
        value = value.get("href", value.get("id"))
    return value if isinstance(value, str) else None


def _same_host(uri: str, actor: str, what: str) -> None:
    if authority(uri) != authority(actor):
        raise ForeignObject(f"{what} {uri} is not on the host of {actor}")


def require_signer(activity: Activity, key_owner: str) -> None:
    """The key that signed the request must belong to the activity's actor (ARCHITECTURE §3)."""
    if activity.actor != key_owner:
        raise ActorMismatch(f"signed by {key_owner}, but the actor is {activity.actor}")


def _speaks_essaim(context: Any) -> bool:
    """Whether a ``@context`` (URL, inline definitions, or a list of them) brings Essaim's vocabulary."""
    if isinstance(context, str):
        return context_canonical(context) == ESSAIM_CONTEXT
    if isinstance(context, list):
        return any(_speaks_essaim(item) for item in context)
    if isinstance(context, Mapping):
        return any(isinstance(v, str | Mapping) and ESSAIM_VOCAB in str(v) for v in context.values())
    return False


def _sheet_data(obj: Mapping[str, Any], kind: str, context: Any) -> Any:
    """The embedded sheet in Essaim's own terms.

    Sent with exactly our ``@context``, the terms are ours: read as they are (the fast
    path, every Essaim peer). Sent with another context that brings Essaim's vocabulary
    (a prefix, renamed terms, an inline copy), the object is expanded with the sender's
    context and compacted into ours, with pyld over the bundled contexts only: a context
    we do not bundle is refused (400), nothing is fetched. Without Essaim's vocabulary a
    ``sheet`` key means nothing in JSON-LD and is ignored.
    """
    context = obj.get("@context", context)
    if kind != "ProjectSheet" and "sheet" in obj and context == list(DEFAULT_CONTEXT):
        return obj.get("sheet")
    if kind == "ProjectSheet" and context == list(DEFAULT_CONTEXT):
        return obj
    if not _speaks_essaim(context):
        return None
    compacted = ld_compact(ld_expand({**obj, "@context": context}))
    return compacted if kind == "ProjectSheet" else compacted.get("sheet")


def _object_record(obj: Mapping[str, Any], actor: str, context: Any = None) -> ObjectRecord:
    object_id = _uri(obj.get("id"), "object.id")
    _same_host(object_id, actor, "object")
    attributed = _first_id(obj.get("attributedTo"))
    if attributed is not None and attributed != actor:
        raise ActorMismatch(f"object attributed to {attributed}, sent by {actor}")
    kind = _type(obj)
    sheet_data = _sheet_data(obj, kind, context)
    sheet: Sheet | None = None
    if isinstance(sheet_data, Mapping):
        try:
            sheet = sheet_from_ld(sheet_data)
        except SheetValidationError as exc:
            raise ActivityMalformed(f"invalid sheet: {exc}") from exc
        _same_host(sheet.id, actor, "sheet")
    content = obj.get("content")
    published = obj.get("published")
    return ObjectRecord(
        id=object_id,
        type=kind,
        attributed_to=attributed,
        content=content if isinstance(content, str) else None,
        in_reply_to=_first_id(obj.get("inReplyTo")),
        url=_link(obj.get("url")),
        published=published if isinstance(published, str) else None,
        sheet=sheet,
    )


# ---------------------------------------------------------------- parsers

Parser = Callable[[str, str, Mapping[str, Any]], Activity]


def _follow(activity_id: str, actor: str, doc: Mapping[str, Any]) -> Activity:
    target, _ = _ref(doc.get("object"), "object")
    return Follow(id=activity_id, actor=actor, object=target)


def _undo(activity_id: str, actor: str, doc: Mapping[str, Any]) -> Activity:
    inner_id, inner = _ref(doc.get("object"), "object")
    _same_host(inner_id, actor, "undone activity")
    if inner is None:
        return UndoFollow(id=activity_id, actor=actor, follow_id=inner_id, object=None)
    kind = _type(inner)
    if kind != "Follow":
        return Unsupported(type=f"Undo({kind})", id=activity_id, actor=actor, reason="only Undo(Follow) is handled")
    inner_actor = _first_id(inner.get("actor"))
    if inner_actor != actor:
        raise ActorMismatch(f"Undo by {actor} of a Follow by {inner_actor}")
    target = _first_id(inner.get("object"))
    return UndoFollow(id=activity_id, actor=actor, follow_id=inner_id, object=target)


def _answer(kind: type[Accept] | type[Reject]) -> Parser:
    def parse(activity_id: str, actor: str, doc: Mapping[str, Any]) -> Activity:
        follow_id, follow = _ref(doc.get("object"), "object")
        if follow is not None:
            if _type(follow) != "Follow":
                return Unsupported(
                    type=f"{kind.__name__}({_type(follow)})",
                    id=activity_id,
                    actor=actor,
                    reason="only answers to a Follow are handled",
                )
            followee = _first_id(follow.get("object"))
            if followee is not None and followee != actor:
                raise ActorMismatch(f"{actor} answers a Follow addressed to {followee}")
        return kind(id=activity_id, actor=actor, follow_id=follow_id)

    return parse


def _create(activity_id: str, actor: str, doc: Mapping[str, Any]) -> Activity:
    obj = doc.get("object")
    if not isinstance(obj, Mapping):
        raise ActivityMalformed("Create must embed its object")
    if _type(obj) not in CONTENT_TYPES:
        return Unsupported(type=f"Create({_type(obj)})", id=activity_id, actor=actor, reason="object type not handled")
    record = _object_record(obj, actor, doc.get("@context"))
    if record.in_reply_to is not None and record.type == "Note":
        return Reply(id=activity_id, actor=actor, object=record)
    return Create(id=activity_id, actor=actor, object=record)


def _update(activity_id: str, actor: str, doc: Mapping[str, Any]) -> Activity:
    obj = doc.get("object")
    if not isinstance(obj, Mapping):
        raise ActivityMalformed("Update must embed its object")
    kind = _type(obj)
    if kind in ACTOR_TYPES:
        if obj.get("id") != actor:
            raise ActorMismatch(f"{actor} cannot update the actor {obj.get('id')!r}")
        keys = obj.get("publicKey")
        candidates = keys if isinstance(keys, list) else [keys]
        key = next((k for k in candidates if isinstance(k, Mapping) and _first_id(k.get("owner")) == actor), None)
        endpoints = obj.get("endpoints")
        return UpdateActor(
            id=activity_id,
            actor=actor,
            key_id=_first_id(key.get("id")) if key else None,
            public_key_pem=key.get("publicKeyPem") if key and isinstance(key.get("publicKeyPem"), str) else None,
            inbox=_first_id(obj.get("inbox")),
            shared_inbox=_first_id(endpoints.get("sharedInbox")) if isinstance(endpoints, Mapping) else None,
            preferred_username=obj.get("preferredUsername") if isinstance(obj.get("preferredUsername"), str) else None,
        )
    if kind not in CONTENT_TYPES:
        return Unsupported(type=f"Update({kind})", id=activity_id, actor=actor, reason="object type not handled")
    return Update(id=activity_id, actor=actor, object=_object_record(obj, actor, doc.get("@context")))


def _delete(activity_id: str, actor: str, doc: Mapping[str, Any]) -> Activity:
    object_id, _ = _ref(doc.get("object"), "object")
    if object_id == actor:
        return DeleteActor(id=activity_id, actor=actor)
    _same_host(object_id, actor, "deleted object")
    return Delete(id=activity_id, actor=actor, object_id=object_id)


def _announce(activity_id: str, actor: str, doc: Mapping[str, Any]) -> Activity:
    object_id, _ = _ref(doc.get("object"), "object")
    return Announce(id=activity_id, actor=actor, object_id=object_id)


_PARSERS: Mapping[str, Parser] = {
    "Follow": _follow,
    "Undo": _undo,
    "Accept": _answer(Accept),
    "Reject": _answer(Reject),
    "Create": _create,
    "Update": _update,
    "Delete": _delete,
    "Announce": _announce,
}


def parse_activity(doc: Any) -> Activity:
    """Parse one incoming activity; raises an :class:`ActivityPubError` subclass when invalid."""
    if not isinstance(doc, Mapping):
        raise ActivityMalformed("an activity must be a JSON object")
    kind = _type(doc)
    actor = _first_id(doc.get("actor"))
    parser = _PARSERS.get(kind)
    if parser is None:
        raw_id = doc.get("id")
        return Unsupported(
            type=kind, id=raw_id if isinstance(raw_id, str) else None, actor=actor, reason="activity type not handled"
        )
    actor = _uri(actor, "actor")
    activity_id = _uri(doc.get("id"), "id")
    _same_host(activity_id, actor, "activity")
    return parser(activity_id, actor, doc)
