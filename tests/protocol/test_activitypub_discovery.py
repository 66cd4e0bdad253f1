"""WebFinger, host-meta and NodeInfo documents, and the WebFinger round trip peers perform."""

from __future__ import annotations

import re

import pytest
from lxml import etree

from protocol.activitypub import activities, discovery, keys
from protocol.activitypub.errors import WebFingerError

HOST = "node1.test"
BASE = f"https://{HOST}"
ACTORS = {"ouest": f"{BASE}/actor", "theme-env": f"{BASE}/feeds/themes/ENV"}


def actor_doc(username: str) -> dict[str, object]:
    actor_id = ACTORS[username]
    return activities.service_actor(
        activities.ActorProfile(
            id=actor_id,
            username=username,
            name=username,
            summary="",
            url=f"{BASE}/@{username}",
            inbox=f"{actor_id}/inbox",
            outbox=f"{actor_id}/outbox",
            followers=f"{actor_id}/followers",
            following=f"{actor_id}/following",
            featured=f"{actor_id}/featured",
            shared_inbox=f"{BASE}/inbox",
            public_key_pem=PEM,
        )
    )


PEM = keys.generate_rsa_keypair().public_pem


@pytest.mark.parametrize("username", sorted(ACTORS))
def test_webfinger_round_trip(username: str) -> None:
    """handle -> JRD -> actor -> preferredUsername@host -> the same JRD (what Mastodon does)."""
    handle = f"{username}@{HOST}"
    found = discovery.parse_webfinger_resource(f"acct:{handle}", host=HOST, actors=ACTORS)
    jrd = discovery.webfinger_jrd(username=found, host=HOST, actor_id=ACTORS[found], profile_url=f"{BASE}/@{found}")
    assert jrd["subject"] == f"acct:{handle}"
    assert ACTORS[found] in jrd["aliases"]
    actor_url = discovery.actor_url_from_jrd(jrd)
    assert actor_url == ACTORS[username]
    rebuilt = discovery.handle_from_actor(actor_doc(username))
    assert rebuilt == handle
    again = discovery.parse_webfinger_resource(f"acct:{rebuilt}", host=HOST, actors=ACTORS)
    assert again == username
    # The actor URL is a valid resource too.
    assert discovery.parse_webfinger_resource(actor_url, host=HOST, actors=ACTORS) == username


def test_jrd_links() -> None:
    jrd = discovery.webfinger_jrd(username="ouest", host=HOST, actor_id=ACTORS["ouest"], profile_url=f"{BASE}/")
    assert jrd["links"] == [
        {"rel": "http://webfinger.net/rel/profile-page", "type": "text/html", "href": f"{BASE}/"},
        {"rel": "self", "type": "application/activity+json", "href": ACTORS["ouest"]},
    ]
    ld = {
        "links": [
            {
                "rel": "self",
                "type": 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"',
                "href": "https://peer.test/u/a",
            }
        ]
    }
    assert discovery.actor_url_from_jrd(ld) == "https://peer.test/u/a"
    with pytest.raises(WebFingerError):
        discovery.actor_url_from_jrd({"links": [{"rel": "self", "type": "text/html", "href": "x"}]})


@pytest.mark.parametrize("resource", ["ouest@node1.test", "@ouest@node1.test", "acct:OUEST@Node1.Test"])
def test_lenient_handle_forms(resource: str) -> None:
    assert discovery.parse_webfinger_resource(resource, host=HOST, actors=ACTORS) == "ouest"


@pytest.mark.parametrize(
    ("resource", "status"),
    [
        (None, 400),
        ("", 400),
        ("acct:", 400),
        ("acct:ouest", 400),
        ("acct:@node1.test", 400),
        ("mailto:ouest@node1.test", 400),
        ("acct:ou est@node1.test", 400),
        ("acct:ouest@other.test", 404),
        ("acct:nobody@node1.test", 404),
        (f"{BASE}/nobody", 404),
        ("https://other.test/actor", 404),
    ],
)
def test_webfinger_refusals(resource: str | None, status: int) -> None:
    with pytest.raises(WebFingerError) as info:
        discovery.parse_webfinger_resource(resource, host=HOST, actors=ACTORS)
    assert info.value.http_status == status


def test_host_with_port_in_handle() -> None:
    actors = {"ouest": "http://node1.test:8001/actor"}
    assert (
        discovery.parse_webfinger_resource("acct:ouest@node1.test:8001", host="node1.test:8001", actors=actors)
        == "ouest"
    )
    assert discovery.handle_from_actor({"preferredUsername": "ouest", "id": actors["ouest"]}) == "ouest@node1.test:8001"


def test_handle_from_incomplete_actor() -> None:
    with pytest.raises(WebFingerError):
        discovery.handle_from_actor({"id": ACTORS["ouest"]})
    with pytest.raises(WebFingerError):
        discovery.handle_from_actor({"preferredUsername": "x", "id": "/relative"})


def test_host_meta_xrd() -> None:
    xml = discovery.host_meta_xrd(BASE + "/")
    root = etree.fromstring(xml)
    assert root.tag == "{http://docs.oasis-open.org/ns/xri/xrd-1.0}XRD"
    link = root[0]
    assert link.get("rel") == "lrdd"
    assert link.get("template") == f"{BASE}/.well-known/webfinger?resource={{uri}}"
    assert xml.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")


def test_nodeinfo() -> None:
    links = discovery.nodeinfo_links(BASE)
    assert links == {
        "links": [{"rel": "http://nodeinfo.diaspora.software/ns/schema/2.1", "href": f"{BASE}/nodeinfo/2.1"}]
    }
    doc = discovery.nodeinfo_document(
        version="0.1.0",
        users_total=3,
        active_month=3,
        active_halfyear=3,
        local_posts=120,
        node_name="Réseau Ouest",
        repository="https://example.org/essaim",
    )
    assert doc["version"] == "2.1" and doc["protocols"] == ["activitypub"]
    assert re.fullmatch(r"[a-z0-9-]+", doc["software"]["name"])
    assert doc["usage"] == {"users": {"total": 3, "activeMonth": 3, "activeHalfyear": 3}, "localPosts": 120}
    assert doc["openRegistrations"] is False and doc["services"] == {"inbound": [], "outbound": []}
    assert doc["metadata"]["nodeName"] == "Réseau Ouest"
