"""Admin credentials: API bearer tokens, admin users, signed session cookies, CSRF tokens.

Secrets are never stored: tokens as SHA-256 (they are long random strings, so a
fast hash is enough), passwords with scrypt. Sessions are stateless signed
cookies (HMAC-SHA256 over user id + expiry); the CSRF token is derived from the
session, so a form posted from another site cannot carry it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from node.db import Database

TOKEN_PREFIX = "essaim_"
LAST_USED_PRECISION = 60  # seconds: how stale a token's last_used may be


class AuthError(Exception):
    """Missing, unknown or revoked credentials."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create_token(db: Database, name: str) -> str:
    """Create a bearer token; the secret is returned once and only its hash is kept."""
    if not name.strip():
        raise ValueError("a token needs a name")
    existing = await db.fetchone("SELECT id, revoked FROM api_token WHERE name = ?", [name])
    if existing and not existing["revoked"]:
        raise ValueError(f"a token named {name!r} already exists (revoke it first)")
    if existing:  # a revoked token's name can be reused: the old secret stays dead
        await db.execute("DELETE FROM api_token WHERE id = ?", [existing["id"]])
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await db.execute(
        "INSERT INTO api_token (name, token_hash, created, revoked) VALUES (?, ?, ?, ?)",
        [name, hash_token(token), int(time.time()), False],
    )
    return token


async def revoke_token(db: Database, name: str) -> bool:
    return await db.execute("UPDATE api_token SET revoked = ? WHERE name = ?", [True, name]) > 0


async def check_token(db: Database, token: str) -> str:
    """Return the token's name, or raise :class:`AuthError`."""
    row = await db.fetchone(
        "SELECT id, name, revoked, last_used FROM api_token WHERE token_hash = ?", [hash_token(token)]
    )
    if row is None or row["revoked"]:
        raise AuthError("unknown or revoked token")
    now = int(time.time())
    if row["last_used"] is None or now - int(row["last_used"]) >= LAST_USED_PRECISION:
        # Not on every request: a durable write (fsync) per API call would be the API's bottleneck.
        await db.execute("UPDATE api_token SET last_used = ? WHERE id = ?", [now, row["id"]])
    return str(row["name"])


# ---------------------------------------------------------------------- passwords

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
        salt, expected = base64.b64decode(salt_b64, validate=True), base64.b64decode(digest_b64, validate=True)
    except ValueError:  # binascii.Error is a ValueError: a damaged hash never signs anyone in
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    return hmac.compare_digest(digest, expected)


async def create_user(db: Database, email: str, password: str) -> None:
    email = email.strip().lower()
    if "@" not in email:
        raise ValueError(f"{email!r} is not an e-mail address")
    if len(password) < 10:
        raise ValueError("the password must have at least 10 characters")
    if await db.fetchone("SELECT id FROM admin_user WHERE email = ?", [email]):
        await db.execute("UPDATE admin_user SET password_hash = ? WHERE email = ?", [hash_password(password), email])
        return
    await db.execute(
        "INSERT INTO admin_user (email, password_hash, created) VALUES (?, ?, ?)",
        [email, hash_password(password), int(time.time())],
    )


async def authenticate(db: Database, email: str, password: str) -> int:
    row = await db.fetchone("SELECT id, password_hash FROM admin_user WHERE email = ?", [email.strip().lower()])
    if row is None:
        hash_password(password)  # same work either way: no user enumeration by timing
        raise AuthError("wrong e-mail or password")
    if not verify_password(password, str(row["password_hash"])):
        raise AuthError("wrong e-mail or password")
    return int(row["id"])


# ---------------------------------------------------------------------- sessions


class SessionSigner:
    """Stateless session cookies ``user.expiry.signature`` and their CSRF tokens."""

    def __init__(self, key: bytes, ttl: int, clock=time.time) -> None:  # type: ignore[no-untyped-def]
        self.key = key
        self.ttl = ttl
        self.clock = clock

    def _sign(self, message: str) -> str:
        return hmac.new(self.key, message.encode(), hashlib.sha256).hexdigest()

    def issue(self, user_id: int) -> str:
        message = f"{user_id}.{int(self.clock()) + self.ttl}"
        return f"{message}.{self._sign(message)}"

    def verify(self, cookie: str | None) -> int | None:
        if not cookie:
            return None
        try:
            user, expiry, signature = cookie.split(".")
            if not hmac.compare_digest(signature, self._sign(f"{user}.{expiry}")):
                return None
            if int(expiry) < self.clock():
                return None
            return int(user)
        except ValueError:
            return None

    def csrf(self, cookie: str) -> str:
        return self._sign("csrf:" + cookie)

    def check_csrf(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token and hmac.compare_digest(self.csrf(cookie), token))
