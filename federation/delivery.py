"""The delivery worker: the queue is the ``ap_delivery`` table, so nothing is lost across a restart.

A due delivery is claimed by moving its ``next_attempt`` a lease ahead (a conditional
UPDATE, so two workers never take the same row; a crashed worker's claim lapses).
Every attempt is signed afresh (draft-cavage ``rsa-sha256`` over ``(request-target)
host date digest``) and POSTed through the outbound client. Failures back off
exponentially with jitter, honour ``Retry-After`` (capped), and give up after
``max_attempts`` or ``max_age``; a 4xx other than 408/429 is final. Each host's
health is tracked (:mod:`federation.health`): deliveries to a host unavailable for
days are paused, one probe at a time, until it answers again.

Successes are written in batches (one transaction every few milliseconds instead of
one per delivery): a crash between a POST and its flush re-delivers that activity,
which receivers de-duplicate by its id (at-least-once, never lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import defaultdict
from typing import Any

from federation.health import DomainHealth
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
        self.health = DomainHealth(
            fed.db, unavailable_after=fed.conf.unavailable_after, probe_interval=fed.conf.probe_interval
        )
        fed.health = self.health
        self._done: list[int] = []
        # Claimed rows per host: a slow host must not fill the claim window (its rows would wait in
        # the host's semaphore past their lease and be claimed twice).
        self._inflight: dict[str, int] = defaultdict(int)
        self._flushed = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    async def run(self) -> None:
        await self.health.load()
        ahead = 8 * self.fed.conf.workers  # claimed deliveries in flight at most (the rest stay in the table)
        while not self._stopping:
            room = ahead - len(self._tasks)
            if room < ahead // 2:  # claim in batches, not one row per finished delivery
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                claimed = await self.claim(room)
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
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._flush()

    async def claim(self, limit: int = 200) -> list[dict[str, Any]]:
        """Due deliveries to available hosts, plus one probe per unavailable host whose probe is due."""
        fed, db = self.fed, self.fed.db
        now = fed.now()
        select = (
            "SELECT d.id, d.inbox, d.host, d.attempts, d.created, d.next_attempt, a.payload FROM ap_delivery d"
            " JOIN ap_activity a ON a.id = d.activity_id WHERE d.status = 'pending'"
        )
        cap = 4 * fed.conf.per_host
        capped = [host for host, n in self._inflight.items() if n >= cap]  # their rows wait in the table
        skip = f" AND d.host NOT IN ({', '.join('?' for _ in capped)})" if capped else ""
        rows = await db.fetch(
            select + " AND d.next_attempt <= ? AND NOT EXISTS"
            " (SELECT 1 FROM ap_domain h WHERE h.host = d.host AND h.available = ?)"
            f"{skip} ORDER BY d.next_attempt, d.id LIMIT ?",
            [now, False, *capped, limit],
        )
        for host in await self.health.probes_due(now):
            await self._expire_paused(host, now)
            rows += await db.fetch(select + " AND d.host = ? ORDER BY d.next_attempt, d.id LIMIT 1", [host])
        claimed = []
        async with db.transaction() as tx:  # one commit for the whole batch
            for row in rows:
                if self._inflight[str(row["host"])] >= cap:
                    continue  # left in the table for a later claim
                taken = await db.execute(
                    "UPDATE ap_delivery SET next_attempt = ? WHERE id = ? AND status = 'pending' AND next_attempt = ?",
                    [now + fed.conf.lease, row["id"], row["next_attempt"]],
                    conn=tx,
                )
                if taken:
                    claimed.append(row)
                    self._inflight[str(row["host"])] += 1
        return claimed

    async def _expire_paused(self, host: str, now: int) -> None:
        """Paused deliveries still follow the give-up rule on age."""
        expired = await self.fed.db.execute(
            "UPDATE ap_delivery SET status = 'failed', last_error = ? WHERE host = ? AND status = 'pending'"
            " AND created < ?",
            ["host unavailable past max_age", host, now - self.fed.conf.max_age],
        )
        if expired:
            self.fed.count("delivery_failed_total", expired)
            log.warning("delivery.failed", extra={"event": "delivery.failed", "host": host, "expired": expired})

    async def _flush(self) -> None:
        done, self._done = self._done, []
        if not done:
            return
        async with self.fed.db.transaction() as tx:
            for start in range(0, len(done), 500):
                chunk = done[start : start + 500]
                await self.fed.db.execute(
                    "UPDATE ap_delivery SET status = 'done', attempts = attempts + 1, last_error = NULL"
                    f" WHERE id IN ({', '.join('?' for _ in chunk)})",
                    chunk,
                    conn=tx,
                )

    async def _flush_soon(self) -> None:
        await asyncio.sleep(0.05)
        self._flusher = None
        try:
            await self._flush()
        except Exception:
            log.exception("delivery flush failed", extra={"event": "delivery.error"})

    def _succeeded(self, row_id: int) -> None:
        self._done.append(row_id)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_soon())

    def _signer_key(self, payload: str) -> str:
        try:
            actor = json.loads(payload).get("actor")
        except ValueError:
            actor = None
        local = self.fed.local_actor(actor if isinstance(actor, str) else None)
        return local.key_id if local is not None else self.fed.key_id

    async def _attempt(self, row: dict[str, Any]) -> None:
        host = str(row["host"])
        try:
            await self._deliver(row)
        finally:
            self._inflight[host] -= 1
            if self._inflight[host] == 4 * self.fed.conf.per_host - 1:
                self.wake.set()  # the host was capped: its waiting rows may be claimed now

    async def _deliver(self, row: dict[str, Any]) -> None:
        fed = self.fed
        async with self._all, self._hosts[str(row["host"])]:
            payload = str(row["payload"])
            body = payload.encode("utf-8")
            inbox, host = str(row["inbox"]), str(row["host"])
            key_id = self._signer_key(payload)
            headers = {"Content-Type": "application/activity+json", **fed.signed_headers("POST", inbox, body, key_id)}
            retry_after: float | None = None
            final = False
            host_fault: bool | None = True  # no answer or a 5xx: the host's health suffers; a 4xx is an answer
            try:
                await fed.client.post(inbox, data=body, headers=headers, max_bytes=64 * 1024)
            except OutboundHTTPError as exc:
                error = f"HTTP {exc.status}"
                retry_after = parse_retry_after(exc.headers.get("Retry-After"), cap=fed.conf.retry_after_cap)
                final = 400 <= exc.status < 500 and exc.status not in _RETRYABLE_4XX
                host_fault = exc.status >= 500
            except OutboundError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            except Exception as exc:  # never lose the row to a bug: it is retried later
                log.exception("delivery crashed", extra={"event": "delivery.error", "inbox": inbox})
                error = f"{type(exc).__name__}: {exc}"[:500]
                host_fault = None  # our bug says nothing about the host
            else:
                self._succeeded(int(row["id"]))
                fed.count("deliveries_done_total")
                if await self.health.succeeded(host, fed.now()):
                    self.wake.set()  # its paused deliveries are due again
                log.debug("delivered", extra={"event": "delivery.done", "inbox": inbox})
                return
            if host_fault:
                await self.health.failed(host, fed.now(), error)
            elif host_fault is False:
                await self.health.succeeded(host, fed.now())
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
