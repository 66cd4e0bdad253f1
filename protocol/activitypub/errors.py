"""Errors of the ActivityPub layer, one documented hierarchy mapped to HTTP by one middleware.

``ActivityPubError`` derives from :class:`protocol.errors.ProtocolError`. Each class
carries ``http_status``, the answer an inbox or a discovery endpoint gives:

* ``SignatureMalformed`` (400): the signature headers cannot be parsed at all.
* ``SignatureRejected`` (401) and its subclasses: a well-formed signature that does
  not authenticate the request (missing, wrong key, expired, digest mismatch, not
  enough covered headers, unsupported algorithm). 401 matters for RFC 9421: peers
  that tried it fall back to draft-cavage on a 401 (ARCHITECTURE §3).
* ``ActivityMalformed`` (400), ``ActorMismatch`` (401) and ``ForeignObject`` (403)
  for incoming activities; unknown activity types are *not* errors but an
  ``Unsupported`` record (see :mod:`protocol.activitypub.parser`).
* ``ContextNotBundled`` when a JSON-LD document names a context we do not ship:
  the loader never fetches (SSRF).
"""

from __future__ import annotations

from protocol.errors import ProtocolError


class ActivityPubError(ProtocolError):
    """Root of every ActivityPub error."""

    http_status = 400


# ------------------------------------------------------------------ signatures


class SignatureError(ActivityPubError):
    """Any failure to authenticate a request by its HTTP signature."""

    http_status = 401


class SignatureMalformed(SignatureError):
    """Signature headers present but unparsable (bad syntax, missing parameters)."""

    http_status = 400


class SignatureRejected(SignatureError):
    """A parsable signature that does not authenticate the request."""

    http_status = 401


class SignatureMissing(SignatureRejected):
    """No ``Signature`` / ``Signature-Input`` header at all."""


class SignatureMismatch(SignatureRejected):
    """The cryptographic check failed (tampered request or wrong / rotated key)."""


class SignatureExpired(SignatureRejected):
    """``Date`` / ``created`` / ``expires`` outside the accepted window (past or future)."""


class DigestMismatch(SignatureRejected):
    """``Digest`` / ``Content-Digest`` absent, unsupported or not matching the body."""


class InsufficientCoverage(SignatureRejected):
    """A header or component that must be signed (``(request-target)``, ``host``, ``date``, ``digest``) is not."""


class UnsupportedAlgorithm(SignatureRejected):
    """The algorithm is not one we verify, or does not fit the key type."""


class KeyFormatError(ActivityPubError):
    """A PEM key that cannot be loaded, or of an unsupported type."""

    http_status = 401


# ------------------------------------------------------------------ activities


class ActivityMalformed(ActivityPubError):
    """The activity lacks required fields or has fields of the wrong shape."""

    http_status = 400


class ActorMismatch(ActivityPubError):
    """The key owner that signed the request is not the activity's actor."""

    http_status = 401


class ForeignObject(ActivityPubError):
    """The activity touches an object whose id is not on the actor's host (CVE-2024-23832)."""

    http_status = 403


# -------------------------------------------------------------- discovery / LD


class WebFingerError(ActivityPubError):
    """A WebFinger ``resource`` that is malformed (400) or not ours (404)."""

    def __init__(self, message: str, *, http_status: int = 400) -> None:
        super().__init__(message)
        self.http_status = http_status


class ContextNotBundled(ActivityPubError):
    """A JSON-LD context URL that is not among the bundled contexts."""

    http_status = 400
