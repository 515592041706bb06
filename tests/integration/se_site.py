"""A storage element over real mutual TLS, for tests with the real gfal2 and davix clients.

``se_site(root)`` builds the test PKI (real ``voms-proxy-fake`` proxies), an archive of
DICOM-like LFNs, a ``PosixNearline`` with its recall thread, and serves ``create_app`` through
``mdm.servers.run`` (the same uvicorn + identity protocol ``mdm serve se`` uses). Grants:

* VO group ``/mdm/radiology`` (Alice's VOMS proxy) may list and read ``/dicom``;
* Bob, with a VOMS proxy holding only ``/mdm``, may list but not read;
* Alice's plain proxy (no VOMS attributes) may do nothing at all.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mdm.acl import Identity
from mdm.pki.tls import identity_from_file
from mdm.servers.run import ServerThread
from mdm.servers.se_app import create_app
from mdm.settings import Settings
from mdm.storage import Grants, PosixNearline
from tests.helpers.pki import PkiFiles, build_test_pki, voms_proxy_fake
from tests.helpers.tools import require_tool

SERIES = "/dicom/2.25.301/2.25.3011"
FILE_A = f"{SERIES}/2.25.30111"  # 300 000 random base64 characters (gfal-cat needs text)
FILE_B = f"{SERIES}/2.25.30112"  # 4 096 random bytes
GFAL_PY = "/usr/bin/python3"
_SHELL = (
    "import sys; from gfal2_util.shell import Gfal2Shell; sys.exit(Gfal2Shell().main(sys.argv[1:]))"
)


@dataclass
class SeSite:
    pki: PkiFiles
    data: dict[str, bytes]
    backend: PosixNearline
    server: ServerThread
    proxies: dict[str, Path]

    def url(self, lfn: str, scheme: str = "davs") -> str:
        return f"{scheme}://localhost:{self.server.port}{lfn}"

    def identity(self, who: str) -> Identity:
        """The Identity the server computes for *who*'s proxy."""
        return identity_from_file(self.proxies[who], self.pki.ca_dir, self.pki.vomsdir)

    def env(self, who: str) -> dict[str, str]:
        """Client environment presenting *who*'s proxy ("voms", "plain" or "bob")."""
        return {
            **os.environ,
            "X509_USER_PROXY": str(self.proxies[who]),
            "X509_CERT_DIR": str(self.pki.ca_dir),
            "GFAL_PYTHONBIN": GFAL_PY,
        }


@dataclass
class Run:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace") + self.err


def require_gfal2() -> str:
    """The system Python with the gfal2 bindings and gfal2-util (skip locally, fail in CI)."""
    py = require_tool(GFAL_PY, package="python3")
    probe = subprocess.run([py, "-c", "import gfal2, gfal2_util.shell"], capture_output=True)
    if probe.returncode != 0:  # not a binary, but the same skip-or-fail policy applies
        require_tool("gfal2-python-bindings", package="python3-gfal2 python3-gfal2-util")
    return py


def gfal(site: SeSite, who: str, command: str, *args: str, timeout: float = 60) -> Run:
    """Run a gfal-* command exactly as its /usr/bin wrapper does (gfal2_util.shell)."""
    proc = subprocess.run(
        [GFAL_PY, "-c", _SHELL, command, *args],
        env=site.env(who),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))


@contextlib.contextmanager
def se_site(root: Path) -> Iterator[SeSite]:
    pki = build_test_pki(root / "pki")
    tool = require_tool("voms-proxy-fake", package="voms-clients")
    bob = voms_proxy_fake(
        tool, pki.bob, root / "pki" / "bob.pem", pki.ca_dir, voms=pki.voms, fqans=("/mdm",)
    )
    # gfal-cat of gfal2-util 1.8.0 decodes what it reads as UTF-8, so the file it downloads
    # is ASCII; FILE_B is binary and read through the python3-gfal2 byte API.
    data = {FILE_A: base64.b64encode(os.urandom(225_000)), FILE_B: os.urandom(4096)}
    for lfn, content in data.items():
        path = root / "archive" / lfn.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    grants = Grants.from_mapping(
        {"/dicom": {"list": ["fqan:/mdm"], "read": ["fqan:/mdm/radiology"]}}
    )
    backend = PosixNearline(root / "archive", root / "cache", grants, retry_after=5).start()
    settings = Settings.from_mapping({"storage": {"name": "mdm-it"}})
    try:
        with ServerThread(create_app(backend, settings), tls=pki.server_tls()) as server:
            proxies = {"voms": pki.proxies["voms"], "plain": pki.proxies["plain"], "bob": bob}
            yield SeSite(pki, data, backend, server, proxies)
    finally:
        backend.stop()
