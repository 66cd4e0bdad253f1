"""What draft-cavage and RFC 9421 verification share: policy, the pending result, algorithms.

Verification is split in two pure steps so key lookup stays with the caller
(ARCHITECTURE §2.12, §3 "re-fetch the key once"):

1. ``prepare_*`` parses the headers, rebuilds the signed message and checks
   everything that needs no key (coverage, clock window, body digest); it returns
   a :class:`PendingSignature` naming the ``key_id`` to look up;
2. :meth:`PendingSignature.verify` checks the signature with a given PEM key. On
   :class:`SignatureMismatch` the caller may re-fetch a rotated key once and retry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from protocol.activitypub.errors import (
    DigestMismatch,
    SignatureExpired,
    SignatureMalformed,
    SignatureMismatch,
    UnsupportedAlgorithm,
)
from protocol.activitypub.keys import PublicKey, load_public_key

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    """Tunables (ARCHITECTURE §4: the signature time window is a harness tunable)."""

    max_age: timedelta = timedelta(hours=1)  # how old a Date / created may be
    max_future: timedelta = timedelta(minutes=5)  # clock skew tolerated the other way
    require_digest: bool = True  # a request with a body must sign its digest
    check_host: bool = True  # the signed Host / @authority must be the one we serve


DEFAULT_POLICY = SignaturePolicy()


@dataclass(frozen=True, slots=True)
class PendingSignature:
    """A parsed, well-formed signature whose cryptographic check awaits the key."""

    scheme: str  # "draft-cavage" or "rfc9421"
    key_id: str
    algorithm: str | None  # as declared; None lets the key type decide
    message: bytes  # the signing string (cavage) or signature base (RFC 9421)
    signature: bytes
    covered: tuple[str, ...]
    label: str | None = None  # RFC 9421 signature label

    def verify(self, public_key_pem: str | bytes) -> None:
        """Raise :class:`SignatureMismatch` unless the signature matches ``public_key_pem``."""
        verify_signature(self.algorithm, load_public_key(public_key_pem), self.message, self.signature)


def normalise_headers(headers: Headers) -> dict[str, str]:
    """Lower-case names; repeated fields joined with ", " (RFC 9110 §5.3, cavage §2.3, RFC 9421 §2.1)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.strip().lower()
        value = value.strip()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def authority(uri: str) -> str:
    """``host[:port]`` of an absolute URI, lower-cased, default port omitted (RFC 9421 §2.2.3)."""
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def request_target(uri: str) -> str:
    """Path and query as sent on the request line (an empty path is ``/``)."""
    parts = urlsplit(uri)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def same_authority(header_value: str, uri: str) -> bool:
    return authority(f"{urlsplit(uri).scheme}://{header_value.strip()}") == authority(uri)


def check_window(moment: datetime, now: datetime, policy: SignaturePolicy, what: str) -> None:
    if moment > now + policy.max_future:
        raise SignatureExpired(f"{what} {moment.isoformat()} is in the future")
    if moment < now - policy.max_age:
        raise SignatureExpired(f"{what} {moment.isoformat()} is too old")


def b64_digest(algorithm: str, body: bytes) -> bytes:
    return hashlib.new(algorithm, body).digest()


def digest_matches(expected: bytes, algorithm: str, body: bytes) -> None:
    if not hmac.compare_digest(expected, b64_digest(algorithm, body)):
        raise DigestMismatch(f"{algorithm} digest does not match the body")


def _rsa_pkcs1_sha256(key: PublicKey, message: bytes, signature: bytes) -> None:
    if not isinstance(key, rsa.RSAPublicKey):
        raise UnsupportedAlgorithm("RSASSA-PKCS1-v1_5 needs an RSA key")
    key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def _rsa_pss_sha512(key: PublicKey, message: bytes, signature: bytes) -> None:
    if not isinstance(key, rsa.RSAPublicKey):
        raise UnsupportedAlgorithm("RSASSA-PSS needs an RSA key")
    # RFC 9421 §3.3.1: MGF1 with SHA-512 and a 64-byte salt.
    key.verify(signature, message, padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64), hashes.SHA512())


def _ed25519(key: PublicKey, message: bytes, signature: bytes) -> None:
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UnsupportedAlgorithm("ed25519 needs an Ed25519 key")
    key.verify(signature, message)


# Declared algorithm -> verifier. "hs2019" (cavage §2.3) and an absent algorithm
# defer to the key type, as Mastodon and GoToSocial do.
_VERIFIERS = {
    "rsa-sha256": _rsa_pkcs1_sha256,
    "rsa-v1_5-sha256": _rsa_pkcs1_sha256,
    "rsa-pss-sha512": _rsa_pss_sha512,
    "ed25519": _ed25519,
}


def verify_signature(algorithm: str | None, key: PublicKey, message: bytes, signature: bytes) -> None:
    name = (algorithm or "").lower()
    if name in ("", "hs2019"):
        verifier = _ed25519 if isinstance(key, ed25519.Ed25519PublicKey) else _rsa_pkcs1_sha256
    elif name in _VERIFIERS:
        verifier = _VERIFIERS[name]
    else:
        raise UnsupportedAlgorithm(f"unsupported signature algorithm {algorithm!r}")
    try:
        verifier(key, message, signature)
    except InvalidSignature as exc:
        raise SignatureMismatch("signature does not verify with this key") from exc


def b64decode_strict(value: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except ValueError as exc:
        raise SignatureMalformed(f"signature is not valid base64: {exc}") from exc
