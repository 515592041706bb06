"""Chain checks in Python: proxies stripped to the EEC, every way a chain can be wrong refused."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mdm.errors import CredentialError
from mdm.pki.ca import install_ca, self_signed
from mdm.pki.chain import (
    INDEPENDENT_OID,
    INHERIT_ALL_OID,
    PROXY_CERT_INFO_OID,
    ProxyCertInfo,
    TrustStore,
    end_entity_index,
    load_pem_certificates,
    verify_chain,
)
from mdm.pki.names import dn_string
from mdm.pki.tls import identity_from_chain, identity_from_file
from tests.unit.pki.conftest import SmallPki

ALICE = "/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor"


def _certs(path: Path) -> list[x509.Certificate]:
    return load_pem_certificates(path.read_bytes())


def _key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _proxy_like(
    issuer: x509.Certificate,
    key: rsa.RSAPrivateKey,
    subject: x509.Name,
    policy: str = INHERIT_ALL_OID,
) -> x509.Certificate:
    now = datetime.now(UTC)
    pkey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info = ProxyCertInfo({"proxy_policy": {"policy_language": policy}}).dump()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(pkey.public_key())
        .serial_number(7)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.UnrecognizedExtension(PROXY_CERT_INFO_OID, info), critical=True)
        .sign(key, hashes.SHA256())
    )


def _child_name(parent: x509.Name, cn: str) -> x509.Name:
    rdn = x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return x509.Name([*parent.rdns, rdn])


def test_eec_proxy_and_proxy_of_proxy_give_the_same_dn(small_pki: SmallPki) -> None:
    trust = TrustStore.load(small_pki.ca.trust_dir)
    for path, depth in [(small_pki.alice.cert, 0), (small_pki.proxy, 1), (small_pki.proxy2, 2)]:
        verified = verify_chain(_certs(path), trust)
        assert verified.eec_index == depth
        assert dn_string(verified.eec.subject) == ALICE
        assert verified.anchor == small_pki.ca.cert


def test_openssl_style_chain_ending_with_the_anchor_is_accepted(small_pki: SmallPki) -> None:
    chain = [*_certs(small_pki.proxy), small_pki.ca.cert]
    ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    who = identity_from_chain(ders, small_pki.ca.trust_dir)
    assert who.dn == ALICE
    assert who.is_proxy
    assert who.issuer == small_pki.ca.dn
    assert who.fqans == ()
    assert who.attributes["leaf_dn"].startswith(ALICE + "/CN=")
    assert "voms_error" not in who.attributes


def test_untrusted_ca_is_refused_with_a_reason(small_pki: SmallPki) -> None:
    with pytest.raises(CredentialError, match=r"Rogue CA .* is not a trusted CA") as info:
        identity_from_file(small_pki.mallory.cert, small_pki.ca.trust_dir)
    assert info.value.context["reason"] == "untrusted issuer"


def test_self_signed_impostor_is_refused(small_pki: SmallPki) -> None:
    cert, _ = self_signed(ALICE)
    with pytest.raises(CredentialError, match="not a trusted CA"):
        verify_chain([cert], TrustStore.load(small_pki.ca.trust_dir))


def test_the_ca_itself_is_not_an_identity(small_pki: SmallPki) -> None:
    with pytest.raises(CredentialError, match="no end-entity"):
        verify_chain([small_pki.ca.cert], TrustStore.load(small_pki.ca.trust_dir))


@pytest.mark.parametrize(
    ("shift", "match"), [(timedelta(days=800), "expired"), (timedelta(days=-2), "not valid before")]
)
def test_validity_window(small_pki: SmallPki, shift: timedelta, match: str) -> None:
    with pytest.raises(CredentialError, match=match):
        verify_chain(
            _certs(small_pki.alice.cert),
            TrustStore.load(small_pki.ca.trust_dir),
            datetime.now(UTC) + shift,
        )


def test_expired_proxy_is_refused(small_pki: SmallPki) -> None:
    later = datetime.now(UTC) + timedelta(hours=3)  # the proxy lives 2 h, Alice a year
    with pytest.raises(CredentialError, match="expired"):
        verify_chain(_certs(small_pki.proxy), TrustStore.load(small_pki.ca.trust_dir), later)


def test_proxy_must_be_named_after_its_issuer(small_pki: SmallPki) -> None:
    alice = _certs(small_pki.alice.cert)[0]
    wrong = x509.Name(
        [
            *alice.subject.rdns[:-1],
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "Bob")]),
        ]
    )
    proxy = _proxy_like(alice, _key(small_pki.alice.key), wrong)
    with pytest.raises(CredentialError, match="RFC 3820"):
        verify_chain([proxy, alice], TrustStore.load(small_pki.ca.trust_dir))


def test_proxy_signed_by_another_key_is_refused(small_pki: SmallPki) -> None:
    alice = _certs(small_pki.alice.cert)[0]
    subject = x509.Name(
        [
            *alice.subject.rdns,
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "7")]),
        ]
    )
    forged = _proxy_like(
        alice, rsa.generate_private_key(public_exponent=65537, key_size=2048), subject
    )
    with pytest.raises(CredentialError, match="not signed by"):
        verify_chain([forged, alice], TrustStore.load(small_pki.ca.trust_dir))


def test_only_proxies_is_refused() -> None:
    with pytest.raises(CredentialError, match="only proxy"):
        end_entity_index([])


def test_trust_store_reloads_when_the_directory_changes(
    small_pki: SmallPki, tmp_path: Path
) -> None:
    trust_dir = tmp_path / "certificates"
    install_ca(small_pki.ca.cert, trust_dir, "mdm")
    assert len(TrustStore.load(trust_dir)) == 1
    with pytest.raises(CredentialError):
        identity_from_file(small_pki.mallory.cert, trust_dir)
    install_ca(small_pki.rogue.cert, trust_dir, "rogue")
    os.utime(trust_dir, ns=(1, trust_dir.stat().st_mtime_ns + 1_000_000))
    assert len(TrustStore.load(trust_dir)) == 2
    assert identity_from_file(small_pki.mallory.cert, trust_dir).dn.endswith("/CN=Mallory")


@pytest.mark.parametrize(
    ("policy", "ok"),
    [(INHERIT_ALL_OID, True), ("1.3.6.1.4.1.3536.1.1.1.9", True), (INDEPENDENT_OID, False)],
)
def test_proxy_policy_languages(small_pki: SmallPki, policy: str, ok: bool) -> None:
    alice = _certs(small_pki.alice.cert)[0]
    proxy = _proxy_like(alice, _key(small_pki.alice.key), _child_name(alice.subject, "9"), policy)
    trust = TrustStore.load(small_pki.ca.trust_dir)
    if ok:
        assert dn_string(verify_chain([proxy, alice], trust).eec.subject) == ALICE
    else:
        with pytest.raises(CredentialError, match="policy language"):
            verify_chain([proxy, alice], trust)
