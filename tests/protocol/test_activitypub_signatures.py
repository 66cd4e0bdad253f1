"""draft-cavage HTTP Signatures: round trips and every way a request must be refused."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding

from protocol.activitypub import keys
from protocol.activitypub.errors import (
    DigestMismatch,
    InsufficientCoverage,
    KeyFormatError,
    SignatureError,
    SignatureExpired,
    SignatureMalformed,
    SignatureMismatch,
    SignatureMissing,
    SignatureRejected,
    UnsupportedAlgorithm,
)
from protocol.activitypub.sigbase import SignaturePolicy
from protocol.activitypub.signatures import (
    digest_header,
    parse_signature_header,
    prepare_cavage,
    prepare_verification,
    sign_request,
)

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
INBOX = "https://node1.test/inbox"
KEY_ID = "https://peer.test/actor#main-key"
BODY = b'{"type":"Follow","actor":"https://peer.test/actor","object":"https://node1.test/actor"}'


@pytest.fixture(scope="module")
def pair() -> keys.KeyPair:
    return keys.generate_rsa_keypair()


@pytest.fixture(scope="module")
def other() -> keys.KeyPair:
    return keys.generate_rsa_keypair()


def signed_post(pair: keys.KeyPair, body: bytes = BODY, *, uri: str = INBOX, now: datetime = NOW) -> dict[str, str]:
    headers = sign_request(
        method="POST", target_uri=uri, body=body, key_id=KEY_ID, private_key_pem=pair.private_pem, now=now
    )
    return {**headers, "Content-Type": "application/activity+json"}


def hand_signed(
    pair: keys.KeyPair,
    covered: list[str],
    headers: dict[str, str],
    *,
    method: str = "post",
    path: str = "/inbox",
    algorithm: str = "rsa-sha256",
) -> dict[str, str]:
    """Sign an arbitrary header list by hand, to build requests our signer would never make."""
    lower = {k.lower(): v for k, v in headers.items()}
    lines = [f"{h}: {method} {path}" if h == "(request-target)" else f"{h}: {lower[h]}" for h in covered]
    key = keys.load_private_key(pair.private_pem)
    assert not isinstance(key, ed25519.Ed25519PrivateKey)
    sig = key.sign("\n".join(lines).encode(), padding.PKCS1v15(), hashes.SHA256())
    value = (
        f'keyId="{KEY_ID}",algorithm="{algorithm}",headers="{" ".join(covered)}",'
        f'signature="{base64.b64encode(sig).decode()}"'
    )
    return {**headers, "Signature": value}


def base_headers(body: bytes = BODY) -> dict[str, str]:
    return {"Host": "node1.test", "Date": format_datetime(NOW, usegmt=True), "Digest": digest_header(body)}


# ------------------------------------------------------------------ round trips


def test_post_round_trip(pair: keys.KeyPair) -> None:
    headers = signed_post(pair)
    assert headers["Digest"] == "SHA-256=" + base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    params = parse_signature_header(headers["Signature"])
    assert params["headers"] == "(request-target) host date digest"
    assert params["algorithm"] == "rsa-sha256"
    pending = prepare_verification("POST", INBOX, headers, BODY, now=NOW)
    assert pending.scheme == "draft-cavage" and pending.key_id == KEY_ID
    assert pending.message.startswith(b"(request-target): post /inbox\nhost: node1.test\ndate: ")
    pending.verify(pair.public_pem)


def test_get_signs_request_target_host_date_only(pair: keys.KeyPair) -> None:
    uri = "https://node1.test/actors/node?page=2"
    headers = sign_request(
        method="GET", target_uri=uri, body=None, key_id=KEY_ID, private_key_pem=pair.private_pem, now=NOW
    )
    assert "Digest" not in headers
    pending = prepare_verification("GET", uri, headers, b"", now=NOW)
    assert pending.covered == ("(request-target)", "host", "date")
    assert pending.message.startswith(b"(request-target): get /actors/node?page=2\n")
    pending.verify(pair.public_pem)


def test_non_default_port_is_part_of_host(pair: keys.KeyPair) -> None:
    uri = "http://node1.test:8001/inbox"
    headers = signed_post(pair, uri=uri)
    assert headers["Host"] == "node1.test:8001"
    prepare_verification("POST", uri, headers, BODY, now=NOW).verify(pair.public_pem)


@pytest.mark.parametrize("algorithm", ["hs2019", "HS2019", "rsa-sha256", None])
def test_hs2019_and_absent_algorithm_use_the_rsa_key(pair: keys.KeyPair, algorithm: str | None) -> None:
    headers = signed_post(pair)
    value = headers["Signature"].replace('algorithm="rsa-sha256",', f'algorithm="{algorithm}",' if algorithm else "")
    prepare_verification("POST", INBOX, {**headers, "Signature": value}, BODY, now=NOW).verify(pair.public_pem)


def test_ed25519_key_with_hs2019() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    headers = sign_request(
        method="POST", target_uri=INBOX, body=BODY, key_id=KEY_ID, private_key_pem=keys.private_pem(private), now=NOW
    )
    assert 'algorithm="hs2019"' in headers["Signature"]
    prepare_verification("POST", INBOX, headers, BODY, now=NOW).verify(keys.public_pem(private.public_key()))


def test_header_names_are_case_insensitive_and_pairs_accepted(pair: keys.KeyPair) -> None:
    pairs = [(name.upper(), value) for name, value in signed_post(pair).items()]
    prepare_verification("POST", INBOX, pairs, BODY, now=NOW).verify(pair.public_pem)


# ------------------------------------------------------------- digest handling


@pytest.mark.parametrize("name", ["SHA-256", "sha-256", "Sha-256"])
def test_digest_algorithm_name_is_case_insensitive(pair: keys.KeyPair, name: str) -> None:
    headers = base_headers()
    headers["Digest"] = headers["Digest"].replace("SHA-256", name)
    signed = hand_signed(pair, ["(request-target)", "host", "date", "digest"], headers)
    prepare_verification("POST", INBOX, signed, BODY, now=NOW).verify(pair.public_pem)


def test_digest_with_several_algorithms_and_sha512(pair: keys.KeyPair) -> None:
    sha512 = base64.b64encode(hashlib.sha512(BODY).digest()).decode()
    headers = {**base_headers(), "Digest": f"MD5=abcd, sha-512={sha512}"}
    signed = hand_signed(pair, ["(request-target)", "host", "date", "digest"], headers)
    prepare_verification("POST", INBOX, signed, BODY, now=NOW).verify(pair.public_pem)


def test_wrong_or_unsupported_digest(pair: keys.KeyPair) -> None:
    wrong = {**base_headers(), "Digest": digest_header(b"something else")}
    with pytest.raises(DigestMismatch):
        prepare_verification(
            "POST", INBOX, hand_signed(pair, ["(request-target)", "host", "date", "digest"], wrong), BODY, now=NOW
        )
    md5_only = {**base_headers(), "Digest": "MD5=" + base64.b64encode(hashlib.md5(BODY).digest()).decode()}
    with pytest.raises(DigestMismatch):
        prepare_verification(
            "POST", INBOX, hand_signed(pair, ["(request-target)", "host", "date", "digest"], md5_only), BODY, now=NOW
        )


def test_tampered_body(pair: keys.KeyPair) -> None:
    headers = signed_post(pair)
    tampered = BODY.replace(b"Follow", b"Delete")
    with pytest.raises(DigestMismatch):
        prepare_verification("POST", INBOX, headers, tampered, now=NOW)
    # An attacker who also rewrites the Digest breaks the signature over it.
    rewritten = {**headers, "Digest": digest_header(tampered)}
    pending = prepare_verification("POST", INBOX, rewritten, tampered, now=NOW)
    with pytest.raises(SignatureMismatch):
        pending.verify(pair.public_pem)


# -------------------------------------------------------------- coverage rules


@pytest.mark.parametrize(
    "covered",
    [
        ["host", "date", "digest"],
        ["(request-target)", "date", "digest"],
        ["(request-target)", "host", "digest"],
        ["(request-target)", "host", "date"],  # POST without digest
    ],
)
def test_required_headers_must_be_signed(pair: keys.KeyPair, covered: list[str]) -> None:
    with pytest.raises(InsufficientCoverage) as info:
        prepare_verification("POST", INBOX, hand_signed(pair, covered, base_headers()), BODY, now=NOW)
    assert info.value.http_status == 401


def test_headers_parameter_defaults_to_date_only(pair: keys.KeyPair) -> None:
    signed = hand_signed(pair, ["date"], base_headers())
    signed["Signature"] = signed["Signature"].replace('headers="date",', "")
    with pytest.raises(InsufficientCoverage):
        prepare_verification("POST", INBOX, signed, BODY, now=NOW)


def test_signed_header_absent_from_request(pair: keys.KeyPair) -> None:
    headers = {**base_headers(), "Content-Type": "application/activity+json"}
    signed = hand_signed(pair, ["(request-target)", "host", "date", "digest", "content-type"], headers)
    del signed["Content-Type"]
    with pytest.raises(SignatureMalformed):
        prepare_verification("POST", INBOX, signed, BODY, now=NOW)


def test_host_must_be_ours(pair: keys.KeyPair) -> None:
    headers = signed_post(pair, uri="https://elsewhere.test/inbox")
    with pytest.raises(SignatureRejected):
        prepare_verification("POST", INBOX, headers, BODY, now=NOW)
    relaxed = SignaturePolicy(check_host=False)
    pending = prepare_verification("POST", INBOX, headers, BODY, now=NOW, policy=relaxed)
    pending.verify(pair.public_pem)  # same path: only the Host differs, and it is signed as sent


def test_request_target_is_bound(pair: keys.KeyPair) -> None:
    headers = signed_post(pair)
    pending = prepare_verification("POST", "https://node1.test/actors/other/inbox", headers, BODY, now=NOW)
    with pytest.raises(SignatureMismatch):
        pending.verify(pair.public_pem)


# -------------------------------------------------------------------- clock


@pytest.mark.parametrize("offset", [timedelta(hours=-2), timedelta(minutes=10), timedelta(days=-400)])
def test_date_outside_window(pair: keys.KeyPair, offset: timedelta) -> None:
    headers = signed_post(pair, now=NOW + offset)
    with pytest.raises(SignatureExpired) as info:
        prepare_verification("POST", INBOX, headers, BODY, now=NOW)
    assert info.value.http_status == 401


@pytest.mark.parametrize("offset", [timedelta(minutes=-59), timedelta(minutes=4)])
def test_date_inside_window(pair: keys.KeyPair, offset: timedelta) -> None:
    prepare_verification("POST", INBOX, signed_post(pair, now=NOW + offset), BODY, now=NOW).verify(pair.public_pem)


def test_window_is_configurable(pair: keys.KeyPair) -> None:
    headers = signed_post(pair, now=NOW - timedelta(seconds=30))
    with pytest.raises(SignatureExpired):
        policy = SignaturePolicy(max_age=timedelta(seconds=10))
        prepare_verification("POST", INBOX, headers, BODY, now=NOW, policy=policy)


def test_bad_date_header_is_malformed(pair: keys.KeyPair) -> None:
    headers = {**base_headers(), "Date": "yesterday"}
    with pytest.raises(SignatureMalformed):
        prepare_verification(
            "POST", INBOX, hand_signed(pair, ["(request-target)", "host", "date", "digest"], headers), BODY, now=NOW
        )


# ---------------------------------------------------------------- keys, format


def test_wrong_key_then_rotated_key(pair: keys.KeyPair, other: keys.KeyPair) -> None:
    pending = prepare_verification("POST", INBOX, signed_post(pair), BODY, now=NOW)
    with pytest.raises(SignatureMismatch):
        pending.verify(other.public_pem)  # the cached, stale key
    pending.verify(pair.public_pem)  # the caller re-fetched the key once: accepted


def test_missing_and_malformed_signature_headers(pair: keys.KeyPair) -> None:
    with pytest.raises(SignatureMissing) as missing:
        prepare_verification("POST", INBOX, base_headers(), BODY, now=NOW)
    assert missing.value.http_status == 401
    for garbage in (
        "nonsense",
        'keyId="x",signature',
        'algorithm="rsa-sha256",signature="AAAA"',
        'keyId="a",keyId="b",signature="AAAA"',
        'keyId="a",headers="(request-target) host date digest",signature="***"',
    ):
        with pytest.raises(SignatureMalformed) as info:
            prepare_verification("POST", INBOX, {**signed_post(pair), "Signature": garbage}, BODY, now=NOW)
        assert info.value.http_status == 400


def test_unsupported_algorithm(pair: keys.KeyPair) -> None:
    signed = hand_signed(pair, ["(request-target)", "host", "date", "digest"], base_headers(), algorithm="hmac-sha256")
    pending = prepare_verification("POST", INBOX, signed, BODY, now=NOW)
    with pytest.raises(UnsupportedAlgorithm):
        pending.verify(pair.public_pem)
    ed_public = keys.public_pem(ed25519.Ed25519PrivateKey.generate().public_key())
    good = prepare_verification("POST", INBOX, signed_post(pair), BODY, now=NOW)
    with pytest.raises(UnsupportedAlgorithm):
        good.verify(ed_public)  # rsa-sha256 declared, Ed25519 key published


def test_failure_kinds_share_one_root() -> None:
    for kind in (
        SignatureMalformed,
        SignatureMissing,
        SignatureMismatch,
        SignatureExpired,
        DigestMismatch,
        InsufficientCoverage,
        UnsupportedAlgorithm,
    ):
        assert issubclass(kind, SignatureError)
    assert SignatureMalformed.http_status == 400
    assert {k.http_status for k in (SignatureMissing, SignatureMismatch, SignatureExpired, DigestMismatch)} == {401}


def test_keys_generate_load_fingerprint(pair: keys.KeyPair) -> None:
    assert pair.private_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert pair.public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    public = keys.load_public_key(pair.public_pem)
    assert public.key_size == 2048  # type: ignore[union-attr]
    assert pair.fingerprint == keys.fingerprint(pair.public_pem.replace("\n", "\r\n"))
    assert pair.fingerprint.startswith("SHA256:") and pair.fingerprint != keys.generate_rsa_keypair().fingerprint
    with pytest.raises(KeyFormatError):
        keys.load_public_key("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFormatError):
        keys.load_private_key(pair.public_pem)
    with pytest.raises(ValueError):
        keys.generate_rsa_keypair(1024)


def test_prepare_cavage_directly_rejects_rfc9421_only_request() -> None:
    with pytest.raises(SignatureMissing):
        prepare_cavage("POST", INBOX, {"Signature-Input": 'sig1=("@method");created=1'}, BODY, now=NOW)
