"""A node with theme feed actors and manual approval, on loopback: feeds, the admin's federation pages, host health."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from protocol.activitypub.discovery import actor_url_from_jrd, handle_from_actor
from protocol.activitypub.signatures import prepare_verification
from tests.federation.conftest import AP, Node, Peer, database_for, free_port, running_peer
from tests.federation.test_federation import activity, get

FEEDS = ["ENV", "EDU"]
EMAIL, PASSWORD = "admin@noeud.test", "mot de passe assez long"


@pytest.fixture(scope="module")
def feed_ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def node(
    request: pytest.FixtureRequest, feed_ports: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    with database_for(request.param, "feeds") as url:
        yield from _node(feed_ports, tmp_path_factory, url)


def _node(feed_ports: tuple[int, int], tmp_path_factory: pytest.TempPathFactory, url: str) -> Iterator[Node]:
    n = Node(
        feed_ports[0],
        tmp_path_factory.mktemp("feeds"),
        "gamma",
        ",".join(str(p) for p in feed_ports),
        federation={
            "feeds": FEEDS,
            "manually_approves_followers": True,
            "unavailable_after": 1,
            "probe_interval": 1,
            "retry_base": 0.3,
            "retry_max": 0.5,
            "max_attempts": 1000,
        },
        database_url=url,
    )
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
async def remote(feed_ports: tuple[int, int]) -> AsyncIterator[Peer]:
    async with running_peer(feed_ports[1]) as p:
        yield p


class Admin:
    """A signed-in admin browser session (cookies on an IP host need the unsafe jar)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def login(self) -> None:
        async with self.session.get(f"{self.node.base}/admin/login") as r:
            token = _csrf(await r.text())
        form = {"email": EMAIL, "password": PASSWORD, "csrf": token, "next": "/admin"}
        async with self.session.post(f"{self.node.base}/admin/login", data=form, allow_redirects=False) as r:
            assert r.status == 303, await r.text()

    async def page(self, path: str) -> str:
        async with self.session.get(f"{self.node.base}{path}", allow_redirects=False) as r:
            assert r.status == 200, (path, r.status)
            return await r.text()

    async def post(self, path: str, form: dict[str, str], csrf_from: str) -> tuple[int, str]:
        token = _csrf(await self.page(csrf_from))
        async with self.session.post(
            f"{self.node.base}{path}", data={**form, "csrf": token}, allow_redirects=False
        ) as r:
            return r.status, r.headers.get("Location", "")


def _csrf(page: str) -> str:
    found = re.search(r'name="(?:login_)?csrf" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def _verify_from(received: dict[str, Any], base: str, actor: dict[str, Any]) -> None:
    url = base + received["path"]
    pending = prepare_verification("POST", url, received["headers"], received["raw"], now=datetime.now(UTC))
    assert pending.key_id == actor["publicKey"]["id"]
    pending.verify(actor["publicKey"]["publicKeyPem"])


async def test_feed_actors_are_discoverable(node: Node) -> None:
    status, actor, ctype = await get(f"{node.base}/feeds/ENV")
    assert status == 200 and ctype.startswith(AP)
    assert actor["type"] == "Service" and actor["preferredUsername"] == "theme-environnement"
    assert actor["publicKey"]["owner"] == actor["id"] == f"{node.base}/feeds/ENV"
    assert actor["publicKey"]["id"] == f"{actor['id']}#main-key"
    assert actor["manuallyApprovesFollowers"] is True and actor["discoverable"] is True
    assert actor["endpoints"]["sharedInbox"] == f"{node.base}/inbox"
    for name in ("inbox", "outbox", "followers", "featured", "summary"):
        assert actor[name]
    assert actor["icon"]["type"] == "Image" and actor["icon"]["mediaType"] == "image/png"
    async with aiohttp.ClientSession() as session, session.get(actor["icon"]["url"]) as r:
        assert r.status == 200 and (await r.read()).startswith(b"\x89PNG")
    # the Mastodon round trip, for every actor: handle -> actor -> preferredUsername@host -> same actor
    handles = set()
    for url in (f"{node.base}/actor", f"{node.base}/feeds/ENV", f"{node.base}/feeds/EDU"):
        _, doc, _ = await get(url)
        handle = handle_from_actor(doc)
        handles.add(handle)
        status, jrd, _ = await get(f"{node.base}/.well-known/webfinger", resource=f"acct:{handle}")
        assert status == 200 and actor_url_from_jrd(jrd) == url
        assert jrd["subject"] == f"acct:{handle}"
    assert len(handles) == 3
    assert (await get(f"{node.base}/feeds/XXX"))[0] == 404
    status, page, ctype = await get(f"{node.base}/feeds/ENV", accept="text/html")
    assert status == 200 and ctype.startswith("text/html") and "@theme-environnement@" in page
    _, info, _ = await get(f"{node.base}/nodeinfo/2.1", accept="*/*")
    assert info["usage"]["users"]["total"] == 3


async def test_the_json_ld_context_is_published(node: Node) -> None:
    """The node serves the context its Notes name, byte for byte the bundled copy pyld works from."""
    from protocol.activitypub.context import ESSAIM_CONTEXT, bundled_context, context_document, expand

    async with aiohttp.ClientSession() as session, session.get(f"{node.base}/ns/essaim-v1.jsonld") as r:
        assert r.status == 200 and r.content_type == "application/ld+json"
        served = await r.read()
    assert served == context_document()
    assert json.loads(served) == bundled_context(ESSAIM_CONTEXT)
    sheet = await node.ctl("upsert", n=33, themes="EDU")
    _, note, _ = await get(sheet["uri"])
    assert ESSAIM_CONTEXT in note["@context"]
    expanded = expand(note)[0]  # bundled contexts only: no fetch
    assert "https://w3id.org/essaim#sheet" in expanded


async def test_feed_follow_approval_announce_and_messages(node: Node, remote: Peer) -> None:
    await node.ctl("admin_user", email=EMAIL, password=PASSWORD)
    async with aiohttp.ClientSession() as anonymous:  # no session, no page: the sign-in form instead
        for path in ("/admin/federation", "/admin/messages"):
            async with anonymous.get(f"{node.base}{path}", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"].startswith("/admin/login?next=")
    admin = Admin(node)
    try:
        await admin.login()
        follow = activity(remote, "Follow", f"{node.base}/feeds/ENV")
        assert (await remote.post(f"{node.base}/feeds/ENV/inbox", follow))[0] == 202
        state = await node.ctl("state")
        assert [(r["feed"], r["status"]) for r in state["ap_feed_follower"]] == [("ENV", "pending")]
        assert state["ap_delivery"] == []  # nothing sent before the partner decides

        page = await admin.page("/admin/federation")
        assert remote.actor in page and "Accepter" in page
        # a POST without the CSRF token is refused and changes nothing
        async with admin.session.post(
            f"{node.base}/admin/federation/followers",
            data={"actor": remote.actor, "feed": "ENV", "decision": "accept"},
            allow_redirects=False,
        ) as r:
            assert r.status == 403
        form = {"actor": remote.actor, "feed": "ENV", "decision": "accept"}
        status, location = await admin.post("/admin/federation/followers", form, "/admin/federation")
        assert status == 303 and location == "/admin/federation?done=accept"
        await node.until(lambda s: any(d["status"] == "done" for d in s["ap_delivery"]))
        accept = next(r for r in remote.received if r["body"]["type"] == "Accept")
        assert accept["body"]["actor"] == f"{node.base}/feeds/ENV"
        assert accept["body"]["object"]["id"] == follow["id"]
        _, feed_doc, _ = await get(f"{node.base}/feeds/ENV")
        _verify_from(accept, remote.base, feed_doc)  # signed with the feed's own key id

        # a sheet of the theme is announced by the feed; one of another theme is not
        env = await node.ctl("upsert", n=30, themes="ENV")
        await node.ctl("upsert", n=31, themes="SOL")
        await node.until(lambda s: all(d["status"] == "done" for d in s["ap_delivery"]))
        announces = [r for r in remote.received if r["body"]["type"] == "Announce"]
        assert [a["body"]["object"] for a in announces] == [env["uri"]]
        assert announces[0]["body"]["actor"] == feed_doc["id"]
        _verify_from(announces[0], remote.base, feed_doc)
        _, outbox, _ = await get(f"{node.base}/feeds/ENV/outbox?page=1")
        assert [i["object"] for i in outbox["orderedItems"]] == [env["uri"]]
        _, featured, _ = await get(f"{node.base}/feeds/ENV/featured")
        assert [n["id"] for n in featured["orderedItems"]] == [env["uri"]]
        _, followers, _ = await get(f"{node.base}/feeds/ENV/followers?page=1")
        assert followers["orderedItems"] == [remote.actor]
        _, edu_followers, _ = await get(f"{node.base}/feeds/EDU/followers")
        assert edu_followers["totalItems"] == 0

        # the author's Update reaches the feed's followers; losing the theme takes the Announce back
        await node.ctl("upsert", n=30, themes="SOL", title="Plus dans le thème")
        await node.until(lambda s: all(d["status"] == "done" for d in s["ap_delivery"]))
        kinds = [(r["body"]["type"], r["body"]["actor"]) for r in remote.received]
        assert ("Update", f"{node.base}/actor") in kinds
        undo = next(r["body"] for r in remote.received if r["body"]["type"] == "Undo")
        assert undo["actor"] == feed_doc["id"] and undo["object"]["id"] == announces[0]["body"]["id"]
        assert (await get(f"{node.base}/feeds/ENV/outbox"))[1]["totalItems"] == 0

        # a reply about the project is shown to the partner, as text, grouped under the project
        note = {
            "id": f"{remote.actor}/notes/{uuid.uuid4()}",
            "type": "Note",
            "attributedTo": remote.actor,
            "content": "<p>Nous aimerions <script>x()</script>essaimer ce projet à Lyon</p>",
            "inReplyTo": env["uri"],
        }
        assert (await remote.post(f"{node.base}/inbox", activity(remote, "Create", note)))[0] == 202
        page = await admin.page("/admin/messages")
        assert "Plus dans le thème" in page and "essaimer ce projet à Lyon" in page and "<script>" not in page
        assert "1 non lu(s)" in page
        edit = await admin.page("/admin/sheets/projet-30")  # the project's edit page links to its messages
        assert f"/admin/messages?sheet={quote(env['uri'], safe='/')}" in edit
        status, _ = await admin.post("/admin/messages/read", {"sheet": env["uri"]}, "/admin/messages")
        assert status == 303
        assert "non lu" not in await admin.page(f"/admin/messages?sheet={env['uri']}")
        assert "Aucune demande en attente" in await admin.page("/admin/federation")

        # a refused follow request sends a Reject and leaves no follower
        other = activity(remote, "Follow", f"{node.base}/actor")
        assert (await remote.post(f"{node.base}/actor/inbox", other))[0] == 202
        form = {"actor": remote.actor, "feed": "", "decision": "reject"}
        assert (await admin.post("/admin/federation/followers", form, "/admin/federation"))[0] == 303
        await node.until(
            lambda s: s["ap_follower"] == [] and any(r["body"]["type"] == "Reject" for r in remote.received)
        )
        assert (await admin.post("/admin/federation/followers", form, "/admin/federation"))[0] == 404
    finally:
        await admin.session.close()


async def metrics(node: Node) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"{node.base}/metrics") as r:
        text = await r.text()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_failing_host_is_paused_then_recovers(node: Node, remote: Peer) -> None:
    host = f"127.0.0.1:{remote.port}"
    state = await node.ctl("state")
    assert any(r["actor"] == remote.actor and r["status"] == "accepted" for r in state["ap_feed_follower"])
    remote.down = True
    uris = [(await node.ctl("upsert", n=40, themes="ENV"))["uri"]]
    state = await node.until(lambda s: any(d["host"] == host and not d["available"] for d in s["ap_domain"]), 15)
    figures = await metrics(node)
    assert figures[f'essaim_federation_host_available{{host="{host}"}}'] == 0
    assert figures[f'essaim_federation_deliveries_pending{{host="{host}"}}'] >= 1
    # paused: while unavailable, only one probe per probe_interval (1 s) is attempted, whatever the retry pace
    uris += [(await node.ctl("upsert", n=n, themes="ENV"))["uri"] for n in (41, 42)]

    def attempts(s: dict[str, Any]) -> int:
        return sum(d["attempts"] for d in s["ap_delivery"] if d["host"] == host)

    first = attempts(await node.ctl("state"))
    await asyncio.sleep(2.5)
    paused = await node.ctl("state")
    # unpaused, three deliveries retried every 0.3-0.5 s would make 15+ attempts in 2.5 s
    assert attempts(paused) - first <= 4
    assert sum(1 for d in paused["ap_delivery"] if d["host"] == host and d["status"] == "pending") >= 3
    figures = await metrics(node)
    assert figures[f'essaim_federation_deliveries_pending{{host="{host}"}}'] >= 3

    remote.down = False  # the host answers again: the next probe succeeds and the queue drains
    state = await node.until(
        lambda s: (
            all(d["status"] == "done" for d in s["ap_delivery"] if d["host"] == host)
            and all(d["available"] for d in s["ap_domain"])
        ),
        timeout=20,
    )
    announced = {r["body"]["object"] for r in remote.received if r["body"]["type"] == "Announce"}
    assert set(uris) <= announced
    figures = await metrics(node)
    assert figures[f'essaim_federation_host_available{{host="{host}"}}'] == 1
    assert f'essaim_federation_deliveries_pending{{host="{host}"}}' not in figures
    assert figures["essaim_federation_deliveries_done_total"] >= 4
    assert json.dumps(state["ap_domain"])  # the row stays, with its last success


async def test_undo_follow_of_a_feed(node: Node, remote: Peer) -> None:
    feed = f"{node.base}/feeds/ENV"
    state = await node.ctl("state")
    follow_id = next(r["follow_id"] for r in state["ap_feed_follower"] if r["actor"] == remote.actor)
    undo = activity(remote, "Undo", {"id": follow_id, "type": "Follow", "actor": remote.actor, "object": feed})
    assert (await remote.post(f"{feed}/inbox", undo))[0] == 202
    state = await node.ctl("state")
    assert all(r["actor"] != remote.actor for r in state["ap_feed_follower"])
    _, followers, _ = await get(f"{feed}/followers")
    assert followers["totalItems"] == 0
