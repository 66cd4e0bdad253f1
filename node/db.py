"""Database access: one object per process, passed down explicitly.

SQLite is the embedded default (WAL, ``synchronous=FULL`` for durability);
PostgreSQL is chosen by URL. Schema creation and upgrades go through Tortoise's
migrations (``node/migrations``), run by ``essaim db upgrade`` (and by
``essaim node init``). Hot paths write SQL with ``?`` placeholders; :meth:`Database.q`
rewrites them to ``$n`` for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tortoise import Tortoise, connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

SQLITE_PRAGMAS = {
    "journal_mode": "WAL",
    "synchronous": "FULL",
    "foreign_keys": "ON",
    "busy_timeout": "10000",
    # The WAL is copied back into the database file by a checkpointer thread of its own
    # (:class:`WalCheckpointer`), not by the committing writer. The writer still checkpoints
    # when the WAL passes this many pages (~40 MB): the checkpointer fell behind or is gone.
    "wal_autocheckpoint": "10000",
    # The WAL file is reused rather than truncated and grown again after each checkpoint.
    "journal_size_limit": str(64 * 1024 * 1024),
    # 32 MiB of page cache (the default is 2 MiB): a harvest page's transaction writes ~1 MB of
    # rows and indexes; with the default cache its B-tree pages were read again from the OS.
    "cache_size": "-32768",
}
APP_LABEL = "node"
logger = logging.getLogger(__name__)


class DatabaseError(Exception):
    """The database cannot be opened, or its schema is not the one this version expects."""


class WalCheckpointer:
    """Copies an SQLite database's WAL back into its file from a thread and connection of its own.

    SQLite's default is that the connection whose commit makes the WAL pass 1,000 pages
    copies it back then and there: the writer stops to read the WAL, write the database file
    and fsync it. Every write goes through the process's one connection, so that time was
    serial with all writes (about a fifth of the SQLite thread's busy time in the hub bench).
    Here a commit only wakes this thread, which runs a ``PASSIVE`` checkpoint: it never waits
    for or blocks the writer or readers, and copies what no reader still needs.
    Durability is unchanged: a commit is durable once its WAL frames are synced
    (``synchronous=FULL``); the checkpoint syncs the database file before the WAL is reused.
    """

    # At most one checkpoint per interval: successive commits write the same hot pages again (index
    # leaves, the tables' last pages) and a checkpoint copies each page once, however many times the
    # WAL holds it. In the hub bench, checkpointing after every commit copied ~3.6 GB for a 1 GB
    # database; with this pause ~2.2 GB, for half the thread's CPU.
    interval = 0.1

    def __init__(self, path: str, *, busy_timeout_ms: int = 10000) -> None:
        self.path = path
        self._wake = threading.Event()
        self._stop = False
        self._busy_timeout_ms = busy_timeout_ms
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """A write committed: the WAL has pages to copy back."""
        self._wake.set()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            conn.execute("PRAGMA synchronous=FULL")
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                # Pages a reader still needs stay in the WAL: the next commit wakes this thread again
                # (as does a commit made while this checkpoint ran), and tries again after an error.
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    logger.warning("WAL checkpoint of %s failed: %s", self.path, exc)
                time.sleep(self.interval)
        except sqlite3.Error as exc:  # cannot open: the writer's own autocheckpoint does the work
            logger.warning("WAL checkpointer of %s not started: %s", self.path, exc)
        finally:
            if conn is not None:
                conn.close()


def normalise_url(url: str) -> str:
    """Accept ``sqlite:relative/path``, ``sqlite:///abs``, ``postgres://`` and ``postgresql://``."""
    if url.startswith("postgresql://"):
        url = "postgres://" + url[len("postgresql://") :]
    if url.startswith("sqlite:") and not url.startswith("sqlite://"):
        url = "sqlite://" + url[len("sqlite:") :]
    if url.startswith("sqlite://") and url != "sqlite://:memory:":
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        for key, value in SQLITE_PRAGMAS.items():
            query.setdefault(key, value)
        path = url[len("sqlite://") :].split("?", 1)[0]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        url = "sqlite://" + path + "?" + urlencode(query)
    return url


def tortoise_config(url: str) -> dict[str, Any]:
    return {
        "connections": {"default": normalise_url(url)},
        "apps": {
            APP_LABEL: {
                "models": ["node.models"],
                "migrations": "node.migrations",
                "default_connection": "default",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


_QMARK = re.compile(r"\?")


class Database:
    """The process's database: dialect, connection, small SQL helpers."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.dialect = "postgres" if self.url.startswith("postgres") else "sqlite"
        self._conn: BaseDBAsyncClient | None = None
        self._stats_rows: float | None = None  # sheet rows when PostgreSQL statistics were last refreshed
        self._grown = 0
        # Change listeners of every SheetStore on this database (the hub's search-index queue
        # must see harvested sheets too, written by stores the harvester makes per source).
        self.sheet_listeners: list[Any] = []
        # Told of sheets whose derived data changed while their content did not (a hub's
        # duplicate cluster): the search index re-reads them. Called in the writer's transaction.
        self.touch_listeners: list[Callable[[BaseDBAsyncClient, Sequence[str]], Awaitable[None]]] = []
        self._checkpointer: WalCheckpointer | None = None

    @property
    def conn(self) -> BaseDBAsyncClient:
        if self._conn is None:
            raise DatabaseError("database is not open")
        return self._conn

    async def open(self) -> Database:
        try:
            await Tortoise.init(config=tortoise_config(self.url))
            self._conn = connections.get("default")
            await self._conn.execute_query("SELECT 1")
        except Exception as exc:  # connection refused, bad path, unknown database...
            raise DatabaseError(f"cannot open database {self.safe_url()}: {exc}") from exc
        self._start_checkpointer()
        return self

    def _start_checkpointer(self) -> None:
        path = self.sqlite_path()
        if path is not None and self._checkpointer is None:
            self._checkpointer = WalCheckpointer(path, busy_timeout_ms=int(SQLITE_PRAGMAS["busy_timeout"]))

    async def touched(self, uris: Sequence[str], *, tx: BaseDBAsyncClient) -> None:
        """Tell the touch listeners that derived data of the sheets ``uris`` changed."""
        if uris:
            for listener in self.touch_listeners:
                await listener(tx, uris)

    async def close(self) -> None:
        # This database's own client first: Tortoise's registry is per process and context, so a
        # second Database opened in the same process (two hubs in one test, a CLI helper) replaces
        # it there, and closing the registry alone would leave this connection (and, on SQLite,
        # aiosqlite's non-daemon worker thread, which then blocks interpreter exit) open.
        conn, self._conn = self._conn, None
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:  # it may be finishing a checkpoint: joined off the event loop
            await asyncio.to_thread(checkpointer.close)
        if conn is not None:
            await conn.close()
        await Tortoise.close_connections()

    def sqlite_path(self) -> str | None:
        """The absolute path of the SQLite file (None for PostgreSQL or an in-memory database)."""
        if self.dialect != "sqlite" or self.url.startswith("sqlite://:memory:"):
            return None
        return str(Path(self.url[len("sqlite://") :].split("?", 1)[0]).resolve())

    def safe_url(self) -> str:
        """The URL without its password, for logs and ``essaim doctor``."""
        parts = urlsplit(self.url)
        if parts.password:
            netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
        return self.url

    # ------------------------------------------------------------------ SQL helpers

    def q(self, sql: str) -> str:
        """Rewrite ``?`` placeholders for the dialect (``$1, $2`` on PostgreSQL)."""
        if self.dialect != "postgres":
            return sql
        counter = iter(range(1, 10_000))
        return _QMARK.sub(lambda _m: f"${next(counter)}", sql)

    async def fetch(
        self, sql: str, params: Sequence[Any] = (), conn: BaseDBAsyncClient | None = None
    ) -> list[dict[str, Any]]:
        return await (conn or self.conn).execute_query_dict(self.q(sql), list(params))

    async def fetchone(
        self, sql: str, params: Sequence[Any] = (), conn: BaseDBAsyncClient | None = None
    ) -> dict[str, Any] | None:
        rows = await self.fetch(sql, params, conn)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = (), conn: BaseDBAsyncClient | None = None) -> int:
        count, _ = await (conn or self.conn).execute_query(self.q(sql), list(params))
        return count

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]], conn: BaseDBAsyncClient | None = None) -> None:
        if rows:
            # Both drivers take any sequence of parameter sequences: no copy of every row.
            await (conn or self.conn).execute_many(self.q(sql), cast(Any, rows if isinstance(rows, list) else [*rows]))

    async def insert_many(
        self,
        table: str,
        columns: Sequence[str],
        pg_types: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conn: BaseDBAsyncClient | None = None,
    ) -> None:
        """INSERT ``rows`` into ``table``, in their order.

        SQLite runs the statement once per row (a prepared statement, in C). On PostgreSQL
        the rows go as one array per column to a single ``INSERT ... SELECT FROM unnest``:
        one statement for the server instead of one per row (several times faster for
        short rows), ordered by position so that generated keys follow the rows' order.
        """
        if not rows:
            return
        names = ", ".join(columns)
        if self.dialect != "postgres":
            marks = ", ".join("?" for _ in columns)
            await self.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows, conn)
            return
        arrays = ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(pg_types, start=1))
        aliases = ", ".join(f"c{i}" for i in range(len(columns)))
        sql = (
            f"INSERT INTO {table} ({names}) SELECT {aliases} FROM unnest({arrays})"
            f" WITH ORDINALITY AS t({aliases}, position) ORDER BY position"
        )
        await (conn or self.conn).execute_query(sql, [list(column) for column in zip(*rows, strict=True)])

    async def keep_statistics(self, inserted: int, conn: BaseDBAsyncClient | None = None) -> None:
        """Refresh PostgreSQL's planner statistics of the sheet tables while a bulk write grows them.

        Autovacuum analyses a table only after commits; in the middle of a long import
        (one transaction) or right after it, PostgreSQL still believes the table empty and
        plans the id lookups as sequential scans, which made imports quadratic. ANALYZE
        runs when the table is unanalysed and then each time it has doubled (it takes no
        lock that blocks readers or writers). SQLite needs nothing of the kind.
        """
        if self.dialect != "postgres":
            return
        if self._stats_rows is None:
            row = await self.fetchone("SELECT reltuples FROM pg_class WHERE relname = 'sheet'", conn=conn)
            self._stats_rows = float(row["reltuples"]) if row else -1.0
            if self._stats_rows < 0:  # never analysed
                await self.execute("ANALYZE sheet, sheet_set, sheet_format", conn=conn)
                self._stats_rows = 0.0
        self._grown += inserted
        if self._grown >= max(1000.0, self._stats_rows):
            await self.execute("ANALYZE sheet, sheet_set, sheet_format", conn=conn)
            self._stats_rows += self._grown
            self._grown = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[BaseDBAsyncClient]:
        async with in_transaction("default") as tx:
            yield tx
        if self._checkpointer is not None:
            self._checkpointer.nudge()

    # ------------------------------------------------------------------ schema

    async def upgrade(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        from tortoise.migrations.api.migrate import migrate

        applied: list[str] = []

        def progress(event: str, app: str, name: str) -> None:
            if event.endswith("done") or event == "apply_success" or "success" in event:
                applied.append(f"{app}.{name}")

        await migrate(config=tortoise_config(self.url), progress=progress)
        self._conn = connections.get("default")
        self._start_checkpointer()
        return applied

    async def pragmas(self) -> dict[str, Any]:
        """Effective storage settings, for ``essaim doctor`` and the tests."""
        if self.dialect == "sqlite":
            out: dict[str, Any] = {}
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout"):
                row = await self.fetchone(f"PRAGMA {name}")
                out[name] = next(iter(row.values())) if row else None
            return out
        row = await self.fetchone("SHOW server_version")
        sync = await self.fetchone("SHOW synchronous_commit")
        return {
            "server_version": row and row["server_version"],
            "synchronous_commit": sync and sync["synchronous_commit"],
        }
