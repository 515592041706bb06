"""A test/demo PKI made with ``cryptography``'s builders: CA, host, user and VOMS certificates.

The layout under a directory ``DIR`` mirrors a grid site, so real grid tools (gfal2, davix,
voms-proxy-fake) accept it as it is::

    DIR/ca/ca.pem, ca/ca.key                the CA (key 0600)
    DIR/certificates/                       IGTF-style trust dir (X509_CERT_DIR):
        mdm-test-ca.pem, <hash>.0 -> mdm-test-ca.pem,
        mdm-test-ca.signing_policy, <hash>.signing_policy, .namespaces likewise
    DIR/hosts/<name>.pem, <name>.key         host certificates (SAN DNS + IP, server+client auth)
    DIR/users/<slug>.pem, <slug>.key         user certificates
    DIR/voms/<host>.pem, <host>.key          VOMS server certificates (with SubjectKeyIdentifier,
                                            which voms-proxy-fake needs)
    DIR/vomsdir/<vo>/<host>.lsc              the VOMS server's DN and its CA's DN

This is for tests and the demo only: keys are unencrypted (0600) and lifetimes generous. A
production site uses certificates from its IGTF CA and ``/etc/grid-security``.

``make_proxy`` writes a plain RFC 3820 proxy (no VOMS AC) without external tools; VOMS proxies
are made by ``voms-proxy-fake`` (Debian ``voms-clients``), which tests call for real.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mdm.errors import UsageError
from mdm.pki.chain import (
    INHERIT_ALL_OID,
    PROXY_CERT_INFO_OID,
    ProxyCertInfo,
    load_pem_certificates,
)
from mdm.pki.names import dn_string, parse_dn, subject_hash

DEFAULT_CA_DN = "/DC=org/DC=mdmtest/CN=MDM Test CA"

_SKEW = timedelta(hours=1)  # back-date so a client with a slightly late clock accepts at once


@dataclass(frozen=True)
class Credential:
    """A certificate and key file pair, and the certificate's DN in slash form."""

    cert: Path
    key: Path
    dn: str


#: End-entity certificates and proxies: sign (TLS, and OpenSSL requires it of a certificate that
#: signs proxies) and key exchange; never certificate or CRL signing.
_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def write_private(path: Path, data: bytes) -> None:
    """Write *data* to *path* readable by the owner only (0600 from creation, no window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # what older grid tools read best
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")
    if not slug:
        raise UsageError(f"cannot make a file name from {text!r}")
    return slug


def install_ca(ca_cert: x509.Certificate, trust_dir: Path, alias: str) -> Path:
    """Add *ca_cert* to an IGTF-style *trust_dir*; returns the ``<hash>.<n>`` link.

    Writes ``<alias>.pem`` and ``.signing_policy``/``.namespaces`` (GSI tools want them;
    ``.signing_policy`` allows the CA to sign below its own DN minus the last RDN), and
    ``<hash>.*`` symlinks, which is what OpenSSL's ``capath`` looks up.
    """
    trust_dir.mkdir(parents=True, exist_ok=True)
    dn = dn_string(ca_cert.subject)
    base = dn.rsplit("/", 1)[0] or dn
    files = {
        ".pem": _cert_pem(ca_cert),
        ".signing_policy": (
            f"access_id_CA      X509         '{dn}'\n"
            "pos_rights        globus       CA:sign\n"
            f"cond_subjects     globus       '\"{base}/*\"'\n"
        ).encode(),
        ".namespaces": (f'TO Issuer "{dn}" \\\n  PERMIT Subject "{re.escape(base)}/.*"\n').encode(),
    }
    hashed = subject_hash(ca_cert.subject)
    # Two CAs may share a hash: OpenSSL then tries <hash>.0, <hash>.1, ... in turn.
    index = 0
    while (trust_dir / f"{hashed}.{index}").is_symlink() or (
        trust_dir / f"{hashed}.{index}"
    ).exists():
        if os.readlink(trust_dir / f"{hashed}.{index}") == f"{alias}.pem":
            break
        index += 1
    for suffix, content in files.items():
        (trust_dir / f"{alias}{suffix}").write_bytes(content)
        link = trust_dir / (f"{hashed}.{index}" if suffix == ".pem" else f"{hashed}{suffix}")
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(f"{alias}{suffix}")
    return trust_dir / f"{hashed}.{index}"


def self_signed(
    dn: str, *, days: int = 365, key_size: int = 2048
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed end-entity certificate (tests use it as an impostor client)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = parse_dn(dn)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


class CertificateAuthority:
    """A CA kept under ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: Path, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        self.root = Path(root)
        self.cert = cert
        self._key = key

    # -- creation and loading ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        *,
        dn: str = DEFAULT_CA_DN,
        days: int = 3650,
        key_size: int = 2048,
    ) -> CertificateAuthority:
        """Make a new CA under *root* and its trust directory; refuses to overwrite one."""
        root = Path(root)
        if (root / "ca" / "ca.pem").exists():
            raise UsageError(f"{root} already holds a CA ({root / 'ca' / 'ca.pem'})")
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        name = parse_dn(dn)
        now = datetime.now(UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(root / "ca" / "ca.key", _key_pem(key))
        (root / "ca" / "ca.pem").write_bytes(_cert_pem(cert))
        ca = cls(root, cert, key)
        install_ca(cert, ca.trust_dir, _slug(dn.rsplit("=", 1)[-1]))
        ca.vomsdir.mkdir(parents=True, exist_ok=True)
        return ca

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> CertificateAuthority:
        root = Path(root)
        try:
            cert = load_pem_certificates((root / "ca" / "ca.pem").read_bytes())[0]
            key = serialization.load_pem_private_key((root / "ca" / "ca.key").read_bytes(), None)
        except FileNotFoundError as exc:
            raise UsageError(f"no CA under {root}: run `mdm pki init {root}` first") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise UsageError(f"{root / 'ca' / 'ca.key'} is not an RSA key")
        return cls(root, cert, key)

    @property
    def dn(self) -> str:
        return dn_string(self.cert.subject)

    @property
    def cert_path(self) -> Path:
        return self.root / "ca" / "ca.pem"

    @property
    def trust_dir(self) -> Path:
        """The ``certificates/`` directory (use as ``ca_dir`` / ``X509_CERT_DIR``)."""
        return self.root / "certificates"

    @property
    def vomsdir(self) -> Path:
        """The ``vomsdir/`` directory (use as ``vomsdir`` / ``X509_VOMS_DIR``)."""
        return self.root / "vomsdir"

    def _base_dn(self) -> str:
        # Subjects live under the CA's namespace: its DN minus the final (CN) RDN.
        return self.dn.rsplit("/", 1)[0]

    # -- issuing -------------------------------------------------------------------------------
    def issue(
        self,
        subject_dn: str,
        out: Path,
        *,
        days: int = 395,
        san: list[x509.GeneralName] | None = None,
        usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        key_size: int = 2048,
    ) -> Credential:
        """Issue an end-entity certificate; writes ``out.pem`` and ``out.key`` (0600)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(parse_dn(subject_dn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(min(now + timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _LEAF_KEY_USAGE,
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path, key_path = out.parent / f"{out.name}.pem", out.parent / f"{out.name}.key"
        write_private(key_path, _key_pem(key))
        cert_path.write_bytes(_cert_pem(cert))
        return Credential(cert_path, key_path, dn_string(cert.subject))

    def issue_host(
        self, name: str = "localhost", *, ips: tuple[str, ...] = ("127.0.0.1",), days: int = 395
    ) -> Credential:
        """A host certificate: ``CN=<name>``, SAN DNS:<name> + IPs, serverAuth + clientAuth."""
        san: list[x509.GeneralName] = [x509.DNSName(name)]
        san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        return self.issue(
            f"{self._base_dn()}/CN={name}",
            self.root / "hosts" / _slug(name),
            days=days,
            san=san,
            usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        )

    def issue_user(self, cn: str, *, o: str | None = None, days: int = 395) -> Credential:
        """A user certificate ``<CA base>[/O=o]/CN=cn``.

        With the default CA: ``/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor``.
        """
        if "/" in cn or (o and "/" in o):
            raise UsageError("CN and O may not contain '/' (grid DNs are written with slashes)")
        dn = self._base_dn() + (f"/O={o}" if o else "") + f"/CN={cn}"
        return self.issue(dn, self.root / "users" / _slug(cn), days=days)

    def issue_voms(self, vo: str, host: str, *, days: int = 395) -> Credential:
        """A VOMS server certificate for *host* and ``vomsdir/<vo>/<host>.lsc`` trusting it."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", vo) or not re.fullmatch(
            r"[A-Za-z0-9][A-Za-z0-9.-]*", host
        ):
            raise UsageError(f"bad VO or host name: {vo!r}, {host!r}")
        cred = self.issue(
            f"{self._base_dn()}/CN={host}",
            self.root / "voms" / _slug(host),
            days=days,
            san=[x509.DNSName(host)],
            usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        )
        lsc = self.vomsdir / vo / f"{host}.lsc"
        lsc.parent.mkdir(parents=True, exist_ok=True)
        lsc.write_text(f"{cred.dn}\n{self.dn}\n")
        return cred


def make_proxy(
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    hours: float = 12,
    key_size: int = 2048,
) -> Path:
    """Write a plain RFC 3820 proxy (inheritAll, no VOMS AC) signed by *cert*/*key*.

    The file holds the proxy certificate, its key, then the issuer's certificate(s), as
    ``voms-proxy-init -rfc`` writes it; mode 0600. The proxy never outlives its issuer.
    """
    issuer_certs = load_pem_certificates(Path(cert).read_bytes())
    issuer = issuer_certs[0]
    issuer_key = serialization.load_pem_private_key(Path(key).read_bytes(), None)
    if not isinstance(issuer_key, rsa.RSAPrivateKey):
        raise UsageError(f"{key} is not an RSA private key")
    proxy_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    serial = x509.random_serial_number() >> 96  # short serial, also the proxy's CN (as GSI does)
    now = datetime.now(UTC)
    info = ProxyCertInfo({"proxy_policy": {"policy_language": INHERIT_ALL_OID}}).dump()
    subject = x509.Name(
        [
            *issuer.subject.rdns,
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, str(serial))]),
        ]
    )
    proxy = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(proxy_key.public_key())
        .serial_number(serial)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(hours=hours), issuer.not_valid_after_utc))
        .add_extension(
            _LEAF_KEY_USAGE,
            critical=True,
        )
        .add_extension(x509.UnrecognizedExtension(PROXY_CERT_INFO_OID, info), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )
    out_path = Path(out)
    write_private(
        out_path,
        _cert_pem(proxy) + _key_pem(proxy_key) + b"".join(_cert_pem(c) for c in issuer_certs),
    )
    return out_path


__all__ = [
    "DEFAULT_CA_DN",
    "CertificateAuthority",
    "Credential",
    "install_ca",
    "make_proxy",
    "self_signed",
    "write_private",
]
