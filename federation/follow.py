"""The node actor following a remote actor: WebFinger lookup, then a Follow queued for delivery."""

from __future__ import annotations

from urllib.parse import quote

from federation.service import Federation
from protocol.activitypub.activities import follow_activity
from protocol.activitypub.discovery import ACTIVITY_JSON, actor_url_from_jrd


async def lookup(fed: Federation, handle: str) -> str:
    """``user@host`` (or ``@user@host``) → actor URL, by WebFinger over the outbound client."""
    user, _, host = handle.lstrip("@").rpartition("@")
    scheme = "http" if fed.client.config.is_allow_listed(*_host_port(host)) else "https"
    url = f"{scheme}://{host}/.well-known/webfinger?resource={quote(f'acct:{user}@{host}')}"
    response = await fed.client.get(url, headers={"Accept": "application/jrd+json"}, max_bytes=256 * 1024)
    return actor_url_from_jrd(response.json())


def _host_port(host: str) -> tuple[str, int]:
    name, sep, port = host.rpartition(":")
    return (name, int(port)) if sep and port.isdigit() else (host, 443)


async def follow(fed: Federation, handle_or_url: str) -> str:
    """Queue a Follow of a remote actor; returns the Follow's id (dereferenceable on our host)."""
    actor = handle_or_url if handle_or_url.startswith(("https://", "http://")) else await lookup(fed, handle_or_url)
    document = await fed.fetch_json(actor)
    if document.get("id") != actor or not isinstance(document.get("inbox"), str):
        raise ValueError(f"{actor} is not an actor with an inbox")
    activity = follow_activity(activity_id=fed.new_activity_id(), actor_id=fed.actor_id, target_id=actor)
    async with fed.db.transaction() as tx:
        await fed.db.execute("DELETE FROM ap_following WHERE actor = ?", [actor], conn=tx)
        await fed.db.execute(
            "INSERT INTO ap_following (actor, follow_id, status, created) VALUES (?, ?, 'pending', ?)",
            [actor, activity["id"], fed.now()],
            conn=tx,
        )
        pk = await fed.record_activity(activity, conn=tx, public=False)
        await fed.enqueue(pk, [str(document["inbox"])], conn=tx)
    return str(activity["id"])


__all__ = ["ACTIVITY_JSON", "follow", "lookup"]
