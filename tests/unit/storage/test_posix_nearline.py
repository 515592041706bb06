"""The disk nearline store: states, atomic recalls, pins, eviction, ACLs, request ownership."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import pytest

from mdm.errors import (
    ConfigError,
    FileNotFound,
    FileOffline,
    NotFound,
    PermissionDenied,
    UsageError,
)
from mdm.storage import FileState, Grants, Locality, PosixNearline, Right, StageState
from mdm.storage.backend import normalize_lfn
from tests.unit.storage.conftest import (
    ALICE,
    BIG,
    BOB,
    CAROL,
    CLOSED,
    EVE,
    GRANTS,
    SERIES,
    SMALL,
    Archive,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make(archive: Archive, clock: Clock, **kw: float) -> PosixNearline:
    return PosixNearline(
        archive.root, archive.cache, Grants.from_mapping(GRANTS), clock=clock, **kw
    )


def test_files_are_nearline_with_the_archive_size_until_staged(store: PosixNearline) -> None:
    entry = store.stat(BIG)
    assert (entry.state, entry.size, entry.checksums, entry.locality) == (
        FileState.NEARLINE,
        70000,
        {},
        Locality.TAPE,
    )
    with pytest.raises(FileOffline) as err:
        store.open_read(BIG)
    assert err.value.http_status == 503
    assert err.value.retry_after == store.retry_after


def test_stage_recall_gives_exact_bytes_and_checksums(
    store: PosixNearline, archive: Archive
) -> None:
    rid = store.stage(ALICE, [BIG, "//dicom/2.25.1//2.25.11/2.25.111/"])  # same file twice
    req = store.poll(ALICE, rid)
    assert [(f.path, f.state) for f in req.files] == [(BIG, StageState.SUBMITTED)]
    assert store.stat(BIG).state is FileState.STAGING
    assert store.recall_once() == 1
    req = store.poll(ALICE, rid)
    assert req.files[0].state is StageState.COMPLETED
    assert req.completed_at is not None
    entry = store.stat(BIG)
    data = archive.data[BIG]
    assert entry.state is FileState.ONLINE
    assert entry.locality is Locality.DISK_AND_TAPE
    assert entry.size == len(data)
    assert entry.checksums == {
        "adler32": f"{zlib.adler32(data):08x}",
        "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    with store.open_read(BIG) as fh:
        assert fh.read() == data
    assert not list(archive.cache.rglob("*.mdm-tmp")), "no temporary file is left behind"


def test_release_evicts_and_restage_gives_identical_checksums(store: PosixNearline) -> None:
    rid = store.stage(ALICE, [BIG])
    store.recall_once()
    first = store.stat(BIG).checksums
    store.release(ALICE, rid, [BIG])
    assert store.stat(BIG).state is FileState.NEARLINE
    store.stage(ALICE, [BIG])
    store.recall_once()
    assert store.stat(BIG).checksums == first


def test_an_open_reader_keeps_its_bytes_when_the_copy_is_evicted(
    store: PosixNearline, archive: Archive
) -> None:
    store.stage(ALICE, [SMALL])
    store.recall_once()
    with store.open_read(SMALL) as fh:
        assert store.evict([SMALL]) == [SMALL]
        assert store.stat(SMALL).state is FileState.NEARLINE
        assert fh.read() == archive.data[SMALL]


def test_release_by_path_drops_only_the_callers_pins(store: PosixNearline) -> None:
    store.stage(ALICE, [SMALL])
    store.stage(CAROL, [SMALL])
    store.recall_once()
    store.release(ALICE, "gfal2-placeholder-id", [SMALL])  # what gfal-evict sends
    assert store.stat(SMALL).state is FileState.ONLINE, "Carol's pin still holds it"
    store.release(CAROL, None, [SMALL])
    assert store.stat(SMALL).state is FileState.NEARLINE


def test_pins_expire_then_the_grace_then_eviction(archive: Archive) -> None:
    clock = Clock()
    store = make(archive, clock, pin_lifetime=100, release_grace=50)
    store.stage(ALICE, [SMALL])
    store.recall_once()
    clock.now += 99
    assert store.evict_expired() == []
    clock.now += 2  # pin expired: the grace starts now
    assert store.evict_expired() == []
    assert store.stat(SMALL).state is FileState.ONLINE
    clock.now += 51
    assert store.evict_expired() == [SMALL]
    assert store.stat(SMALL).state is FileState.NEARLINE


def test_cache_limit_evicts_least_recently_read_unpinned_first(archive: Archive) -> None:
    clock = Clock()
    store = make(archive, clock, cache_limit_bytes=71000, release_grace=3600)
    rid = store.stage(ALICE, [BIG, SMALL])
    store.recall_once()
    assert store.stat(BIG).state is FileState.ONLINE, "pinned files are never evicted for space"
    store.release(ALICE, rid, [BIG, SMALL])  # unpinned, but within the grace
    clock.now += 1
    store.open_read(BIG).close()  # BIG was read last: SMALL goes first ...
    store.evict_expired()
    assert store.stat(SMALL).state is FileState.ONLINE, "71000 bytes fit"
    archive_extra = archive.root / "dicom/2.25.1/2.25.11/2.25.113"
    archive_extra.write_bytes(b"x" * 500)
    store.stage(ALICE, [f"{SERIES}/2.25.113"])
    store.recall_once()  # 71500 bytes > limit: the least recently read unpinned copy goes
    assert store.stat(SMALL).state is FileState.NEARLINE
    assert store.stat(BIG).state is FileState.ONLINE


def test_cancel_and_foreign_paths(store: PosixNearline) -> None:
    rid = store.stage(ALICE, [BIG, SMALL])
    with pytest.raises(UsageError, match="does not belong"):
        store.cancel(ALICE, rid, [BIG, f"{SERIES}/other"])
    assert {f.state for f in store.poll(ALICE, rid).files} == {StageState.SUBMITTED}
    store.cancel(ALICE, rid, [BIG])
    assert store.recall_once() == 1, "only SMALL is still wanted"
    states = {f.path: f.state for f in store.poll(ALICE, rid).files}
    assert states == {BIG: StageState.CANCELLED, SMALL: StageState.COMPLETED}
    assert store.stat(BIG).state is FileState.NEARLINE


def test_requests_belong_to_their_submitter(store: PosixNearline) -> None:
    rid = store.stage(ALICE, [SMALL])
    with pytest.raises(NotFound):
        store.poll(CAROL, rid)
    with pytest.raises(NotFound):
        store.delete_request(CAROL, rid)
    store.delete_request(ALICE, rid)
    with pytest.raises(NotFound):
        store.poll(ALICE, rid)
    assert store.recall_once() == 0, "deleting the request cancelled its pending recall"


def test_missing_files_and_directories_fail_per_file(store: PosixNearline) -> None:
    rid = store.stage(ALICE, [SMALL, f"{SERIES}/nope", SERIES])
    store.recall_once()
    errors = {f.path: (f.state, f.error) for f in store.poll(ALICE, rid).files}
    assert errors[f"{SERIES}/nope"] == (StageState.FAILED, "no such file")
    assert errors[SERIES] == (StageState.FAILED, "is a directory")
    assert errors[SMALL] == (StageState.COMPLETED, None)


def test_a_recall_that_fails_marks_the_file_failed_with_the_reason(
    store: PosixNearline, archive: Archive
) -> None:
    rid = store.stage(ALICE, [SMALL])
    (archive.root / SMALL.lstrip("/")).unlink()  # the tape lost it after the request
    (archive.root / SMALL.lstrip("/")).mkdir()  # ... and something else took the name
    assert store.recall_once() == 0
    f = store.poll(ALICE, rid).files[0]
    assert f.state is StageState.FAILED
    assert f.error
    assert not (archive.cache / SMALL.lstrip("/")).exists()


def test_failed_state_is_shown_until_staged_again(store: PosixNearline, archive: Archive) -> None:
    path = archive.root / SMALL.lstrip("/")
    content = path.read_bytes()
    store.stage(ALICE, [SMALL])
    path.unlink()
    store.recall_once()
    path.write_bytes(content)
    entry = store.stat(SMALL)
    assert entry.state is FileState.FAILED
    assert "archive" in (entry.reason or "")
    with pytest.raises(FileOffline, match="last recall failed"):
        store.open_read(SMALL)
    store.stage(ALICE, [SMALL])
    store.recall_once()
    assert store.stat(SMALL).state is FileState.ONLINE


def test_stage_needs_read_on_every_path_and_does_nothing_otherwise(store: PosixNearline) -> None:
    with pytest.raises(PermissionDenied):
        store.stage(BOB, [SMALL])
    with pytest.raises(PermissionDenied):
        store.stage(ALICE, [SMALL, CLOSED])
    assert store.recall_once() == 0
    with pytest.raises(PermissionDenied):
        store.release(EVE, None, [SMALL])


def test_restart_cleans_debris_and_keeps_complete_copies(
    store: PosixNearline, archive: Archive
) -> None:
    store.stage(ALICE, [SMALL])
    store.recall_once()
    debris = archive.cache / "dicom/2.25.1/2.25.11/.2.25.111.abc.mdm-tmp"
    debris.write_bytes(b"half a file")
    again = PosixNearline(archive.root, archive.cache, Grants.from_mapping(GRANTS))
    assert not debris.exists()
    assert again.stat(SMALL).state is FileState.ONLINE
    assert again.stat(BIG).state is FileState.NEARLINE
    again.release(CAROL, "gfal2-placeholder-id", [SMALL])  # start-up pins: anyone with read
    assert again.stat(SMALL).state is FileState.NEARLINE


def test_background_thread_recalls(store: PosixNearline) -> None:
    import time

    store.start()
    rid = store.stage(ALICE, [SMALL])
    deadline = time.monotonic() + 10
    while store.poll(ALICE, rid).completed_at is None:
        assert time.monotonic() < deadline, "the recall thread did not complete the request"
        time.sleep(0.01)
    store.stop()
    assert store.stat(SMALL).state is FileState.ONLINE


def test_listing_and_archiveinfo(store: PosixNearline) -> None:
    assert [e.name for e in store.listdir(SERIES)] == ["2.25.111", "2.25.112"]
    assert [e.name for e in store.listdir("/")] == ["dicom"]
    with pytest.raises(FileNotFound):
        store.stat("/dicom/none")
    infos = store.archiveinfo([SMALL, "/dicom/none", SERIES])
    assert infos[0].locality is Locality.TAPE
    assert infos[0].error is None
    assert infos[1].locality is None
    assert infos[1].error
    assert infos[2].error == "is a directory"


def test_grants_nearest_rule_decides() -> None:
    grants = Grants.from_mapping(GRANTS)
    assert grants.allows(CAROL, SMALL, Right.READ)
    assert not grants.allows(CAROL, CLOSED, Right.READ)  # read = [] below /dicom/2.25.9
    assert not grants.allows(CAROL, CLOSED, Right.LIST)
    assert grants.allows(ALICE, CLOSED, Right.LIST)
    assert grants.allows(BOB, SMALL, Right.LIST)
    assert not grants.allows(BOB, SMALL, Right.READ)
    assert not grants.allows(EVE, "/dicom", Right.LIST)
    assert not Grants().allows(ALICE, SMALL, Right.LIST), "no grant: default deny"


def test_grants_file_and_its_errors(tmp_path: Path) -> None:
    acl = tmp_path / "acl.toml"
    acl.write_text(
        '[[grant]]\npath = "/dicom"\nlist = ["fqan:/mdm"]\nread = ["fqan:/mdm/radiology"]\n'
    )
    assert Grants.load(acl).allows(CAROL, SMALL, Right.READ)
    acl.write_text('[[grant]]\npath = "/dicom"\nwrite = ["fqan:/mdm"]\n')
    with pytest.raises(ConfigError, match="unknown right"):
        Grants.load(acl)
    acl.write_text('[[grant]]\npath = "/dicom"\nread = "fqan:/mdm"\n')
    with pytest.raises(ConfigError, match="list of ACL entries"):
        Grants.load(acl)
    with pytest.raises(ConfigError, match="does not exist"):
        Grants.load(tmp_path / "none.toml")


@pytest.mark.parametrize("bad", ["", "/dicom/../etc", "/a/./b", "/a\x00b", "a\\b"])
def test_normalize_refuses_paths_that_are_not_names(bad: str) -> None:
    with pytest.raises(UsageError):
        normalize_lfn(bad)


def test_normalize_collapses_slashes() -> None:
    assert normalize_lfn("//dicom///a/b/") == "/dicom/a/b"
    assert normalize_lfn("/") == "/"
