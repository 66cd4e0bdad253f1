"""Bundled JSON-LD contexts and a pyld document loader that never touches the network.

pyld's default loader fetches whatever URL a document names in ``@context``: an
SSRF primitive in an inbox (ARCHITECTURE §2.10). :func:`bundled_loader` serves
the three contexts Essaim ships as package data (ActivityStreams, security v1,
Essaim's own) and raises :class:`ContextNotBundled` for anything else; a peer's
document with an unknown remote context therefore cannot be expanded, which is
what we want (jointakahe/takahe ``core/ld.py`` does the same).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, cast

from pyld import jsonld

from protocol.activitypub.errors import ContextNotBundled

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
SECURITY_CONTEXT = "https://w3id.org/security/v1"
# Essaim's vocabulary. The w3id.org redirect is to be registered to the project's
# published copy of contexts/essaim-v1.jsonld; nothing here ever fetches it.
ESSAIM_CONTEXT = "https://w3id.org/essaim/v1"
ESSAIM_VOCAB = "https://w3id.org/essaim#"
PUBLIC = "https://www.w3.org/ns/activitystreams#Public"

# The @context every Essaim document carries (actors, objects, activities).
DEFAULT_CONTEXT: tuple[str, ...] = (AS_CONTEXT, SECURITY_CONTEXT, ESSAIM_CONTEXT)

_FILES = {
    AS_CONTEXT: "activitystreams.jsonld",
    SECURITY_CONTEXT: "security-v1.jsonld",
    ESSAIM_CONTEXT: "essaim-v1.jsonld",
}


def _canonical(url: str) -> str | None:
    """Map the spellings peers use to one bundled URL (scheme, trailing '#', '.jsonld')."""
    text = url.strip()
    for prefix in ("https://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    else:
        return None
    text = text.rstrip("#/")
    if text.endswith(".jsonld"):
        text = text[: -len(".jsonld")]
    for known in _FILES:
        if known.split("://", 1)[1] == text:
            return known
    return None


def canonical_url(url: str) -> str | None:
    """The bundled context a spelling of a URL names (``http``/``https``, trailing ``#``, ``.jsonld``), if any."""
    return _canonical(url)


@cache
def bundled_context(url: str) -> Mapping[str, Any]:
    """The parsed JSON of a bundled context document (``{"@context": {...}}``)."""
    canonical = _canonical(url)
    if canonical is None:
        raise ContextNotBundled(f"JSON-LD context {url!r} is not bundled; remote contexts are never fetched")
    text = resources.files("protocol.activitypub").joinpath("contexts", _FILES[canonical]).read_text("utf-8")
    return cast(Mapping[str, Any], json.loads(text))


def bundled_loader(url: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """pyld document loader: bundled contexts only, any other URL raises (no IO at all)."""
    document = bundled_context(url)
    return {
        "contentType": "application/ld+json",
        "contextUrl": None,
        "documentUrl": _canonical(url),
        # pyld may annotate what it is given: hand it a copy of the cached JSON.
        "document": json.loads(json.dumps(document)),
    }


def expand(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """JSON-LD expansion with the bundled loader; an unknown remote context raises.

    pyld wraps loader failures in its own ``JsonLdError``; we re-raise the
    :class:`ContextNotBundled` it carries so callers see one error type.
    """
    try:
        result = jsonld.expand(dict(document), {"documentLoader": bundled_loader})
    except jsonld.JsonLdError as exc:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ContextNotBundled):
                raise ContextNotBundled(str(cause)) from exc
            cause = cause.__cause__ or getattr(cause, "cause", None)
        raise ContextNotBundled(f"JSON-LD expansion failed: {exc}") from exc
    return cast(list[dict[str, Any]], result)


def compact(document: Mapping[str, Any] | list[dict[str, Any]], context: Any = None) -> dict[str, Any]:
    """Compact a document or an expanded list against ``context`` (default: Essaim's) with the bundled loader."""
    ctx = list(DEFAULT_CONTEXT) if context is None else context
    source = dict(document) if isinstance(document, Mapping) else list(document)
    return cast(dict[str, Any], jsonld.compact(source, {"@context": ctx}, {"documentLoader": bundled_loader}))


def context_document() -> bytes:
    """Essaim's context as published (served by every node at ``/ns/essaim-v1.jsonld``)."""
    return resources.files("protocol.activitypub").joinpath("contexts", _FILES[ESSAIM_CONTEXT]).read_bytes()
