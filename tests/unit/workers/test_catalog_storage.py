"""The catalog-backed storage element backend and the cache eviction it shares with the worker,
on a real SQLite catalog: namespace, rights, staging through the queue, pins and eviction."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mdm.acl import Identity
from mdm.catalog import access, files, staging
from mdm.catalog.db import CatalogDatabases
from mdm.catalog.files import FileInfo
from mdm.catalog.migrations import upgrade
from mdm.catalog.models import Replica, ReplicaState, utcnow
from mdm.catalog.registration import Registration, ReplicaSpec, register
from mdm.crypto import ciphertext_length
from mdm.errors import FileOffline, NotFound, PermissionDenied, UsageError
from mdm.servers.se_catalog import HEADER_ESTIMATE, CatalogStorage
from mdm.settings import Settings
from mdm.storage.backend import FileState, Locality, Right, StorageBackend
from mdm.workers import cache
from mdm.workers.instance import service_caller
from tests.unit.catalog.helpers import dataset

STUDY, SERIES = "2.25.71", "2.25.711"
FILES = [f"/dicom/{STUDY}/{SERIES}/2.25.711{i}" for i in range(1, 5)]
READER = Identity("/CN=reader", ("/mdm/radiology",))
READER_2 = Identity("/CN=reader two", ("/mdm/radiology",))
READER_3 = Identity("/CN=reader three", ("/mdm/radiology",))
LISTER = Identity("/CN=lister", ("/mdm",))
NOBODY = Identity("/CN=nobody")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("catalog-se")
    return Settings.from_mapping(
        {
            "catalog": {"database_url": f"sqlite:///{root / 'catalog.db'}"},
            "storage": {"name": "se-test", "cache_dir": str(root / "cache")},
        }
    )


@pytest.fixture(scope="module")
def dbs(settings: Settings) -> Iterator[CatalogDatabases]:
    dbs = CatalogDatabases(settings.catalog.database_url)
    upgrade(dbs)
    svc = service_caller(settings)
    with dbs.catalog.session(write=True) as s:
        access.set_acl(
            s, "/dicom", {"fqan:/mdm/radiology": ["list", "read"], "fqan:/mdm": ["list"]}
        )
        for i, lfn in enumerate(FILES, start=1):
            reg = Registration(
                dataset(STUDY, SERIES, lfn.rsplit("/", 1)[-1], instance_number=i),
                replica=ReplicaSpec("se-test", lfn, ReplicaState.NEARLINE),
            )
            register(s, s, svc, reg)
    yield dbs
    dbs.dispose()


@pytest.fixture
def backend(settings: Settings, dbs: CatalogDatabases) -> CatalogStorage:
    return CatalogStorage(settings, dbs)


def make_online(settings: Settings, dbs: CatalogDatabases, lfn: str, pin: float = 3600) -> bytes:
    """What the recall worker does for one file, without the PACS and the key servers."""
    data = hashlib.sha256(lfn.encode()).digest() * 100
    sums = cache.write_atomically(settings.storage.cache_dir, lfn, data)
    svc = service_caller(settings)
    with dbs.catalog.session(write=True) as s:
        info = FileInfo(len(data), sums["adler32"], sums["sha256"])
        files.set_content(s, svc, lfn, info)
        files.add_replica(
            s, svc, lfn, se="se-test", url=lfn, state=ReplicaState.ONLINE,
            pinned_until=utcnow() + dt.timedelta(seconds=pin), info=info,
        )  # fmt: skip
    return data


def state(dbs: CatalogDatabases, lfn: str) -> ReplicaState:
    with dbs.catalog.session() as s:
        replicas = files.list_replicas(s, service_caller(Settings()), lfn)
        return next(r.state for r in replicas if r.se == "se-test")


def test_it_is_a_storage_backend(backend: CatalogStorage) -> None:
    assert isinstance(backend, StorageBackend)


def test_namespace_with_estimates_while_nearline(backend: CatalogStorage) -> None:
    assert [e.lfn for e in backend.listdir("/")] == ["/dicom"]
    assert [e.lfn for e in backend.listdir("/dicom")] == [f"/dicom/{STUDY}"]
    children = backend.listdir(f"/dicom/{STUDY}/{SERIES}/")
    assert [c.lfn for c in children] == FILES
    entry = backend.stat(FILES[0])
    assert entry.state is FileState.NEARLINE
    assert entry.locality is Locality.TAPE
    # C-FIND does not tell the image size: a 512 x 512 16-bit slice until the first recall
    assert entry.size == ciphertext_length(512 * 512 * 2 + HEADER_ESTIMATE)
    assert entry.checksums == {}
    with pytest.raises(FileOffline) as info:
        backend.open_read(FILES[0])
    assert info.value.context["retry_after"] == 30
    with pytest.raises(NotFound):
        backend.stat("/dicom/2.25.404")
    with pytest.raises(NotFound):
        backend.stat("/etc/passwd")


def test_rights_come_from_the_catalog_acls(backend: CatalogStorage) -> None:
    assert backend.authorize(READER, FILES[0], Right.READ)
    assert backend.authorize(LISTER, FILES[0], Right.LIST)
    assert not backend.authorize(LISTER, FILES[0], Right.READ)
    assert not backend.authorize(NOBODY, FILES[0], Right.LIST)
    with pytest.raises(PermissionDenied):
        backend.stage(LISTER, [FILES[0]])
    with pytest.raises(PermissionDenied):
        backend.release(NOBODY, None, [FILES[0]])


def test_staging_goes_through_the_catalog_queue(
    backend: CatalogStorage, dbs: CatalogDatabases, settings: Settings
) -> None:
    rid = backend.stage(READER, FILES[:2], disk_lifetime=60)
    polled = backend.poll(READER, rid)
    assert [f.state for f in polled.files] == ["SUBMITTED", "SUBMITTED"]
    with pytest.raises(NotFound):
        backend.poll(LISTER, rid)  # not the caller's request
    with pytest.raises(UsageError):
        backend.cancel(READER, rid, [FILES[3]])
    backend.cancel(READER, rid, [FILES[1]])
    assert [f.state for f in backend.poll(READER, rid).files] == ["SUBMITTED", "CANCELLED"]
    svc = service_caller(settings)
    with dbs.catalog.session(write=True) as s:
        claimed = staging.claim(s, svc, "w1", limit=10)
        assert [f.path for f in claimed] == [FILES[0]]
        staging.fail(s, svc, "w1", claimed[0].id, "PACS 'main' did not deliver it")
    polled = backend.poll(READER, rid)
    assert polled.files[0].error == "PACS 'main' did not deliver it"
    assert polled.completed_at is not None
    backend.delete_request(READER, rid)
    with pytest.raises(NotFound):
        backend.poll(READER, rid)


def test_online_files_are_served_with_checksums_then_released_and_evicted(
    backend: CatalogStorage, dbs: CatalogDatabases, settings: Settings
) -> None:
    lfn = FILES[2]
    data = make_online(settings, dbs, lfn)
    entry = backend.stat(lfn)
    assert entry.state is FileState.ONLINE
    assert entry.size == len(data)
    assert entry.checksums["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry.checksums["md5"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert backend.archiveinfo([lfn, "/dicom/2.25.9"])[0].locality is Locality.DISK_AND_TAPE
    assert backend.archiveinfo(["/dicom/2.25.9"])[0].error
    with backend.open_read(lfn) as fh:
        assert fh.read() == data
    rid = backend.stage(READER, [lfn])
    assert backend.poll(READER, rid).files[0].state == "COMPLETED", "already ONLINE"
    backend.release(READER, "gfal2-placeholder-id", [lfn])
    assert backend.stat(lfn).state is FileState.NEARLINE
    assert state(dbs, lfn) is ReplicaState.NEARLINE
    assert not cache.cache_path(settings.storage.cache_dir, lfn).exists()
    with pytest.raises(FileOffline):
        backend.open_read(lfn)
    assert backend.stat(lfn).size == len(data), "the exact size stays known once recalled"


def test_a_release_takes_a_file_from_nobody_else_who_staged_it(
    backend: CatalogStorage, dbs: CatalogDatabases, settings: Settings
) -> None:
    """Pins are per request: a file stays ONLINE until its last pin is released (or its
    request deleted), and a caller releases only its own pins, whatever id it names."""
    lfn = FILES[1]
    make_online(settings, dbs, lfn)
    mine = backend.stage(READER, [lfn])
    theirs = backend.stage(READER_2, [lfn])
    third = backend.stage(READER_3, [lfn])
    backend.release(READER, mine, [lfn])
    assert backend.stat(lfn).state is FileState.ONLINE, "still pinned by two other requests"
    backend.release(READER_2, mine, [lfn])  # not its request: releases its own pins only
    backend.release(READER, "gfal2-placeholder-id", [lfn])  # nothing of READER's is left
    assert backend.stat(lfn).state is FileState.ONLINE, "still pinned by READER_3's request"
    assert [f.state for f in backend.poll(READER_2, theirs).files] == ["COMPLETED"]
    backend.delete_request(READER_3, third)  # a deleted request drops its pins
    assert backend.stat(lfn).state is FileState.NEARLINE
    assert not cache.cache_path(settings.storage.cache_dir, lfn).exists()


def test_a_copy_deleted_behind_the_catalog_is_never_served(
    backend: CatalogStorage, dbs: CatalogDatabases, settings: Settings
) -> None:
    lfn = FILES[3]
    make_online(settings, dbs, lfn)
    cache.cache_path(settings.storage.cache_dir, lfn).unlink()
    assert backend.stat(lfn).state is FileState.NEARLINE
    with pytest.raises(FileOffline):
        backend.open_read(lfn)
    assert backend.evict([lfn]) == [lfn]
    assert state(dbs, lfn) is ReplicaState.NEARLINE


def test_sweep_evicts_expired_pins_then_least_recently_staged_over_the_limit(
    dbs: CatalogDatabases, settings: Settings
) -> None:
    root = settings.storage.cache_dir
    sizes = {lfn: len(make_online(settings, dbs, lfn, pin=pin))
             for lfn, pin in zip(FILES, (3600, -10, -5, -1), strict=True)}  # fmt: skip
    # grace 7 s: only FILES[1] (pin ended 10 s ago) is past it
    assert cache.sweep(dbs.catalog, "se-test", root, grace=7) == [FILES[1]]
    # over the limit: unpinned copies go, the oldest pin first; a pinned one never
    limit = sizes[FILES[0]] + sizes[FILES[3]]
    evicted = cache.sweep(dbs.catalog, "se-test", root, grace=3600, limit_bytes=limit)
    assert evicted == [FILES[2]]
    assert state(dbs, FILES[0]) is ReplicaState.ONLINE
    assert cache.sweep(dbs.catalog, "se-test", root, grace=3600, limit_bytes=1) == [FILES[3]]
    assert cache.sweep(dbs.catalog, "se-test", root, limit_bytes=1) == []  # FILES[0] pinned
    assert cache.cache_path(root, FILES[0]).exists()
    with dbs.catalog.session() as s:
        online = s.scalars(select(Replica).where(Replica.state == ReplicaState.ONLINE))
        assert len(list(online)) == 1
    assert cache.sweep(dbs.catalog, "se-test", root, lfns=[FILES[0]]) == [FILES[0]]
    debris = [
        p for p in root.rglob("*") if p.name.endswith((cache.TMP_SUFFIX, cache.EVICTED_SUFFIX))
    ]
    assert debris == []


def test_debris_of_dead_writers_is_cleaned(tmp_path: Path) -> None:
    old = tmp_path / "a" / ".x.1.mdm-tmp"
    old.parent.mkdir()
    old.write_bytes(b"partial")
    fresh = tmp_path / "a" / ".y.2.mdm-tmp"
    fresh.write_bytes(b"being written")
    keep = tmp_path / "a" / "2.25.1"
    keep.write_bytes(b"complete")
    past = time.time() - 3600
    import os

    os.utime(old, (past, past))
    assert cache.clean_debris(tmp_path, older_than=600) == 1
    assert not old.exists()
    assert fresh.exists()
    assert keep.exists()
