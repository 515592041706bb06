"""TLS contexts for MDM servers and clients, and the caller's Identity from a verified chain.

Server side: ``server_ssl_context`` asks for a client certificate but does not *require* one
(``CERT_OPTIONAL``). Why: a caller without a certificate then reaches the application, which
answers a clean ``401`` problem+json and writes an audit record, instead of a bare TLS alert
that clients report as an obscure handshake error. A certificate that *is* presented is still
fully verified by OpenSSL during the handshake (an untrusted or self-signed one aborts it).
``ssl.VERIFY_ALLOW_PROXY_CERTS`` lets RFC 3820 proxies through; ``capath`` is the IGTF-style
hashed directory, so CAs are looked up by ``<subject_hash>.0`` as grid middleware does.

``identity_from_chain`` turns the *verified* chain (``peer_chain``: not ``getpeercert()``,
which shows only the proxy leaf) into an ``mdm.acl.Identity``: the end-entity DN, and VOMS
FQANs only from ACs that verify (``mdm.pki.voms``). A refused AC never refuses the caller: the
identity then has no FQANs and ``attributes["voms_error"]`` says why, so DN-based ACLs still work.

Client side: ``client_ssl_context`` presents a certificate+key or a proxy file and verifies the
server against the CA directory; ``httpx_client`` wraps it in an ``httpx.Client``.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from mdm.acl import Identity
from mdm.errors import ConfigError, CredentialError
from mdm.pki.chain import TrustStore, load_pem_certificates, verify_chain
from mdm.pki.names import dn_string
from mdm.pki.voms import voms_attributes
from mdm.settings import TlsSettings

PathLike = str | os.PathLike[str]


def server_ssl_context(
    cert: PathLike,
    key: PathLike | None,
    ca_dir: PathLike,
    *,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server context for mutual TLS with grid clients (TLS >= 1.2, proxies allowed).

    ``require_client_cert=True`` gives ``CERT_REQUIRED`` (the handshake fails without a client
    certificate); the default ``CERT_OPTIONAL`` lets the app answer 401 itself (see module doc).
    """
    ca_path = Path(ca_dir)
    if not ca_path.is_dir():
        raise ConfigError(f"CA directory {ca_path} does not exist", key="tls.ca_dir")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load server certificate {cert} / key {key}: {exc}") from exc
    ctx.load_verify_locations(capath=str(ca_path))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    # Not VERIFY_X509_STRICT: proxies made by older grid tools lack an AuthorityKeyIdentifier,
    # which strict mode refuses; OpenSSL's normal RFC 5280 checks still apply.
    ctx.verify_flags |= ssl.VERIFY_ALLOW_PROXY_CERTS
    return ctx


def client_ssl_context(
    tls: TlsSettings | None = None,
    *,
    ca_dir: PathLike | None = None,
    cert: PathLike | None = None,
    key: PathLike | None = None,
    proxy: PathLike | None = None,
) -> ssl.SSLContext:
    """A client context that verifies servers against the CA directory and presents a credential.

    Give ``proxy`` (a file with proxy cert, key and chain, like ``X509_USER_PROXY``) or
    ``cert`` and ``key``, or nothing for an anonymous client. Values default to those of *tls*
    (``settings.tls``; its ``proxy`` wins over its ``cert``/``key``); an explicit ``cert`` or
    ``proxy`` argument replaces the credential of *tls*. Host names are checked.
    """
    if proxy is not None and cert is not None:
        raise ConfigError("give either a proxy or a cert/key pair, not both", key="tls.proxy")
    if tls is not None:
        ca_dir = ca_dir if ca_dir is not None else tls.ca_dir
        if proxy is None and cert is None:
            if tls.proxy is not None:
                proxy = tls.proxy
            else:
                cert, key = tls.cert, tls.key
    if ca_dir is None:
        raise ConfigError("a TLS client needs tls.ca_dir to verify servers", key="tls.ca_dir")
    ca_path = Path(ca_dir)
    if not ca_path.is_dir():
        raise ConfigError(f"CA directory {ca_path} does not exist", key="tls.ca_dir")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, capath=str(ca_path))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    certfile, keyfile = (proxy, proxy) if proxy is not None else (cert, key)
    if certfile is not None:
        try:
            ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load client credential {certfile}: {exc}") from exc
    return ctx


def httpx_client(
    tls: TlsSettings | None = None,
    *,
    ca_dir: PathLike | None = None,
    cert: PathLike | None = None,
    key: PathLike | None = None,
    proxy: PathLike | None = None,
    base_url: str = "",
    timeout: float = 30.0,
    **kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client`` over ``client_ssl_context`` (extra ``kwargs`` go to httpx)."""
    ctx = client_ssl_context(tls, ca_dir=ca_dir, cert=cert, key=key, proxy=proxy)
    return httpx.Client(base_url=base_url, verify=ctx, timeout=timeout, **kwargs)


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    """The peer's *verified* chain as DER, leaf first (empty when no certificate was sent).

    Python 3.13 made ``get_verified_chain()`` public (returning DER bytes); on 3.11/3.12 the
    same method exists on the private ``_sslobj`` and returns certificate objects.
    """
    getter = getattr(ssl_object, "get_verified_chain", None)
    if getter is None:
        inner = getattr(ssl_object, "_sslobj", None)
        getter = getattr(inner, "get_verified_chain", None)
    if getter is None:  # pragma: no cover - every supported CPython has one of the two
        raise RuntimeError("this Python's ssl module cannot return the verified peer chain")
    chain = getter() or []
    out = []
    for item in chain:
        if isinstance(item, bytes | bytearray):
            out.append(bytes(item))
        else:
            out.append(item.public_bytes(2))  # _ssl.ENCODING_DER
    return out


def identity_from_chain(
    chain: Sequence[bytes | x509.Certificate],
    ca_dir: PathLike,
    vomsdir: PathLike | None = None,
    now: datetime | None = None,
) -> Identity:
    """The Identity of the holder of *chain* (leaf first, DER or certificates).

    Raises ``CredentialError`` (with ``reason``) when the chain itself does not verify against
    *ca_dir*. VOMS problems do not raise: the Identity then carries no FQANs and
    ``attributes["voms_error"]``. Attributes also record ``leaf_dn`` and, for verified ACs,
    ``vo`` and ``voms_uri``.
    """
    now = now or datetime.now(UTC)
    trust = TrustStore.load(ca_dir)
    verified = verify_chain(chain, trust, now)
    eec = verified.eec
    attributes = {"leaf_dn": dn_string(verified.leaf.subject)}
    fqans: list[str] = []
    try:
        acs = voms_attributes(verified.certs, eec, trust, Path(vomsdir) if vomsdir else None, now)
    except CredentialError as exc:
        attributes["voms_error"] = str(exc.context.get("reason") or exc.message)
    else:
        for ac in acs:
            fqans += [f for f in ac.fqans if f not in fqans]
        if acs:
            attributes["vo"] = acs[0].vo
            attributes["voms_uri"] = acs[0].uri
            attributes["voms_server"] = acs[0].server_dn
            attributes["voms_not_after"] = acs[0].not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Identity(
        dn=dn_string(eec.subject),
        fqans=tuple(fqans),
        issuer=dn_string(eec.issuer),
        is_proxy=verified.is_proxy,
        attributes=attributes,
    )


def identity_from_file(
    path: PathLike,
    ca_dir: PathLike,
    vomsdir: PathLike | None = None,
    now: datetime | None = None,
) -> Identity:
    """``identity_from_chain`` for a PEM certificate or proxy file (what ``mdm whoami`` shows)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CredentialError(f"cannot read {path}: {exc}", reason="unreadable file") from exc
    return identity_from_chain(load_pem_certificates(data), ca_dir, vomsdir, now)


__all__ = [
    "client_ssl_context",
    "httpx_client",
    "identity_from_chain",
    "identity_from_file",
    "peer_chain",
    "server_ssl_context",
]
