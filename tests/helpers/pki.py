"""A complete test PKI in a directory, with proxies made by the REAL ``voms-proxy-fake``.

``build_test_pki(root)`` makes, with ``mdm.pki.ca`` (cryptography builders, no openssl CLI):

* the trusted CA ``/DC=org/DC=mdmtest/CN=MDM Test CA``, its ``certificates/`` trust dir and
  ``vomsdir/mdm/voms.localhost.lsc``;
* a host certificate for localhost (+127.0.0.1), users Alice (O=Hospital) and Bob;
* the VOMS server certificate ``CN=voms.localhost`` for VO ``mdm``;
* a *rogue* CA (not trusted) with its own user and its own ``voms.localhost`` certificate, an
  "evil" VOMS certificate issued by the trusted CA but absent from the ``.lsc``, and a
  self-signed impostor certificate carrying Alice's DN;

and with ``voms-proxy-fake`` (Debian voms-clients) the proxies in ``proxies``:

========== =============================================================================
plain      RFC 3820 proxy, no AC
voms       AC for VO mdm: /mdm, /mdm/radiology/Role=physician, /mdm/cardio
rogue_voms AC signed by a VOMS certificate of the untrusted CA (asserts /mdm/Role=admin)
evil_voms  AC signed by a trusted-CA certificate that is not in the vomsdir .lsc
expired_ac AC valid from 3 h ago for 1 h (``-vomslife 1 -pastac 3:00``)
unknown_vo AC for VO ``othervo``, which has no vomsdir entry
untrusted  plain proxy of a user of the untrusted CA
========== =============================================================================

plus ``plain_py``, a plain proxy made by ``mdm.pki.ca.make_proxy``. It takes seconds to build:
fixtures use ``shared_test_pki(tmp_path_factory)``, which builds it once per session.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mdm.pki.ca import CertificateAuthority, Credential, make_proxy, self_signed, write_private
from mdm.settings import TlsSettings
from tests.helpers.tools import require_tool

ALICE_DN = "/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor"
VOMS_FQANS = ("/mdm", "/mdm/radiology/Role=physician", "/mdm/cardio")


@dataclass(frozen=True)
class PkiFiles:
    """Paths of everything ``build_test_pki`` made (see the module docstring)."""

    root: Path
    ca: CertificateAuthority
    host: Credential
    alice: Credential
    bob: Credential
    voms: Credential
    rogue_user: Credential
    self_signed: Credential
    proxies: dict[str, Path] = field(default_factory=dict)

    @property
    def ca_dir(self) -> Path:
        return self.ca.trust_dir

    @property
    def vomsdir(self) -> Path:
        return self.ca.vomsdir

    def server_tls(self) -> TlsSettings:
        """Settings for a server on localhost/127.0.0.1 trusting the test CA and VO mdm."""
        return TlsSettings(
            cert=self.host.cert, key=self.host.key, ca_dir=self.ca_dir, vomsdir=self.vomsdir
        )


def voms_proxy_fake(
    tool: str,
    cert: Credential,
    out: Path,
    certdir: Path,
    *extra: str,
    voms: Credential | None = None,
    vo: str = "mdm",
    uri: str = "voms.localhost:15000",
    fqans: tuple[str, ...] = (),
) -> Path:
    """Run ``voms-proxy-fake`` for real; with *voms*, the proxy carries an AC signed by it."""
    cmd = [tool, "-cert", str(cert.cert), "-key", str(cert.key), "-certdir", str(certdir)]
    cmd += ["-rfc", "-hours", "48", "-out", str(out), *extra]
    if voms is not None:
        cmd += ["-hostcert", str(voms.cert), "-hostkey", str(voms.key), "-voms", vo, "-uri", uri]
        for fqan in fqans:
            cmd += ["-fqan", fqan]
    env = {**os.environ, "RANDFILE": str(out.parent / ".rnd")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"voms-proxy-fake failed ({proc.returncode}): {proc.stderr.strip()}")
    return out


def build_test_pki(root: Path) -> PkiFiles:
    """Make the whole test PKI under *root* (see the module docstring)."""
    tool = require_tool("voms-proxy-fake", package="voms-clients")
    ca = CertificateAuthority.create(root / "trusted")
    host = ca.issue_host("localhost")
    alice = ca.issue_user("Alice Doctor", o="Hospital")
    bob = ca.issue_user("Bob Nurse", o="Hospital")
    voms = ca.issue_voms("mdm", "voms.localhost")
    # Issued by the trusted CA for the name voms.localhost, but it is not the certificate the
    # .lsc names: only the vomsdir decides who may speak for a VO.
    evil = ca.issue(f"{ca.dn.rsplit('/', 1)[0]}/CN=evil.localhost", ca.root / "voms" / "evil")

    rogue = CertificateAuthority.create(root / "rogue", dn="/DC=org/DC=rogue/CN=Rogue CA")
    rogue_user = rogue.issue_user("Mallory", o="Hospital")
    rogue_voms = rogue.issue_voms("mdm", "voms.localhost")

    cert, key = self_signed(ALICE_DN)
    ss_cert, ss_key = root / "self-signed.pem", root / "self-signed.key"
    ss_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(
        ss_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )

    out = root / "proxies"
    out.mkdir()
    certdir = ca.trust_dir
    proxies = {
        "plain": voms_proxy_fake(tool, alice, out / "plain.pem", certdir),
        "voms": voms_proxy_fake(
            tool, alice, out / "voms.pem", certdir, voms=voms, fqans=VOMS_FQANS
        ),
        "rogue_voms": voms_proxy_fake(
            tool,
            alice,
            out / "rogue_voms.pem",
            certdir,
            voms=rogue_voms,
            fqans=("/mdm/Role=admin",),
        ),
        "evil_voms": voms_proxy_fake(
            tool, alice, out / "evil_voms.pem", certdir, voms=evil, fqans=("/mdm/Role=admin",)
        ),
        "expired_ac": voms_proxy_fake(
            tool,
            alice,
            out / "expired_ac.pem",
            certdir,
            "-vomslife",
            "1",
            "-pastac",
            "3:00",
            voms=voms,
            fqans=("/mdm",),
        ),
        "unknown_vo": voms_proxy_fake(
            tool,
            alice,
            out / "unknown_vo.pem",
            certdir,
            voms=voms,
            vo="othervo",
            fqans=("/othervo",),
        ),
        "untrusted": voms_proxy_fake(tool, rogue_user, out / "untrusted.pem", rogue.trust_dir),
        "plain_py": make_proxy(alice.cert, alice.key, out / "plain_py.pem"),
    }
    return PkiFiles(
        root=root,
        ca=ca,
        host=host,
        alice=alice,
        bob=bob,
        voms=voms,
        rogue_user=rogue_user,
        self_signed=Credential(ss_cert, ss_key, ALICE_DN),
        proxies=proxies,
    )


_SHARED: dict[Path, PkiFiles] = {}


def shared_test_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    """One ``build_test_pki`` per test session (it costs seconds on a busy machine).

    Tests must treat it as read-only and write their own files under ``tmp_path``.
    """
    base = tmp_path_factory.getbasetemp()
    if base not in _SHARED:
        _SHARED[base] = build_test_pki(tmp_path_factory.mktemp("test-pki"))
    return _SHARED[base]
