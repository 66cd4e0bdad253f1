"""HTTP Signatures as the fediverse speaks them: draft-cavage-http-signatures-12, plus dispatch.

Outbound requests are signed with draft-cavage ``rsa-sha256`` over
``(request-target) host date`` and ``digest`` when there is a body: what every
server verifies (ARCHITECTURE §3). Inbound, :func:`prepare_verification` accepts
draft-cavage and RFC 9421 (:mod:`protocol.activitypub.rfc9421`) and returns a
:class:`~protocol.activitypub.sigbase.PendingSignature` whose ``key_id`` the caller
resolves before calling ``verify(pem)``. Pure: the clock is the ``now`` argument.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding

from protocol.activitypub import rfc9421
from protocol.activitypub.errors import (
    DigestMismatch,
    InsufficientCoverage,
    SignatureExpired,
    SignatureMalformed,
    SignatureMissing,
    SignatureRejected,
)
from protocol.activitypub.keys import load_private_key
from protocol.activitypub.sigbase import (
    DEFAULT_POLICY,
    Headers,
    PendingSignature,
    SignaturePolicy,
    authority,
    b64decode_strict,
    check_window,
    digest_matches,
    normalise_headers,
    request_target,
    same_authority,
)

# RFC 3230 §4.1.1 / IANA "HTTP Digest Algorithm Values": names are case-insensitive,
# and both "SHA-256=" and "sha-256=" occur in the wild.
_DIGEST_ALGORITHMS = {"sha-256": "sha256", "sha-512": "sha512"}
_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"([^"]*)"|(\d+(?:\.\d+)?))\s*(?:,|$)')
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def digest_header(body: bytes) -> str:
    """``Digest`` header value (RFC 3230) for a body, SHA-256."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def sign_request(
    *,
    method: str,
    target_uri: str,
    body: bytes | None,
    key_id: str,
    private_key_pem: str | bytes,
    now: datetime,
) -> dict[str, str]:
    """Headers to add to a request: ``Host``, ``Date``, ``Digest`` (with a body) and ``Signature``.

    Sign every retry afresh (ARCHITECTURE §3): the Date window of the receiver is short.
    """
    headers = {"Host": authority(target_uri), "Date": format_datetime(now, usegmt=True)}
    covered = ["(request-target)", "host", "date"]
    if body is not None or method.upper() in _BODY_METHODS:
        headers["Digest"] = digest_header(body or b"")
        covered.append("digest")
    values = {"(request-target)": f"{method.lower()} {request_target(target_uri)}", **normalise_headers(headers)}
    message = "\n".join(f"{name}: {values[name]}" for name in covered).encode("utf-8")
    key = load_private_key(private_key_pem)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm, signature = "hs2019", key.sign(message)
    else:
        algorithm, signature = "rsa-sha256", key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    headers["Signature"] = (
        f'keyId="{key_id}",algorithm="{algorithm}",headers="{" ".join(covered)}",'
        f'signature="{base64.b64encode(signature).decode("ascii")}"'
    )
    return headers


def parse_signature_header(value: str) -> dict[str, str]:
    """Parameters of a cavage ``Signature`` header; strict, keys case-sensitive per §2.1."""
    params: dict[str, str] = {}
    pos = 0
    text = value.strip()
    while pos < len(text):
        match = _PARAM.match(text, pos)
        if match is None or match.end() == pos:
            raise SignatureMalformed(f"unparsable Signature header near {text[pos : pos + 30]!r}")
        name, quoted, number = match.groups()
        if name in params:
            raise SignatureMalformed(f"repeated Signature parameter {name!r}")
        params[name] = quoted if quoted is not None else number
        pos = match.end()
    for required in ("keyId", "signature"):
        if not params.get(required):
            raise SignatureMalformed(f"Signature header lacks {required}")
    return params


def check_digest_header(value: str, body: bytes) -> None:
    """Check a ``Digest`` header against the body; at least one supported algorithm must match."""
    checked = False
    for part in value.split(","):
        name, sep, encoded = part.strip().partition("=")
        algorithm = _DIGEST_ALGORITHMS.get(name.strip().lower())
        if not sep or algorithm is None:
            continue
        try:
            expected = base64.b64decode(encoded.strip(), validate=True)
        except ValueError as exc:
            raise DigestMismatch(f"Digest value is not base64: {exc}") from exc
        digest_matches(expected, algorithm, body)
        checked = True
    if not checked:
        raise DigestMismatch(f"no supported algorithm in Digest {value[:60]!r}")


def prepare_cavage(
    method: str,
    target_uri: str,
    headers: Headers,
    body: bytes,
    *,
    now: datetime,
    policy: SignaturePolicy = DEFAULT_POLICY,
) -> PendingSignature:
    """Check a draft-cavage signature up to the cryptographic step."""
    fields = normalise_headers(headers)
    if "signature" not in fields:
        raise SignatureMissing("no Signature header")
    params = parse_signature_header(fields["signature"])
    covered = tuple(params.get("headers", "date").lower().split())
    has_body = bool(body) or method.upper() in _BODY_METHODS
    required = ["(request-target)", "host"]
    if "(created)" not in covered:
        required.append("date")
    if has_body and policy.require_digest:
        required.append("digest")
    missing = [name for name in required if name not in covered]
    if missing:
        raise InsufficientCoverage(f"signature must cover {', '.join(missing)}")

    lines: list[str] = []
    for name in covered:
        if name == "(request-target)":
            value = f"{method.lower()} {request_target(target_uri)}"
        elif name in ("(created)", "(expires)"):
            value = params.get(name[1:-1], "")
            if not value.isdigit():
                raise SignatureMalformed(f"{name} is signed but the parameter is missing")
        elif name in fields:
            value = fields[name]
        else:
            raise SignatureMalformed(f"signed header {name!r} is absent")
        lines.append(f"{name}: {value}")

    if "date" in covered:
        try:
            date = parsedate_to_datetime(fields["date"])
        except (TypeError, ValueError, IndexError) as exc:
            raise SignatureMalformed(f"bad Date header {fields['date']!r}") from exc
        if date.tzinfo is None:
            raise SignatureMalformed("Date header must be in GMT")
        check_window(date, now, policy, "Date")
    if "(created)" in covered:
        check_window(datetime.fromtimestamp(int(params["created"]), now.tzinfo), now, policy, "created")
    if "(expires)" in covered and int(params["expires"]) < now.timestamp():
        raise SignatureExpired("signature has expired")
    if policy.check_host and not same_authority(fields["host"], target_uri):
        raise SignatureRejected(f"signed for host {fields['host']!r}, not {authority(target_uri)!r}")
    if "digest" in fields and (has_body or "digest" in covered):
        check_digest_header(fields["digest"], body)

    return PendingSignature(
        scheme="draft-cavage",
        key_id=params["keyId"],
        algorithm=params.get("algorithm"),
        message="\n".join(lines).encode("utf-8"),
        signature=b64decode_strict(params["signature"]),
        covered=covered,
    )


def prepare_verification(
    method: str,
    target_uri: str,
    headers: Headers,
    body: bytes,
    *,
    now: datetime,
    policy: SignaturePolicy = DEFAULT_POLICY,
) -> PendingSignature:
    """RFC 9421 when ``Signature-Input`` is present, else draft-cavage.

    A failed RFC 9421 attempt raises a :class:`SignatureRejected` (401) so the peer
    retries with draft-cavage (ARCHITECTURE §3).
    """
    fields = normalise_headers(headers)
    if "signature-input" in fields:
        return rfc9421.prepare_rfc9421(method, target_uri, fields, body, now=now, policy=policy)
    return prepare_cavage(method, target_uri, fields, body, now=now, policy=policy)
