"""Deploy-time settings: one object, loaded at the edge (CLI) and passed down.

Sources, later ones winning: defaults, the TOML settings file (``essaim.toml`` in
the data directory, or ``--config`` / ``ESSAIM_CONFIG``), then environment
variables. A nested key ``[oai] page_size`` is set by ``ESSAIM_OAI_PAGE_SIZE``;
a top-level key ``base_url`` by ``ESSAIM_BASE_URL``. Unknown keys and values of
the wrong type are errors that name the file and the key. Nothing here is read
at import time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.config import FederationSettings  # the [federation] section is the federation's own


class SettingsError(ValueError):
    """A settings file or variable is invalid; the message names the file and key."""


@dataclass
class PartnerSettings:
    name: str = "Partenaire de démonstration"
    url: str = ""
    logo: str = ""
    description: str = "Un nœud Essaim : des fiches projets d'innovation sociale."
    username: str = "partenaire"  # the node actor's preferredUsername
    admin_email: str = "admin@example.org"


@dataclass
class OaiSettings:
    page_size: int = 100
    token_ttl: int = 86_400  # seconds a resumption token stays valid
    repository_name: str = ""  # defaults to the partner's name
    read_ahead: int = 32  # running lists whose next page is read before it is asked for (0: off)


@dataclass
class OutboundSettings:
    allow: list[str] = field(default_factory=list)  # host:port exempt from the private-address ban
    resolve: dict[str, str] = field(default_factory=dict)  # test names -> loopback addresses
    connect_timeout: float = 10.0
    total_timeout: float = 60.0
    max_body: int = 10 * 1024 * 1024
    per_host: int = 4
    user_agent: str = "Essaim/0.1 (+https://essaim.org)"


@dataclass
class GeoSettings:
    online: bool = False  # use the national address API for what the offline gazetteer misses
    api_url: str = ""


@dataclass
class AdminSettings:
    session_ttl: int = 8 * 3600
    max_upload: int = 50 * 1024 * 1024


def default_worker_processes() -> int:
    """The cores this process may run on, at most four; 0 on a single core (nothing to gain there)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores < 2 else min(cores, 4)


@dataclass
class HubSettings:
    harvest_interval: int = 3600  # default seconds between two harvests of a source
    workers: int = 2  # sources harvested at once by this hub process
    page_size: int = 100  # not sent (OAI-PMH lets the provider choose); kept for providers' hints
    poll: float = 5.0  # seconds between two looks for due sources
    claim_ttl: int = 120  # a claim lapses after this many seconds unless renewed (every ttl/3 while harvesting)
    # Worker processes parsing, decoding, normalising and rendering harvested OAI-PMH pages while
    # this process fetches and writes them (harvesting/pipeline.py); 0: all in this process. By
    # default the machine's cores: on 2 cores the hub bench's 100,000 records go ~1.5x faster.
    harvest_processes: int = field(default_factory=default_worker_processes)
    scheduler: bool = True  # run the scheduler inside ``essaim node serve`` when role = hub


@dataclass
class NodeSettings:
    # Worker processes for the CPU-bound part of an import of a native JSON-lines file of 2 MiB or
    # more (decoding, validation, geocoding, OAI rendering, hashing; see node/pipeline.py); 0: all
    # in-process. By default the machine's cores: on 2 cores a 100,000-sheet import runs ~1.4x faster.
    write_workers: int = field(default_factory=default_worker_processes)


@dataclass
class SearchSettings:
    """The hub's Typesense: embedded (started and supervised by the hub) or external (``urls`` + ``api_key``)."""

    embedded: bool = True  # start the bundled Typesense 0.24.1 (ignored when ``urls`` is set)
    urls: list[str] = field(default_factory=list)  # external node(s): one server or the nodes of a Raft cluster
    api_key: str = ""  # external: the admin key; embedded: generated and kept in the data directory
    port: int = 0  # embedded API port on 127.0.0.1 (0: chosen once, then kept)
    data_dir: str = ""  # embedded data (default: <data_dir>/typesense)
    ready_within: float = 60.0  # seconds to wait for the embedded server (health and document count)
    indexer: bool = True  # run the index worker inside the hub's server
    batch_size: int = 1000  # queue rows taken per index batch (one import request each)
    poll: float = 0.5  # seconds between two looks at the queue when nothing woke the worker
    lease: int = 120  # seconds a claimed batch stays invisible to other workers
    retry_base: float = 1.0  # first retry delay after Typesense refused a document or was unreachable
    retry_max: float = 30.0  # cap of one retry delay
    max_attempts: int = 10  # a document Typesense keeps refusing is set aside (status failed) after this
    timeout: float = 5.0  # seconds per search request to Typesense
    wide_zoom: int = 7  # map views at or below this zoom are served from the per-generation cache
    cache_stale: float = 300.0  # seconds a wide-view cache entry may be served while it is being refreshed
    counts_cache: int = 4096  # facet counts kept (one facet of one search each); 0: every search counts its facets
    counts_stale: float = 2.0  # seconds facet counts may lag the index once it has changed
    search_key_ttl: int = 30 * 86_400  # default lifetime (seconds) of a minted scoped search key


@dataclass
class WebSettings:
    """The hub's web front (``[web]``)."""

    tile_url: str = ""  # e.g. "https://tiles.example.org/{z}/{x}/{y}.png"; empty: the map draws without tiles
    tile_attribution: str = ""  # shown on the map when tiles are drawn (text, escaped)
    assets_dir: str = ""  # the npm packages (Leaflet); default: node_modules of the checkout
    per_page: int = 20  # results per search page
    site_name: str = ""  # defaults to the partner's name
    cache_ttl: float = 10.0  # seconds a search result is reused by the pages (0: never)


@dataclass
class FedhubSettings:
    """The hub on the fediverse (``role = hub`` with federation enabled): live ingest and hub feed actors."""

    push: bool = True  # follow every registered Essaim node and ingest its Create / Update / Delete
    follow_interval: float = 60.0  # seconds between two looks for registered nodes not followed yet
    regions: list[str] = field(default_factory=list)  # INSEE région codes with a feed actor; ["*"] = all
    saved_searches: bool = True  # anyone may create a saved-search feed actor from a search query string
    max_saved_searches: int = 1000  # refuse new saved searches beyond this many
    relay: bool = True  # the relay actor (/relay) other hubs follow


@dataclass
class Settings:
    role: str = "node"  # node | hub
    data_dir: str = "var/node"
    base_url: str = "http://127.0.0.1:8080"  # public URL; https in production
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = ""  # default: SQLite file in data_dir
    licence: str = "https://www.etalab.gouv.fr/licence-ouverte-open-licence"
    language: str = "fr"
    log_format: str = "json"  # json | text
    log_level: str = "INFO"
    trusted_proxies: list[str] = field(default_factory=list)
    partner: PartnerSettings = field(default_factory=PartnerSettings)
    node: NodeSettings = field(default_factory=NodeSettings)
    oai: OaiSettings = field(default_factory=OaiSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    geo: GeoSettings = field(default_factory=GeoSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    hub: HubSettings = field(default_factory=HubSettings)
    federation: FederationSettings = field(default_factory=FederationSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    web: WebSettings = field(default_factory=WebSettings)
    fedhub: FedhubSettings = field(default_factory=FedhubSettings)
    config_file: str = ""  # where these settings were read from (informational)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_path / 'essaim.sqlite3').resolve()}"

    def secret(self, name: str) -> bytes:
        """A random secret kept in the data directory (created on first use, mode 0600)."""
        path = self.data_path / "secrets" / f"{name}.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written under a temporary name, then linked into place: a concurrent process
            # never reads a half-written key, and the first one to link wins.
            tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(os.urandom(32).hex().encode())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        value = path.read_bytes().strip()
        if not value:
            raise SettingsError(f"{path}: the secret file is empty (delete it to create a new one)")
        return value

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_KIND_NAMES = {int: "a whole number", float: "a number", str: "text"}


def _coerce(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if kind is not bool and isinstance(value, bool):  # bool is an int: TOML ``port = true`` is a mistake
        raise SettingsError(f"{where}: expected {_KIND_NAMES.get(kind, 'a value')}, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise SettingsError(f"{where}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise SettingsError(f"{where}: expected a whole number, got {value!r}")
        try:
            return int(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where}: expected a whole number, got {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where}: expected a number, got {value!r}") from None
    if kind is str:
        if not isinstance(value, (str, int, float)):
            raise SettingsError(f"{where}: expected text, got {value!r}")
        return str(value)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise SettingsError(f"{where}: expected a list, got {value!r}")
        return [str(v) for v in value]
    if origin is dict:
        if isinstance(value, str):  # "a=1,b=2" from the environment
            pairs = [p.split("=", 1) for p in value.split(",") if "=" in p]
            value = {k.strip(): v.strip() for k, v in pairs}
        if not isinstance(value, Mapping):
            raise SettingsError(f"{where}: expected a table, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    raise SettingsError(f"{where}: unsupported type {kind!r}")  # pragma: no cover


def _apply(target: Any, data: Mapping[str, Any], where: str) -> None:
    hints = typing.get_type_hints(type(target))
    names = {f.name for f in dataclasses.fields(target)}
    for key, value in data.items():
        if key not in names:
            raise SettingsError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(names))})")
        kind = hints[key]
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise SettingsError(f"{where}: [{key}] must be a table")
            _apply(current, value, f"{where} [{key}]")
        else:
            if isinstance(kind, types.UnionType):  # pragma: no cover - no optional settings yet
                kind = typing.get_args(kind)[0]
            setattr(target, key, _coerce(value, kind, f"{where}: {key}"))


def _from_environment(settings: Settings, environ: Mapping[str, str]) -> None:
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(settings):
        current = getattr(settings, f.name)
        if dataclasses.is_dataclass(current):
            sub_hints = typing.get_type_hints(type(current))
            for sub in dataclasses.fields(current):
                var = f"ESSAIM_{f.name.upper()}_{sub.name.upper()}"
                if var in environ:
                    setattr(current, sub.name, _coerce(environ[var], sub_hints[sub.name], var))
        else:
            var = f"ESSAIM_{f.name.upper()}"
            if var in environ and f.name != "config_file":
                setattr(settings, f.name, _coerce(environ[var], hints[f.name], var))


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from file, environment and explicit overrides (CLI flags)."""
    environ = os.environ if environ is None else environ
    settings = Settings()
    path_text = str(config) if config else environ.get("ESSAIM_CONFIG", "")
    if not path_text:
        data_dir = Path(environ.get("ESSAIM_DATA_DIR", settings.data_dir))
        candidate = data_dir / "essaim.toml"
        path_text = str(candidate) if candidate.exists() else ""
    if path_text:
        path = Path(path_text)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"{path}: settings file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: {exc}") from None
        _apply(settings, data, str(path))
        settings.config_file = str(path)
    _from_environment(settings, environ)
    if overrides:
        _apply(settings, {k: v for k, v in overrides.items() if v is not None}, "command line")
    if settings.role not in ("node", "hub"):
        raise SettingsError(f"role: must be 'node' or 'hub', not {settings.role!r}")
    settings.base_url = settings.base_url.rstrip("/")
    if not settings.oai.repository_name:
        settings.oai.repository_name = settings.partner.name
    return settings


def toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's too (TOML also forbids a raw DEL)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def render_toml(settings: Settings) -> str:
    """A commented settings file for ``essaim node init``."""
    p, o = settings.partner, settings.oai
    q = toml_string
    database = (
        f"database_url = {q(settings.database_url)}"
        if settings.database_url
        else '# database_url = "postgres://user@host:5432/essaim"'
    )
    return f"""# Essaim settings. Every key can also be set by an environment variable:
# ESSAIM_<KEY> for top-level keys, ESSAIM_<SECTION>_<KEY> inside a section.
role = {q(settings.role)}
base_url = {q(settings.base_url)}   # the public URL of this node (https in production)
host = {q(settings.host)}
port = {settings.port}
data_dir = {q(settings.data_dir)}
{database}   # default: SQLite in data_dir
licence = {q(settings.licence)}

[partner]
name = {q(p.name)}
url = {q(p.url)}
username = {q(p.username)}
admin_email = {q(p.admin_email)}
description = {q(p.description)}

[oai]
page_size = {o.page_size}
token_ttl = {o.token_ttl}
read_ahead = {o.read_ahead}   # lists whose next page is read before the harvester asks (0: off)

[outbound]
# allow = ["127.0.0.1:8081"]   # loopback/private targets are refused unless listed here

[geo]
online = false   # true: ask the national address API for places the offline gazetteer misses
"""
