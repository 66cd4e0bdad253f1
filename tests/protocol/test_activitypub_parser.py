"""Incoming activities into typed records, with the same-origin and signer rules."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from protocol.activitypub import activities, parser
from protocol.activitypub.errors import ActivityMalformed, ActorMismatch, ForeignObject
from protocol.activitypub.objects import sheet_note, sheet_to_ld
from protocol.sheet import sheet_from_dict

PEER = "https://peer.test/actor"
US = "https://node1.test/actor"
WHEN = datetime(2026, 2, 1, tzinfo=UTC)
SHEET = sheet_from_dict(
    {
        "id": "https://peer.test/sheets/7",
        "local_id": "7",
        "title": "Jardin partagé",
        "partner": {"name": "Peer"},
        "themes": ["ENV"],
        "places": [{"insee": "35238"}],
    }
)


def peer_note(**extra: Any) -> dict[str, Any]:
    obj = sheet_note(SHEET, actor_id=PEER, followers_url=f"{PEER}/followers", base_url="https://peer.test")
    obj.update(extra)
    return obj


def create(obj: dict[str, Any], *, actor: str = PEER, activity_id: str = "https://peer.test/activities/1") -> Any:
    doc = activities.create_activity(obj, activity_id=activity_id, actor_id=actor)
    return parser.parse_activity(doc)


# ------------------------------------------------------------------ follows


def test_follow_and_undo() -> None:
    follow = activities.follow_activity(activity_id="https://peer.test/follows/1", actor_id=PEER, target_id=US)
    record = parser.parse_activity(follow)
    assert record == parser.Follow(id="https://peer.test/follows/1", actor=PEER, object=US)
    undo = activities.undo_activity(follow, activity_id="https://peer.test/follows/1#undo", actor_id=PEER)
    assert parser.parse_activity(undo) == parser.UndoFollow(
        id="https://peer.test/follows/1#undo", actor=PEER, follow_id="https://peer.test/follows/1", object=US
    )
    by_id = {**undo, "object": "https://peer.test/follows/1"}
    assert parser.parse_activity(by_id).follow_id == "https://peer.test/follows/1"  # type: ignore[union-attr]


def test_undo_of_someone_elses_follow() -> None:
    follow = activities.follow_activity(
        activity_id="https://peer.test/follows/1", actor_id="https://peer.test/eve", target_id=US
    )
    undo = activities.undo_activity(follow, activity_id="https://peer.test/undo/1", actor_id=PEER)
    with pytest.raises(ActorMismatch):
        parser.parse_activity(undo)
    foreign = activities.follow_activity(activity_id="https://other.test/follows/1", actor_id=PEER, target_id=US)
    with pytest.raises(ForeignObject):
        parser.parse_activity(activities.undo_activity(foreign, activity_id="https://peer.test/undo/2", actor_id=PEER))


def test_undo_like_is_unsupported() -> None:
    like = {"id": "https://peer.test/likes/1", "type": "Like", "actor": PEER, "object": "https://node1.test/s/1"}
    record = parser.parse_activity(activities.undo_activity(like, activity_id="https://peer.test/u/1", actor_id=PEER))
    assert isinstance(record, parser.Unsupported) and record.type == "Undo(Like)"


def test_accept_and_reject() -> None:
    ours = activities.follow_activity(activity_id="https://node1.test/follows/9", actor_id=US, target_id=PEER)
    accept = activities.accept_activity(ours, activity_id="https://peer.test/accepts/1", actor_id=PEER)
    assert parser.parse_activity(accept) == parser.Accept(
        id="https://peer.test/accepts/1", actor=PEER, follow_id="https://node1.test/follows/9"
    )
    reject = activities.reject_activity(ours, activity_id="https://peer.test/rejects/1", actor_id=PEER)
    assert isinstance(parser.parse_activity(reject), parser.Reject)
    by_id = {**accept, "object": "https://node1.test/follows/9"}  # Follow ids must be dereferenceable
    assert parser.parse_activity(by_id).follow_id == "https://node1.test/follows/9"  # type: ignore[union-attr]
    # Accepting a Follow that was addressed to somebody else.
    other = activities.follow_activity(
        activity_id="https://node1.test/follows/10", actor_id=US, target_id="https://peer.test/bob"
    )
    with pytest.raises(ActorMismatch):
        parser.parse_activity(activities.accept_activity(other, activity_id="https://peer.test/a/2", actor_id=PEER))


# ------------------------------------------------------------------ content


def test_create_note_with_sheet() -> None:
    record = create(peer_note())
    assert isinstance(record, parser.Create)
    assert record.object.type == "Note" and record.object.id == SHEET.id
    assert record.object.sheet == SHEET and record.object.attributed_to == PEER
    assert record.object.url == SHEET.id and record.object.in_reply_to is None


def test_create_plain_note_and_reply() -> None:
    plain = {"id": "https://peer.test/notes/1", "type": "Note", "attributedTo": PEER, "content": "<p>hi</p>"}
    record = create(plain)
    assert isinstance(record, parser.Create) and record.object.sheet is None and record.object.content == "<p>hi</p>"
    reply = create({**plain, "inReplyTo": "https://node1.test/sheets/42"})
    assert isinstance(reply, parser.Reply) and reply.object.in_reply_to == "https://node1.test/sheets/42"


def test_object_on_foreign_host_is_refused() -> None:
    """CVE-2024-23832: peer.test must not create or delete objects that live on node1.test."""
    with pytest.raises(ForeignObject):
        create(peer_note(id="https://node1.test/sheets/42"))
    with pytest.raises(ForeignObject):  # the embedded sheet claims another node's id
        create(
            peer_note(
                id="https://peer.test/notes/2",
                sheet={**peer_note()["sheet"], "sheetId": "https://node1.test/sheets/42"},
            )
        )
    delete = activities.delete_activity(
        "https://node1.test/sheets/42",
        activity_id="https://peer.test/d/1",
        actor_id=PEER,
        followers_url=f"{PEER}/followers",
        deleted=WHEN,
    )
    with pytest.raises(ForeignObject):
        parser.parse_activity(delete)
    with pytest.raises(ForeignObject):  # the activity id itself on another host
        create(peer_note(), activity_id="https://node1.test/activities/1")


def test_attributed_to_must_be_the_actor() -> None:
    with pytest.raises(ActorMismatch):
        create(peer_note(attributedTo="https://peer.test/someone-else"))


def test_update_and_delete_of_sheet() -> None:
    update = activities.update_activity(peer_note(), activity_id="https://peer.test/u/1", actor_id=PEER, updated=WHEN)
    record = parser.parse_activity(update)
    assert isinstance(record, parser.Update) and record.object.sheet == SHEET
    delete = activities.delete_activity(
        SHEET.id, activity_id="https://peer.test/d/1", actor_id=PEER, followers_url=f"{PEER}/followers", deleted=WHEN
    )
    assert parser.parse_activity(delete) == parser.Delete(id="https://peer.test/d/1", actor=PEER, object_id=SHEET.id)


def test_delete_actor_and_update_actor_key_rotation() -> None:
    gone = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{PEER}#delete",
        "type": "Delete",
        "actor": PEER,
        "object": PEER,
    }
    assert parser.parse_activity(gone) == parser.DeleteActor(id=f"{PEER}#delete", actor=PEER)
    actor_doc = {
        "id": PEER,
        "type": "Service",
        "preferredUsername": "peer",
        "inbox": f"{PEER}/inbox",
        "endpoints": {"sharedInbox": "https://peer.test/inbox"},
        "publicKey": {"id": f"{PEER}#key-2", "owner": PEER, "publicKeyPem": "NEW PEM"},
    }
    update = {"id": f"{PEER}#update-1", "type": "Update", "actor": PEER, "object": actor_doc}
    record = parser.parse_activity(update)
    assert record == parser.UpdateActor(
        id=f"{PEER}#update-1",
        actor=PEER,
        key_id=f"{PEER}#key-2",
        public_key_pem="NEW PEM",
        inbox=f"{PEER}/inbox",
        shared_inbox="https://peer.test/inbox",
        preferred_username="peer",
    )
    with pytest.raises(ActorMismatch):
        parser.parse_activity({**update, "object": {**actor_doc, "id": "https://peer.test/bob"}})


def test_announce_keeps_only_the_reference() -> None:
    boost = activities.announce_activity(
        "https://elsewhere.test/notes/5",
        activity_id="https://peer.test/b/1",
        actor_id=PEER,
        followers_url=f"{PEER}/followers",
        published=WHEN,
    )
    boost["object"] = {"id": "https://elsewhere.test/notes/5", "type": "Note", "content": "forged"}
    assert parser.parse_activity(boost) == parser.Announce(
        id="https://peer.test/b/1", actor=PEER, object_id="https://elsewhere.test/notes/5"
    )


# ----------------------------------------------------------- unknown, broken


@pytest.mark.parametrize("kind", ["Like", "EmojiReact", "Move", "Block", "Flag", "Add", ["Like", "Other"]])
def test_unknown_types_are_unsupported_not_errors(kind: Any) -> None:
    record = parser.parse_activity({"id": "https://peer.test/x/1", "type": kind, "actor": PEER, "object": US})
    assert isinstance(record, parser.Unsupported) and record.actor == PEER


def test_create_of_unhandled_object_type() -> None:
    record = create({"id": "https://peer.test/q/1", "type": "Question", "attributedTo": PEER})
    assert isinstance(record, parser.Unsupported) and record.type == "Create(Question)"


@pytest.mark.parametrize(
    "doc",
    [
        [],
        "Follow",
        {"type": "Follow"},
        {"id": "https://peer.test/f", "actor": PEER, "object": US},
        {"id": "https://peer.test/f", "type": "Follow", "object": US},
        {"id": "/relative", "type": "Follow", "actor": PEER, "object": US},
        {"id": "https://peer.test/f", "type": "Follow", "actor": "ftp://peer.test/a", "object": US},
        {"id": "https://peer.test/f", "type": "Follow", "actor": PEER},
        {"id": "https://peer.test/c", "type": "Create", "actor": PEER, "object": "https://peer.test/n/1"},
        {"id": "https://peer.test/c", "type": "Create", "actor": PEER, "object": {"type": "Note"}},
    ],
)
def test_malformed_activities(doc: Any) -> None:
    with pytest.raises(ActivityMalformed) as info:
        parser.parse_activity(doc)
    assert info.value.http_status == 400


def test_invalid_embedded_sheet_is_malformed() -> None:
    broken = {**peer_note()["sheet"], "title": None, "themes": 12}
    with pytest.raises(ActivityMalformed):
        create(peer_note(sheet=broken))


def test_require_signer() -> None:
    record = parser.parse_activity(
        activities.follow_activity(activity_id="https://peer.test/f/1", actor_id=PEER, target_id=US)
    )
    parser.require_signer(record, PEER)
    with pytest.raises(ActorMismatch) as info:
        parser.require_signer(record, "https://peer.test/mallory")
    assert info.value.http_status == 401


def test_records_are_frozen() -> None:
    record = parser.Follow(id="a", actor="b", object="c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.actor = "x"  # type: ignore[misc]


def test_create_of_bare_project_sheet() -> None:
    obj = {**sheet_to_ld(SHEET), "id": SHEET.id, "attributedTo": PEER}
    record = create(obj)
    assert isinstance(record, parser.Create)
    assert record.object.type == "ProjectSheet" and record.object.sheet == SHEET


# ------------------------------------------------------------------ JSON-LD: the sheet through the sender's context


def _with_context(ctx: Any, **rename: str) -> dict[str, Any]:
    note = {k: v for k, v in peer_note().items() if k != "@context"}
    for old, new in rename.items():
        note[new] = note.pop(old)
    doc = activities.create_activity(note, activity_id="https://peer.test/activities/ld", actor_id=PEER)
    doc["@context"] = ctx
    return doc


def test_sheet_with_our_context_is_read_as_is() -> None:
    record = create(peer_note())
    assert record.object.sheet == SHEET


def test_sheet_through_another_spelling_of_the_context_is_expanded_and_compacted() -> None:
    """An inline copy of the context plus a renamed term: pyld (bundled contexts) maps it back to ours."""
    from protocol.activitypub.context import AS_CONTEXT, ESSAIM_CONTEXT, SECURITY_CONTEXT, bundled_context

    inline = {**bundled_context(ESSAIM_CONTEXT)["@context"], "fiche": {"@id": "essaim:sheet"}}
    doc = _with_context([AS_CONTEXT, SECURITY_CONTEXT, inline], sheet="fiche")
    assert parser.parse_activity(doc).object.sheet == SHEET  # type: ignore[union-attr]
    # the published URL spelled differently (http, .jsonld) is the same bundled context
    doc = _with_context([AS_CONTEXT, "http://w3id.org/essaim/v1.jsonld"])
    assert parser.parse_activity(doc).object.sheet == SHEET  # type: ignore[union-attr]


def test_sheet_without_essaim_vocabulary_means_nothing() -> None:
    doc = _with_context("https://www.w3.org/ns/activitystreams")
    assert parser.parse_activity(doc).object.sheet is None  # type: ignore[union-attr]


def test_sheet_with_an_unbundled_context_is_refused_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from protocol.activitypub.errors import ContextNotBundled

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the JSON-LD loader tried to open a connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    doc = _with_context(["https://w3id.org/essaim/v1", "https://evil.test/context.jsonld"])
    with pytest.raises(ContextNotBundled) as caught:
        parser.parse_activity(doc)
    assert caught.value.http_status == 400
