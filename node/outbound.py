"""The one hardened outbound HTTP client of Essaim.

Every request that leaves a process (WebFinger, actor and key fetches, deliveries,
OAI-PMH harvests, crawls, geocoding) goes through :class:`OutboundClient`, so the
SSRF policy, the size caps and the timeouts live in one place (ARCHITECTURE §4,
"outbound allow-list" and "resolver override").

Policy, and why it is enforced where it is:

* Targets are checked on the *resolved* address, inside the connector's resolver,
  i.e. at connect time. Checking the URL's host name up front and letting aiohttp
  resolve it again later would let a DNS-rebinding name answer a public address
  to the check and ``127.0.0.1`` to the connection. IP literals never reach a
  resolver (aiohttp short-cuts them), so they are checked before the request.
* Redirects are followed by hand so that every hop is re-checked (scheme and
  target) and the hop limit is ours.
* The body is read as a stream and counted *after* decompression: we decode
  ``gzip``/``deflate`` ourselves with a bounded ``max_length`` so a small gzip bomb
  cannot expand past the cap in memory, and a lying ``Content-Length`` changes
  nothing since the count is of bytes actually received.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType, TracebackType
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

logger = logging.getLogger("essaim.outbound")

MiB = 1024 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Credentials and signatures must not follow a redirect to another origin
# (RFC 9110 §15.4: the client decides; the Fetch standard strips Authorization).
_ORIGIN_BOUND_HEADERS = ("authorization", "cookie", "signature", "signature-input", "proxy-authorization")
_CHUNK = 64 * 1024
_ERROR_BODY_EXCERPT = 512


# --------------------------------------------------------------------- errors


class OutboundError(Exception):
    """Root of every error raised by the outbound client."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class OutboundRefused(OutboundError):
    """The target is not allowed (scheme, private or reserved address)."""

    def __init__(self, message: str, *, url: str | None = None, reason: str = "", address: str | None = None) -> None:
        super().__init__(message, url=url)
        self.reason = reason or message
        self.address = address


class OutboundTimeout(OutboundError):
    """Connect, read or total deadline exceeded."""


class OutboundTooLarge(OutboundError):
    """The (decompressed) body exceeds the byte cap."""

    def __init__(self, message: str, *, url: str | None = None, limit: int = 0) -> None:
        super().__init__(message, url=url)
        self.limit = limit


class OutboundHTTPError(OutboundError):
    """The peer answered with a 4xx or 5xx status."""

    def __init__(self, status: int, headers: Mapping[str, str], body_excerpt: bytes, *, url: str | None = None) -> None:
        super().__init__(f"HTTP {status} from {url}", url=url)
        self.status = status
        self.headers = headers
        self.body_excerpt = body_excerpt


class OutboundRedirectError(OutboundError):
    """Too many redirects, a redirect loop or an unusable Location."""


class OutboundConnectionError(OutboundError):
    """The connection failed or the peer broke the HTTP protocol."""


# --------------------------------------------------------------------- policy


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, 6to4, NAT64 well-known prefix)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):  # RFC 6052 §2.1
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_reason(address: str) -> str | None:
    """Why an IP address is not a public unicast target, or None if it is.

    ``is_global`` covers RFC 1918, loopback, link-local, unique-local (fc00::/7),
    unspecified, shared (100.64/10), documentation and the IANA special-purpose
    registries; multicast needs its own test because some multicast ranges
    count as "global".
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = forbidden_reason(str(inner))
            return f"IPv6 form of {inner}: {reason}" if reason else None
    for name in ("loopback", "private", "link_local", "unspecified", "multicast", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if not ip.is_global:
        return "not globally routable"
    return None


def _host_port_key(host: str, port: int) -> str:
    host = host.lower().rstrip(".")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _normalise_allow_entry(entry: str) -> str:
    entry = entry.strip().lower()
    if entry.startswith("["):
        return entry
    host, sep, port = entry.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"allow-list entries are host:port, not {entry!r}")
    return _host_port_key(host, int(port))


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    """Tunables of the outbound client (ARCHITECTURE §4: tests shrink them to run in seconds)."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 60.0
    max_body_bytes: int = 10 * MiB
    max_redirects: int = 5
    allow_list: frozenset[str] = frozenset()  # "host:port" / "[v6]:port" exempt from the address ban
    resolver_overrides: Mapping[str, str] = field(default_factory=dict, hash=False)  # hosts-style name -> IP
    per_host_limit: int = 4
    max_connections: int = 64
    user_agent: str = "Essaim/0.1 (federated project sheets)"
    allow_http: bool = False  # plain http for any target (else only for allow-listed ones)

    def __post_init__(self) -> None:
        entries = frozenset(_normalise_allow_entry(e) for e in self.allow_list)
        object.__setattr__(self, "allow_list", entries)
        overrides = {k.lower().rstrip("."): str(ipaddress.ip_address(v)) for k, v in self.resolver_overrides.items()}
        object.__setattr__(self, "resolver_overrides", MappingProxyType(overrides))
        if self.max_redirects < 0 or self.max_body_bytes <= 0:
            raise ValueError("max_redirects must be >= 0 and max_body_bytes > 0")

    def is_allow_listed(self, host: str, port: int) -> bool:
        return _host_port_key(host, port) in self.allow_list


class GuardedResolver(AbstractResolver):
    """Resolver that applies the overrides, then refuses forbidden resolved addresses.

    It runs inside aiohttp's connector for every new connection to a host name,
    so the addresses checked are the ones connected to.
    """

    def __init__(self, config: OutboundConfig, upstream: AbstractResolver | None = None) -> None:
        self._config = config
        self._upstream = upstream

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.lower().rstrip(".")
        override = self._config.resolver_overrides.get(name)
        if override is not None:
            ip = ipaddress.ip_address(override)
            fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            results: list[ResolveResult] = [
                {"hostname": host, "host": override, "port": port, "family": fam, "proto": 0, "flags": 0}
            ]
        else:
            if self._upstream is None:
                self._upstream = aiohttp.ThreadedResolver()
            results = await self._upstream.resolve(host, port, family)
        if self._config.is_allow_listed(name, port):
            return results
        for result in results:
            address = result["host"]
            if self._config.is_allow_listed(address, port):
                continue
            reason = forbidden_reason(address)
            if reason is not None:
                # One bad answer refuses the name: an attacker's DNS may mix answers.
                raise OutboundRefused(f"{host} resolves to {address} ({reason})", reason=reason, address=address)
        return results

    async def close(self) -> None:
        if self._upstream is not None:
            await self._upstream.close()


def check_url(config: OutboundConfig, url: URL) -> None:
    """Scheme and literal-address checks done before any connection (each redirect hop too)."""
    scheme = (url.scheme or "").lower()
    host = url.raw_host
    if scheme not in ("http", "https") or not host:
        raise OutboundRefused(f"scheme {scheme!r} or missing host not allowed", url=str(url), reason="scheme")
    port = url.port or (443 if scheme == "https" else 80)
    listed = config.is_allow_listed(host, port)
    if scheme == "http" and not (config.allow_http or listed):
        raise OutboundRefused("plain http is only allowed for allow-listed targets", url=str(url), reason="scheme")
    if url.user is not None or url.password is not None:
        raise OutboundRefused("credentials in URLs are not allowed", url=str(url), reason="userinfo")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return  # a name: checked by GuardedResolver on the resolved addresses
    reason = forbidden_reason(host)
    if reason is not None and not listed:
        raise OutboundRefused(f"{host} is {reason}", url=str(url), reason=reason, address=host)


# ------------------------------------------------------------------- response


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    status: int
    headers: CIMultiDictProxy[str]
    url: str  # final URL, after redirects
    body: bytes
    history: tuple[str, ...] = ()  # URLs that answered with a redirect

    def text(self, encoding: str | None = None) -> str:
        charset = encoding
        if charset is None:
            ctype = self.headers.get("Content-Type", "")
            for part in ctype.split(";")[1:]:
                key, _, value = part.strip().partition("=")
                if key.lower() == "charset" and value:
                    charset = value.strip('"')
        try:
            return self.body.decode(charset or "utf-8", errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def raise_for_status(self) -> None:
        if self.status >= 400:
            raise OutboundHTTPError(self.status, self.headers, self.body[:_ERROR_BODY_EXCERPT], url=self.url)


def parse_retry_after(
    value: str | None, *, now: datetime | None = None, cap: float = 3600.0, default: float | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110 §10.2.3), capped.

    Accepts ``delay-seconds`` or an HTTP-date (IMF-fixdate and the obsolete
    forms); a date in the past gives 0; anything unparsable gives ``default``.
    The cap matters: a peer answering ``Retry-After: 86400`` must not park a
    worker for a day.
    """
    if value is None:
        return default
    text = value.strip()
    if not text:
        return default
    if text.isdigit():
        seconds = float(int(text))
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return default
        if when is None:
            return default
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = now or datetime.now(UTC)
        seconds = max(0.0, (when - current).total_seconds())
    return min(seconds, cap)


# --------------------------------------------------------------------- client


class _BodyReader:
    """Counts decoded bytes against a cap while decoding gzip/deflate with bounded output."""

    def __init__(self, encoding: str, limit: int, url: str) -> None:
        self.limit = limit
        self.url = url
        self.size = 0
        self.parts: list[bytes] = []
        enc = encoding.strip().lower()
        if enc in ("", "identity"):
            self._inflater: Any = None
        elif enc in ("gzip", "x-gzip", "deflate"):
            self._inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)  # auto-detect gzip or zlib header
        else:
            raise OutboundConnectionError(f"unsupported Content-Encoding {encoding!r}", url=url)

    def _add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise OutboundTooLarge(f"body exceeds {self.limit} bytes", url=self.url, limit=self.limit)
        self.parts.append(data)

    def feed(self, chunk: bytes) -> None:
        if self._inflater is None:
            self._add(chunk)
            return
        data = chunk
        try:
            while data:
                # max_length one past the budget: a full buffer means the cap is crossed.
                out = self._inflater.decompress(data, self.limit - self.size + 1)
                self._add(out)
                data = self._inflater.unconsumed_tail
                if self._inflater.eof:
                    break
        except zlib.error as exc:
            raise OutboundConnectionError(f"corrupt compressed body: {exc}", url=self.url) from exc

    def finish(self) -> bytes:
        if self._inflater is not None:
            if not self._inflater.eof:
                raise OutboundConnectionError("truncated compressed body", url=self.url)
            self._add(self._inflater.flush())
        return b"".join(self.parts)


class OutboundClient:
    """Pooled, policy-enforcing HTTP client; use as ``async with OutboundClient(cfg) as c``."""

    def __init__(self, config: OutboundConfig | None = None) -> None:
        self.config = config or OutboundConfig()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OutboundClient:
        self._get_session()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            cfg = self.config
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(cfg),
                use_dns_cache=False,  # every new connection is resolved, hence checked
                limit=cfg.max_connections,
                limit_per_host=cfg.per_host_limit,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=cfg.connect_timeout,
                    sock_connect=cfg.connect_timeout,
                    sock_read=cfg.read_timeout,
                ),
                headers={"User-Agent": cfg.user_agent, "Accept-Encoding": "gzip, deflate"},
                auto_decompress=False,  # we decode ourselves, under the byte cap
                trust_env=False,  # no proxy from the environment: it would bypass the checks
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def get(self, url: str, **kwargs: Any) -> OutboundResponse:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> OutboundResponse:
        return await self.request("POST", url, **kwargs)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        data: bytes | str | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the deadline covers redirects and body too
        raise_for_status: bool = True,
        follow_redirects: bool = True,
    ) -> OutboundResponse:
        """Send a request; raises an :class:`OutboundError` subclass on any failure.

        ``timeout`` bounds the whole exchange, redirects and body included, which
        also defeats peers that trickle headers or body one byte at a time.
        """
        limit = max_bytes if max_bytes is not None else self.config.max_body_bytes
        deadline = timeout if timeout is not None else self.config.total_timeout
        body = data.encode("utf-8") if isinstance(data, str) else data
        try:
            async with asyncio.timeout(deadline):
                return await self._exchange(
                    method.upper(),
                    URL(url),
                    CIMultiDict(headers or {}),
                    body,
                    limit,
                    raise_for_status,
                    follow_redirects,
                )
        except OutboundRefused as exc:
            exc.url = exc.url or url
            logger.warning(
                "outbound.refused",
                extra={
                    "event": "outbound.refused",
                    "url": exc.url,
                    "reason": exc.reason,
                    "address": exc.address,
                    "method": method.upper(),
                },
            )
            raise
        except TimeoutError as exc:
            raise OutboundTimeout(f"{method} {url}: timed out", url=url) from exc
        except aiohttp.InvalidURL as exc:
            raise OutboundRefused(f"invalid URL: {exc}", url=url, reason="invalid-url") from exc
        except (aiohttp.ClientError, OSError) as exc:
            # Peer-controlled text can be huge (aiohttp quotes the offending bytes): keep it short.
            raise OutboundConnectionError(f"{method} {url}: {type(exc).__name__}: {str(exc)[:200]}", url=url) from exc

    async def _exchange(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: bytes | None,
        limit: int,
        raise_for_status: bool,
        follow_redirects: bool,
    ) -> OutboundResponse:
        session = self._get_session()
        history: list[str] = []
        seen: set[tuple[str, str]] = set()
        while True:
            check_url(self.config, url)
            seen.add((method, str(url)))
            async with session.request(method, url, headers=headers, data=body, allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if follow_redirects and resp.status in _REDIRECT_STATUSES and location:
                    next_url = self._redirect_target(url, location)
                    check_url(self.config, next_url)  # refuse before anything else looks at it
                    history.append(str(url))
                    if len(history) > self.config.max_redirects:
                        raise OutboundRedirectError(f"more than {self.config.max_redirects} redirects", url=str(url))
                    # RFC 9110 §15.4.2-4: 301/302 after POST and every 303 become GET.
                    if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                        method, body = ("HEAD" if method == "HEAD" else "GET"), None
                        for name in ("Content-Type", "Content-Length", "Digest", "Content-Digest"):
                            headers.popall(name, None)
                    if next_url.origin() != url.origin():
                        for name in _ORIGIN_BOUND_HEADERS:
                            headers.popall(name, None)
                    if (method, str(next_url)) in seen:
                        raise OutboundRedirectError(f"redirect loop at {next_url}", url=str(url))
                    url = next_url
                    continue
                payload = await self._read_body(resp, limit, str(url))
                response = OutboundResponse(
                    status=resp.status, headers=resp.headers, url=str(url), body=payload, history=tuple(history)
                )
            if raise_for_status:
                response.raise_for_status()
            return response

    @staticmethod
    def _redirect_target(current: URL, location: str) -> URL:
        try:
            target = current.join(URL(location))
        except ValueError as exc:
            raise OutboundRedirectError(f"bad Location {location!r}", url=str(current)) from exc
        # Scheme and host of the target are judged by check_url before the next hop.
        return target.with_fragment(None)

    @staticmethod
    async def _read_body(resp: aiohttp.ClientResponse, limit: int, url: str) -> bytes:
        declared = resp.headers.get("Content-Length")
        encoding = resp.headers.get("Content-Encoding", "")
        if declared is not None and declared.isdigit() and not encoding and int(declared) > limit:
            # Honest and too big: refuse before reading anything.
            raise OutboundTooLarge(f"Content-Length {declared} exceeds {limit} bytes", url=url, limit=limit)
        reader = _BodyReader(encoding, limit, url)
        if resp.method == "HEAD":
            return b""
        async for chunk in resp.content.iter_chunked(_CHUNK):
            reader.feed(chunk)
        return reader.finish()


__all__ = [
    "GuardedResolver",
    "OutboundClient",
    "OutboundConfig",
    "OutboundConnectionError",
    "OutboundError",
    "OutboundHTTPError",
    "OutboundRedirectError",
    "OutboundRefused",
    "OutboundResponse",
    "OutboundTimeout",
    "OutboundTooLarge",
    "check_url",
    "forbidden_reason",
    "parse_retry_after",
]
