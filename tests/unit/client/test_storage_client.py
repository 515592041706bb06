"""StorageClient and the range-reading file objects against the real SE app on loopback.

The SE is ``mdm.servers.se_app`` over the disk nearline backend, served by uvicorn in a thread
(plain HTTP; the caller's identity comes from a test header, as in tests/unit/storage). The
archive holds real MDM ciphertext, so downloads, checksums, resume and range decryption are
checked end to end. Real mutual TLS and the catalog-backed SE are in the access-matrix test.
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mdm.client.files import HttpRangeFile, open_plaintext
from mdm.client.storage import StorageClient, parse_multistatus
from mdm.crypto import Header, encrypt_stream, new_key
from mdm.errors import ChecksumMismatch, FileOffline, InvalidCiphertext, PermissionDenied
from mdm.servers.run import ServerThread
from mdm.servers.se_app import create_app
from mdm.settings import Settings
from mdm.storage import Grants, PosixNearline
from tests.unit.storage.conftest import ALICE, EVE, InjectIdentity, as_

SERIES = "/dicom/2.25.7/2.25.71"
LFN = f"{SERIES}/2.25.711"
OTHER = f"{SERIES}/2.25.712"
GRANTS = {"/dicom": {"list": ["fqan:/mdm"], "read": ["fqan:/mdm/radiology"]}}


@dataclass
class Site:
    url: str
    plain: dict[str, bytes]
    cipher: dict[str, bytes]
    keys: dict[str, bytes]
    backend: PosixNearline

    def client(self, who: object = ALICE) -> StorageClient:
        return StorageClient(self.url, headers=as_(who), poll_interval=0.02)  # type: ignore[arg-type]


def _encrypt(data: bytes, key: bytes) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, key, Header.new(len(data), k=3, n=5))
    return out.getvalue()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    plain = {LFN: os.urandom(100_000), OTHER: os.urandom(5_000)}
    keys = {lfn: new_key() for lfn in plain}
    cipher = {lfn: _encrypt(data, keys[lfn]) for lfn, data in plain.items()}
    for lfn, blob in cipher.items():
        path = tmp_path / "archive" / lfn.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    backend = PosixNearline(
        tmp_path / "archive", tmp_path / "cache", Grants.from_mapping(GRANTS), pin_lifetime=600
    ).start()
    app = InjectIdentity(create_app(backend, Settings.from_mapping({"storage": {"name": "t"}})))
    srv = ServerThread(app, log_level="warning").start()
    try:
        yield Site(srv.url, plain, cipher, keys, backend)
    finally:
        srv.stop()
        backend.stop()


def _staged(site: Site, *lfns: str) -> StorageClient:
    client = site.client()
    request_id = client.stage(list(lfns))
    states = client.wait(request_id, timeout=30)
    assert {p: f["state"] for p, f in states.items()} == dict.fromkeys(lfns, "COMPLETED")
    return client


def test_nearline_file_must_be_staged_first(site: Site, tmp_path: Path) -> None:
    with site.client() as client:
        assert client.archiveinfo([LFN]) == {LFN: "TAPE"}
        with pytest.raises(FileOffline):
            client.download(LFN, tmp_path / "x.mdm")
    assert not (tmp_path / "x.mdm").exists()
    assert not (tmp_path / "x.mdm.part").exists()


def test_stage_download_and_verify_checksums(site: Site, tmp_path: Path) -> None:
    with _staged(site, LFN, OTHER) as client:
        assert "DISK" in client.archiveinfo([LFN])[LFN]
        blob = site.cipher[LFN]
        seen: list[int] = []
        size = client.download(
            LFN, tmp_path / "a.mdm", size=len(blob),
            sha256=hashlib.sha256(blob).hexdigest(), adler32=f"{zlib.adler32(blob):08x}",
            progress=seen.append,
        )  # fmt: skip
        assert size == len(blob) == sum(seen)
        assert (tmp_path / "a.mdm").read_bytes() == blob
        assert client.checksum(LFN, "adler32") == f"{zlib.adler32(blob):08x}"
        assert client.checksum(LFN, "sha-256") == hashlib.sha256(blob).hexdigest()
        assert client.stat(LFN).size == len(blob)
        names = {e.path for e in client.ls(SERIES)}
        assert names == {LFN, OTHER}


def test_download_resumes_a_partial_file_with_range(site: Site, tmp_path: Path) -> None:
    blob = site.cipher[LFN]
    dest = tmp_path / "r.mdm"
    dest.with_name("r.mdm.part").write_bytes(blob[:40_000])  # a transfer cut earlier
    with _staged(site, LFN) as client:
        received: list[int] = []
        client.download(LFN, dest, size=len(blob), sha256=hashlib.sha256(blob).hexdigest(),
                        progress=received.append)  # fmt: skip
    assert dest.read_bytes() == blob
    assert sum(received) == len(blob) - 40_000  # only the rest crossed the wire


def test_checksum_mismatch_leaves_no_file(site: Site, tmp_path: Path) -> None:
    with _staged(site, OTHER) as client:
        with pytest.raises(ChecksumMismatch):
            client.download(OTHER, tmp_path / "b.mdm", sha256="0" * 64)
        with pytest.raises(ChecksumMismatch):
            client.download(OTHER, tmp_path / "b.mdm", size=1)
    assert list(tmp_path.glob("b.mdm*")) == []


def test_refused_caller_gets_the_server_error_class(site: Site, tmp_path: Path) -> None:
    with site.client(EVE) as client:
        with pytest.raises(PermissionDenied):
            client.stage([LFN])
        with pytest.raises(PermissionDenied):
            client.download(LFN, tmp_path / "e.mdm")


def test_open_decrypts_only_the_chunks_read(site: Site) -> None:
    with _staged(site, LFN) as client:
        raw = HttpRangeFile(client, LFN)
        with open_plaintext(raw, lambda key_id: site.keys[LFN]) as fh:
            assert fh.read(100) == site.plain[LFN][:100]
            assert raw.requests <= 2  # header + first chunk, not 100 KB
            fh.seek(-10, os.SEEK_END)
            assert fh.read() == site.plain[LFN][-10:]
            fh.seek(50_000)
            assert fh.read(20_000) == site.plain[LFN][50_000:70_000]
        assert raw.requests < 10


def test_open_with_the_wrong_key_releases_nothing(site: Site) -> None:
    with _staged(site, LFN) as client:
        raw = HttpRangeFile(client, LFN)
        with pytest.raises(InvalidCiphertext):
            open_plaintext(raw, lambda key_id: new_key())


def test_parse_multistatus_reads_collections_and_sizes() -> None:
    body = (
        b'<?xml version="1.0"?><d:multistatus xmlns:d="DAV:"><d:response>'
        b"<d:href>/dicom/a/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/>"
        b"</d:resourcetype></d:prop></d:propstat></d:response><d:response>"
        b"<d:href>/dicom/a/b%201</d:href><d:propstat><d:prop><d:resourcetype/>"
        b"<d:getcontentlength>42</d:getcontentlength></d:prop></d:propstat></d:response>"
        b"</d:multistatus>"
    )
    a, b = parse_multistatus(body)
    assert (a.path, a.is_dir, a.size) == ("/dicom/a", True, None)
    assert (b.path, b.is_dir, b.size) == ("/dicom/a/b 1", False, 42)


def test_client_stage_splits_bulk_requests_and_skips_online_files(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mdm.client import Client, core

    monkeypatch.setattr(core, "BULK", 1)
    with Client(Settings(), storage=site.client()) as client:
        ids, states = client.stage([LFN, OTHER, LFN], timeout=30)
        assert sorted(p for batch in ids.values() for p in batch) == sorted([LFN, OTHER])
        assert len(ids) == 2
        assert states == {LFN: "COMPLETED", OTHER: "COMPLETED"}
        again, states = client.stage([LFN])
        assert again == {}
        assert states == {LFN: "ONLINE"}
