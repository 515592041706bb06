"""Slash-form DNs and OpenSSL's subject hash (known answers; the live openssl check is in
tests/integration/test_tls_server.py)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mdm.errors import UsageError
from mdm.pki.names import canonical_encoding, dn_string, parse_dn, subject_hash


@pytest.mark.parametrize(
    "dn",
    [
        "/DC=org/DC=mdmtest/CN=MDM Test CA",
        "/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor",
        "/C=DE/ST=Berlin/L=Mitte/O=Charité/OU=Radiology/CN=Dr. Jörg Müller",
        "/DC=ch/DC=cern/OU=Users/CN=alice+UID=123",
        "/O=Grid/emailAddress=alice@example.org/CN=alice",
    ],
)
def test_dn_round_trip(dn: str) -> None:
    assert dn_string(parse_dn(dn)) == dn


def test_dn_string_keeps_certificate_order_not_rfc4514_order() -> None:
    name = parse_dn("/DC=org/DC=mdmtest/CN=x")
    assert name.rfc4514_string() == "CN=x,DC=mdmtest,DC=org"
    assert dn_string(name) == "/DC=org/DC=mdmtest/CN=x"


def test_domain_components_are_ia5_strings_like_openssl_writes_them() -> None:
    attr = parse_dn("/DC=org/CN=x").get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)[0]
    assert attr._type.name == "IA5String"


@pytest.mark.parametrize("bad", ["CN=x", "/CN", "/XX=1", "/", "/CN="])
def test_parse_dn_refuses_malformed_text(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_dn(bad)


def test_subject_hash_known_answer_for_the_test_ca() -> None:
    # Computed by `openssl x509 -hash` (OpenSSL 3.0) for the default MDM test CA.
    assert subject_hash(parse_dn("/DC=org/DC=mdmtest/CN=MDM Test CA")) == "6753df80"


def test_canonical_form_ignores_case_and_whitespace_like_openssl() -> None:
    a = parse_dn("/O=Some  Org /CN=  Foo   BAR")
    b = parse_dn("/O=some org/CN=foo bar")
    assert canonical_encoding(a) == canonical_encoding(b)
    assert subject_hash(a) == subject_hash(b)
    assert subject_hash(a) != subject_hash(parse_dn("/O=some org/CN=foo baz"))


def test_canonical_form_lowercases_ascii_only() -> None:
    upper = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ÄBC")])
    lower = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "äbc")])
    # OpenSSL's canonicalisation lowercases A-Z only: non-ASCII letters keep their case.
    assert subject_hash(upper) != subject_hash(lower)
    assert subject_hash(upper) == subject_hash(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Äbc")])
    )
