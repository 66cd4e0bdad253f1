"""Raw-HTTP Typesense client on one pooled aiohttp session, with node failover.

The ``typesense`` package costs 2.5–3.5× more CPU per query, so the hot path
(search, multi-search, import) goes through this client. Every import row result
is read: the import endpoint answers 200 even when rows fail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from search.errors import ApiError, ImportFailed, NodesUnavailable, NotFound, RowFailure
from search.filters import Filter, build_filter

# 503: node not ready or lagging behind the Raft leader; another node may answer.
_RETRY_STATUSES = frozenset({502, 503, 504})
IMPORT_BATCH = 500
DELETE_BATCH = 200
_ROW_OK = '{"success":true}'  # an import row result, as Typesense writes it


def encode_documents(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The JSON lines of an import body."""
    return [json.dumps(d, ensure_ascii=False) for d in docs]


def _seg(name: str) -> str:
    return quote(name, safe="")


def _params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if params is None:
        return None
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def generate_scoped_search_key(search_key: str, params: Mapping[str, Any]) -> str:
    """A scoped search key embedding ``params`` (e.g. a ``filter_by`` the holder cannot remove).

    Typesense's documented construction: base64(base64(HMAC-SHA256(key, params_json))
    + first 4 characters of the key + params_json). The parent must be a key created
    through ``/keys`` with only the ``documents:search`` action.
    """
    payload = json.dumps(dict(params), separators=(",", ":"), ensure_ascii=False)
    digest = base64.b64encode(hmac.new(search_key.encode(), payload.encode(), hashlib.sha256).digest()).decode()
    return base64.b64encode(f"{digest}{search_key[:4]}{payload}".encode()).decode()


@dataclass(frozen=True, slots=True)
class ImportReport:
    imported: int
    failures: tuple[RowFailure, ...]


class SearchClient:
    """Async client for one Typesense deployment (one node or a Raft cluster).

    ``nodes`` are base URLs tried in order, starting from the last node that
    answered; a connection error, a timeout or a 502/503/504 moves on to the next.
    """

    def __init__(
        self,
        nodes: Sequence[str] | Any,
        api_key: str | None = None,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        import_timeout: float = 120.0,
    ) -> None:
        urls = getattr(nodes, "urls", nodes)
        if api_key is None:
            api_key = getattr(nodes, "api_key", None)
        if isinstance(urls, str):
            urls = [urls]
        if not urls or not api_key:
            raise ValueError("SearchClient needs at least one node URL and an API key")
        self.urls = [u.rstrip("/") for u in urls]
        self._key = api_key
        self._session = session
        self._own_session = session is None
        self._preferred = 0
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._import_timeout = aiohttp.ClientTimeout(total=import_timeout, sock_connect=connect_timeout)

    async def __aenter__(self) -> SearchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit_per_host=64, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector)
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        data: bytes | str | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
        api_key: str | None = None,
        raw: bool = False,
    ) -> Any:
        """One API call with failover; returns parsed JSON (or text when ``raw``)."""
        session = self._get_session()
        headers = {"X-TYPESENSE-API-KEY": api_key or self._key}
        if body is not None:
            data = json.dumps(body, ensure_ascii=False)
            headers["Content-Type"] = "application/json"
        errors: list[str] = []
        n = len(self.urls)
        # At least two attempts: a pooled keep-alive connection to a restarted node
        # fails once with a disconnect even though the node is up again.
        for attempt in range(max(n, 2)):
            index = (self._preferred + attempt) % n
            url = self.urls[index] + path
            try:
                async with session.request(
                    method,
                    url,
                    params=_params(params),
                    data=data,
                    headers=headers,
                    timeout=client_timeout or self._timeout,
                ) as resp:
                    text = await resp.text()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                # Connection errors, and garbage answers: a Raft node in the middle of a leader
                # change has been seen answering "HTTP/1.1 0" (an unparseable status line).
                errors.append(f"{self.urls[index]}: {type(exc).__name__}")
                continue
            if status in _RETRY_STATUSES:
                errors.append(f"{self.urls[index]}: HTTP {status}")
                continue
            self._preferred = index
            if status >= 400:
                try:
                    message = json.loads(text).get("message", text)
                except (ValueError, AttributeError):
                    message = text
                raise (NotFound if status == 404 else ApiError)(status, message)
            return text if raw else json.loads(text)
        raise NodesUnavailable("no Typesense node answered: " + "; ".join(errors))

    @staticmethod
    async def _json(call: Any) -> dict[str, Any]:
        result = await call
        if not isinstance(result, dict):
            raise ApiError(200, f"expected a JSON object, got {type(result).__name__}")
        return result

    # ------------------------------------------------------------------ search

    async def search(self, collection: str, params: Mapping[str, Any], *, api_key: str | None = None) -> Any:
        return await self.request(
            "GET", f"/collections/{_seg(collection)}/documents/search", params=params, api_key=api_key
        )

    async def multi_search(
        self,
        searches: Sequence[Mapping[str, Any]],
        common: Mapping[str, Any] | None = None,
        *,
        api_key: str | None = None,
    ) -> list[dict[str, Any]]:
        """Run several searches in one request (POST body, so no URL length limit).

        A failed search inside the batch comes back as ``{"code", "error"}``;
        it is raised here rather than mistaken for an empty result.
        """
        result = await self.request(
            "POST", "/multi_search", params=common, body={"searches": list(searches)}, api_key=api_key
        )
        results: list[dict[str, Any]] = result.get("results", [])
        for item in results:
            if "error" in item:
                raise ApiError(int(item.get("code", 400)), str(item["error"]))
        return results

    # ------------------------------------------------------------------ documents

    async def import_documents(
        self,
        collection: str,
        docs: Iterable[Mapping[str, Any]],
        action: str = "upsert",
        *,
        batch_size: int = IMPORT_BATCH,
        raise_on_failure: bool = True,
        lines: Sequence[str] | None = None,
    ) -> ImportReport:
        """Import in JSONL batches, checking the result of every row.

        ``lines``, when given, are the documents already encoded (:func:`encode_documents`,
        e.g. in the worker thread that built them), one per document of ``docs``.
        """
        if action not in ("create", "upsert", "update", "emplace"):
            raise ValueError(f"unknown import action {action!r}")
        if lines is not None:
            docs = list(docs)
            if len(lines) != len(docs):
                raise ValueError(f"{len(lines)} encoded lines for {len(docs)} documents")
        imported = 0
        failures: list[RowFailure] = []
        batch: list[Mapping[str, Any]] = []
        offset = 0

        async def flush() -> None:
            nonlocal imported, offset
            if lines is not None:
                body = "\n".join(lines[offset : offset + len(batch)])
            else:
                body = "\n".join(encode_documents(batch))
            text = await self.request(
                "POST",
                f"/collections/{_seg(collection)}/documents/import",
                params={"action": action, "batch_size": len(batch)},
                data=body.encode("utf-8"),
                client_timeout=self._import_timeout,
                raw=True,
            )
            results = [line.strip() for line in text.splitlines() if line.strip()]
            for i, doc in enumerate(batch):
                line = results[i] if i < len(results) else ""
                if line == _ROW_OK:  # the common case, without a JSON parse
                    imported += 1
                    continue
                row: dict[str, Any]
                try:
                    row = json.loads(line) if line else {"success": False, "error": "no result row"}
                except ValueError:
                    row = {"success": False, "error": f"unreadable result row: {line[:200]!r}"}
                code = row.get("code")
                if row.get("success") is True:
                    imported += 1
                else:
                    failures.append(
                        RowFailure(
                            index=offset + i,
                            id=str(doc["id"]) if "id" in doc else None,
                            code=code if isinstance(code, int) else None,
                            error=str(row.get("error", "unknown error")),
                        )
                    )
            offset += len(batch)
            batch.clear()

        for doc in docs:
            batch.append(doc)
            if len(batch) >= batch_size:
                await flush()
        if batch:
            await flush()
        if failures and raise_on_failure:
            raise ImportFailed(failures, imported)
        return ImportReport(imported, tuple(failures))

    async def delete_documents(self, collection: str, ids: Iterable[str]) -> int:
        """Delete documents by id; returns how many existed."""
        ids = list(dict.fromkeys(ids))
        deleted = 0
        for start in range(0, len(ids), DELETE_BATCH):
            chunk = ids[start : start + DELETE_BATCH]
            result = await self.request(
                "DELETE",
                f"/collections/{_seg(collection)}/documents",
                params={"filter_by": build_filter([Filter("id", chunk)]), "batch_size": DELETE_BATCH},
            )
            deleted += int(result.get("num_deleted", 0))
        return deleted

    async def export_fields(self, collection: str, fields: str = "id,datestamp") -> list[dict[str, Any]]:
        """Every document of ``collection`` reduced to ``fields`` (JSON lines export)."""
        text = await self.request(
            "GET",
            f"/collections/{_seg(collection)}/documents/export",
            params={"include_fields": fields},
            client_timeout=self._import_timeout,
            raw=True,
        )
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    async def get_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        return await self._json(self.request("GET", f"/collections/{_seg(collection)}/documents/{_seg(doc_id)}"))

    # ------------------------------------------------------------------ administration

    async def create_collection(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        return await self._json(self.request("POST", "/collections", body=schema))

    async def drop_collection(self, name: str, *, missing_ok: bool = True) -> None:
        try:
            await self.request("DELETE", f"/collections/{_seg(name)}")
        except NotFound:
            if not missing_ok:
                raise

    async def get_collection(self, name: str) -> dict[str, Any]:
        return await self._json(self.request("GET", f"/collections/{_seg(name)}"))

    async def list_collections(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/collections")
        return result

    async def num_documents(self, collection_or_alias: str) -> int:
        return int((await self.get_collection(collection_or_alias))["num_documents"])

    async def upsert_alias(self, alias: str, collection: str) -> None:
        await self.request("PUT", f"/aliases/{_seg(alias)}", body={"collection_name": collection})

    async def get_alias(self, alias: str) -> str | None:
        try:
            return str((await self.request("GET", f"/aliases/{_seg(alias)}"))["collection_name"])
        except NotFound:
            return None

    async def delete_alias(self, alias: str) -> None:
        try:
            await self.request("DELETE", f"/aliases/{_seg(alias)}")
        except NotFound:
            pass

    async def upsert_synonym(self, collection: str, synonym_id: str, body: Mapping[str, Any]) -> None:
        await self.request("PUT", f"/collections/{_seg(collection)}/synonyms/{_seg(synonym_id)}", body=body)

    async def upsert_synonyms(self, collection: str, synonyms: Mapping[str, Mapping[str, Any]]) -> int:
        """Upsert ``{id: {"synonyms": [...], "root"?: ...}}``; see ``search.synonyms`` for the files."""
        for synonym_id, body in synonyms.items():
            await self.upsert_synonym(collection, synonym_id, body)
        return len(synonyms)

    async def create_search_key(self, description: str, collections: Sequence[str] = ("*",)) -> str:
        """A key allowed only to search; the parent of scoped keys (the admin key cannot be)."""
        result = await self.request(
            "POST",
            "/keys",
            body={"description": description, "actions": ["documents:search"], "collections": list(collections)},
        )
        return str(result["value"])

    async def get_key(self, key_id: int) -> dict[str, Any] | None:
        try:
            return await self._json(self.request("GET", f"/keys/{int(key_id)}"))
        except NotFound:
            return None

    async def create_search_key_record(self, description: str, collections: Sequence[str] = ("*",)) -> dict[str, Any]:
        """Like :meth:`create_search_key`, returning Typesense's whole record (``id`` and ``value``)."""
        return await self._json(
            self.request(
                "POST",
                "/keys",
                body={"description": description, "actions": ["documents:search"], "collections": list(collections)},
            )
        )

    async def health(self) -> bool:
        try:
            return bool((await self.request("GET", "/health")).get("ok"))
        except (ApiError, NodesUnavailable):
            return False
