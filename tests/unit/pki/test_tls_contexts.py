"""SSL contexts: proxies allowed, client certificate optional by design, clear config errors."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from mdm.errors import ConfigError, CredentialError
from mdm.pki.chain import load_pem_certificates
from mdm.pki.tls import client_ssl_context, httpx_client, peer_chain, server_ssl_context
from mdm.pki.voms import find_acs, read_lsc
from mdm.settings import TlsSettings
from tests.unit.pki.conftest import SmallPki


def test_server_context_allows_proxies_and_optional_client_certs(small_pki: SmallPki) -> None:
    ctx = server_ssl_context(small_pki.host.cert, small_pki.host.key, small_pki.ca.trust_dir)
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert ctx.verify_flags & ssl.VERIFY_ALLOW_PROXY_CERTS
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    strict = server_ssl_context(
        small_pki.host.cert, small_pki.host.key, small_pki.ca.trust_dir, require_client_cert=True
    )
    assert strict.verify_mode == ssl.CERT_REQUIRED


def test_server_context_names_what_is_missing(small_pki: SmallPki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CA directory"):
        server_ssl_context(small_pki.host.cert, small_pki.host.key, tmp_path / "none")
    with pytest.raises(ConfigError, match="cannot load server certificate"):
        server_ssl_context(tmp_path / "x.pem", None, small_pki.ca.trust_dir)


def test_client_context_from_settings_prefers_the_proxy(small_pki: SmallPki) -> None:
    tls = TlsSettings(
        cert=small_pki.alice.cert,
        key=small_pki.alice.key,
        proxy=small_pki.proxy,
        ca_dir=small_pki.ca.trust_dir,
    )
    ctx = client_ssl_context(tls)
    assert ctx.check_hostname
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    with httpx_client(tls, base_url="https://127.0.0.1:1") as client:
        assert str(client.base_url) == "https://127.0.0.1:1"


def test_client_context_refuses_ambiguous_or_missing_input(small_pki: SmallPki) -> None:
    with pytest.raises(ConfigError, match="either a proxy or a cert"):
        client_ssl_context(
            ca_dir=small_pki.ca.trust_dir, cert=small_pki.alice.cert, proxy=small_pki.proxy
        )
    with pytest.raises(ConfigError, match="ca_dir"):
        client_ssl_context(TlsSettings(proxy=small_pki.proxy))
    with pytest.raises(ConfigError, match="cannot load client credential"):
        client_ssl_context(
            ca_dir=small_pki.ca.trust_dir, cert=small_pki.host.cert, key=small_pki.alice.key
        )


def test_plain_proxy_has_no_attribute_certificate(small_pki: SmallPki) -> None:
    assert find_acs(load_pem_certificates(small_pki.proxy.read_bytes())) == []


def test_lsc_files_with_comments_and_several_chains(tmp_path: Path) -> None:
    (tmp_path / "mdm").mkdir()
    (tmp_path / "mdm" / "voms.example.org.lsc").write_text(
        "# comment\n/DC=org/CN=voms.example.org\n/DC=org/CN=CA 1\n"
        "------ NEXT CHAIN ------\n/DC=org/CN=voms.example.org\n/DC=org/CN=CA 2\n\n"
    )
    assert read_lsc(tmp_path, "mdm", "voms.example.org") == [
        ["/DC=org/CN=voms.example.org", "/DC=org/CN=CA 1"],
        ["/DC=org/CN=voms.example.org", "/DC=org/CN=CA 2"],
    ]
    with pytest.raises(CredentialError, match=r"no mdm/other\.lsc"):
        read_lsc(tmp_path, "mdm", "other")
    with pytest.raises(CredentialError, match="not a plain name"):
        read_lsc(tmp_path, "..", "voms.example.org")


class _Py313SSLObject:
    """Python >= 3.13: ``get_verified_chain()`` is public and returns DER bytes."""

    def __init__(self, ders: list[bytes]) -> None:
        self._ders = ders

    def get_verified_chain(self) -> list[bytes]:
        return self._ders


class _Py311Cert:
    def __init__(self, der: bytes) -> None:
        self._der = der

    def public_bytes(self, encoding: int) -> bytes:
        assert encoding == 2  # _ssl.ENCODING_DER
        return self._der


class _Py311Inner:
    def __init__(self, ders: list[bytes]) -> None:
        self._ders = ders

    def get_verified_chain(self) -> list[_Py311Cert]:
        return [_Py311Cert(d) for d in self._ders]


class _Py311SSLObject:
    """Python 3.11/3.12: only the private ``_sslobj`` has it, returning certificate objects."""

    def __init__(self, ders: list[bytes]) -> None:
        self._sslobj = _Py311Inner(ders)


def test_peer_chain_on_both_python_apis() -> None:
    ders = [b"leaf", b"ca"]
    assert peer_chain(_Py313SSLObject(ders)) == ders  # type: ignore[arg-type]
    assert peer_chain(_Py311SSLObject(ders)) == ders  # type: ignore[arg-type]
    assert peer_chain(_Py313SSLObject([])) == []  # type: ignore[arg-type]
