"""Discovery documents: WebFinger (RFC 7033), host-meta (RFC 6415) and NodeInfo 2.1.

The WebFinger round trip matters (ARCHITECTURE §3): Mastodon resolves
``acct:user@host``, fetches the actor, rebuilds ``preferredUsername@host`` from it
and looks that up again; so every actor needs a unique handle on its own host and
both directions must agree. :func:`parse_webfinger_resource` accepts the handle or
the actor URL; :func:`handle_from_actor` is the peer's side of the loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from lxml import etree

from protocol.activitypub.errors import WebFingerError
from protocol.activitypub.sigbase import authority

JRD_CONTENT_TYPE = "application/jrd+json"
XRD_CONTENT_TYPE = "application/xrd+xml"
ACTIVITY_JSON = "application/activity+json"
LD_JSON_AS = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
PROFILE_PAGE_REL = "http://webfinger.net/rel/profile-page"
NODEINFO_21_SCHEMA = "http://nodeinfo.diaspora.software/ns/schema/2.1"
NODEINFO_21_CONTENT_TYPE = f'application/json; profile="{NODEINFO_21_SCHEMA}#"'
XRD_NS = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
_USERNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def parse_webfinger_resource(resource: str | None, *, host: str, actors: Mapping[str, str]) -> str:
    """The username a ``resource`` names; ``actors`` maps username -> actor URL.

    Accepts ``acct:user@host`` (RFC 7565; the bare ``user@host`` and ``@user@host``
    forms some clients send too) and an actor URL. Raises ``WebFingerError`` with
    400 for a malformed resource and 404 for one that is not ours.
    """
    if not resource or not resource.strip():
        raise WebFingerError("the resource parameter is required")
    text = resource.strip()
    lowered = text.lower()
    if lowered.startswith(("https://", "http://")):
        for username, url in actors.items():
            if url == text:
                return username
        raise WebFingerError(f"no actor at {text}", http_status=404)
    if lowered.startswith("acct:"):
        text = text[5:]
    elif ":" in text.split("@", 1)[0]:
        raise WebFingerError(f"unsupported resource scheme in {resource!r}")
    user, sep, domain = text.lstrip("@").rpartition("@")
    if not sep or not user or not domain or not _USERNAME.match(user):
        raise WebFingerError(f"malformed account {resource!r}")
    if domain.lower() != host.lower():
        raise WebFingerError(f"{domain} is not this host", http_status=404)
    for username in actors:
        # Handles are case-insensitive in practice (Mastodon lower-cases the lookup).
        if username.lower() == user.lower():
            return username
    raise WebFingerError(f"no account {user}@{domain}", http_status=404)


def webfinger_jrd(*, username: str, host: str, actor_id: str, profile_url: str) -> dict[str, Any]:
    """The JRD (RFC 7033 §4.4) for one actor."""
    return {
        "subject": f"acct:{username}@{host}",
        "aliases": [profile_url, actor_id] if profile_url != actor_id else [actor_id],
        "links": [
            {"rel": PROFILE_PAGE_REL, "type": "text/html", "href": profile_url},
            {"rel": "self", "type": ACTIVITY_JSON, "href": actor_id},
        ],
    }


def actor_url_from_jrd(jrd: Mapping[str, Any]) -> str:
    """The ``self`` link of a JRD whose type is an ActivityStreams JSON media type."""
    for link in jrd.get("links") or []:
        if not isinstance(link, Mapping) or link.get("rel") != "self":
            continue
        media = str(link.get("type", "")).replace(" ", "")
        if media in (ACTIVITY_JSON, LD_JSON_AS.replace(" ", "")) and isinstance(link.get("href"), str):
            return str(link["href"])
    raise WebFingerError("JRD has no ActivityPub self link", http_status=404)


def handle_from_actor(actor: Mapping[str, Any]) -> str:
    """``preferredUsername@host`` as a peer rebuilds it from the actor document."""
    username = actor.get("preferredUsername")
    actor_id = actor.get("id")
    if not isinstance(username, str) or not isinstance(actor_id, str) or not urlsplit(actor_id).hostname:
        raise WebFingerError("actor lacks preferredUsername or an absolute id")
    return f"{username}@{authority(actor_id)}"


def host_meta_xrd(base_url: str) -> bytes:
    """``/.well-known/host-meta`` (RFC 6415 §3) pointing at our WebFinger endpoint."""
    root = etree.Element(f"{{{XRD_NS}}}XRD", nsmap={None: XRD_NS})
    link = etree.SubElement(root, f"{{{XRD_NS}}}Link")
    link.set("rel", "lrdd")
    link.set("type", XRD_CONTENT_TYPE)
    link.set("template", f"{base_url.rstrip('/')}/.well-known/webfinger?resource={{uri}}")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def nodeinfo_links(base_url: str) -> dict[str, Any]:
    """``/.well-known/nodeinfo``: where the NodeInfo 2.1 document is."""
    return {"links": [{"rel": NODEINFO_21_SCHEMA, "href": f"{base_url.rstrip('/')}/nodeinfo/2.1"}]}


def nodeinfo_document(
    *,
    version: str,
    users_total: int,
    active_month: int,
    active_halfyear: int,
    local_posts: int,
    node_name: str,
    repository: str | None = None,
    homepage: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """NodeInfo 2.1: ``software.name`` must match ``^[a-z0-9-]+$``; Essaim has no registrations."""
    software: dict[str, Any] = {"name": "essaim", "version": version}
    if repository:
        software["repository"] = repository
    if homepage:
        software["homepage"] = homepage
    return {
        "version": "2.1",
        "software": software,
        "protocols": ["activitypub"],
        "services": {"inbound": [], "outbound": []},
        "openRegistrations": False,
        "usage": {
            "users": {"total": users_total, "activeMonth": active_month, "activeHalfyear": active_halfyear},
            "localPosts": local_posts,
        },
        "metadata": {"nodeName": node_name, "protocols": ["activitypub", "oai-pmh"], **(metadata or {})},
    }
