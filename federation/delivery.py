"""The delivery worker: the queue is the ``ap_delivery`` table, so nothing is lost across a restart.

A due delivery is claimed by moving its ``next_attempt`` a lease ahead (a conditional
UPDATE, so two workers never take the same row; a crashed worker's claim lapses).
Every attempt is signed afresh (draft-cavage ``rsa-sha256`` over ``(request-target)
host date digest``) and POSTed through the outbound client. Failures back off
exponentially with jitter, honour ``Retry-After`` (capped), and give up after
``max_attempts`` or ``max_age``; a 4xx other than 408/429 is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from typing import Any

from federation.service import Federation
from node.outbound import OutboundError, OutboundHTTPError, parse_retry_after

log = logging.getLogger("essaim.federation.delivery")
_RETRYABLE_4XX = frozenset({408, 425, 429})


class DeliveryWorker:
    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.wake = asyncio.Event()
        fed.wake = self.wake
        self._hosts: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(fed.conf.per_host))
        self._all = asyncio.Semaphore(fed.conf.workers)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def run(self) -> None:
        while not self._stopping:
            try:
                claimed = await self.claim()
            except Exception:
                log.exception("delivery claim failed", extra={"event": "delivery.error"})
                claimed = []
            for row in claimed:
                task = asyncio.create_task(self._attempt(row))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if not claimed:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.fed.conf.poll)

    async def stop(self) -> None:
        self._stopping = True
        self.wake.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def claim(self, limit: int = 50) -> list[dict[str, Any]]:
        fed, db = self.fed, self.fed.db
        now = fed.now()
        rows = await db.fetch(
            "SELECT d.id, d.inbox, d.host, d.attempts, d.created, d.next_attempt, a.payload FROM ap_delivery d"
            " JOIN ap_activity a ON a.id = d.activity_id"
            " WHERE d.status = 'pending' AND d.next_attempt <= ? ORDER BY d.next_attempt, d.id LIMIT ?",
            [now, limit],
        )
        claimed = []
        for row in rows:
            taken = await db.execute(
                "UPDATE ap_delivery SET next_attempt = ? WHERE id = ? AND status = 'pending' AND next_attempt = ?",
                [now + fed.conf.lease, row["id"], row["next_attempt"]],
            )
            if taken:
                claimed.append(row)
        return claimed

    async def _attempt(self, row: dict[str, Any]) -> None:
        fed = self.fed
        async with self._all, self._hosts[str(row["host"])]:
            body = str(row["payload"]).encode("utf-8")
            inbox = str(row["inbox"])
            headers = {"Content-Type": "application/activity+json", **fed.signed_headers("POST", inbox, body)}
            retry_after: float | None = None
            final = False
            try:
                await fed.client.post(inbox, data=body, headers=headers, max_bytes=64 * 1024)
            except OutboundHTTPError as exc:
                error = f"HTTP {exc.status}"
                retry_after = parse_retry_after(exc.headers.get("Retry-After"), cap=fed.conf.retry_after_cap)
                final = 400 <= exc.status < 500 and exc.status not in _RETRYABLE_4XX
            except OutboundError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            except Exception as exc:  # never lose the row to a bug: it is retried later
                log.exception("delivery crashed", extra={"event": "delivery.error", "inbox": inbox})
                error = f"{type(exc).__name__}: {exc}"[:500]
            else:
                await fed.db.execute(
                    "UPDATE ap_delivery SET status = 'done', attempts = attempts + 1, last_error = NULL WHERE id = ?",
                    [row["id"]],
                )
                fed.count("deliveries_done_total")
                log.info("delivered", extra={"event": "delivery.done", "inbox": inbox})
                return
            await self._failed(row, error, retry_after, final)

    async def _failed(self, row: dict[str, Any], error: str, retry_after: float | None, final: bool) -> None:
        fed, conf = self.fed, self.fed.conf
        attempts = int(row["attempts"]) + 1
        now = fed.now()
        delay = min(conf.retry_max, conf.retry_base * conf.retry_factor ** (attempts - 1))
        delay = delay * random.uniform(0.8, 1.2)  # jitter: peers back from an outage are not stampeded
        if retry_after is not None:
            delay = max(delay, retry_after)
        give_up = final or attempts >= conf.max_attempts or now + delay - int(row["created"]) > conf.max_age
        await fed.db.execute(
            "UPDATE ap_delivery SET status = ?, attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?",
            ["failed" if give_up else "pending", attempts, now + max(1, round(delay)), error, row["id"]],
        )
        event = "delivery.failed" if give_up else "delivery.retry"
        fed.count(event.replace(".", "_") + "_total")
        log.warning(event, extra={"event": event, "inbox": row["inbox"], "error": error, "attempts": attempts})
