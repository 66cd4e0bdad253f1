"""Every signature rule of the inbox, over HTTP against a real node (the refusals of the common cases are in
``test_federation.py``): RFC 9421 from an independent signer, a failed RFC 9421 attempt answered 401 so the
peer falls back, Digest algorithm names in either case, a Date from the future, the key fetched by a signed
GET, re-fetched once when a signature fails (rotation), a rotated key announced by Update, a deleted actor.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from protocol.activitypub.keys import generate_rsa_keypair
from protocol.activitypub.signatures import prepare_verification
from tests.federation.conftest import AP, KEYS, Node, Peer, free_port, running_peer
from tests.federation.test_federation import activity, get


@pytest.fixture(scope="module")
def rule_ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def node(rule_ports: tuple[int, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(rule_ports[0], tmp_path_factory.mktemp("rules"), "eta", ",".join(map(str, rule_ports)))
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
async def peer(rule_ports: tuple[int, int]) -> AsyncIterator[Peer]:
    async with running_peer(rule_ports[1]) as p:
        yield p


def note_activity(peer: Peer) -> dict[str, Any]:
    note = {"id": f"{peer.actor}/notes/{uuid.uuid4()}", "type": "Note", "attributedTo": peer.actor, "content": "x"}
    return activity(peer, "Create", note)


def rfc9421_headers(peer: Peer, url: str, body: bytes, *, private_pem: str | None = None) -> dict[str, str]:
    """Signed by the ``http-message-signatures`` package (an implementation independent of ours)."""
    prepared = requests.Request("POST", url, data=body, headers={"Content-Type": AP}).prepare()
    pem = (private_pem or peer.keys.private_pem).encode()
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.RSA_V1_5_SHA256,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={peer.key_id: pem}),
    )
    signer.sign(
        prepared,
        key_id=peer.key_id,
        covered_component_ids=("@method", "@target-uri", "content-type"),
        body=body,
    )
    return {
        k: v for k, v in prepared.headers.items() if k.lower() in ("signature", "signature-input", "content-digest")
    }


def cavage_headers(
    peer: Peer, url: str, body: bytes, *, digest_name: str, now: datetime | None = None
) -> dict[str, str]:
    """draft-cavage written out by hand, so the Digest algorithm name can be spelled as peers do."""
    date = format_datetime(now or datetime.now(UTC), usegmt=True)
    digest = f"{digest_name}=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    host = url.split("/")[2]
    path = "/" + url.split("/", 3)[3]
    text = f"(request-target): post {path}\nhost: {host}\ndate: {date}\ndigest: {digest}"
    key = serialization.load_pem_private_key(peer.keys.private_pem.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
    return {
        "Host": host,
        "Date": date,
        "Digest": digest,
        "Signature": f'keyId="{peer.key_id}",algorithm="rsa-sha256",headers="(request-target) host date digest",'
        f'signature="{signature}"',
    }


async def inbox_uris(node: Node) -> list[str]:
    return [r["uri"] for r in (await node.ctl("state"))["ap_inbox"]]


async def test_rfc9421_from_an_independent_signer_is_accepted(node: Node, peer: Peer) -> None:
    url = f"{node.base}/inbox"
    good = note_activity(peer)
    body = json.dumps(good).encode()
    assert (await peer.post(url, good, headers=rfc9421_headers(peer, url, body), body=body))[0] == 202
    assert good["id"] in await inbox_uris(node)


async def test_failed_rfc9421_is_401_so_the_peer_falls_back(node: Node, peer: Peer) -> None:
    url = f"{node.base}/inbox"
    first = note_activity(peer)
    body = json.dumps(first).encode()
    other = generate_rsa_keypair()
    wrong_key = rfc9421_headers(peer, url, body, private_pem=other.private_pem)
    status, text = await peer.post(url, first, headers=wrong_key, body=body)
    assert status == 401, text
    headers = rfc9421_headers(peer, url, body)
    tampered = json.dumps({**first, "object": {**first["object"], "content": "changed"}}).encode()
    assert (await peer.post(url, first, headers=headers, body=tampered))[0] == 401  # Content-Digest
    unsupported = {**headers, "Signature-Input": headers["Signature-Input"].replace('"@method"', '"@method";req')}
    assert (await peer.post(url, first, headers=unsupported, body=body))[0] == 401
    assert first["id"] not in await inbox_uris(node)
    # the peer's fallback, draft-cavage, for the same activity: accepted
    assert (await peer.post(url, first, body=body))[0] == 202
    assert first["id"] in await inbox_uris(node)


@pytest.mark.parametrize("name", ["SHA-256", "sha-256", "Sha-256"])
async def test_digest_algorithm_name_is_case_insensitive(node: Node, peer: Peer, name: str) -> None:
    url = f"{node.base}/inbox"
    good = note_activity(peer)
    body = json.dumps(good).encode()
    assert (await peer.post(url, good, headers=cavage_headers(peer, url, body, digest_name=name), body=body))[0] == 202
    wrong = json.dumps({**good, "id": good["id"] + "-x"}).encode()  # Digest of another body
    assert (await peer.post(url, good, headers=cavage_headers(peer, url, wrong, digest_name=name), body=body))[0] == 401


async def test_date_from_the_future_is_refused(node: Node, peer: Peer) -> None:
    url = f"{node.base}/inbox"
    good = note_activity(peer)
    body = json.dumps(good).encode()
    future = datetime.now(UTC) + timedelta(minutes=10)  # the node tolerates 300 s of skew
    assert (await peer.post(url, good, headers=peer.sign(url, body, now=future)))[0] == 401
    skewed = datetime.now(UTC) + timedelta(seconds=60)
    assert (await peer.post(url, good, headers=peer.sign(url, body, now=skewed)))[0] == 202


async def test_key_fetch_is_a_signed_get_and_a_rotated_key_is_fetched_once(node: Node, peer: Peer) -> None:
    url = f"{node.base}/inbox"
    peer.keys = generate_rsa_keypair()  # a key the node has never seen: fetched...
    first = note_activity(peer)
    assert (await peer.post(url, first))[0] == 202
    assert len(peer.gets) >= 1
    fetch = peer.gets[-1]
    _, actor, _ = await get(node.actor)
    pending = prepare_verification("GET", peer.actor, fetch, None, now=datetime.now(UTC))
    assert pending.key_id == actor["publicKey"]["id"]  # ... by a GET signed with the node's key
    pending.verify(actor["publicKey"]["publicKeyPem"])

    # the peer rotates its key: the cached one fails, the node re-fetches once and accepts
    peer.gets.clear()
    peer.keys = generate_rsa_keypair()
    rotated = note_activity(peer)
    assert (await peer.post(url, rotated))[0] == 202
    assert len(peer.gets) == 1

    # a signature that fails with the fresh key too is refused after exactly one re-fetch
    peer.gets.clear()
    forged = note_activity(peer)
    body = json.dumps(forged).encode()
    impostor = generate_rsa_keypair()
    assert (await peer.post(url, forged, headers=peer.sign(url, body, key=impostor)))[0] == 401
    assert len(peer.gets) == 1
    assert forged["id"] not in await inbox_uris(node)


async def test_update_of_the_key_then_delete_of_the_actor(node: Node, peer: Peer) -> None:
    inbox = f"{node.base}/inbox"
    peer.keys = KEYS
    assert (await peer.post(inbox, activity(peer, "Follow", node.actor)))[0] == 202
    await node.until(lambda s: any(r["actor"] == peer.actor for r in s["ap_follower"]))

    # the actor announces a new key (signed with the old one): later requests verify without any fetch
    new = generate_rsa_keypair()
    old, peer.keys = peer.keys, new
    document = peer.document()
    peer.keys = old
    assert (await peer.post(inbox, activity(peer, "Update", {k: v for k, v in document.items() if k != "@context"})))[
        0
    ] == 202
    peer.keys = new
    peer.gets.clear()
    assert (await peer.post(inbox, note_activity(peer)))[0] == 202
    assert peer.gets == []

    # an Update of someone else's actor is refused
    state = await node.ctl("state")
    someone = {**{k: v for k, v in document.items() if k != "@context"}, "id": f"{node.base}/actor"}
    status, _ = await peer.post(inbox, activity(peer, "Update", someone))
    assert status in (401, 403)

    # Delete of the actor: its follow and its cached key go
    assert (await peer.post(inbox, activity(peer, "Delete", peer.actor)))[0] == 202
    state = await node.ctl("state")
    assert all(r["actor"] != peer.actor for r in state["ap_follower"])
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{node.base}/metrics") as r:
            assert "essaim_federation_inbox_rejected_total" in await r.text()
