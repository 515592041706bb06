"""A small PKI made in-process (no external tools): CA, host, users, a Python-made proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdm.pki.ca import CertificateAuthority, Credential, make_proxy


class SmallPki:
    def __init__(self, root: Path) -> None:
        self.ca = CertificateAuthority.create(root / "ca")
        self.host = self.ca.issue_host("localhost")
        self.alice = self.ca.issue_user("Alice Doctor", o="Hospital")
        self.voms = self.ca.issue_voms("mdm", "voms.localhost")
        self.proxy = make_proxy(self.alice.cert, self.alice.key, root / "proxy.pem", hours=2)
        self.proxy2 = make_proxy(self.proxy, self.proxy, root / "proxy2.pem", hours=1)
        self.rogue = CertificateAuthority.create(root / "rogue", dn="/DC=org/DC=rogue/CN=Rogue CA")
        self.mallory: Credential = self.rogue.issue_user("Mallory")


@pytest.fixture(scope="package")
def small_pki(tmp_path_factory: pytest.TempPathFactory) -> SmallPki:
    return SmallPki(tmp_path_factory.mktemp("pki"))
