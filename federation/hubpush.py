"""The hub following its Essaim sources: one ``Follow`` of each registered node's actor, kept in the database.

A source of kind ``essaim`` (``essaim hub sources add URL`` or the hub admin) gets a row in
``hub_push_source``: the node's actor (``{site}/actor``, checked by fetching it) and its OAI
``repositoryIdentifier`` (read from its Identify), which keys pushed sheets like harvested ones
(:mod:`harvesting.push`). :func:`sync_follows` is idempotent: the CLI calls it right after a
registration, and the hub's background loop calls it every ``interval`` seconds, so a source
added through the admin (or while a node was down) is followed as soon as its node answers.
It reads ``harvest_source`` with SQL: this module does not import :mod:`harvesting`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from lxml import etree
from tortoise.exceptions import IntegrityError

from federation.follow import follow
from federation.service import Federation
from node.outbound import OutboundError
from protocol.oai.namespaces import OAI_IDENTIFIER, qn

log = logging.getLogger("essaim.federation.hubpush")

RELAY = "relay"  # the code of a hub's relay actor: /feeds/relay, handle relay@host

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def site_of(oai_url: str) -> str:
    return oai_url[: -len("/oai")] if oai_url.endswith("/oai") else oai_url.rstrip("/")


async def repository_identifier(fed: Federation, oai_url: str) -> str:
    """The ``repositoryIdentifier`` of the node's Identify (its ``oai:`` identifiers' middle part)."""
    response = await fed.client.get(f"{oai_url}?verb=Identify", max_bytes=256 * 1024)
    root = etree.fromstring(response.body, _PARSER)
    found = root.find(f".//{qn(OAI_IDENTIFIER, 'repositoryIdentifier')}")
    if found is None or not (found.text or "").strip():
        raise ValueError(f"{oai_url} Identify has no oai-identifier description")
    return str(found.text).strip()


async def follow_source(fed: Federation, row: dict[str, Any]) -> dict[str, Any]:
    """Follow the node behind one ``harvest_source`` row; returns its ``hub_push_source`` row."""
    oai_url = str(row["base_url"])
    repo_id = await repository_identifier(fed, oai_url)
    site = site_of(oai_url)
    # Another hub: its relay actor (every record it holds, keyed by its own OAI identifiers); a node: its actor.
    kind, actor = "relay", f"{site}/feeds/{RELAY}"
    try:
        document = await fed.fetch_json(actor)
        if document.get("id") != actor:
            raise ValueError("not an actor")
    except (OutboundError, ValueError):
        kind, actor = "node", f"{site}/actor"
    follow_id = await follow(fed, actor)  # fetches the actor first: a node without ActivityPub fails here
    async with fed.db.transaction() as tx:
        await fed.db.execute("DELETE FROM hub_push_source WHERE source = ?", [row["key"]], conn=tx)
        await fed.db.execute(
            "INSERT INTO hub_push_source (source, actor, kind, repo_id, follow_id, followed, baseline, pushed,"
            " last_push) VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0)",
            [row["key"], actor, kind, repo_id, follow_id, fed.now()],
            conn=tx,
        )
    log.info("hub follows a source", extra={"event": "hubpush.followed", "source": row["key"], "actor": actor})
    pushed = await fed.db.fetchone("SELECT * FROM hub_push_source WHERE source = ?", [row["key"]])
    assert pushed is not None
    return pushed


async def sync_follows(fed: Federation, key: str | None = None) -> list[dict[str, Any]]:
    """Follow every enabled ``essaim`` source not followed yet (or only ``key``); errors are recorded."""
    rows = await fed.db.fetch(
        "SELECT s.* FROM harvest_source s LEFT JOIN hub_push_source p ON p.source = s.key"
        " WHERE s.kind = 'essaim' AND s.enabled = ? AND (p.id IS NULL OR p.follow_id IS NULL)"
        + (" AND s.key = ?" if key else "")
        + " ORDER BY s.key",
        [True, key] if key else [True],
    )
    out = []
    async with _lock(fed):  # the background loop and an explicit call: one Follow per source
        for row in rows:
            again = await fed.db.fetchone(
                "SELECT * FROM hub_push_source WHERE source = ? AND follow_id IS NOT NULL", [row["key"]]
            )
            if again is not None:  # followed meanwhile (by the other caller)
                out.append(again)
                continue
            try:
                out.append(await follow_source(fed, row))
            except IntegrityError:  # another hub process sharing the database followed it at once
                log.info("source followed elsewhere", extra={"event": "hubpush.raced", "source": row["key"]})
            except (OutboundError, ValueError, etree.XMLSyntaxError) as exc:
                log.warning(
                    "cannot follow a source",
                    extra={"event": "hubpush.follow_failed", "source": row["key"], "error": str(exc)[:300]},
                )
    await _baselines(fed)
    return out


_LOCKS: dict[int, asyncio.Lock] = {}


def _lock(fed: Federation) -> asyncio.Lock:
    return _LOCKS.setdefault(id(fed), asyncio.Lock())


async def _baselines(fed: Federation) -> None:
    """The first complete harvest after the follow closes the initial load: divergence counts from there."""
    await fed.db.execute(
        "UPDATE hub_push_source SET baseline = (SELECT MAX(h.last_complete) FROM harvest_state h"
        " WHERE h.source = hub_push_source.source) WHERE baseline = 0 AND followed <= COALESCE((SELECT"
        " MAX(h.last_complete) FROM harvest_state h WHERE h.source = hub_push_source.source), 0)"
    )


async def run_follow_loop(fed: Federation, interval: float) -> None:
    """The hub's background task: :func:`sync_follows` every ``interval`` seconds until cancelled."""
    while True:
        try:
            await sync_follows(fed)
        except Exception:
            log.exception("follow sync failed", extra={"event": "hubpush.sync_failed"})
        await asyncio.sleep(interval)


async def push_status(fed: Federation, divergence: Any) -> list[dict[str, Any]]:
    """Per followed source: the Follow's state, what push delivered, what the harvest had to repair."""
    await _baselines(fed)
    rows = await fed.db.fetch(
        "SELECT p.*, f.status AS follow_status FROM hub_push_source p"
        " LEFT JOIN ap_following f ON f.follow_id = p.follow_id ORDER BY p.source"
    )
    out = []
    for row in rows:
        item = {
            "source": row["source"],
            "actor": row["actor"],
            "kind": row["kind"],
            "repository_identifier": row["repo_id"],
            "follow": row["follow_status"] or "none",
            "pushed": int(row["pushed"]),
            "last_push": int(row["last_push"]),
            "baseline": int(row["baseline"]),
        }
        if int(row["baseline"]):
            item.update(await divergence(fed.db, str(row["source"]), int(row["baseline"])))
        out.append(item)
    return out


def dumps(status: list[dict[str, Any]]) -> str:
    return json.dumps(status, ensure_ascii=False, indent=2)
