"""Per-domain delivery health (Mastodon's ``DeliveryFailureTracker`` idea), kept in ``ap_domain``.

A host that fails (connection error, timeout, 5xx) for ``unavailable_after``
seconds in a row is marked unavailable: its deliveries stay queued but paused, so
a dead peer does not eat the worker's time or its retry budget. Once every
``probe_interval`` one of them is let through as a probe; the host is available
again as soon as it answers, to a probe or by sending us a verified activity. A
4xx answer is an answer: the host is alive even if that one inbox refused.

The table is the truth (several workers may share it); the in-memory copy only
spares the hot path a write per successful delivery to a healthy host.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from node.db import Database

log = logging.getLogger("essaim.federation.health")


@dataclass(slots=True)
class DomainState:
    failures: int = 0
    failing_since: int | None = None
    available: bool = True


class DomainHealth:
    """Tracks the hosts deliveries go to; ``now`` comes from the caller (the federation clock)."""

    def __init__(self, db: Database, *, unavailable_after: int, probe_interval: int) -> None:
        self.db = db
        self.unavailable_after = unavailable_after
        self.probe_interval = probe_interval
        self.known: dict[str, DomainState] = {}
        self.loaded = False
        self._lock = asyncio.Lock()  # concurrent deliveries to one host must not both insert its row

    async def load(self) -> None:
        rows = await self.db.fetch("SELECT host, failures, failing_since, available FROM ap_domain")
        self.known = {
            str(r["host"]): DomainState(int(r["failures"]), r["failing_since"], bool(r["available"])) for r in rows
        }
        self.loaded = True

    async def _ensure(self) -> None:
        if not self.loaded:
            await self.load()

    async def succeeded(self, host: str, now: int) -> bool:
        """The host answered; returns True when it was unavailable and is now back."""
        state = self.known.get(host)
        if self.loaded and (state is None or (state.failures == 0 and state.available)):
            return False  # the hot path: a healthy host, nothing to write
        async with self._lock:
            return await self._succeeded(host, now)

    async def _succeeded(self, host: str, now: int) -> bool:
        await self._ensure()
        state = self.known.get(host)
        if state is None or (state.failures == 0 and state.available):
            return False
        was_down = not state.available
        self.known[host] = DomainState()
        await self.db.execute(
            "UPDATE ap_domain SET failures = 0, failing_since = NULL, available = ?, last_success = ?,"
            " last_error = NULL WHERE host = ?",
            [True, now, host],
        )
        if was_down:
            log.info("host available again", extra={"event": "delivery.host_available", "host": host})
        return was_down

    async def failed(self, host: str, now: int, error: str) -> bool:
        """A delivery to the host failed for a reason of the host's; returns True when it just became unavailable."""
        async with self._lock:
            return await self._failed(host, now, error)

    async def _failed(self, host: str, now: int, error: str) -> bool:
        await self._ensure()
        state = self.known.get(host)
        if state is None:
            state = DomainState(failures=0, failing_since=now)
            await self.db.execute(
                "INSERT INTO ap_domain (host, failures, failing_since, last_failure, available, last_error)"
                " VALUES (?, 0, ?, ?, ?, ?)",
                [host, now, now, True, error],
            )
        state.failures += 1
        if state.failing_since is None:
            state.failing_since = now
        went_down = state.available and now - state.failing_since >= self.unavailable_after
        if went_down:
            state.available = False
            log.warning(
                "host unavailable",
                extra={"event": "delivery.host_unavailable", "host": host, "since": state.failing_since},
            )
        self.known[host] = state
        await self.db.execute(
            "UPDATE ap_domain SET failures = ?, failing_since = ?, last_failure = ?, available = ?, last_error = ?"
            " WHERE host = ?",
            [state.failures, state.failing_since, now, state.available, error[:500], host],
        )
        return went_down

    async def probes_due(self, now: int) -> list[str]:
        """Unavailable hosts whose next probe is due; their ``last_probe`` is moved to ``now`` (claimed)."""
        rows = await self.db.fetch(
            "SELECT host, last_probe FROM ap_domain WHERE available = ? AND (last_probe IS NULL OR last_probe <= ?)",
            [False, now - self.probe_interval],
        )
        due = []
        for row in rows:
            taken = await self.db.execute(
                "UPDATE ap_domain SET last_probe = ? WHERE host = ? AND available = ?"
                " AND (last_probe IS NULL OR last_probe <= ?)",
                [now, row["host"], False, now - self.probe_interval],
            )
            if taken:
                due.append(str(row["host"]))
        return due

    async def table(self) -> list[dict[str, Any]]:
        return await self.db.fetch(
            "SELECT host, failures, failing_since, last_failure, last_success, available, last_error"
            " FROM ap_domain ORDER BY host"
        )
