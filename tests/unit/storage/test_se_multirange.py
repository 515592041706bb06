"""Multi-range GET on the SE (RFC 9110 §14): ``multipart/byteranges`` answers, in process.

Every multipart answer is parsed strictly by hand, the way davix reads it (part headers, then
exactly ``Content-Range`` bytes, then the next delimiter), and every byte of every part is
compared with the file. The app runs over the disk backend and over the catalog-backed cache.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mdm.acl import Identity
from mdm.catalog import access, files
from mdm.catalog.db import CatalogDatabases
from mdm.catalog.files import FileInfo
from mdm.catalog.migrations import upgrade
from mdm.catalog.models import ReplicaState
from mdm.catalog.registration import Registration, ReplicaSpec, register
from mdm.servers.byteranges import CHUNK, Span, Unsatisfiable, parse_ranges
from mdm.servers.se_app import create_app
from mdm.servers.se_catalog import CatalogStorage
from mdm.settings import Settings
from mdm.storage import PosixNearline
from mdm.workers import cache
from mdm.workers.instance import service_caller
from tests.helpers.multipart import byteranges
from tests.unit.catalog.helpers import dataset
from tests.unit.storage.conftest import ALICE, BIG, SERIES, Archive, InjectIdentity, as_

pytestmark = pytest.mark.anyio
SIZE = 70000  # BIG


# ---------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("header", "size", "spans"),
    [
        ("bytes=0-1,5-6", 10, [(0, 1), (5, 6)]),
        ("BYTES = 0-1 , 5 - 6", 10, [(0, 1), (5, 6)]),  # unit is case-insensitive, OWS is fine
        ("bytes=0-1,,  ,5-6", 10, [(0, 1), (5, 6)]),  # RFC 9110 §5.6.1: empty list elements
        ("bytes=5-,-2", 10, [(5, 9)]),  # overlapping suffix coalesced into the open range
        ("bytes=0-0,-1", 10, [(0, 0), (9, 9)]),
        ("bytes=0-4,5-9", 10, [(0, 9)]),  # adjacent: one span
        ("bytes=0-4,6-9", 10, [(0, 4), (6, 9)]),  # a gap of one byte: two parts
        ("bytes=50-59,0-9,5-14,60-69", 100, [(50, 69), (0, 14)]),  # request order is kept
        ("bytes=8-9,0-1,9-12", 10, [(8, 9), (0, 1)]),  # clamped to the size
        ("bytes=0-3,20-30,-0", 10, [(0, 3)]),  # unsatisfiable specs are dropped
        ("bytes=-20", 10, [(0, 9)]),
        ("bytes=0-" + "9" * 5000, 100, [(0, 99)]),  # past Python's int-parsing digit limit
        ("bytes=000000000000000000000003-4", 10, [(3, 4)]),
    ],
)
def test_parse_ranges(header: str, size: int, spans: list[tuple[int, int]]) -> None:
    assert parse_ranges(header, size, max_ranges=64) == [Span(a, b) for a, b in spans]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "items=0-5",
        "bytes",
        "bytes=",
        "bytes= , ",
        "bytes=-",
        "bytes=a-b",
        "bytes=0-1,x",
        "bytes=0-1,5-2",  # one invalid spec invalidates the header (§14.1.1)
        "bytes=1-2-3",
        "bytes=--1",
        "bytes=\u00b2-5",  # a superscript two is a digit to str.isdigit, not to HTTP
        "bytes=0-1;5-6",
    ],
)
def test_malformed_headers_are_ignored(header: str | None) -> None:
    assert parse_ranges(header, 10, max_ranges=64) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10-,-0,99-100", 10),
        ("bytes=" + "9" * 30 + "-", 10),
        ("bytes=-5", 0),  # nothing to select in an empty file
        ("bytes=0-,0-0", 0),
    ],
)
def test_all_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_ranges(header, size, max_ranges=64)


def test_the_cap_counts_the_specs_of_the_request() -> None:
    assert parse_ranges("bytes=0-0,2-2,4-4", 10, max_ranges=3) == [
        Span(0, 0),
        Span(2, 2),
        Span(4, 4),
    ]
    assert parse_ranges("bytes=0-0,2-2,4-4,6-6", 10, max_ranges=3) is None
    assert parse_ranges("bytes=0-,0-,0-,0-", 10, max_ranges=3) is None  # before coalescing
    assert parse_ranges("bytes=0-0", 10, max_ranges=0) == [Span(0, 0)]  # one range: always


# ---------------------------------------------------------------------- the app


def parts_of(r: httpx.Response, size: int = SIZE) -> list[tuple[int, int, bytes]]:
    """``(first, last, bytes)`` of each part, read strictly: any framing error fails."""
    assert r.status_code == 206
    assert int(r.headers["content-length"]) == len(r.content)
    assert "content-range" not in r.headers
    return byteranges(r.content, r.headers["content-type"], size)


async def get(client: httpx.AsyncClient, rng: str, **headers: str) -> httpx.Response:
    return await client.get(BIG, headers={"Range": rng, **headers, **as_(ALICE)})


@pytest.fixture
async def online(store: PosixNearline, archive: Archive) -> bytes:
    store.stage(ALICE, [BIG])
    store.recall_once()
    return archive.data[BIG]


async def test_two_ranges_give_two_parts(client: httpx.AsyncClient, online: bytes) -> None:
    r = await get(client, "bytes=0-99,1000-1099")
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"]
    assert parts_of(r) == [(0, 99, online[:100]), (1000, 1099, online[1000:1100])]


async def test_every_form_of_range_and_request_order(
    client: httpx.AsyncClient, online: bytes
) -> None:
    r = await get(client, "bytes=60000-, 500-599, -10, 0-99, 50-149, 600-699, 69995-80000")
    expected = [(60000, 69999), (500, 699), (0, 149)]  # coalesced, each where it first was
    assert parts_of(r) == [(a, b, online[a : b + 1]) for a, b in expected]


async def test_the_boundary_is_random_per_response(
    client: httpx.AsyncClient, online: bytes
) -> None:
    a = await get(client, "bytes=0-9,20-29")
    b = await get(client, "bytes=0-9,20-29")
    assert parts_of(a) == parts_of(b)
    assert a.headers["content-type"] != b.headers["content-type"]


async def test_one_range_left_after_coalescing_is_a_plain_206(
    client: httpx.AsyncClient, online: bytes
) -> None:
    for rng in ("bytes=0-9,10-19,5-15", "bytes=0-19,80000-90000,-0"):
        r = await get(client, rng)
        assert r.status_code == 206
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-range"] == "bytes 0-19/70000"
        assert r.content == online[:20]


async def test_unsatisfiable_ones_are_dropped_all_unsatisfiable_is_416(
    client: httpx.AsyncClient, online: bytes
) -> None:
    r = await get(client, "bytes=0-9,70000-70010,100-109")
    assert parts_of(r) == [(0, 9, online[:10]), (100, 109, online[100:110])]
    r = await get(client, "bytes=70000-70010,-0,99999-")
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */70000"


@pytest.mark.parametrize("rng", ["bytes=0-9,x-5", "bytes=0-9,9-2", "bytes=,", "pages=1-2,3-4"])
async def test_malformed_multi_ranges_get_the_whole_file(
    client: httpx.AsyncClient, online: bytes, rng: str
) -> None:
    r = await get(client, rng)
    assert (r.status_code, r.content) == (200, online)
    assert "content-range" not in r.headers


async def test_if_range_rules_apply_to_multi_ranges(
    client: httpx.AsyncClient, online: bytes
) -> None:
    etag = (await client.head(BIG, headers=as_(ALICE))).headers["etag"]
    r = await get(client, "bytes=0-9,20-29", **{"If-Range": '"stale"'})
    assert (r.status_code, r.content) == (200, online)
    r = await get(client, "bytes=0-9,20-29", **{"If-Range": etag})
    assert parts_of(r) == [(0, 9, online[:10]), (20, 29, online[20:30])]


async def test_head_is_unchanged(client: httpx.AsyncClient, online: bytes) -> None:
    r = await client.head(BIG, headers={"Range": "bytes=0-9,20-29", **as_(ALICE)})
    assert r.status_code == 200
    assert r.headers["content-length"] == "70000"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.content == b""


async def test_nearline_is_refused_before_any_range_work(client: httpx.AsyncClient) -> None:
    r = await get(client, "bytes=0-9,20-29")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"


@pytest.fixture
async def capped(store: PosixNearline) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_mapping({"storage": {"name": "mdm-unit", "max_ranges": 4}})
    transport = httpx.ASGITransport(app=InjectIdentity(create_app(store, settings)))
    async with httpx.AsyncClient(transport=transport, base_url="https://se.test") as c:
        yield c


async def test_too_many_ranges_get_the_whole_file(capped: httpx.AsyncClient, online: bytes) -> None:
    four = ",".join(f"{i * 100}-{i * 100 + 9}" for i in range(4))
    assert len(parts_of(await get(capped, "bytes=" + four))) == 4
    r = await get(capped, "bytes=" + four + ",1000-1009")
    assert (r.status_code, r.content) == (200, online)


async def test_the_default_cap_is_200(client: httpx.AsyncClient, online: bytes) -> None:
    specs = [f"{i * 300}-{i * 300 + 1}" for i in range(201)]
    parts = parts_of(await get(client, "bytes=" + ",".join(specs[:200])))
    assert parts == [(i * 300, i * 300 + 1, online[i * 300 : i * 300 + 2]) for i in range(200)]
    r = await get(client, "bytes=" + ",".join(specs))
    assert (r.status_code, len(r.content)) == (200, SIZE)


# ---------------------------------------------------------------------- streaming


class CountingFile:
    """An open cache copy that records the size of every read and whether it was closed."""

    def __init__(self, fh: Any, reads: list[int]) -> None:
        self.fh, self.reads = fh, reads

    def read(self, n: int = -1) -> bytes:
        self.reads.append(n)
        data: bytes = self.fh.read(n)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        pos: int = self.fh.seek(offset, whence)
        return pos

    def fileno(self) -> int:
        fd: int = self.fh.fileno()
        return fd

    def close(self) -> None:
        self.fh.close()

    @property
    def closed(self) -> bool:
        closed: bool = self.fh.closed
        return closed


class CountingBackend:
    """The disk backend, with every opened copy a ``CountingFile``."""

    def __init__(self, inner: PosixNearline) -> None:
        self.inner = inner
        self.reads: list[int] = []
        self.opened: list[CountingFile] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def open_read(self, lfn: str) -> CountingFile:
        fh = CountingFile(self.inner.open_read(lfn), self.reads)
        self.opened.append(fh)
        return fh


async def test_large_spans_are_streamed_in_chunks_and_the_file_closed(
    store: PosixNearline, archive: Archive
) -> None:
    lfn = f"{SERIES}/2.25.113"
    data = bytes(range(256)) * (CHUNK // 256) * 3  # 3 MiB
    path = archive.root / lfn.lstrip("/")
    path.write_bytes(data)
    store.stage(ALICE, [lfn])
    store.recall_once()
    backend = CountingBackend(store)
    app = InjectIdentity(create_app(backend, Settings()))  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://se.test"
    ) as client:
        rng = f"bytes=10-{CHUNK * 2 + 10},-{CHUNK // 2}"
        r = await client.get(lfn, headers={"Range": rng, **as_(ALICE)})
    size = len(data)
    tail = size - CHUNK // 2
    assert parts_of(r, size) == [
        (10, CHUNK * 2 + 10, data[10 : CHUNK * 2 + 11]),
        (tail, size - 1, data[tail:]),
    ]
    assert max(backend.reads) <= CHUNK  # never the whole file in memory
    assert sum(backend.reads) == CHUNK * 2 + 1 + CHUNK // 2  # and only the ranges' bytes
    assert [fh.closed for fh in backend.opened] == [True]


# ---------------------------------------------------------------------- catalog-backed cache

READER = Identity("/CN=reader", ("/mdm/radiology",))
C_STUDY, C_SERIES = "2.25.81", "2.25.811"
C_LFN = f"/dicom/{C_STUDY}/{C_SERIES}/2.25.8111"


@pytest.fixture
def catalog_backend(tmp_path: Path) -> Iterator[tuple[CatalogStorage, bytes, Settings]]:
    """A SQLite catalog with one file made ONLINE in the cache, as the recall worker does."""
    settings = Settings.from_mapping(
        {
            "catalog": {"database_url": f"sqlite:///{tmp_path / 'catalog.db'}"},
            "storage": {"name": "se-test", "cache_dir": str(tmp_path / "cache")},
        }
    )
    dbs = CatalogDatabases(settings.catalog.database_url)
    upgrade(dbs)
    svc = service_caller(settings)
    data = bytes(range(251)) * 40  # 10 040 bytes, no period of 2^n
    sums = cache.write_atomically(settings.storage.cache_dir, C_LFN, data)
    info = FileInfo(len(data), sums["adler32"], sums["sha256"])
    with dbs.catalog.session(write=True) as s:
        access.set_acl(s, "/dicom", {"fqan:/mdm/radiology": ["list", "read"]})
        reg = Registration(
            dataset(C_STUDY, C_SERIES, C_LFN.rsplit("/", 1)[-1], instance_number=1),
            replica=ReplicaSpec("se-test", C_LFN, ReplicaState.NEARLINE),
        )
        register(s, s, svc, reg)
        files.set_content(s, svc, C_LFN, info)
        files.add_replica(
            s, svc, C_LFN, se="se-test", url=C_LFN, state=ReplicaState.ONLINE, info=info
        )
    try:
        yield CatalogStorage(settings, dbs), data, settings
    finally:
        dbs.dispose()


async def test_the_catalog_backed_cache_serves_the_same_multipart(
    catalog_backend: tuple[CatalogStorage, bytes, Settings],
) -> None:
    backend, data, settings = catalog_backend
    app = InjectIdentity(create_app(backend, settings))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://se.test"
    ) as client:
        headers = {"Range": "bytes=-40,0-99,1000-1099,50-120", **as_(READER)}
        r = await client.get(C_LFN, headers=headers)
    size = len(data)
    expected = [(size - 40, size - 1), (0, 120), (1000, 1099)]
    assert parts_of(r, size) == [(a, b, data[a : b + 1]) for a, b in expected]
