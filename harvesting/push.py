"""Real-time ingest on the hub: a followed node's Create / Update / Delete, written like a harvested record.

The inbox (:mod:`federation.inbox`) has verified the activity (HTTP signature, key owner =
actor, object on the actor's host) and parsed it (:mod:`protocol.activitypub.parser`, the
embedded sheet rebuilt with pyld when needed); this module is handed the typed record inside
the inbox's transaction.

A pushed sheet lands under exactly the key the OAI-PMH harvest uses for the same record: the
source is the registered node's harvest source, the local id the node's OAI identifier
``oai:{repositoryIdentifier}:{local_id}`` (:func:`protocol.oai.identifiers.make_identifier`,
as the node's provider builds it), and it goes through the same write path
(:func:`harvesting.ingest.write_batch`: crosswalk, gazetteer, duplicates, index queue). Its
provenance carries the record's datestamp (the sheet's, which the node's OAI header repeats),
so the next incremental harvest finds it unchanged and writes nothing: it *confirms* it. A
change push missed arrives with a newer datestamp and is written by the harvest, whose
provenance then lacks ``via`` — what :func:`divergence` counts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from harvesting.ingest import write_batch
from harvesting.normalise import Normaliser, rules_of
from node.db import Database
from node.storage import SheetStore
from protocol.activitypub import parser as ap
from protocol.oai.identifiers import make_identifier, parse_identifier
from protocol.oai.namespaces import ESSAIM
from protocol.sheet import format_datestamp

log = logging.getLogger("essaim.hub.push")

VIA = "activitypub"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PushIngest:
    """The hub's handler of content activities (``Federation.content_handler``)."""

    def __init__(
        self,
        db: Database,
        *,
        hub_base_url: str,
        clock: Callable[[], float] = time.time,
        count: Callable[[str, int], None] | None = None,
    ) -> None:
        self.db = db
        self.hub_base_url = hub_base_url
        self.clock = clock
        self._count = count

    def count(self, name: str, by: int = 1) -> None:
        if self._count is not None:
            self._count(name, by)

    async def __call__(self, activity: Any, document: dict[str, Any], tx: BaseDBAsyncClient) -> None:
        row = await self.db.fetchone(
            "SELECT p.source, p.repo_id, p.kind, s.name FROM hub_push_source p"
            " JOIN harvest_source s ON s.key = p.source WHERE p.actor = ?",
            [activity.actor],
            conn=tx,
        )
        if row is None:  # an actor we do not follow as a source (a person, another hub's post): not a record
            log.info("push ignored", extra={"event": "push.ignored", "actor": activity.actor, "reason": "not a source"})
            return
        source, repo_id = str(row["source"]), str(row["repo_id"])
        store = SheetStore(self.db, base_url=self.hub_base_url, source=source, hub=True, clock=self.clock)
        if isinstance(activity, ap.Delete):
            written = await self._delete(store, activity, document, tx)
        else:
            written = await self._upsert(store, repo_id, str(row["kind"]), activity, document, tx)
        if written:
            await self.db.execute(
                "UPDATE hub_push_source SET pushed = pushed + 1, last_push = ? WHERE source = ?",
                [int(self.clock()), source],
                conn=tx,
            )

    async def _upsert(
        self,
        store: SheetStore,
        repo_id: str,
        kind: str,
        activity: Any,
        document: dict[str, Any],
        tx: BaseDBAsyncClient,
    ) -> bool:
        sheet = activity.object.sheet
        if sheet is None:  # a plain Note from a node actor: nothing to index
            log.info("push ignored", extra={"event": "push.ignored", "actor": activity.actor, "reason": "no sheet"})
            return False
        if kind == "relay":
            # Another hub's relay names each record by its identifier in that hub's OAI-PMH repository,
            # which is what our harvest of that hub keys it by; it must be one of that repository's.
            if parse_identifier(repo_id, sheet.local_id) is None:
                log.warning(
                    "push refused",
                    extra={"event": "push.refused", "actor": activity.actor, "identifier": sheet.local_id[:200]},
                )
                return False
            identifier = sheet.local_id
        else:
            identifier = make_identifier(repo_id, "", sheet.local_id)
        datestamp = format_datestamp(sheet.datestamp) if sheet.datestamp else _iso(self.clock())
        before = (await store.provenance_of([identifier], conn=tx)).get(identifier, {})
        if str(before.get("datestamp") or "") > datestamp:  # an older version overtaken by a newer one
            self.count("push_stale_total")
            return False
        normaliser = Normaliser(await rules_of(self.db, store.source, conn=tx))
        keyed = replace(sheet, id="", local_id=identifier, datestamp=None)
        counts = await write_batch(store, normaliser, [keyed], [], tx=tx)
        now = _iso(self.clock())
        await store.set_provenance(
            {
                identifier: {
                    "baseURL": before.get("baseURL") or await self._base_url(store.source, tx),
                    "identifier": identifier,
                    "datestamp": datestamp,
                    "metadataNamespace": ESSAIM,
                    "harvestDate": now,
                    "altered": False,
                    "firstSeen": before.get("firstSeen", now),
                    "lastSeen": now,
                    "deleted": False,
                    "sheetId": sheet.id,
                    "via": VIA,
                    "activity": activity.id,
                    **_origin(document),
                }
            },
            tx=tx,
        )
        self.count("push_upserts_total")
        log.info(
            "push ingested",
            extra={
                "event": "push.ingested",
                "source": store.source,
                "identifier": identifier,
                "status": counts.statuses.get(identifier),
            },
        )
        return True

    async def _delete(self, store: SheetStore, activity: Any, document: dict[str, Any], tx: BaseDBAsyncClient) -> bool:
        # The node's URI is a uuid of its local id: found back through the provenance (push and harvest both
        # record it as sheetId), JSON written with sorted keys and ", " / ": " separators.
        pattern = f'%"sheetId": "{_like(activity.object_id)}"%'
        found = await self.db.fetchone(
            "SELECT local_id, provenance FROM sheet WHERE source = ? AND provenance LIKE ? ESCAPE '!'",
            [store.source, pattern],
            conn=tx,
        )
        if found is None:
            log.info("push ignored", extra={"event": "push.ignored", "object": activity.object_id, "reason": "unknown"})
            return False
        identifier = str(found["local_id"])
        normaliser = Normaliser({})
        counts = await write_batch(store, normaliser, [], [identifier], tx=tx)
        if counts.statuses.get(identifier) == "deleted":
            old = json.loads(found["provenance"])
            now = _iso(self.clock())
            provenance = {
                **old,
                "datestamp": tombstone_datestamp(document) or now,
                "harvestDate": now,
                "lastSeen": now,
                "deleted": True,
                "via": VIA,
                "activity": activity.id,
            }
            await store.set_provenance({identifier: provenance}, tx=tx)
        self.count("push_deletes_total")
        return True

    async def _base_url(self, source: str, tx: BaseDBAsyncClient) -> str:
        row = await self.db.fetchone("SELECT base_url FROM harvest_source WHERE key = ?", [source], conn=tx)
        return str(row["base_url"]) if row else ""


def tombstone_datestamp(document: dict[str, Any]) -> str | None:
    """The ``deleted`` of the Delete's Tombstone: the node's OAI header of the deleted record has the same."""
    obj = document.get("object")
    deleted = obj.get("deleted") if isinstance(obj, dict) else None
    return deleted if isinstance(deleted, str) and len(deleted) <= 40 else None


def _origin(document: dict[str, Any]) -> dict[str, Any]:
    """A relayed record's provenance on the relaying hub, kept as ours's ``originDescription`` (OAI
    provenance guidelines: the chain node → regional hub → this hub)."""
    obj = document.get("object")
    origin = obj.get("oaiProvenance") if isinstance(obj, dict) else None
    if not isinstance(origin, dict) or len(json.dumps(origin)) > 16_384:
        return {}
    return {"originDescription": origin}


def _like(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


async def divergence(db: Database, source: str, since: int) -> dict[str, Any]:
    """What the harvest had to repair for a pushed source since ``since`` (the end of the first complete
    harvest after the hub followed the node: the initial load is not a divergence).

    A sheet whose last change on the hub (``stamp``) is later than that and whose
    provenance was written by the harvest (no ``via``) reached the hub by OAI-PMH only:
    push missed it (the hub was down, a delivery was given up, ...).
    """
    rows = await db.fetch(
        "SELECT local_id FROM sheet WHERE source = ? AND stamp > ? AND provenance IS NOT NULL"
        " AND provenance NOT LIKE ? ORDER BY stamp DESC",
        [source, since, f'%"via": "{VIA}"%'],
    )
    pushed = await db.fetchone(
        "SELECT COUNT(*) AS n FROM sheet WHERE source = ? AND provenance LIKE ?", [source, f'%"via": "{VIA}"%']
    )
    return {
        "repaired_by_harvest": len(rows),
        "repaired": [str(r["local_id"]) for r in rows[:20]],
        "current_from_push": int(pushed["n"]) if pushed else 0,
    }
