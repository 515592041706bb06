"""The test PKI: layout, key modes, extensions the grid tools need, plain RFC 3820 proxies."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from mdm.errors import UsageError
from mdm.pki.ca import CertificateAuthority, install_ca, make_proxy
from mdm.pki.chain import PROXY_CERT_INFO_OID, is_proxy, load_pem_certificates
from mdm.pki.names import dn_string, subject_hash
from tests.unit.pki.conftest import SmallPki


def _cert(path: Path) -> x509.Certificate:
    return load_pem_certificates(path.read_bytes())[0]


def test_ca_layout_and_trust_dir(small_pki: SmallPki) -> None:
    ca = small_pki.ca
    assert ca.dn == "/DC=org/DC=mdmtest/CN=MDM Test CA"
    hashed = ca.trust_dir / f"{subject_hash(ca.cert.subject)}.0"
    assert hashed.is_symlink()
    assert _cert(hashed) == ca.cert
    policy = (ca.trust_dir / f"{subject_hash(ca.cert.subject)}.signing_policy").read_text()
    assert "access_id_CA      X509         '/DC=org/DC=mdmtest/CN=MDM Test CA'" in policy
    assert "'\"/DC=org/DC=mdmtest/*\"'" in policy
    assert (ca.trust_dir / f"{subject_hash(ca.cert.subject)}.namespaces").exists()
    bc = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca


def test_private_keys_are_owner_only(small_pki: SmallPki) -> None:
    for key in [small_pki.ca.root / "ca" / "ca.key", small_pki.host.key, small_pki.alice.key]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(small_pki.proxy.stat().st_mode) == 0o600


def test_host_certificate_names_and_usages(small_pki: SmallPki) -> None:
    cert = _cert(small_pki.host.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.issuer == small_pki.ca.cert.subject


def test_user_dn_is_under_the_ca_namespace(small_pki: SmallPki) -> None:
    assert small_pki.alice.dn == "/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor"
    assert dn_string(_cert(small_pki.alice.cert).subject) == small_pki.alice.dn


def test_voms_certificate_has_ski_and_lsc(small_pki: SmallPki) -> None:
    cert = _cert(small_pki.voms.cert)
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)  # voms-proxy-fake needs it
    lsc = (small_pki.ca.vomsdir / "mdm" / "voms.localhost.lsc").read_text().splitlines()
    assert lsc == ["/DC=org/DC=mdmtest/CN=voms.localhost", "/DC=org/DC=mdmtest/CN=MDM Test CA"]


def test_refuses_to_overwrite_a_ca(small_pki: SmallPki) -> None:
    with pytest.raises(UsageError, match="already holds a CA"):
        CertificateAuthority.create(small_pki.ca.root)


def test_load_gives_back_the_same_ca(small_pki: SmallPki, tmp_path: Path) -> None:
    again = CertificateAuthority.load(small_pki.ca.root)
    assert again.cert == small_pki.ca.cert
    cred = again.issue_user("Carol")
    assert _cert(cred.cert).issuer == small_pki.ca.cert.subject
    with pytest.raises(UsageError, match="mdm pki init"):
        CertificateAuthority.load(tmp_path / "nothing")


@pytest.mark.parametrize(("vo", "host"), [("../etc", "voms"), ("mdm", "a/b"), ("", "x")])
def test_voms_names_cannot_escape_the_vomsdir(small_pki: SmallPki, vo: str, host: str) -> None:
    with pytest.raises(UsageError):
        small_pki.ca.issue_voms(vo, host)


def test_make_proxy_is_rfc3820(small_pki: SmallPki) -> None:
    certs = load_pem_certificates(small_pki.proxy.read_bytes())
    proxy, eec = certs[0], certs[1]
    assert len(certs) == 2
    assert is_proxy(proxy)
    assert not is_proxy(eec)
    ext = proxy.extensions.get_extension_for_oid(PROXY_CERT_INFO_OID)
    assert ext.critical
    assert list(proxy.subject.rdns)[:-1] == list(eec.subject.rdns)
    assert proxy.subject.rdns[-1].rfc4514_string() == f"CN={proxy.serial_number}"
    assert proxy.issuer == eec.subject
    assert proxy.not_valid_after_utc <= eec.not_valid_after_utc
    assert b"PRIVATE KEY" in small_pki.proxy.read_bytes()


def test_proxy_never_outlives_its_issuer(small_pki: SmallPki, tmp_path: Path) -> None:
    out = make_proxy(small_pki.proxy, small_pki.proxy, tmp_path / "long.pem", hours=1000)
    inner = load_pem_certificates(small_pki.proxy.read_bytes())[0]
    assert load_pem_certificates(out.read_bytes())[0].not_valid_after_utc <= (
        inner.not_valid_after_utc
    )


def test_install_ca_is_idempotent_and_keeps_hash_collisions_apart(
    small_pki: SmallPki, tmp_path: Path
) -> None:
    trust = tmp_path / "certificates"
    first = install_ca(small_pki.ca.cert, trust, "mdm")
    assert install_ca(small_pki.ca.cert, trust, "mdm") == first  # same alias: same link
    assert first.name.endswith(".0")
    # Another file under another alias with the same hash (a re-keyed CA) gets <hash>.1.
    second = install_ca(small_pki.ca.cert, trust, "mdm-rekeyed")
    assert second.name == first.name[:-1] + "1"
    assert os.readlink(first) == "mdm.pem"
