"""Key pairs for actors: generation, loading and fingerprints (PEM in, PEM out).

Actors publish an RSA-2048 key (``publicKey.publicKeyPem``): it is what every
fediverse server verifies for draft-cavage signatures. Loading also accepts
Ed25519 public keys, which RFC 9421 peers may use.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from protocol.activitypub.errors import KeyFormatError

PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# Below 2048 bits RSA is breakable in practice; refuse such peer keys outright.
MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class KeyPair:
    private_pem: str  # PKCS#8, unencrypted: storage encrypts at rest if it wants
    public_pem: str  # SubjectPublicKeyInfo, as published in publicKeyPem

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_pem)


def generate_rsa_keypair(bits: int = 2048) -> KeyPair:
    """A fresh RSA key pair (public exponent 65537) as PEM strings."""
    if bits < MIN_RSA_BITS:
        raise ValueError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return KeyPair(private_pem=private_pem(key), public_pem=public_pem(key.public_key()))


def private_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def public_pem(key: PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def _as_bytes(pem: str | bytes) -> bytes:
    return pem.encode("ascii", errors="replace") if isinstance(pem, str) else pem


def load_private_key(pem: str | bytes) -> PrivateKey:
    """Load a private key; cached, because OpenSSL's check of an RSA key on load costs ~50 ms.

    Every delivery is signed afresh, so without the cache that check, not the ~1 ms
    signature, would bound the delivery rate. Key objects are immutable.
    """
    return _load_private_key(_as_bytes(pem))


@functools.lru_cache(maxsize=64)
def _load_private_key(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"cannot load private key: {exc}") from exc
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return key
    raise KeyFormatError(f"unsupported private key type {type(key).__name__}")


def load_public_key(pem: str | bytes) -> PublicKey:
    """Load a peer's public key; accepts SPKI ("PUBLIC KEY") and PKCS#1 ("RSA PUBLIC KEY"). Cached."""
    return _load_public_key(_as_bytes(pem).strip())


@functools.lru_cache(maxsize=4096)
def _load_public_key(pem: bytes) -> PublicKey:
    try:
        # cryptography reads both SPKI and PKCS#1 PEM (older peers publish the latter).
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"cannot load public key: {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFormatError(f"RSA key of {key.key_size} bits is too weak")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise KeyFormatError(f"unsupported public key type {type(key).__name__}")


def fingerprint(pem: str | bytes) -> str:
    """``SHA256:<base64>`` of the DER SubjectPublicKeyInfo, the OpenSSH-style fingerprint.

    Independent of PEM line wrapping or header style, so it identifies a key across
    re-serialisations (useful to log key rotations).
    """
    key = load_public_key(pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.sha256(der).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
