"""Two real Essaim nodes (subprocesses) and a scripted peer, on loopback: discovery, follow, delivery, inbox."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from protocol.activitypub.discovery import actor_url_from_jrd, handle_from_actor
from protocol.activitypub.keys import generate_rsa_keypair
from protocol.activitypub.signatures import prepare_verification
from tests.federation.conftest import AP, Node, Peer


async def get(url: str, accept: str = AP, **params: str) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as session, session.get(url, params=params, headers={"Accept": accept}) as r:
        text = await r.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return r.status, body, r.headers.get("Content-Type", "")


def inbox_of(state: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [json.loads(r["payload"]) for r in state["ap_inbox"] if r["kind"] == kind]


async def test_discovery_and_actor(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    status, jrd, ctype = await get(f"{a.base}/.well-known/webfinger", resource=f"acct:{a.handle}")
    assert status == 200 and "jrd+json" in ctype
    assert actor_url_from_jrd(jrd) == a.actor
    status, actor, ctype = await get(a.actor)
    assert status == 200 and ctype.startswith(AP)
    assert actor["type"] == "Service" and actor["publicKey"]["owner"] == a.actor
    assert actor["endpoints"]["sharedInbox"] == f"{a.base}/inbox"
    for name in ("inbox", "outbox", "followers", "featured", "summary", "discoverable", "manuallyApprovesFollowers"):
        assert name in actor
    assert handle_from_actor(actor) == a.handle  # the Mastodon round trip
    status, again, _ = await get(f"{a.base}/.well-known/webfinger", resource=f"acct:{handle_from_actor(actor)}")
    assert status == 200 and actor_url_from_jrd(again) == a.actor
    assert (await get(f"{a.base}/.well-known/webfinger", resource="acct:nobody@127.0.0.1"))[0] == 404
    status, xrd, _ = await get(f"{a.base}/.well-known/host-meta", accept="*/*")
    assert status == 200 and "/.well-known/webfinger?resource={uri}" in xrd
    status, links, _ = await get(f"{a.base}/.well-known/nodeinfo", accept="*/*")
    status, info, _ = await get(links["links"][0]["href"], accept="*/*")
    assert status == 200 and info["version"] == "2.1" and info["software"]["name"] == "essaim"


async def test_follow_each_other_and_sheets_flow(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    await a.ctl("follow", handle=b.handle)
    await b.ctl("follow", handle=a.handle)
    await a.until(lambda s: [r["status"] for r in s["ap_following"]] == ["accepted"])
    await b.until(lambda s: [r["status"] for r in s["ap_following"]] == ["accepted"])
    state_b = await b.ctl("state")
    assert [r["actor"] for r in state_b["ap_follower"]] == [a.actor]

    created = await b.ctl("upsert", n=1)
    uri = created["uri"]
    state = await a.until(lambda s: any(x["object"]["id"] == uri for x in inbox_of(s, "Create")))
    note = next(x["object"] for x in inbox_of(state, "Create") if x["object"]["id"] == uri)
    assert note["type"] == "Note" and note["attributedTo"] == b.actor
    await b.ctl("upsert", n=1, title="Titre changé")
    state = await a.until(lambda s: any("Titre changé" in x["object"]["content"] for x in inbox_of(s, "Update")))
    await b.ctl("delete", n=1)
    state = await a.until(lambda s: any(x["object"]["id"] == uri for x in inbox_of(s, "Delete")))
    assert next(x for x in inbox_of(state, "Delete"))["object"]["type"] == "Tombstone"

    # content negotiation on the sheet URL: 410 + Tombstone once deleted, the HTML page otherwise
    status, body, _ = await get(uri)
    assert status == 410 and body["type"] == "Tombstone"
    live = await b.ctl("upsert", n=2)
    status, body, ctype = await get(live["uri"])
    assert status == 200 and ctype.startswith(AP) and body["type"] == "Note"
    status, body, ctype = await get(live["uri"], accept="text/html")
    assert status == 200 and ctype.startswith("text/html")

    # paged outbox, followers, featured; activity ids dereference
    status, outbox, _ = await get(f"{b.actor}/outbox")
    assert outbox["type"] == "OrderedCollection" and outbox["totalItems"] == 4
    status, page, _ = await get(outbox["first"])
    assert page["type"] == "OrderedCollectionPage" and page["orderedItems"][0]["type"] == "Create"
    status, fetched, _ = await get(page["orderedItems"][0]["id"])
    assert status == 200 and fetched["id"] == page["orderedItems"][0]["id"]
    status, followers, _ = await get(f"{b.actor}/followers?page=1")
    assert followers["orderedItems"] == [a.actor]
    status, featured, _ = await get(f"{b.actor}/featured")
    assert [n["id"] for n in featured["orderedItems"]] == [live["uri"]]


def activity(peer: Peer, kind: str, obj: Any, **extra: Any) -> dict[str, Any]:
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{peer.actor}/activities/{uuid.uuid4()}",
        "type": kind,
        "actor": peer.actor,
        "object": obj,
        **extra,
    }


async def test_inbox_refusals_persist_nothing(nodes: tuple[Node, Node], peer: Peer) -> None:
    a, b = nodes
    inbox = f"{a.base}/inbox"
    await b.until(lambda s: all(d["status"] != "pending" for d in s["ap_delivery"]))  # b's own traffic to a is over
    before = await a.ctl("state")
    note = {"id": f"{peer.actor}/notes/1", "type": "Note", "attributedTo": peer.actor, "content": "x"}
    good = activity(peer, "Create", note)
    body = json.dumps(good).encode()

    assert (await peer.post(inbox, good, headers={}))[0] == 401  # unsigned
    other = generate_rsa_keypair()
    assert (await peer.post(inbox, good, headers=peer.sign(inbox, body, key=other)))[0] == 401  # bad signature
    old = datetime.now(UTC) - timedelta(hours=2)
    assert (await peer.post(inbox, good, headers=peer.sign(inbox, body, now=old)))[0] == 401  # Date window
    forged = {**good, "actor": b.actor, "id": f"{b.base}/activities/{uuid.uuid4()}"}
    assert (await peer.post(inbox, forged))[0] == 401  # key owner != actor
    foreign = activity(peer, "Create", {**note, "id": f"{b.base}/sheets/stolen"})
    assert (await peer.post(inbox, foreign))[0] == 403  # object on another host
    tampered = json.dumps({**good, "object": {**note, "content": "y"}}).encode()
    assert (await peer.post(inbox, good, headers=peer.sign(inbox, body), body=tampered))[0] == 401  # Digest
    big = json.dumps({**good, "padding": "x" * 70_000}).encode()
    assert (await peer.post(inbox, None, body=big))[0] == 413  # too large

    after = await a.ctl("state")
    for table in ("ap_inbox", "ap_follower", "ap_message", "ap_delivery"):
        assert after[table] == before[table], table

    # the same activity correctly signed is accepted
    assert (await peer.post(inbox, good))[0] == 202
    state = await a.ctl("state")
    assert [r["uri"] for r in state["ap_inbox"]][-1] == good["id"]


async def test_follow_accept_and_reply(nodes: tuple[Node, Node], peer: Peer) -> None:
    a, _ = nodes
    follow = activity(peer, "Follow", a.actor)
    assert (await peer.post(f"{a.actor}/inbox", follow))[0] == 202
    state = await a.until(lambda s: any(r["actor"] == peer.actor for r in s["ap_follower"]))
    await a.until(lambda s: all(d["status"] == "done" for d in s["ap_delivery"]))
    accept = next(r for r in peer.received if r["body"]["type"] == "Accept")
    assert accept["body"]["object"]["id"] == follow["id"]
    # the delivery is signed draft-cavage over (request-target) host date digest, verifiable with A's key
    _, actor, _ = await get(a.actor)
    pending = prepare_verification(
        "POST", f"{peer.actor}/inbox", accept["headers"], accept["raw"], now=datetime.now(UTC)
    )
    assert pending.key_id == actor["publicKey"]["id"]
    assert pending.covered == ("(request-target)", "host", "date", "digest")
    pending.verify(actor["publicKey"]["publicKeyPem"])

    sheet = await a.ctl("upsert", n=7)
    reply = activity(
        peer,
        "Create",
        {"id": f"{peer.actor}/notes/{uuid.uuid4()}", "type": "Note", "content": "Bravo", "inReplyTo": sheet["uri"]},
    )
    assert (await peer.post(f"{a.base}/inbox", reply))[0] == 202
    state = await a.ctl("state")
    assert [m["content"] for m in state["ap_message"]] == ["Bravo"]

    undo = activity(peer, "Undo", follow)
    assert (await peer.post(f"{a.base}/inbox", undo))[0] == 202
    state = await a.ctl("state")
    assert all(r["actor"] != peer.actor for r in state["ap_follower"])


async def test_delivery_retry_and_restart(nodes: tuple[Node, Node], peer: Peer) -> None:
    a, _ = nodes
    assert (await peer.post(f"{a.base}/inbox", activity(peer, "Follow", a.actor)))[0] == 202
    state = await a.until(lambda s: all(d["status"] == "done" for d in s["ap_delivery"]))
    peer.received.clear()

    def since(state: dict[str, Any]) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
        # Only the deliveries queued from now on: the module's nodes keep earlier tests' rows, and one of
        # them may itself have been retried (its peer stopped between two tests) and end with 2 attempts.
        last = max((d["id"] for d in state["ap_delivery"]), default=0)
        return lambda s: [d for d in s["ap_delivery"] if d["id"] > last]

    # 503 + Retry-After, then 202
    peer.answers[:] = [(503, {"Retry-After": "1"})]
    new = since(state)
    created = await a.ctl("upsert", n=20)
    state = await a.until(lambda s: any(d["status"] == "done" and d["attempts"] == 2 for d in new(s)), timeout=15)
    mine = [r for r in peer.received if r["body"]["object"]["id"] == created["uri"]]
    assert len(mine) == 2
    _, actor, _ = await get(a.actor)
    for received in mine:  # every attempt is signed afresh and verifies
        pending = prepare_verification(
            "POST", f"{peer.base}/inbox", received["headers"], received["raw"], now=datetime.now(UTC)
        )
        pending.verify(actor["publicKey"]["publicKeyPem"])

    # a pending delivery survives a restart of the node (the queue is the database)
    peer.answers[:] = [(503, {"Retry-After": "3"})]
    new = since(await a.until(lambda s: all(d["status"] == "done" for d in s["ap_delivery"])))
    created = await a.ctl("upsert", n=21)
    state = await a.until(lambda s: any(d["attempts"] == 1 and d["status"] == "pending" for d in new(s)))
    a.stop()
    a.start()
    state = await a.until(lambda s: all(d["status"] == "done" for d in s["ap_delivery"]), timeout=15)
    assert any(r["body"]["object"]["id"] == created["uri"] for r in peer.received)
    assert len([d for d in state["ap_delivery"] if d["last_error"] is None]) == len(state["ap_delivery"])


def test_signature_of_a_delivery_verifies() -> None:
    """Pure check that what the worker sends is what the inbox accepts (sign → prepare → verify)."""
    keys = generate_rsa_keypair()
    from protocol.activitypub.signatures import sign_request

    now = datetime.now(UTC)
    url = "https://example.test/inbox"
    headers = sign_request(
        method="POST", target_uri=url, body=b"{}", key_id="k", private_key_pem=keys.private_pem, now=now
    )
    pending = prepare_verification("POST", url, headers, b"{}", now=now)
    pending.verify(keys.public_pem)
    assert pending.covered == ("(request-target)", "host", "date", "digest")
