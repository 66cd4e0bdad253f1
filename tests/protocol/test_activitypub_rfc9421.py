"""RFC 9421 inbound verification, against the RFC's own Appendix B vectors and hand-made ones."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from protocol.activitypub import keys, sfv
from protocol.activitypub.errors import (
    DigestMismatch,
    InsufficientCoverage,
    SignatureExpired,
    SignatureMalformed,
    SignatureMismatch,
    SignatureMissing,
    SignatureRejected,
    UnsupportedAlgorithm,
)
from protocol.activitypub.rfc9421 import (
    content_digest_header,
    prepare_rfc9421,
    sign_rfc9421,
    signature_base,
)
from protocol.activitypub.sigbase import SignaturePolicy
from protocol.activitypub.signatures import prepare_verification

# --- RFC 9421 Appendix B.2: the test request and the B.1.4 Ed25519 test key (JWK d / x).
B2_URI = "https://example.com/foo?param=Value&Pet=dog"
B2_BODY = b'{"hello": "world"}'
B2_DIGEST = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
B2_HEADERS = {
    "Host": "example.com",
    "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "Content-Type": "application/json",
    "Content-Digest": B2_DIGEST,
    "Content-Length": "18",
}
B2_CREATED = 1618884473
B2_NOW = datetime.fromtimestamp(B2_CREATED, UTC)
B14_D = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU"
B14_X = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"
B26_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
B26_SIGNATURE = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
B26_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
B23_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@query": ?param=Value&Pet=dog\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    f'"content-digest": {B2_DIGEST}\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" '
    '"content-length");created=1618884473;keyid="test-key-rsa-pss"'
)

NO_DIGEST = SignaturePolicy(require_digest=False, max_age=timedelta(minutes=5))


def b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def rfc_ed25519() -> tuple[str, str]:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(b64url(B14_D))
    public = ed25519.Ed25519PublicKey.from_public_bytes(b64url(B14_X))
    assert private.public_key().public_bytes_raw() == public.public_bytes_raw()
    return keys.private_pem(private), keys.public_pem(public)


# --------------------------------------------------------------- RFC vectors


def test_b26_signature_base_is_byte_exact() -> None:
    inner = sfv.parse_dictionary(B26_INPUT)["sig-b26"]
    assert isinstance(inner, sfv.InnerList)
    fields = {k.lower(): v for k, v in B2_HEADERS.items()}
    assert signature_base(inner, "POST", B2_URI, fields).decode() == B26_BASE


def test_b23_full_coverage_base_is_byte_exact() -> None:
    inner = sfv.parse_dictionary(
        'sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" '
        '"content-length");created=1618884473;keyid="test-key-rsa-pss"'
    )["sig-b23"]
    assert isinstance(inner, sfv.InnerList)
    fields = {k.lower(): v for k, v in B2_HEADERS.items()}
    assert signature_base(inner, "POST", B2_URI, fields).decode() == B23_BASE


def test_b26_rfc_signature_verifies() -> None:
    _, public = rfc_ed25519()
    headers = {**B2_HEADERS, "Signature-Input": B26_INPUT, "Signature": B26_SIGNATURE}
    pending = prepare_verification("POST", B2_URI, headers, B2_BODY, now=B2_NOW, policy=NO_DIGEST)
    assert (pending.scheme, pending.key_id, pending.label) == ("rfc9421", "test-key-ed25519", "sig-b26")
    assert pending.message.decode() == B26_BASE
    pending.verify(public)


def test_b26_our_signer_reproduces_the_rfc_signature() -> None:
    private, _ = rfc_ed25519()  # Ed25519 is deterministic: same key, same base -> same bytes
    out = sign_rfc9421(
        method="POST",
        target_uri=B2_URI,
        headers=B2_HEADERS,
        key_id="test-key-ed25519",
        private_key_pem=private,
        components=("date", "@method", "@path", "@authority", "content-type", "content-length"),
        created=B2_CREATED,
        label="sig-b26",
    )
    assert out == {"Signature-Input": B26_INPUT, "Signature": B26_SIGNATURE}


def test_b2_content_digest_sha512_checks_the_body() -> None:
    _, public = rfc_ed25519()
    private, _ = rfc_ed25519()
    components = ("@method", "@authority", "@path", "content-digest")
    headers = {
        **B2_HEADERS,
        **sign_rfc9421(
            method="POST",
            target_uri=B2_URI,
            headers=B2_HEADERS,
            components=components,
            key_id="k",
            private_key_pem=private,
            created=B2_CREATED,
        ),
    }
    prepare_rfc9421("POST", B2_URI, headers, B2_BODY, now=B2_NOW).verify(public)
    with pytest.raises(DigestMismatch):
        prepare_rfc9421("POST", B2_URI, headers, b'{"hello": "w0rld"}', now=B2_NOW)


def test_b26_tampered_or_outside_window() -> None:
    _, public = rfc_ed25519()
    headers = {**B2_HEADERS, "Signature-Input": B26_INPUT, "Signature": B26_SIGNATURE}
    pending = prepare_rfc9421("POST", "https://example.com/bar", headers, B2_BODY, now=B2_NOW, policy=NO_DIGEST)
    with pytest.raises(SignatureMismatch):
        pending.verify(public)
    with pytest.raises(SignatureExpired):
        prepare_rfc9421("POST", B2_URI, headers, B2_BODY, now=B2_NOW + timedelta(hours=1), policy=NO_DIGEST)
    with pytest.raises(SignatureExpired):
        prepare_rfc9421("POST", B2_URI, headers, B2_BODY, now=B2_NOW - timedelta(hours=1), policy=NO_DIGEST)
    # The default policy wants the body digest signed: a 401 the peer answers by falling back.
    with pytest.raises(InsufficientCoverage) as info:
        prepare_rfc9421("POST", B2_URI, headers, B2_BODY, now=B2_NOW)
    assert info.value.http_status == 401


# ------------------------------------------------------ RSA, hand-made vectors

INBOX = "https://node1.test/inbox"
BODY = b'{"type":"Create"}'
NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
FEDI_COMPONENTS = ("@method", "@target-uri", "content-type", "content-digest")


@pytest.fixture(scope="module")
def rsa_pair() -> keys.KeyPair:
    return keys.generate_rsa_keypair()


def signed(
    pair: keys.KeyPair,
    *,
    alg: str | None,
    components: tuple[str, ...] = FEDI_COMPONENTS,
    created: datetime = NOW,
    body: bytes = BODY,
    expires: int | None = None,
) -> dict[str, str]:
    headers = {
        "Host": "node1.test",
        "Content-Type": "application/activity+json",
        "Content-Digest": content_digest_header(body),
    }
    return {
        **headers,
        **sign_rfc9421(
            method="POST",
            target_uri=INBOX,
            headers=headers,
            components=components,
            key_id="https://peer.test/actor#main-key",
            private_key_pem=pair.private_pem,
            created=int(created.timestamp()),
            alg=alg,
            expires=expires,
        ),
    }


@pytest.mark.parametrize("alg", ["rsa-v1_5-sha256", "rsa-pss-sha512", None])
def test_rsa_round_trips(rsa_pair: keys.KeyPair, alg: str | None) -> None:
    headers = signed(rsa_pair, alg=alg)
    pending = prepare_verification("POST", INBOX, headers, BODY, now=NOW)
    assert pending.scheme == "rfc9421" and pending.algorithm == alg
    pending.verify(rsa_pair.public_pem)
    with pytest.raises(SignatureMismatch):
        pending.verify(keys.generate_rsa_keypair().public_pem)


def test_declared_alg_must_match_signature(rsa_pair: keys.KeyPair) -> None:
    headers = signed(rsa_pair, alg="rsa-v1_5-sha256")
    lied = headers["Signature-Input"].replace('alg="rsa-v1_5-sha256"', 'alg="rsa-pss-sha512"')
    # The alg is inside the signed @signature-params, so changing it also changes the base.
    with pytest.raises(SignatureMismatch):
        prepare_rfc9421("POST", INBOX, {**headers, "Signature-Input": lied}, BODY, now=NOW).verify(rsa_pair.public_pem)
    ed = signed(rsa_pair, alg="ed25519")
    with pytest.raises(UnsupportedAlgorithm):
        prepare_rfc9421("POST", INBOX, ed, BODY, now=NOW).verify(rsa_pair.public_pem)
    unknown = headers["Signature-Input"].replace('alg="rsa-v1_5-sha256"', 'alg="hmac-sha256"')
    with pytest.raises(UnsupportedAlgorithm):
        prepare_rfc9421("POST", INBOX, {**headers, "Signature-Input": unknown}, BODY, now=NOW)


def test_content_digest_rules(rsa_pair: keys.KeyPair) -> None:
    headers = signed(rsa_pair, alg=None)
    with pytest.raises(DigestMismatch):
        prepare_rfc9421("POST", INBOX, headers, BODY + b" ", now=NOW)
    only_md5 = {**headers, "Content-Digest": "md5=:" + base64.b64encode(hashlib.md5(BODY).digest()).decode() + ":"}
    with pytest.raises(DigestMismatch):
        prepare_rfc9421("POST", INBOX, only_md5, BODY, now=NOW)
    uncovered = signed(rsa_pair, alg=None, components=("@method", "@target-uri"))
    with pytest.raises(InsufficientCoverage):
        prepare_rfc9421("POST", INBOX, uncovered, BODY, now=NOW)


def test_created_and_expires(rsa_pair: keys.KeyPair) -> None:
    with pytest.raises(SignatureExpired):
        prepare_rfc9421("POST", INBOX, signed(rsa_pair, alg=None, created=NOW - timedelta(hours=3)), BODY, now=NOW)
    with pytest.raises(SignatureExpired):
        prepare_rfc9421("POST", INBOX, signed(rsa_pair, alg=None, expires=int(NOW.timestamp()) - 1), BODY, now=NOW)
    headers = signed(rsa_pair, alg=None)
    no_created = headers["Signature-Input"].replace(f";created={int(NOW.timestamp())}", "")
    with pytest.raises(InsufficientCoverage):
        prepare_rfc9421("POST", INBOX, {**headers, "Signature-Input": no_created}, BODY, now=NOW)


def test_required_components(rsa_pair: keys.KeyPair) -> None:
    for components in (("@target-uri", "content-digest"), ("@method", "@path", "content-digest")):
        with pytest.raises(InsufficientCoverage):
            prepare_rfc9421("POST", INBOX, signed(rsa_pair, alg=None, components=components), BODY, now=NOW)
    ok = signed(rsa_pair, alg=None, components=("@method", "@authority", "@request-target", "content-digest"))
    prepare_rfc9421("POST", INBOX, ok, BODY, now=NOW).verify(rsa_pair.public_pem)


def test_unsupported_components_are_401_not_400(rsa_pair: keys.KeyPair) -> None:
    headers = signed(rsa_pair, alg=None)
    for replacement in ('"@query-param";name="a"', '"content-type";sf', '"@status"'):
        text = headers["Signature-Input"].replace('"content-type"', replacement)
        with pytest.raises(SignatureRejected) as info:
            prepare_rfc9421("POST", INBOX, {**headers, "Signature-Input": text}, BODY, now=NOW)
        assert info.value.http_status == 401
    absent = signed(rsa_pair, alg=None)
    del absent["Content-Type"]
    with pytest.raises(SignatureRejected):
        prepare_rfc9421("POST", INBOX, absent, BODY, now=NOW)


def test_malformed_headers_are_400(rsa_pair: keys.KeyPair) -> None:
    headers = signed(rsa_pair, alg=None)
    for field, value in (
        ("Signature-Input", 'sig1=("@method"'),
        ("Signature", "sig1=:not base64!:"),
        ("Signature", 'sig1="a string"'),
        ("Signature-Input", 'sig1="@method";created=1'),
    ):
        with pytest.raises(SignatureMalformed) as info:
            prepare_rfc9421("POST", INBOX, {**headers, field: value}, BODY, now=NOW)
        assert info.value.http_status == 400
    repeated = headers["Signature-Input"].replace('("@method"', '("@method" "@method"')
    with pytest.raises(SignatureMalformed):
        prepare_rfc9421("POST", INBOX, {**headers, "Signature-Input": repeated}, BODY, now=NOW)
    no_keyid = headers["Signature-Input"].replace(';keyid="https://peer.test/actor#main-key"', "")
    with pytest.raises(SignatureMalformed):
        prepare_rfc9421("POST", INBOX, {**headers, "Signature-Input": no_keyid}, BODY, now=NOW)


def test_label_must_match(rsa_pair: keys.KeyPair) -> None:
    headers = signed(rsa_pair, alg=None)
    renamed = {**headers, "Signature": headers["Signature"].replace("sig1=", "other=")}
    with pytest.raises(SignatureMissing) as info:
        prepare_rfc9421("POST", INBOX, renamed, BODY, now=NOW)
    assert info.value.http_status == 401
    with pytest.raises(SignatureMissing):
        prepare_rfc9421("POST", INBOX, headers, BODY, now=NOW, label="nope")


def test_structured_fields_round_trip() -> None:
    text = 'a=(1 "two" ?0 :AQID: tok 4.5);p="x\\"y";q, b=?1, c=-12;z'
    parsed = sfv.parse_dictionary(text)
    inner = parsed["a"]
    assert isinstance(inner, sfv.InnerList)
    assert [i.value for i in inner.items] == [1, "two", False, b"\x01\x02\x03", sfv.Token("tok"), sfv.Decimal("4.5")]
    assert sfv.serialize_inner_list(inner) == '(1 "two" ?0 :AQID: tok 4.5);p="x\\"y";q'
    assert parsed["b"] == sfv.Item(True) and parsed["c"] == sfv.Item(-12, (("z", True),))
    for bad in ("a=(1", "a=1,", "A=1", 'a="\\x"', "a=:abc", "a=1.2.3"):
        with pytest.raises(sfv.SFError):
            sfv.parse_dictionary(bad)
