"""RFC 9421 HTTP Message Signatures: inbound verification of requests (and a signer for tests and peers).

Supported: algorithms ``rsa-v1_5-sha256``, ``rsa-pss-sha512`` and ``ed25519``
(§3.3), the derived components a request has (§2.2: ``@method``, ``@target-uri``,
``@authority``, ``@scheme``, ``@request-target``, ``@path``, ``@query``) and plain
HTTP fields, with body integrity through RFC 9530 ``Content-Digest``. Anything
else (``@query-param``, ``;sf``/``;key``/``;bs``/``;req`` parameters) is refused
with a 401-class error so the peer falls back to draft-cavage.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding

from protocol.activitypub import sfv
from protocol.activitypub.errors import (
    DigestMismatch,
    InsufficientCoverage,
    SignatureExpired,
    SignatureMalformed,
    SignatureMissing,
    SignatureRejected,
    UnsupportedAlgorithm,
)
from protocol.activitypub.keys import load_private_key
from protocol.activitypub.sigbase import (
    DEFAULT_POLICY,
    Headers,
    PendingSignature,
    SignaturePolicy,
    authority,
    check_window,
    digest_matches,
    normalise_headers,
    request_target,
)

ALGORITHMS = frozenset({"rsa-v1_5-sha256", "rsa-pss-sha512", "ed25519"})
# RFC 9530 §5 / IANA: the algorithms whose use is "standard".
_CONTENT_DIGESTS = {"sha-256": "sha256", "sha-512": "sha512"}


def _derived(name: str, method: str, target_uri: str) -> str:
    parts = urlsplit(target_uri)
    if name == "@method":
        return method.upper()
    if name == "@target-uri":
        return target_uri
    if name == "@authority":
        return authority(target_uri)
    if name == "@scheme":
        return parts.scheme.lower()
    if name == "@request-target":
        return request_target(target_uri)
    if name == "@path":
        return parts.path or "/"
    if name == "@query":
        return f"?{parts.query}"  # §2.2.7: an absent query is "?"
    raise SignatureRejected(f"unsupported derived component {name!r}")


def signature_base(components: sfv.InnerList, method: str, target_uri: str, fields: dict[str, str]) -> bytes:
    """The signature base of §2.5 for a request; raises on unsupported or absent components."""
    lines: list[str] = []
    seen: set[str] = set()
    for item in components.items:
        name = item.value
        if not isinstance(name, str) or name != name.lower():
            raise SignatureMalformed(f"component identifiers are lower-case strings, not {name!r}")
        if item.params:
            raise SignatureRejected(f"component parameters are not supported ({sfv.serialize_item(item)})")
        if name in seen:
            raise SignatureMalformed(f"component {name!r} is repeated")  # §2.5 step 1
        seen.add(name)
        if name.startswith("@"):
            value = _derived(name, method, target_uri)
        elif name in fields:
            value = fields[name]
        else:
            raise SignatureRejected(f"covered field {name!r} is absent from the request")
        if "\n" in value or "\r" in value:
            raise SignatureMalformed(f"component {name!r} contains a line break")
        lines.append(f"{sfv.serialize_item(item)}: {value}")
    lines.append(f'"@signature-params": {sfv.serialize_inner_list(components)}')
    return "\n".join(lines).encode("utf-8")


def check_content_digest(value: str, body: bytes) -> None:
    try:
        members = sfv.parse_dictionary(value)
    except sfv.SFError as exc:
        raise DigestMismatch(f"unparsable Content-Digest: {exc}") from exc
    checked = False
    for name, member in members.items():
        algorithm = _CONTENT_DIGESTS.get(name)
        if algorithm is None:
            continue
        if not isinstance(member, sfv.Item) or not isinstance(member.value, bytes):
            raise DigestMismatch(f"Content-Digest {name} is not a byte sequence")
        digest_matches(member.value, algorithm, body)
        checked = True
    if not checked:
        raise DigestMismatch("no supported algorithm in Content-Digest")


def content_digest_header(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def _select(fields: dict[str, str], label: str | None) -> tuple[str, sfv.InnerList, bytes]:
    try:
        inputs = sfv.parse_dictionary(fields["signature-input"])
        signatures = sfv.parse_dictionary(fields.get("signature", ""))
    except sfv.SFError as exc:
        raise SignatureMalformed(f"unparsable Signature-Input / Signature: {exc}") from exc
    candidates = [label] if label is not None else [name for name in inputs if name in signatures]
    if not candidates or candidates[0] not in inputs or candidates[0] not in signatures:
        raise SignatureMissing("no signature label present in both Signature-Input and Signature")
    chosen = candidates[0]
    components, value = inputs[chosen], signatures[chosen]
    if not isinstance(components, sfv.InnerList):
        raise SignatureMalformed(f"Signature-Input {chosen} is not an inner list")
    if not isinstance(value, sfv.Item) or not isinstance(value.value, bytes):
        raise SignatureMalformed(f"Signature {chosen} is not a byte sequence")
    return chosen, components, value.value


def prepare_rfc9421(
    method: str,
    target_uri: str,
    headers: Headers,
    body: bytes,
    *,
    now: datetime,
    policy: SignaturePolicy = DEFAULT_POLICY,
    label: str | None = None,
) -> PendingSignature:
    """Check an RFC 9421 request signature up to the cryptographic step."""
    fields = normalise_headers(headers)
    if "signature-input" not in fields:
        raise SignatureMissing("no Signature-Input header")
    chosen, components, signature = _select(fields, label)

    key_id = components.param("keyid")
    created = components.param("created")
    expires = components.param("expires")
    alg = components.param("alg")
    if not isinstance(key_id, str) or not key_id:
        raise SignatureMalformed("Signature-Input lacks keyid")
    if alg is not None and alg not in ALGORITHMS:
        raise UnsupportedAlgorithm(f"unsupported alg {alg!r}")
    # §7.2.2: without `created` a signature can be replayed forever; we require it.
    if not isinstance(created, int) or isinstance(created, bool):
        raise InsufficientCoverage("Signature-Input lacks an integer created parameter")
    check_window(datetime.fromtimestamp(created, now.tzinfo), now, policy, "created")
    if expires is not None:
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise SignatureMalformed("expires must be an integer")
        if expires < now.timestamp():
            raise SignatureExpired("signature has expired")

    names = {item.value for item in components.items}
    missing = [] if "@method" in names else ["@method"]
    targets = {"@authority", "@path"} <= names or {"@authority", "@request-target"} <= names
    if "@target-uri" not in names and not targets:
        missing.append("@target-uri (or @authority and @path)")
    if body and policy.require_digest and "content-digest" not in names:
        missing.append("content-digest")
    if missing:
        raise InsufficientCoverage(f"signature must cover {', '.join(missing)}")

    message = signature_base(components, method, target_uri, fields)
    if "content-digest" in fields and (body or "content-digest" in names):
        check_content_digest(fields["content-digest"], body)
    return PendingSignature(
        scheme="rfc9421",
        key_id=key_id,
        algorithm=alg if isinstance(alg, str) else None,
        message=message,
        signature=signature,
        covered=tuple(str(item.value) for item in components.items),
        label=chosen,
    )


def sign_rfc9421(
    *,
    method: str,
    target_uri: str,
    headers: Headers,
    components: tuple[str, ...],
    key_id: str,
    private_key_pem: str | bytes,
    created: int,
    alg: str | None = None,
    label: str = "sig1",
    expires: int | None = None,
) -> dict[str, str]:
    """``Signature-Input`` and ``Signature`` headers for a request (no component parameters)."""
    params: list[tuple[str, sfv.BareItem]] = [("created", created), ("keyid", key_id)]
    if expires is not None:
        params.append(("expires", expires))
    if alg is not None:
        params.append(("alg", alg))
    inner = sfv.InnerList(tuple(sfv.Item(c) for c in components), tuple(params))
    message = signature_base(inner, method, target_uri, normalise_headers(headers))
    key = load_private_key(private_key_pem)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(message)
    elif alg == "rsa-pss-sha512":
        signature = key.sign(message, padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64), hashes.SHA512())
    else:
        signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return {
        "Signature-Input": f"{label}={sfv.serialize_inner_list(inner)}",
        "Signature": f"{label}={sfv.serialize_bare_item(signature)}",
    }
