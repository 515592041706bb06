"""VOMS attribute certificates (RFC 5755 ACs inside a proxy): parse, verify, extract FQANs.

A VOMS proxy carries, in the non-critical extension ``1.3.6.1.4.1.8005.100.100.5``, a
``SEQUENCE OF SEQUENCE OF AttributeCertificate``. Each AC holds the attribute
``1.3.6.1.4.1.8005.100.100.4`` (IetfAttrSyntax: ``policyAuthority`` = ``vo://host:port``, values =
FQAN octet strings) and, in its extension ``1.3.6.1.4.1.8005.100.100.10``, the certificate(s) of
the VOMS server that signed it. Nothing in there is trustworthy by itself: anyone can make a
proxy with any AC (``voms-proxy-fake`` does exactly that, and ``voms-proxy-info`` displays forged
attributes without complaint). An AC's FQANs are used only when *all* of these hold:

1. the AC signature verifies with the embedded VOMS server certificate;
2. that certificate verifies against the trusted CA directory (signature, validity, not a CA);
3. the VOMS certificate's DN and its issuer's DN match ``vomsdir/<vo>/<host>.lsc`` (VO and host
   taken from ``policyAuthority``), and the AC issuer names that certificate;
4. the AC is inside its validity window;
5. the AC holder (``baseCertificateID``: serial + DN) is the caller's end-entity certificate;
6. every FQAN belongs to the AC's VO (a VOMS server for ``mdm`` cannot assert ``/other/...``).

Not checked yet: AC targeting (2.5.29.55) and AC revocation (VOMS ACs use ``noRevAvail``).
FQANs are normalised (``Role=NULL``/``Capability=NULL`` dropped) as ``mdm.acl`` expects.
Parsing uses asn1crypto's RFC 5755 definitions, never hand-made DER parsing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mdm.acl import normalize_fqan
from mdm.errors import CredentialError, UsageError
from mdm.pki.chain import TrustStore, is_proxy, verify_chain
from mdm.pki.names import dn_string

VOMS_AC_OID = "1.3.6.1.4.1.8005.100.100.5"
VOMS_FQAN_ATTR_OID = "1.3.6.1.4.1.8005.100.100.4"
VOMS_CERTS_OID = "1.3.6.1.4.1.8005.100.100.10"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class _ACs(core.SequenceOf):
    _child_spec = cms.AttributeCertificateV2


class _ACSeqs(core.SequenceOf):
    _child_spec = _ACs


class _Certs(core.SequenceOf):
    _child_spec = asn1_x509.Certificate


class _CertSeqs(core.SequenceOf):
    _child_spec = _Certs


@dataclass(frozen=True)
class VomsAttributes:
    """What one verified AC says: the VO, its server, the FQANs, and the validity window."""

    vo: str
    uri: str  # host:port of the VOMS server, from policyAuthority
    server_dn: str
    fqans: tuple[str, ...]
    not_before: datetime
    not_after: datetime


def find_acs(chain: Sequence[x509.Certificate]) -> list[cms.AttributeCertificateV2]:
    """The ACs of the first proxy (from the leaf) that carries the VOMS extension."""
    for cert in chain:
        if not is_proxy(cert):
            break
        for ext in cert.extensions:
            if ext.oid.dotted_string == VOMS_AC_OID and isinstance(
                ext.value, x509.UnrecognizedExtension
            ):
                der = ext.value.value
                try:
                    seqs = _ACSeqs.load(der)
                    return [ac for seq in seqs for ac in seq]
                except ValueError as exc:
                    raise CredentialError(
                        "malformed VOMS extension", reason=f"malformed VOMS AC: {exc}"
                    ) from exc
    return []


def _fail(reason: str) -> CredentialError:
    return CredentialError(f"VOMS attributes rejected: {reason}", reason=reason)


def _fqan_attribute(info: cms.AttributeCertificateInfoV2) -> tuple[str, list[str]]:
    for attr in info["attributes"]:
        if attr["type"].dotted != VOMS_FQAN_ATTR_OID:
            continue
        for value in attr["values"]:
            ietf = cms.IetfAttrSyntax.load(value.dump())
            authority = [str(g.native) for g in (ietf["policy_authority"] or [])]
            fqans = []
            for v in ietf["values"]:
                native = v.native
                fqans.append(native.decode("utf-8") if isinstance(native, bytes) else str(native))
            return (authority[0] if authority else ""), fqans
    raise _fail("AC carries no VOMS FQAN attribute")


def _signer_certs(info: cms.AttributeCertificateInfoV2) -> list[x509.Certificate]:
    for ext in info["extensions"] or []:
        if ext["extn_id"].dotted == VOMS_CERTS_OID:
            try:
                seqs = _CertSeqs.load(ext["extn_value"].contents)
                ders = [c.dump() for seq in seqs for c in seq]
                return [x509.load_der_x509_certificate(d) for d in ders]
            except ValueError as exc:
                raise _fail(f"malformed VOMS signer certificate: {exc}") from exc
    raise _fail("AC does not embed its VOMS server certificate (extension 100.100.10)")


def _verify_signature(ac: cms.AttributeCertificateV2, signer: x509.Certificate) -> None:
    algo = ac["signature_algorithm"]
    tbs = ac["ac_info"].dump()
    sig = ac["signature"].native
    try:
        hash_cls = _HASHES[algo.hash_algo]
        key = signer.public_key()
        if algo.signature_algo == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, tbs, padding.PKCS1v15(), hash_cls())
        elif algo.signature_algo == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, tbs, ec.ECDSA(hash_cls()))
        else:
            raise _fail(f"unsupported AC signature algorithm {algo['algorithm'].native}")
    except (KeyError, ValueError) as exc:
        raise _fail(f"unsupported AC signature algorithm: {exc}") from exc
    except InvalidSignature as exc:
        raise _fail("AC signature does not verify with the VOMS server certificate") from exc


def read_lsc(vomsdir: Path, vo: str, host: str) -> list[list[str]]:
    """The DN chains of ``vomsdir/<vo>/<host>.lsc`` (several separated by ``-`` lines)."""
    if not _NAME_RE.fullmatch(vo) or not _NAME_RE.fullmatch(host):
        raise _fail(f"VO {vo!r} or VOMS host {host!r} is not a plain name")
    path = vomsdir / vo / f"{host}.lsc"
    try:
        text = path.read_text()
    except OSError as exc:
        raise _fail(f"unknown VO or VOMS server: no {vo}/{host}.lsc in {vomsdir}") from exc
    chains: list[list[str]] = [[]]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            chains.append([])
        else:
            chains[-1].append(line)
    return [c for c in chains if c]


def verify_ac(
    ac: cms.AttributeCertificateV2,
    eec: x509.Certificate,
    trust: TrustStore,
    vomsdir: Path,
    now: datetime,
) -> VomsAttributes:
    """Verify one AC for the holder *eec* (steps 1-6 of the module docstring)."""
    info = ac["ac_info"]
    authority, raw_fqans = _fqan_attribute(info)
    vo, sep, uri = authority.partition("://")
    if not sep or not vo:
        raise _fail(f"AC policyAuthority {authority!r} is not vo://host:port")
    host = uri.rsplit(":", 1)[0] if ":" in uri else uri
    signers = _signer_certs(info)
    try:
        chain = verify_chain(signers, trust, now)
    except CredentialError as exc:
        reason = exc.context.get("reason", exc.message)
        raise _fail(f"VOMS server certificate not trusted ({reason})") from exc
    signer = chain.eec
    _verify_signature(ac, signer)
    issuer = info["issuer"]
    issuer_names = issuer.chosen["issuer_name"] if issuer.name == "v2_form" else issuer.chosen
    signer_name = asn1_x509.Name.load(signer.subject.public_bytes())
    if not any(g.name == "directory_name" and g.chosen == signer_name for g in issuer_names):
        raise _fail("AC issuer is not the embedded VOMS server certificate")
    lsc_chains = read_lsc(vomsdir, vo, host)
    path = [dn_string(signer.subject), dn_string(signer.issuer)]
    if not any(c[:2] == path for c in lsc_chains):
        raise _fail(f"VOMS server {path[0]} (issuer {path[1]}) does not match {vo}/{host}.lsc")
    validity = info["att_cert_validity_period"]
    not_before = validity["not_before_time"].native
    not_after = validity["not_after_time"].native
    if not not_before <= now <= not_after:
        raise _fail(
            f"AC expired or not yet valid (valid {not_before:%Y-%m-%d %H:%M:%S}Z to "
            f"{not_after:%Y-%m-%d %H:%M:%S}Z)"
        )
    holder = info["holder"]["base_certificate_id"]
    if holder.native is None:
        raise _fail("AC holder has no baseCertificateID")
    # RFC 5755 names the holder PKC by issuer + serial; VOMS itself writes the holder's
    # *subject* there, and its own validator accepts either. So do we: the serial must match,
    # and the name must be the EEC's issuer or subject.
    eec_names = [asn1_x509.Name.load(n.public_bytes()) for n in (eec.issuer, eec.subject)]
    if holder["serial"].native != eec.serial_number or not any(
        g.name == "directory_name" and g.chosen in eec_names for g in holder["issuer"]
    ):
        raise _fail("AC holder is not the presented end-entity certificate")
    fqans: list[str] = []
    for raw in raw_fqans:
        try:
            fqan = normalize_fqan(raw)
        except UsageError as exc:
            raise _fail(f"malformed FQAN {raw!r}") from exc
        if fqan.split("/")[1] != vo:
            raise _fail(f"FQAN {fqan} is outside the AC's VO {vo}")
        if fqan not in fqans:
            fqans.append(fqan)
    return VomsAttributes(vo, uri, path[0], tuple(fqans), not_before, not_after)


def voms_attributes(
    chain: Sequence[x509.Certificate],
    eec: x509.Certificate,
    trust: TrustStore,
    vomsdir: Path | None,
    now: datetime,
) -> list[VomsAttributes]:
    """Every AC in *chain*, verified; the first failure raises ``CredentialError``.

    An empty list means the proxy carries no AC (a plain proxy or a bare certificate).
    """
    acs = find_acs(chain)
    if not acs:
        return []
    if vomsdir is None:
        raise _fail("the server has no vomsdir configured to verify VOMS attributes")
    return [verify_ac(ac, eec, trust, Path(vomsdir), now) for ac in acs]


__all__ = [
    "VOMS_AC_OID",
    "VOMS_CERTS_OID",
    "VOMS_FQAN_ATTR_OID",
    "VomsAttributes",
    "find_acs",
    "read_lsc",
    "verify_ac",
    "voms_attributes",
]
