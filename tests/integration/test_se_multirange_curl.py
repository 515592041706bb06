"""Debian curl asks the SE for two ranges at once (``curl -r 0-99,1000-1099``) over real mTLS.

curl presents Alice's VOMS proxy (certificate chain and key in one PEM, as grid tools do), sends
``Range: bytes=0-99,1000-1099`` and writes the raw ``multipart/byteranges`` body, which is read
here by its own framing (the part headers, then exactly ``Content-Range`` bytes).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.multipart import byteranges
from tests.helpers.tools import require_tool
from tests.integration.se_site import FILE_A, SeSite, se_site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeSite]:
    require_tool("curl", package="curl")
    with se_site(tmp_path_factory.mktemp("se-curl")) as s:
        yield s


def curl(site: SeSite, *args: str) -> subprocess.CompletedProcess[bytes]:
    proxy = str(site.proxies["voms"])
    return subprocess.run(
        [
            require_tool("curl", package="curl"),
            "--silent",
            "--show-error",
            "--cert",
            proxy,
            "--key",
            proxy,
            "--capath",
            str(site.pki.ca_dir),
            *args,
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_curl_two_ranges_get_a_multipart_answer(site: SeSite, tmp_path: Path) -> None:
    who = site.identity("voms")
    rid = site.backend.stage(who, [FILE_A])
    site.backend.recall_once()  # the recall thread may have done it already: either way, done
    assert site.backend.poll(who, rid).completed_at is not None

    body, head = tmp_path / "body", tmp_path / "head"
    url = site.url(FILE_A, "https")
    run = curl(site, "-r", "0-99,1000-1099", "-D", str(head), "-o", str(body), url)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    lines = head.read_bytes().decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 206 Partial Content"
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    headers = {k.lower(): v for k, v in headers.items()}
    raw = body.read_bytes()
    assert int(headers["content-length"]) == len(raw)
    data = site.data[FILE_A]
    parts = byteranges(raw, headers["content-type"], len(data))
    assert parts == [(0, 99, data[:100]), (1000, 1099, data[1000:1100])]

    # one range is a plain 206, as before
    run = curl(site, "-r", "1000-1099", url)
    assert (run.returncode, run.stdout) == (0, data[1000:1100])
