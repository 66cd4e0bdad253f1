"""Sheets as Notes, activities, the Service actor, collections, and the bundled JSON-LD contexts."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest

from protocol.activitypub import activities, context, keys
from protocol.activitypub.context import AS_CONTEXT, ESSAIM_VOCAB, PUBLIC, SECURITY_CONTEXT
from protocol.activitypub.errors import ContextNotBundled
from protocol.activitypub.objects import hashtag_name, sheet_from_ld, sheet_note, sheet_to_ld, short_text
from protocol.sheet import Sheet, sheet_from_dict, sheet_to_dict

BASE = "https://node1.test"
ACTOR = f"{BASE}/actor"
FOLLOWERS = f"{ACTOR}/followers"
AS = "https://www.w3.org/ns/activitystreams#"
WHEN = datetime(2026, 2, 1, 10, 0, tzinfo=UTC)

FULL: dict[str, Any] = {
    "id": f"{BASE}/sheets/42",
    "local_id": "42",
    "title": "Repair café <Rennes> & co",
    "partner": {
        "name": "Réseau Ouest",
        "url": "https://ouest.test",
        "logo": "https://ouest.test/logo.png",
        "id": "ouest",
    },
    "summary": "Un lieu pour réparer ensemble plutôt que jeter.",
    "description": "<p>Chaque samedi, des bénévoles <em>réparent</em>.</p>",
    "url": "https://ouest.test/projets/repair",
    "language": "fr",
    "holder": {"name": "Asso Répare", "legal_form": "association", "siret": "12345678901234"},
    "themes": ["ENV", "SOL"],
    "subthemes": ["EDC"],
    "tags": [{"tag": "économie circulaire", "codes": ["ENV"]}, {"tag": "vrac", "codes": []}],
    "audiences": ["jeunes"],
    "stage": "essaimage",
    "engineering": ["formation"],
    "places": [
        {
            "address": "1 rue X",
            "postcode": "35000",
            "commune": "Rennes",
            "insee": "35238",
            "departement": "35",
            "region": "53",
            "lat": 48.11,
            "lon": -1.68,
            "precision": "address",
            "scope": "local",
        },
        {"commune": "Brest", "insee": "29019", "departement": "29", "region": "53", "scope": "departemental"},
    ],
    "start_date": "2019-05-01",
    "end_date": "2027-01-01",
    "created": "2019-04-01T08:00:00Z",
    "modified": "2025-12-01T09:30:00Z",
    "awards": [{"name": "Prix X", "year": 2021}],
    "contact": {
        "name": "Camille",
        "email": "camille@ouest.test",
        "phone": "+33 2 00 00 00 00",
        "url": "https://ouest.test/contact",
    },
    "images": [{"url": "https://ouest.test/a.jpg", "alt": "Atelier", "credit": "CC-BY"}],
    "links": [{"url": "https://video.test/1", "label": "Vidéo", "rel": "video"}],
    "matches": [
        {
            "kind": "benevolat",
            "text": "Bénévoles le samedi",
            "direction": "need",
            "status": "open",
            "start": "2026-01-01",
            "end": "2026-06-30",
        }
    ],
    "datestamp": "2026-01-15T12:00:00Z",
}


@pytest.fixture
def sheet() -> Sheet:
    return sheet_from_dict(FULL)


def note(sheet: Sheet) -> dict[str, Any]:
    return sheet_note(sheet, actor_id=ACTOR, followers_url=FOLLOWERS, base_url=BASE)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


# ------------------------------------------------------------------ the Note


def test_note_renders_predictably(sheet: Sheet) -> None:
    doc = note(sheet)
    assert doc["type"] == "Note" and doc["id"] == sheet.id
    assert "summary" not in doc and "name" not in doc  # CW in GoToSocial, title-only in Mastodon
    assert doc["attributedTo"] == ACTOR and doc["to"] == [PUBLIC] and doc["cc"] == [FOLLOWERS]
    assert doc["url"] == sheet.id
    content = doc["content"]
    assert content.startswith("<p><strong>Repair café &lt;Rennes&gt; &amp; co</strong></p>")
    assert "<script" not in content and "Un lieu pour réparer ensemble" in content
    assert f'<a href="{sheet.id}">' in content
    assert doc["contentMap"] == {"fr": content}
    parser = _Tags()
    parser.feed(content)
    assert set(parser.tags) <= {"p", "strong", "a", "span"}
    assert doc["published"] == "2019-04-01T08:00:00Z" and doc["updated"] == "2026-01-15T12:00:00Z"


def test_hashtags_for_themes_and_territory(sheet: Sheet) -> None:
    tags = note(sheet)["tag"]
    assert [t["name"] for t in tags] == ["#Environnement", "#Solidarite", "#Rennes", "#Bretagne", "#Brest"]
    assert all(t["type"] == "Hashtag" and t["href"] == f"{BASE}/tags/{t['name'][1:]}" for t in tags)
    assert hashtag_name("Éducation et jeunesse") == "EducationEtJeunesse"
    assert hashtag_name("Provence-Alpes-Côte d'Azur") == "ProvenceAlpesCoteDAzur"


def test_location_is_first_located_place(sheet: Sheet) -> None:
    assert note(sheet)["location"] == {"type": "Place", "name": "Rennes", "latitude": 48.11, "longitude": -1.68}
    bare = sheet_from_dict({**FULL, "places": [{"commune": "Brest"}]})
    assert "location" not in note(bare)


def test_short_text_falls_back_to_description_and_is_cut() -> None:
    no_summary = sheet_from_dict({**FULL, "summary": None})
    assert short_text(no_summary) == "Chaque samedi, des bénévoles réparent."
    long = sheet_from_dict({**FULL, "summary": "mot " * 200})
    text = short_text(long)
    assert len(text) <= 300 and text.endswith("…")


def test_page_url_override(sheet: Sheet) -> None:
    doc = sheet_note(sheet, actor_id=ACTOR, followers_url=FOLLOWERS, base_url=BASE, page_url=f"{BASE}/p/42.html")
    assert doc["url"] == f"{BASE}/p/42.html" and doc["id"] == sheet.id


def test_embedded_sheet_round_trips(sheet: Sheet) -> None:
    data = sheet_to_ld(sheet)
    assert data["type"] == "ProjectSheet"
    assert sheet_from_ld(json.loads(json.dumps(data))) == sheet
    assert sheet_to_dict(sheet_from_ld(note(sheet)["sheet"])) == sheet_to_dict(sheet)


# ---------------------------------------------------------------- JSON-LD


def _keys(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= _keys(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            found |= _keys(value)
    return found


def test_expansion_keeps_every_essaim_property(sheet: Sheet) -> None:
    expanded = context.expand(note(sheet))
    keys_seen = _keys(expanded)
    assert not [k for k in keys_seen if k.startswith("_:")], "a term is missing from the bundled contexts"
    for term in (
        "sheet",
        "themes",
        "subthemes",
        "audiences",
        "stage",
        "places",
        "inseeCode",
        "commune",
        "matches",
        "matchKind",
        "partnerTags",
        "codes",
        "siret",
        "datestamp",
    ):
        assert ESSAIM_VOCAB + term in keys_seen, term
    for term in ("content", "tag", "href", "location", "latitude", "attributedTo"):
        assert AS + term in keys_seen
    node = expanded[0]
    sheet_node = node[ESSAIM_VOCAB + "sheet"][0]
    places = sheet_node[ESSAIM_VOCAB + "places"][0]["@list"]
    assert places[0][ESSAIM_VOCAB + "inseeCode"] == [{"@value": "35238"}]
    assert {v["@value"] for v in sheet_node[ESSAIM_VOCAB + "themes"]} == {"ENV", "SOL"}
    assert node["@type"] == [AS + "Note"]


def test_every_sheet_key_is_a_defined_term(sheet: Sheet) -> None:
    terms: set[str] = set()
    for url in context.DEFAULT_CONTEXT:
        terms |= set(context.bundled_context(url)["@context"])
    used = _keys(sheet_to_ld(sheet)) | _keys(note(sheet))
    assert used - terms - {"@context", sheet.language} == set()  # the language is a contentMap key


def test_unknown_remote_context_fails_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise AssertionError("the JSON-LD loader tried to open a connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for ctx in (
        "https://evil.test/context.jsonld",
        ["https://www.w3.org/ns/activitystreams", "http://169.254.169.254/"],
    ):
        with pytest.raises(ContextNotBundled):
            context.expand({"@context": ctx, "id": "https://evil.test/x", "type": "Note"})
    with pytest.raises(ContextNotBundled):
        context.bundled_loader("https://evil.test/c")
    assert attempts == []


@pytest.mark.parametrize(
    "url",
    [
        "https://www.w3.org/ns/activitystreams",
        "http://www.w3.org/ns/activitystreams",
        "https://www.w3.org/ns/activitystreams#",
        "https://www.w3.org/ns/activitystreams.jsonld",
        "https://w3id.org/security/v1",
        "http://w3id.org/security/v1/",
        "https://w3id.org/essaim/v1",
    ],
)
def test_loader_serves_bundled_spellings(url: str) -> None:
    remote = context.bundled_loader(url)
    assert remote["document"]["@context"]
    assert remote["documentUrl"] in (AS_CONTEXT, SECURITY_CONTEXT, context.ESSAIM_CONTEXT)


def test_mastodon_style_actor_expands_and_compacts() -> None:
    mastodon = {
        "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
        "id": "https://peer.test/users/alice",
        "type": "Person",
        "preferredUsername": "alice",
        "inbox": "https://peer.test/users/alice/inbox",
        "publicKey": {
            "id": "https://peer.test/users/alice#main-key",
            "owner": "https://peer.test/users/alice",
            "publicKeyPem": "PEM",
        },
    }
    expanded = context.expand(mastodon)
    key = expanded[0]["https://w3id.org/security#publicKey"][0]
    assert key["https://w3id.org/security#publicKeyPem"] == [{"@value": "PEM"}]
    compacted = context.compact(expanded)
    assert compacted["publicKey"]["owner"] == "https://peer.test/users/alice"


# ------------------------------------------------------- activities, actor


def test_create_update_delete(sheet: Sheet) -> None:
    obj = note(sheet)
    create = activities.create_activity(obj, activity_id=f"{sheet.id}/activity", actor_id=ACTOR)
    assert create["type"] == "Create" and create["actor"] == ACTOR and "@context" in create
    assert "@context" not in create["object"] and create["object"]["id"] == sheet.id
    assert create["to"] == [PUBLIC] and create["cc"] == [FOLLOWERS]
    update = activities.update_activity(obj, activity_id=f"{sheet.id}#update-1", actor_id=ACTOR, updated=WHEN)
    assert update["type"] == "Update" and update["published"] == "2026-02-01T10:00:00Z"
    delete = activities.delete_activity(
        sheet.id, activity_id=f"{sheet.id}#delete", actor_id=ACTOR, followers_url=FOLLOWERS, deleted=WHEN
    )
    assert delete["object"] == {
        "id": sheet.id,
        "type": "Tombstone",
        "formerType": "Note",
        "deleted": "2026-02-01T10:00:00Z",
    }
    for doc in (create, update, delete):
        assert not [k for k in _keys(context.expand(doc)) if k.startswith("_:")]


def test_follow_accept_undo_announce() -> None:
    follow = activities.follow_activity(
        activity_id=f"{BASE}/follows/1", actor_id=ACTOR, target_id="https://hub.test/actor"
    )
    accept = activities.accept_activity(
        follow, activity_id="https://hub.test/accepts/1", actor_id="https://hub.test/actor"
    )
    assert accept["object"]["id"] == f"{BASE}/follows/1" and "@context" not in accept["object"]
    undo = activities.undo_activity(follow, activity_id=f"{BASE}/follows/1#undo", actor_id=ACTOR)
    assert undo["object"]["type"] == "Follow"
    reject = activities.reject_activity(
        follow, activity_id="https://hub.test/rejects/1", actor_id="https://hub.test/actor"
    )
    assert reject["type"] == "Reject"
    boost = activities.announce_activity(
        f"{BASE}/sheets/42",
        activity_id="https://hub.test/a/1",
        actor_id="https://hub.test/feeds/env",
        followers_url="https://hub.test/f",
        published=WHEN,
    )
    assert boost["object"] == f"{BASE}/sheets/42" and boost["to"] == [PUBLIC]


def profile() -> activities.ActorProfile:
    return activities.ActorProfile(
        id=ACTOR,
        username="ouest",
        name="Réseau Ouest",
        summary="<p>Projets</p>",
        url=f"{BASE}/",
        inbox=f"{ACTOR}/inbox",
        outbox=f"{ACTOR}/outbox",
        followers=FOLLOWERS,
        following=f"{ACTOR}/following",
        featured=f"{ACTOR}/featured",
        shared_inbox=f"{BASE}/inbox",
        public_key_pem=keys.generate_rsa_keypair().public_pem,
        icon_url=f"{BASE}/logo.png",
        published=WHEN,
    )


def test_service_actor_document() -> None:
    prof = profile()
    doc = activities.service_actor(prof)
    assert doc["type"] == "Service" and doc["preferredUsername"] == "ouest"
    assert doc["publicKey"] == {"id": f"{ACTOR}#main-key", "owner": ACTOR, "publicKeyPem": prof.public_key_pem}
    assert doc["endpoints"] == {"sharedInbox": f"{BASE}/inbox"}
    assert doc["discoverable"] is True and doc["manuallyApprovesFollowers"] is False
    assert doc["icon"] == {"type": "Image", "mediaType": "image/png", "url": f"{BASE}/logo.png"}
    for field in ("inbox", "outbox", "followers", "following", "featured", "summary", "url"):
        assert doc[field]
    expanded_keys = _keys(context.expand(doc))
    assert not [k for k in expanded_keys if k.startswith("_:")]
    assert "http://www.w3.org/ns/ldp#inbox" in expanded_keys and "http://joinmastodon.org/ns#featured" in expanded_keys


def test_paged_collections() -> None:
    head = activities.ordered_collection(
        f"{ACTOR}/outbox", total=42, first=f"{ACTOR}/outbox?page=1", last=f"{ACTOR}/outbox?page=3"
    )
    assert head["type"] == "OrderedCollection" and head["totalItems"] == 42 and "orderedItems" not in head
    page = activities.ordered_collection_page(
        f"{ACTOR}/outbox?page=2",
        part_of=f"{ACTOR}/outbox",
        items=[{"@context": "x", "id": "a"}, "b"],
        next_id=f"{ACTOR}/outbox?page=3",
        prev_id=f"{ACTOR}/outbox?page=1",
        start_index=20,
    )
    assert page["type"] == "OrderedCollectionPage" and page["orderedItems"] == [{"id": "a"}, "b"]
    assert page["partOf"] == f"{ACTOR}/outbox" and page["startIndex"] == 20
    small = activities.ordered_collection(f"{ACTOR}/featured", total=1, items=[f"{BASE}/sheets/42"])
    assert small["orderedItems"] == [f"{BASE}/sheets/42"]
