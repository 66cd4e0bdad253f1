"""The node actor's RSA key pair (ActivityPub HTTP signatures), kept in the data directory."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def ensure_actor_key(data_dir: Path, name: str = "actor") -> tuple[bytes, bytes]:
    """Create the key pair once (private key mode 0600); return (private PEM, public PEM)."""
    folder = data_dir / "keys"
    private_path, public_path = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    if not private_path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem)
    if not public_path.exists():  # written right after the private key, or deleted since: derive it again
        private = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        public_path.write_bytes(public)
    return private_path.read_bytes(), public_path.read_bytes()
