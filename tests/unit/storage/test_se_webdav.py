"""The WebDAV face of the SE, in process: the shapes gfal2 and davix need, and refusals."""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from xml.etree import ElementTree as ET

import httpx
import pytest

from mdm.storage import PosixNearline
from tests.unit.storage.conftest import ALICE, BIG, BOB, CLOSED, EVE, SERIES, SMALL, Archive, as_

pytestmark = pytest.mark.anyio
DAV = "{DAV:}"
LCGDM_BODY = (
    '<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:" xmlns:L="LCGDM:"><D:prop>'
    "<D:displayname/><D:getlastmodified/><D:creationdate/><D:getcontentlength/>"
    "<D:quota-used-bytes/><D:resourcetype><D:collection/></D:resourcetype><L:mode/><D:owner>"
    "</D:owner><D:group></D:group></D:prop></D:propfind>"
)


async def propfind(client: httpx.AsyncClient, path: str, depth: str, who=ALICE, body=None):  # type: ignore[no-untyped-def]
    headers = {"Depth": depth, **as_(who)}
    return await client.request("PROPFIND", path, headers=headers, content=body)


def responses(r: httpx.Response) -> list[dict[str, str | None]]:
    root = ET.fromstring(r.content)  # noqa: S314 - our own server's answer
    out = []
    for resp in root.findall(f"{DAV}response"):
        propstats = resp.findall(f"{DAV}propstat")
        assert propstats, "a response without propstat"
        for ps in propstats:  # davix drops an entry whose propstat has no status
            assert ps.findtext(f"{DAV}status") == "HTTP/1.1 200 OK"
        prop = propstats[0].find(f"{DAV}prop")
        assert prop is not None
        out.append(
            {
                "href": resp.findtext(f"{DAV}href"),
                "collection": "yes"
                if prop.find(f"{DAV}resourcetype/{DAV}collection") is not None
                else None,
                "size": prop.findtext(f"{DAV}getcontentlength"),
                "modified": prop.findtext(f"{DAV}getlastmodified"),
            }
        )
    return out


async def stage_now(store: PosixNearline, *lfns: str) -> None:
    store.stage(ALICE, list(lfns))
    store.recall_once()


async def test_stat_of_a_file_depth_0_without_body(client: httpx.AsyncClient) -> None:
    r = await propfind(client, BIG, "0")
    assert r.status_code == 207
    assert r.headers["content-type"].startswith("application/xml")
    [entry] = responses(r)
    assert entry["href"] == BIG
    assert entry["collection"] is None
    assert entry["size"] == "70000"
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", entry["modified"] or "")


async def test_listing_puts_the_collection_first(client: httpx.AsyncClient) -> None:
    r = await propfind(client, SERIES + "/", "1", body=LCGDM_BODY)
    assert r.status_code == 207
    entries = responses(r)
    assert entries[0] == {**entries[0], "href": SERIES + "/", "collection": "yes"}
    assert [(e["href"], e["size"]) for e in entries[1:]] == [(BIG, "70000"), (SMALL, "1000")]
    # without the trailing slash the same collection answers, href still ending in "/"
    assert responses(await propfind(client, SERIES, "0"))[0]["href"] == SERIES + "/"


async def test_children_the_caller_may_not_list_are_left_out(client: httpx.AsyncClient) -> None:
    mine = [e["href"] for e in responses(await propfind(client, "/dicom", "1"))]
    theirs = [e["href"] for e in responses(await propfind(client, "/dicom", "1", who=BOB))]
    assert mine == ["/dicom/", "/dicom/2.25.1/", "/dicom/2.25.9/"]
    assert theirs == ["/dicom/", "/dicom/2.25.1/"]


async def test_depth_infinity_is_refused(client: httpx.AsyncClient) -> None:
    r = await propfind(client, "/dicom", "infinity")
    assert r.status_code == 403
    assert b"propfind-finite-depth" in r.content


async def test_missing_entry_is_404_problem(client: httpx.AsyncClient) -> None:
    r = await propfind(client, f"{SERIES}/nope", "0")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "FileNotFound"


async def test_nearline_get_is_503_with_retry_after_and_no_file_bytes(
    client: httpx.AsyncClient, archive: Archive
) -> None:
    for method in ("GET", "HEAD"):
        r = await client.request(method, BIG, headers=as_(ALICE))
        assert r.status_code == 503
        assert r.headers["retry-after"] == "7"
        assert r.headers["content-type"] == "application/problem+json"
        assert archive.data[BIG][:16] not in r.content
    body = (await client.get(BIG, headers=as_(ALICE))).json()
    assert body["type"] == "FileOffline"
    assert "NEARLINE" in body["detail"]


async def test_online_get_serves_exactly_the_advertised_size(
    client: httpx.AsyncClient, store: PosixNearline, archive: Archive
) -> None:
    await stage_now(store, BIG)
    [entry] = responses(await propfind(client, BIG, "0"))
    r = await client.get(BIG, headers=as_(ALICE))
    assert r.status_code == 200
    assert r.content == archive.data[BIG]
    assert int(r.headers["content-length"]) == len(r.content) == int(entry["size"] or -1)
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"]


@pytest.mark.parametrize(
    ("header", "status", "first", "last"),
    [
        ("bytes=100-115", 206, 100, 115),
        ("bytes=69990-70089", 206, 69990, 69999),  # past EOF: clamped (gfal2 pread does this)
        ("bytes=69000-", 206, 69000, 69999),
        ("bytes=-10", 206, 69990, 69999),
        ("bytes=0-0", 206, 0, 0),
        ("bytes=0-1,2-6", 206, 0, 6),  # adjacent ranges merge into one plain 206
        ("items=0-5", 200, 0, 69999),
        ("bytes=9-2", 200, 0, 69999),
    ],
)
async def test_ranges(
    client: httpx.AsyncClient,
    store: PosixNearline,
    archive: Archive,
    header: str,
    status: int,
    first: int,
    last: int,
) -> None:
    await stage_now(store, BIG)
    r = await client.get(BIG, headers={"Range": header, **as_(ALICE)})
    assert r.status_code == status
    assert r.content == archive.data[BIG][first : last + 1]
    if status == 206:
        assert r.headers["content-range"] == f"bytes {first}-{last}/70000"


async def test_unsatisfiable_range_is_416(client: httpx.AsyncClient, store: PosixNearline) -> None:
    await stage_now(store, BIG)
    for header in ("bytes=70000-70010", "bytes=-0"):
        r = await client.get(BIG, headers={"Range": header, **as_(ALICE)})
        assert r.status_code == 416
        assert r.headers["content-range"] == "bytes */70000"


async def test_if_range_with_a_stale_etag_sends_the_whole_file(
    client: httpx.AsyncClient, store: PosixNearline
) -> None:
    await stage_now(store, BIG)
    r = await client.get(BIG, headers={"Range": "bytes=0-9", "If-Range": '"old"', **as_(ALICE)})
    assert (r.status_code, len(r.content)) == (200, 70000)
    etag = r.headers["etag"]
    r = await client.get(BIG, headers={"Range": "bytes=0-9", "If-Range": etag, **as_(ALICE)})
    assert (r.status_code, len(r.content)) == (206, 10)


@pytest.mark.parametrize(
    ("want", "expected"),
    [
        ("ADLER32", lambda d: f"adler32={zlib.adler32(d):08x}"),
        ("adler32", lambda d: f"adler32={zlib.adler32(d):08x}"),
        (
            "MD5",
            lambda d: (
                "md5=" + base64.b64encode(hashlib.md5(d, usedforsecurity=False).digest()).decode()
            ),
        ),
        ("sha-256", lambda d: "sha-256=" + base64.b64encode(hashlib.sha256(d).digest()).decode()),
        (
            "md5;q=0.3, sha-256;q=1",
            lambda d: (
                "sha-256="
                + base64.b64encode(hashlib.sha256(d).digest()).decode()
                + ", md5="
                + base64.b64encode(hashlib.md5(d, usedforsecurity=False).digest()).decode()
            ),
        ),
        ("CRC32C", lambda d: None),  # unsupported: no Digest, gfal2 says ENOSYS
    ],
)
async def test_head_want_digest(
    client: httpx.AsyncClient, store: PosixNearline, archive: Archive, want: str, expected
) -> None:  # type: ignore[no-untyped-def]
    await stage_now(store, SMALL)
    r = await client.head(SMALL, headers={"Want-Digest": want, **as_(ALICE)})
    assert r.status_code == 200
    assert r.headers["content-length"] == "1000"
    assert r.content == b""
    assert r.headers.get("digest") == expected(archive.data[SMALL])


async def test_macaroon_request_is_refused_gracefully(client: httpx.AsyncClient) -> None:
    r = await client.post(
        BIG,
        headers={"Content-Type": "application/macaroon-request", **as_(ALICE)},
        content=b'{"caveats": ["activity:LIST,DOWNLOAD"], "validity": "PT180M"}',
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert "macaroon" in r.json()["detail"]


async def test_write_methods_are_not_allowed(client: httpx.AsyncClient) -> None:
    for method in ("PUT", "DELETE", "MKCOL", "MOVE"):
        r = await client.request(method, BIG, headers=as_(ALICE), content=b"x")
        assert r.status_code == 405, method


async def test_no_identity_is_401_everywhere(client: httpx.AsyncClient) -> None:
    for method in ("GET", "HEAD", "PROPFIND"):
        r = await client.request(method, BIG, headers={"Depth": "0"})
        assert r.status_code == 401, method


async def test_a_stranger_gets_403_from_every_operation_even_on_missing_files(
    client: httpx.AsyncClient, store: PosixNearline
) -> None:
    await stage_now(store, SMALL)
    for path in (SMALL, f"{SERIES}/nope", "/dicom", "/"):
        for method in ("GET", "HEAD", "PROPFIND"):
            r = await client.request(method, path, headers={"Depth": "0", **as_(EVE)})
            assert r.status_code == 403, (method, path)
    r = await client.get(SMALL, headers=as_(BOB))  # may list, may not read
    assert r.status_code == 403
    assert r.json()["type"] == "PermissionDenied"
    assert (await client.get(CLOSED, headers=as_(ALICE))).status_code == 403


async def test_reserved_prefixes_are_not_namespace_paths(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/archiveinfo", headers=as_(ALICE))
    assert r.status_code == 405


async def test_get_of_a_collection_is_405(client: httpx.AsyncClient) -> None:
    assert (await client.get(SERIES, headers=as_(ALICE))).status_code == 405


async def test_duplicate_slashes_in_the_url_are_collapsed(
    client: httpx.AsyncClient, store: PosixNearline, archive: Archive
) -> None:
    await stage_now(store, SMALL)
    r = await client.get("https://se.test//dicom//2.25.1///2.25.11/2.25.112", headers=as_(ALICE))
    assert r.status_code == 200
    assert r.content == archive.data[SMALL]
