"""Certificate chains: proxies (RFC 3820), the end-entity certificate, and the trust directory.

A grid client presents ``proxy [proxy ...] EEC [intermediate CA ...]``. The person is the
end-entity certificate (EEC): walking from the leaf, the first certificate *without*
ProxyCertInfo (RFC 3820 ``1.3.6.1.5.5.7.1.14``, or the pre-RFC Globus GT3 OID
``1.3.6.1.4.1.3536.1.222``). Legacy Globus proxies (``CN=proxy``, no extension) are not
accepted: OpenSSL refuses them too.

``verify_chain`` re-checks in Python what OpenSSL checked during the TLS handshake (signatures,
validity, issuer in the trust directory, proxy naming rules). The server relies on OpenSSL; the
Python check is what ``mdm whoami`` uses on files (no handshake there), what verifies a VOMS
server's certificate, and a second line of defence if a server is ever misconfigured. Not
checked (yet): CRLs and name constraints (``.namespaces``/``.signing_policy``).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asn1crypto import core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from mdm.errors import CredentialError
from mdm.pki.names import dn_string

PROXY_CERT_INFO_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")
GT3_PROXY_OID = x509.ObjectIdentifier("1.3.6.1.4.1.3536.1.222")

#: RFC 3820 policy languages: inheritAll, and the Globus "limited proxy" (all rights except
#: job submission, which MDM does not have). id-ppl-independent (no rights) is refused.
INHERIT_ALL_OID = "1.3.6.1.5.5.7.21.1"
INDEPENDENT_OID = "1.3.6.1.5.5.7.21.2"
GLOBUS_LIMITED_OID = "1.3.6.1.4.1.3536.1.1.1.9"
_ACCEPTED_POLICIES = {INHERIT_ALL_OID, GLOBUS_LIMITED_OID}

_HASHED_FILE = re.compile(r"^[0-9a-f]{8}\.\d+$")
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


class ProxyPolicy(core.Sequence):
    _fields = [  # noqa: RUF012 - asn1crypto's declaration style
        ("policy_language", core.ObjectIdentifier),
        ("policy", core.OctetString, {"optional": True}),
    ]


class ProxyCertInfo(core.Sequence):
    """RFC 3820 3.8: ``SEQUENCE { pCPathLenConstraint INTEGER OPTIONAL, proxyPolicy }``."""

    _fields = [  # noqa: RUF012
        ("path_len", core.Integer, {"optional": True}),
        ("proxy_policy", ProxyPolicy),
    ]


def proxy_policy(cert: x509.Certificate) -> str | None:
    """The policy language OID of an RFC 3820 proxy (``None`` for GT3 or non-proxies)."""
    try:
        ext = cert.extensions.get_extension_for_oid(PROXY_CERT_INFO_OID).value
    except x509.ExtensionNotFound:
        return None
    if not isinstance(ext, x509.UnrecognizedExtension):  # pragma: no cover - not parsed today
        return None
    try:
        return str(ProxyCertInfo.load(ext.value)["proxy_policy"]["policy_language"].dotted)
    except ValueError as exc:
        raise CredentialError("malformed ProxyCertInfo", reason="bad proxy") from exc


def is_proxy(cert: x509.Certificate) -> bool:
    """True for an RFC 3820 (or GT3) proxy certificate."""
    oids = {ext.oid for ext in cert.extensions}
    return PROXY_CERT_INFO_OID in oids or GT3_PROXY_OID in oids


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def end_entity_index(chain: Sequence[x509.Certificate]) -> int:
    """Index of the EEC in *chain* (leaf first): the first certificate that is not a proxy."""
    for i, cert in enumerate(chain):
        if not is_proxy(cert):
            return i
    raise CredentialError("the chain holds only proxy certificates", reason="no end-entity cert")


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in file order; other blocks (the proxy key) are skipped.

    A proxy file is ``proxy cert, proxy key, EEC, [chain]``.
    """
    certs = [x509.load_pem_x509_certificate(m.group(0)) for m in _PEM_CERT.finditer(data)]
    if not certs:
        raise CredentialError("no PEM certificate found", reason="no certificate in file")
    return certs


def as_certificates(chain: Sequence[bytes | x509.Certificate]) -> list[x509.Certificate]:
    """DER bytes (as ``get_verified_chain`` gives) or certificates -> certificates."""
    out = []
    for item in chain:
        if isinstance(item, x509.Certificate):
            out.append(item)
        else:
            try:
                out.append(x509.load_der_x509_certificate(bytes(item)))
            except ValueError as exc:
                raise CredentialError("malformed certificate in chain", reason=str(exc)) from exc
    return out


class TrustStore:
    """The CA certificates of an IGTF-style directory (``<subject_hash>.<n>`` files).

    Loaded once per directory content: ``TrustStore.load(path)`` is cached on the directory's
    modification time, so a fetch-crl / CA-update run is picked up by the next connection.
    """

    def __init__(self, cas: Sequence[x509.Certificate], source: str = "") -> None:
        self.source = source
        self._by_subject: dict[bytes, list[x509.Certificate]] = {}
        self._ders: set[bytes] = set()
        for ca in cas:
            self._by_subject.setdefault(ca.subject.public_bytes(), []).append(ca)
            self._ders.add(ca.public_bytes(Encoding.DER))

    @classmethod
    def load(cls, ca_dir: str | os.PathLike[str]) -> TrustStore:
        path = Path(ca_dir)
        try:
            stamp = path.stat().st_mtime_ns
        except OSError as exc:
            raise CredentialError(
                f"CA directory {path} is not readable", reason="no CA directory"
            ) from exc
        return _load_store(str(path.resolve()), stamp)

    def __contains__(self, cert: x509.Certificate) -> bool:
        return cert.public_bytes(Encoding.DER) in self._ders

    def __len__(self) -> int:
        return len(self._ders)

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        return list(self._by_subject.get(cert.issuer.public_bytes(), []))


@functools.lru_cache(maxsize=16)
def _load_store(path: str, _stamp: int) -> TrustStore:
    cas = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if not _HASHED_FILE.match(entry.name):
            continue
        try:
            cas += load_pem_certificates(Path(entry.path).read_bytes())
        except (OSError, ValueError, CredentialError):
            continue  # one unreadable CA file must not take down the others
    return TrustStore(cas, source=path)


@dataclass(frozen=True)
class VerifiedChain:
    """A chain that passed ``verify_chain``: leaf first, anchors (trusted CAs) removed."""

    certs: tuple[x509.Certificate, ...]
    eec_index: int
    anchor: x509.Certificate

    @property
    def eec(self) -> x509.Certificate:
        return self.certs[self.eec_index]

    @property
    def leaf(self) -> x509.Certificate:
        return self.certs[0]

    @property
    def is_proxy(self) -> bool:
        return self.eec_index > 0


def _check_time(cert: x509.Certificate, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise CredentialError(
            f"certificate {dn_string(cert.subject)} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z",
            reason="certificate not yet valid",
        )
    if now > cert.not_valid_after_utc:
        raise CredentialError(
            f"certificate {dn_string(cert.subject)} expired "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z",
            reason="certificate expired",
        )


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_proxy(proxy: x509.Certificate, issuer: x509.Certificate) -> None:
    policy = proxy_policy(proxy)
    if policy is not None and policy not in _ACCEPTED_POLICIES:
        raise CredentialError(
            f"proxy {dn_string(proxy.subject)} has policy language {policy}, which MDM does "
            "not grant any rights to (only inheritAll and limited proxies are accepted)",
            reason="unsupported proxy policy",
        )
    # RFC 3820 3.4: subject = issuer's subject + one more CN RDN.
    rdns = list(proxy.subject.rdns)
    if (
        len(rdns) != len(issuer.subject.rdns) + 1
        or x509.Name(rdns[:-1]) != issuer.subject
        or [a.oid for a in rdns[-1]] != [NameOID.COMMON_NAME]
    ):
        raise CredentialError(
            f"proxy {dn_string(proxy.subject)} is not named after its issuer "
            f"{dn_string(issuer.subject)} (RFC 3820 3.4)",
            reason="bad proxy subject",
        )


def verify_chain(
    chain: Sequence[bytes | x509.Certificate],
    trust: TrustStore,
    now: datetime | None = None,
) -> VerifiedChain:
    """Check *chain* (leaf first) against *trust*; raise ``CredentialError`` with a reason.

    Checks: every signature; validity at *now*; proxies only above the EEC, each signed by the
    certificate below it and named after it; the EEC is not a CA; the last certificate is issued
    by a CA of *trust* (through further CAs of *trust* up to a self-signed root).
    """
    now = now or datetime.now(UTC)
    certs = as_certificates(chain)
    while certs and certs[-1] in trust and len(certs) > 1:
        certs.pop()  # OpenSSL's verified chain ends with the anchor itself
    if not certs or (len(certs) == 1 and certs[0] in trust and is_ca(certs[0])):
        raise CredentialError("no end-entity certificate in the chain", reason="no end-entity")
    eec_i = end_entity_index(certs)
    for i, cert in enumerate(certs):
        _check_time(cert, now)
        if i < eec_i:
            _check_proxy(cert, certs[i + 1])
        elif is_proxy(cert):
            raise CredentialError("a proxy certificate below the end-entity", reason="bad chain")
        if i + 1 < len(certs) and not _signed_by(cert, certs[i + 1]):
            raise CredentialError(
                f"{dn_string(cert.subject)} is not signed by {dn_string(certs[i + 1].subject)}",
                reason="broken chain",
            )
        if i > eec_i and not is_ca(cert):
            raise CredentialError(
                f"{dn_string(cert.subject)} signs certificates but is not a CA", reason="bad chain"
            )
    if is_ca(certs[eec_i]):
        raise CredentialError(
            f"{dn_string(certs[eec_i].subject)} is a CA certificate, not a person or host",
            reason="end-entity is a CA",
        )
    anchor = _anchor(certs[-1], trust, now)
    return VerifiedChain(tuple(certs), eec_i, anchor)


def _anchor(cert: x509.Certificate, trust: TrustStore, now: datetime) -> x509.Certificate:
    """The trusted CA that issued *cert*, after walking up to a trusted self-signed root."""
    current = cert
    first: x509.Certificate | None = None
    for _ in range(8):  # deeper CA hierarchies do not exist in the IGTF
        issuers = [ca for ca in trust.issuers_of(current) if _signed_by(current, ca)]
        if not issuers:
            raise CredentialError(
                f"issuer {dn_string(current.issuer)} of {dn_string(current.subject)} is not a "
                f"trusted CA (not in {trust.source or 'the CA directory'})",
                reason="untrusted issuer",
            )
        ca = issuers[0]
        first = first or ca
        _check_time(ca, now)
        if not is_ca(ca):
            raise CredentialError(f"{dn_string(ca.subject)} is not a CA", reason="bad chain")
        if ca.issuer == ca.subject:
            return first
        current = ca
    raise CredentialError("CA hierarchy too deep", reason="bad chain")


__all__ = [
    "GT3_PROXY_OID",
    "INDEPENDENT_OID",
    "INHERIT_ALL_OID",
    "PROXY_CERT_INFO_OID",
    "ProxyCertInfo",
    "TrustStore",
    "VerifiedChain",
    "as_certificates",
    "end_entity_index",
    "is_ca",
    "is_proxy",
    "load_pem_certificates",
    "proxy_policy",
    "verify_chain",
]
