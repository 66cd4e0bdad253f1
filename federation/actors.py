"""The node's local actors: its ``Service`` actor and the optional feed actors, one per theme.

Every actor has a unique handle on the node's host (Mastodon's WebFinger round
trip rebuilds ``preferredUsername@host`` from the actor and looks it up again,
ARCHITECTURE §3). Feed actors share the node's key pair: each publishes it under
its own key id with itself as ``owner``, so a peer's "key owner = actor" check
holds for every one of them, and one key is all a partner has to keep safe.

Followers of the node actor live in ``ap_follower`` (migration 0003); followers of
a feed in ``ap_feed_follower`` with the feed's code. :class:`LocalActor` knows
which, so the inbox, the outbox and the collections treat both alike.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from protocol.taxonomy import Taxonomy

ALL_THEMES = "*"


@dataclass(frozen=True, slots=True)
class LocalActor:
    """One of our actors; ``feed`` is the theme code of a feed actor, ``None`` for the node actor."""

    id: str
    username: str
    name: str
    summary_text: str
    profile_url: str
    feed: str | None = None

    @property
    def key_id(self) -> str:
        return f"{self.id}#main-key"

    @property
    def inbox(self) -> str:
        return f"{self.id}/inbox"

    @property
    def outbox(self) -> str:
        return f"{self.id}/outbox"

    @property
    def followers_url(self) -> str:
        return f"{self.id}/followers"

    @property
    def featured_url(self) -> str:
        return f"{self.id}/featured"

    @property
    def following_url(self) -> str:
        return f"{self.id}/following"

    def followers_sql(self, alias: str = "") -> tuple[str, str, list[object]]:
        """(table, condition, parameters) selecting this actor's followers (``alias``: e.g. ``"f."``)."""
        if self.feed is None:
            return "ap_follower", "1 = 1", []
        return "ap_feed_follower", f"{alias}feed = ?", [self.feed]


def slug(label: str) -> str:
    """``Éducation et jeunesse`` -> ``education-et-jeunesse`` (the handles Mastodon accepts: a-z, 0-9, -)."""
    ascii_text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode("ascii").lower()
    return "-".join(re.findall(r"[a-z0-9]+", ascii_text))


def feed_codes(configured: list[str], taxonomy: Taxonomy) -> list[str]:
    """The theme codes with a feed actor; an unknown code is a configuration error naming it."""
    if ALL_THEMES in configured:
        return list(taxonomy.themes)
    unknown = [code for code in configured if code not in taxonomy.themes]
    if unknown:
        known = ", ".join(taxonomy.themes)
        raise ValueError(f"federation.feeds: unknown theme code(s) {', '.join(unknown)} (known: {known})")
    return list(dict.fromkeys(configured))


def feed_actors(base_url: str, node_name: str, codes: list[str], taxonomy: Taxonomy) -> dict[str, LocalActor]:
    """Feed actors by theme code, at ``/feeds/{code}``, with the handle ``theme-{slug of the label}``."""
    actors: dict[str, LocalActor] = {}
    for code in codes:
        label = taxonomy.themes[code].label("fr")
        actor_id = f"{base_url}/feeds/{code}"
        actors[code] = LocalActor(
            id=actor_id,
            username=f"theme-{slug(label) or code.lower()}",
            name=f"{node_name} · {label}",
            summary_text=f"Les fiches projets « {label} » publiées par {node_name}.",
            profile_url=f"{base_url}/?theme={code}",
            feed=code,
        )
    return actors
