"""Item identifiers: ``oai:{repositoryIdentifier}:{local}`` (OAI identifier scheme, guidelines 2.0).

Sheet URIs would be valid identifiers too, but a repository that claims the
``oai-identifier`` description in Identify must mint identifiers of that scheme.
The local part is the partner's own ``local_id`` (percent-encoded outside the
scheme's character set, ``:`` included), prefixed by ``{source}:`` for records a
hub harvested from elsewhere, since local ids only are unique per source.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

# Characters of the scheme's local part that we leave as they are (':' and '%' excluded).
_SAFE = "-_.!~*'();/?@&=+$,"
LOCAL_PART = re.compile(r"^[a-zA-Z0-9\-_.!~*'();/?:@&=+$,%]+$")


# Local ids that ``quote`` leaves as they are (the usual case): no need to call it.
_PLAIN = re.compile(r"[A-Za-z0-9\-_.!~*'();/?@&=+$,]+")


def make_identifier(repo_id: str, source: str, local_id: str) -> str:
    local = local_id if _PLAIN.fullmatch(local_id) else quote(local_id, safe=_SAFE)
    if source:
        local = f"{quote(source, safe=_SAFE)}:{local}"
    return f"oai:{repo_id}:{local}"


def parse_identifier(repo_id: str, identifier: str) -> tuple[str, str] | None:
    """(source, local_id) of one of our identifiers, or None when it cannot be ours."""
    prefix = f"oai:{repo_id}:"
    if not identifier.startswith(prefix):
        return None
    local = identifier[len(prefix) :]
    if not local or not LOCAL_PART.match(local):
        return None
    source, sep, rest = local.partition(":")
    if sep:
        if ":" in rest or not rest:
            return None
        return unquote(source), unquote(rest)
    return "", unquote(local)
