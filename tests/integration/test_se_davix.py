"""The real davix CLI (davix-ls, davix-get, davix-http with ``-P grid``) against the SE.

davix reads ``X509_USER_PROXY``/``X509_CERT_DIR`` only with the grid profile (``-P grid``);
it pops the first PROPFIND response as the collection itself and drops any entry whose
``<propstat>`` has no ``<d:status>``, so a listing that works here has the right shape.
"""

from __future__ import annotations

import re
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.tools import require_tool
from tests.integration.se_site import FILE_A, FILE_B, SERIES, Run, SeSite, se_site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeSite]:
    require_tool("davix-get", package="davix")
    with se_site(tmp_path_factory.mktemp("se-davix")) as s:
        yield s


def davix(site: SeSite, who: str, tool: str, *args: str) -> Run:
    exe = require_tool(tool, package="davix")
    proc = subprocess.run(
        [exe, "-P", "grid", "--retry", "0", *args],
        env=site.env(who),
        capture_output=True,
        timeout=60,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))


def staged(site: SeSite, lfn: str) -> None:
    """Stage through the backend directly (the Tape REST path is the gfal2 test's business)."""
    who = site.identity("voms")
    rid = site.backend.stage(who, [lfn])
    site.backend.recall_once()  # the recall thread may have done it already: either way, done
    assert site.backend.poll(who, rid).completed_at is not None


def test_listing(site: SeSite) -> None:
    run = davix(site, "voms", "davix-ls", "-l", site.url(SERIES + "/", "https"))
    assert run.code == 0, run.text
    rows = [line.split() for line in run.out.decode().splitlines()]
    assert [(r[2], r[-1]) for r in rows] == [
        (str(len(site.data[FILE_A])), "2.25.30111"),
        (str(len(site.data[FILE_B])), "2.25.30112"),
    ]


def test_get_refuses_nearline_then_serves_the_exact_bytes(site: SeSite, tmp_path: Path) -> None:
    dest = tmp_path / "b.bin"
    url = site.url(FILE_B, "https")
    run = davix(site, "voms", "davix-get", url, str(dest))
    assert run.code != 0
    assert "503" in run.text, run.text
    assert not dest.exists() or dest.read_bytes() == b"", "no partial or wrong body"
    staged(site, FILE_B)
    run = davix(site, "voms", "davix-get", url, str(dest))
    assert run.code == 0, run.text
    assert dest.read_bytes() == site.data[FILE_B]


def test_head_with_want_digest(site: SeSite) -> None:
    staged(site, FILE_B)
    url = site.url(FILE_B, "https")
    run = davix(
        site,
        "voms",
        "davix-http",
        "-X",
        "HEAD",
        "-H",
        "Want-Digest: adler32",
        "--trace",
        "header",
        url,
    )
    assert run.code == 0, run.text
    digest = re.search(r"(?i)^< digest: adler32=([0-9a-f]{8})$", run.text, re.MULTILINE)
    assert digest is not None, run.text
    assert digest.group(1) == f"{zlib.adler32(site.data[FILE_B]):08x}"


@pytest.mark.parametrize("tool", ["davix-ls", "davix-get"])
def test_a_caller_without_rights_gets_403(site: SeSite, tool: str, tmp_path: Path) -> None:
    args = (
        [site.url(SERIES + "/", "https")]
        if tool == "davix-ls"
        else [
            site.url(FILE_B, "https"),
            str(tmp_path / "x"),
        ]
    )
    run = davix(site, "plain", tool, *args)
    assert run.code != 0
    assert "403" in run.text, run.text
