"""The real gfal2 (gfal2-util CLI and python3-gfal2) against the SE over mutual TLS + VOMS.

The life of a nearline file as a grid user sees it: NEARLINE -> bringonline -> ONLINE ->
download -> checksum matches -> evict -> NEARLINE -> stage again -> identical checksum; and a
caller without the ``read`` right refused (403) by every operation.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.tools import require_tool
from tests.integration.se_site import (
    FILE_A,
    FILE_B,
    GFAL_PY,
    SERIES,
    SeSite,
    gfal,
    require_gfal2,
    se_site,
)

FILE_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/gfal2-plugins/libgfal_plugin_file.so")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeSite]:
    require_gfal2()
    with se_site(tmp_path_factory.mktemp("se-gfal2")) as s:
        yield s


def adler32(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


def status(site: SeSite, lfn: str) -> str:
    run = gfal(site, "voms", "gfal-xattr", site.url(lfn), "user.status")
    assert run.code == 0, run.text
    return run.out.decode().strip()


def test_nearline_to_online_and_back_with_identical_checksums(site: SeSite) -> None:
    url, data = site.url(FILE_A), site.data[FILE_A]
    assert status(site, FILE_A) == "NEARLINE"

    run = gfal(site, "voms", "gfal-cat", url)
    assert run.code != 0, "a NEARLINE file must not be served"
    assert "503" in run.text
    assert run.out == b"", "not one byte of a file that is not ONLINE"

    run = gfal(site, "voms", "gfal-bringonline", "--polling-timeout", "30", url)
    assert run.code == 0, run.text
    assert "READY" in run.text
    assert status(site, FILE_A) == "ONLINE_AND_NEARLINE"

    run = gfal(site, "voms", "gfal-stat", url)
    assert run.code == 0, run.text
    assert f"Size: {len(data)}\t" in run.text

    run = gfal(site, "voms", "gfal-cat", url)
    assert run.code == 0, run.text
    assert run.out == data

    run = gfal(site, "voms", "gfal-sum", url, "ADLER32")
    assert run.code == 0, run.text
    first = run.out.decode().split()[-1]
    assert first == adler32(data)

    run = gfal(site, "voms", "gfal-evict", url)
    assert run.code == 0, run.text
    assert status(site, FILE_A) == "NEARLINE"
    assert gfal(site, "voms", "gfal-cat", url).code != 0

    run = gfal(site, "voms", "gfal-bringonline", "--polling-timeout", "30", url)
    assert run.code == 0, run.text
    run = gfal(site, "voms", "gfal-sum", url, "ADLER32")
    assert run.out.decode().split()[-1] == first
    gfal(site, "voms", "gfal-evict", url)


def test_listing(site: SeSite) -> None:
    run = gfal(site, "voms", "gfal-ls", "-l", site.url(SERIES + "/"))
    assert run.code == 0, run.text
    lines = run.out.decode().splitlines()
    assert [line.split()[-1] for line in lines] == ["2.25.30111", "2.25.30112"]
    assert lines[0].split()[4] == str(len(site.data[FILE_A])), "the size is listed while NEARLINE"
    run = gfal(site, "voms", "gfal-ls", site.url("/dicom/"))
    assert run.out.decode().split() == ["2.25.301"]


def test_copy_to_a_local_file(site: SeSite, tmp_path: Path) -> None:
    if not FILE_PLUGIN.exists():  # gfal-copy to file:// needs gfal2's file plugin
        require_tool("gfal2-plugin-file", package="gfal2-plugin-file")
    url = site.url(FILE_B)
    gfal(site, "voms", "gfal-bringonline", "--polling-timeout", "30", url)
    dest = tmp_path / "copy.bin"
    run = gfal(site, "voms", "gfal-copy", "-f", "-K", "ADLER32", url, f"file://{dest}")
    assert run.code == 0, run.text
    assert dest.read_bytes() == site.data[FILE_B]
    gfal(site, "voms", "gfal-evict", url)


_PY_ROUNDTRIP = r"""
import json, sys, time, gfal2
url, = sys.argv[1:]
ctx = gfal2.creat_context()
out = {"before": ctx.getxattr(url, "user.status")}
status, token = ctx.bring_online(url, 3600, 60, True)
deadline = time.time() + 30
while ctx.bring_online_poll(url, token) == 0:
    if time.time() > deadline:
        raise SystemExit("staging did not complete")
    time.sleep(0.2)
out["staged"] = ctx.getxattr(url, "user.status")
f = ctx.open(url, "r")
out["pread"] = f.pread_bytes(100, 16).hex()
out["tail"] = f.pread_bytes(4090, 100).hex()
out["whole"] = ctx.open(url, "r").read_bytes(10000).hex()
out["release"] = ctx.release(url, token)
out["after"] = ctx.getxattr(url, "user.status")
print(json.dumps(out))
"""


_PY_ABORT = r"""
import json, sys, gfal2
url, = sys.argv[1:]
ctx = gfal2.creat_context()
out = {}
status, token = ctx.bring_online(url, 3600, 60, True)
out["abort"] = [str(e) if e else None for e in ctx.abort_bring_online([url], token)]
try:
    ctx.bring_online_poll(url, token)
    out["poll_after_abort"] = "no error"
except gfal2.GError as exc:
    out["poll_after_abort"] = exc.message
print(json.dumps(out))
"""


def python_gfal2(site: SeSite, script: str, url: str) -> dict[str, object]:
    proc = subprocess.run(
        [GFAL_PY, "-c", script, url],
        env=site.env("voms"),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_python_bindings_round_trip_with_ranges_and_cancel(site: SeSite) -> None:
    out = python_gfal2(site, _PY_ROUNDTRIP, site.url(FILE_B))
    data = site.data[FILE_B]
    assert out["before"] == "NEARLINE"
    assert out["staged"] == "ONLINE_AND_NEARLINE"
    assert bytes.fromhex(out["pread"]) == data[100:116]
    assert bytes.fromhex(out["tail"]) == data[4090:], "a read past EOF is clamped"
    assert bytes.fromhex(out["whole"]) == data
    assert out["after"] == "NEARLINE"

    site.backend.stop()  # hold recalls so that the cancel reaches a pending file
    try:
        out = python_gfal2(site, _PY_ABORT, site.url(FILE_B))
    finally:
        site.backend.start()
    assert out["abort"] == [None]
    assert "CANCELLED" in out["poll_after_abort"], "gfal2 2.21.3 only knows CANCELED: an error"


@pytest.mark.parametrize(
    ("who", "command", "args"),
    [
        ("plain", "gfal-ls", (SERIES + "/",)),
        ("plain", "gfal-stat", (FILE_B,)),
        ("plain", "gfal-xattr", (FILE_B, "user.status")),
        ("plain", "gfal-bringonline", (FILE_B,)),
        ("plain", "gfal-cat", (FILE_B,)),
        ("plain", "gfal-sum", (FILE_B, "ADLER32")),
        ("plain", "gfal-evict", (FILE_B,)),
        ("bob", "gfal-bringonline", (FILE_B,)),
        ("bob", "gfal-cat", (FILE_B,)),
        ("bob", "gfal-sum", (FILE_B, "ADLER32")),
        ("bob", "gfal-evict", (FILE_B,)),
    ],
)
def test_callers_without_read_are_refused_403(
    site: SeSite, who: str, command: str, args: tuple[str, ...]
) -> None:
    urls = [site.url(a) if a.startswith("/") else a for a in args]
    run = gfal(site, who, command, *urls)
    # gfal-bringonline exits 0 even when the stage call fails; it prints FAILED instead
    assert run.code != 0 or "FAILED" in run.text, run.text
    assert "403" in run.text, run.text


def test_a_caller_with_list_but_not_read_may_list(site: SeSite) -> None:
    run = gfal(site, "bob", "gfal-ls", site.url(SERIES + "/"))
    assert run.code == 0, run.text
    assert run.out.decode().split() == ["2.25.30111", "2.25.30112"]


def test_without_a_client_certificate_every_operation_is_401(site: SeSite) -> None:
    base = f"https://localhost:{site.server.port}"
    trust = ssl.create_default_context(cafile=str(site.pki.ca.cert_path))
    with httpx.Client(verify=trust, base_url=base) as client:
        assert client.request("PROPFIND", FILE_B, headers={"Depth": "0"}).status_code == 401
        assert client.get(FILE_B).status_code == 401
        r = client.post("/api/v1/stage/", json={"files": [{"path": FILE_B}]})
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert client.get("/.well-known/wlcg-tape-rest-api").status_code == 200, "public"
