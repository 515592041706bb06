"""File catalog and staging queue on a real database (SQLite here, PostgreSQL in integration).

The staging proof here: two workers claiming at the same time never get the same file. The
killed-worker proof needs a real process and lives in tests/integration/test_catalog_engines.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import event, func, select

from mdm.catalog import files, staging
from mdm.catalog.db import CatalogDatabases
from mdm.catalog.models import Entry, ReplicaState, StageFile, StageState, utcnow
from mdm.catalog.registration import Registration, register, register_many
from mdm.errors import (
    ChecksumMismatch,
    Conflict,
    FileNotFound,
    PermissionDenied,
    UsageError,
)
from tests.unit.catalog.helpers import (
    ADMIN,
    ALICE,
    BOB,
    EVE,
    S1,
    S1_MR,
    SERVICE,
    caller,
    dataset,
    dbs,
    empty_queue,
)

__all__ = ["dbs", "empty_queue"]


@pytest.fixture(scope="module")
def catalog_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    return f"sqlite:///{tmp_path_factory.mktemp('files')}/catalog.db"


def _register(
    dbs: CatalogDatabases, study: str, series: str, sop: str, **kw: object
) -> tuple[str, bool]:
    body = {"dataset": dataset(study, series, sop), **kw}
    with dbs.catalog.session(write=True) as s:
        entry, created = register(s, s, caller(ADMIN), Registration.from_json(body))
        return entry.path, created


def test_registering_twice_changes_nothing(dbs: CatalogDatabases) -> None:
    replica = {"se": "MDM-SE", "url": "https://se/x", "state": "NEARLINE"}
    path, created = _register(dbs, "2.25.5001", "2.25.5002", "2.25.5003", replica=replica)
    assert created
    assert path == "/dicom/2.25.5001/2.25.5002/2.25.5003"
    with dbs.catalog.session() as s:
        first = files.entry_dict(files.get_entry(s, caller(ADMIN), path), with_replicas=True)
    other = {"se": "OTHER", "url": "https://other/x", "state": "ONLINE"}
    again, created = _register(dbs, "2.25.5001", "2.25.5002", "2.25.5003", replica=other)
    assert (again, created) == (path, False)
    with dbs.catalog.session() as s:
        assert (
            files.entry_dict(files.get_entry(s, caller(ADMIN), path), with_replicas=True) == first
        )
        assert files.get_entry(s, caller(ADMIN), first["guid"]).path == path  # stat by GUID


def test_directories_listing_and_stat(dbs: CatalogDatabases) -> None:
    _register(dbs, "2.25.5101", "2.25.5102", "2.25.5103")
    _register(dbs, "2.25.5101", "2.25.5102", "2.25.5104")
    with dbs.catalog.session() as s:
        names = [e.name for e in files.list_dir(s, caller(ADMIN), "/dicom/2.25.5101/2.25.5102")]
        assert names == ["2.25.5103", "2.25.5104"]
        study = files.get_entry(s, caller(ADMIN), "/dicom/2.25.5101")
        assert study.kind.value == "directory"
        # Bob (list on /dicom via his VOMS group) sees it, Eve does not even learn it exists
        assert files.get_entry(s, caller(BOB), "/dicom/2.25.5101").path == "/dicom/2.25.5101"
        with pytest.raises(FileNotFound):
            files.get_entry(s, caller(EVE), "/dicom/2.25.5101")
        with pytest.raises(FileNotFound):
            files.list_dir(s, caller(EVE), "/dicom/2.25.5101")
        assert [e.name for e in files.list_dir(s, caller(ALICE), "/dicom")] == [S1]
        with pytest.raises(UsageError):
            files.get_entry(s, caller(ADMIN), "/etc/passwd")


def test_replica_states_and_checksums(dbs: CatalogDatabases) -> None:
    path, _ = _register(dbs, "2.25.5201", "2.25.5202", "2.25.5203")
    pinned = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    info = files.FileInfo(size=1234, adler32="0a1b2c3d", sha256="ab" * 32, key_id="k-1")
    with dbs.catalog.session(write=True) as s:
        files.add_replica(
            s, caller(SERVICE), path, se="MDM-SE", url="https://se/f", state=ReplicaState.STAGING
        )
        files.set_content(s, caller(SERVICE), path, info)
        r = files.add_replica(
            s, caller(SERVICE), path, se="MDM-SE", url="https://se/f",
            state=ReplicaState.ONLINE, pinned_until=pinned, info=info,
        )  # fmt: skip
        assert (r.state, r.pinned_until) == (ReplicaState.ONLINE, pinned)
        files.add_replica(s, caller(SERVICE), path, se="FAR", url="davs://far/f",
                          state=ReplicaState.FAILED, reason="disk full")  # fmt: skip
    with dbs.catalog.session() as s:
        reps = {r.se: r for r in files.list_replicas(s, caller(ADMIN), path)}
        assert reps["MDM-SE"].sha256 == "ab" * 32
        assert reps["FAR"].reason == "disk full"
        with pytest.raises(PermissionDenied):
            files.list_replicas(s, caller(ALICE), f"/dicom/{S1}/{S1_MR}/2.25.3011")  # list, no read
    with pytest.raises(ChecksumMismatch), dbs.catalog.session(write=True) as s:
        files.set_content(s, caller(SERVICE), path, files.FileInfo(sha256="cd" * 32))
    with pytest.raises(UsageError, match="needs a reason"), dbs.catalog.session(write=True) as s:
        files.add_replica(s, caller(SERVICE), path, se="X", url="u", state=ReplicaState.FAILED)
    with pytest.raises(UsageError, match="adler32"), dbs.catalog.session(write=True) as s:
        files.add_replica(s, caller(SERVICE), path, se="X", url="u", state=ReplicaState.ONLINE,
                          info=files.FileInfo(adler32="NOT-HEX"))  # fmt: skip
    with dbs.catalog.session(write=True) as s:
        files.remove_replica(s, caller(SERVICE), path, "FAR")
        assert [r.se for r in files.list_replicas(s, caller(ADMIN), path)] == ["MDM-SE"]


def _queue(dbs: CatalogDatabases, n_series: int, per_series: int, base: int) -> list[str]:
    paths = []
    for i in range(n_series):
        for j in range(per_series):
            study, series, sop = f"2.25.{base}", f"2.25.{base}{i}", f"2.25.{base}{i}{j:03d}"
            paths.append(_register(dbs, study, series, sop)[0])
    with dbs.catalog.session(write=True) as s:
        staging.submit(s, caller(BOB), paths)
    return paths


def test_claims_are_grouped_by_series_and_finish_cleanly(empty_queue: CatalogDatabases) -> None:
    dbs = empty_queue
    paths = _queue(dbs, 2, 3, 61)
    with dbs.catalog.session(write=True) as s:
        batch = staging.claim(s, caller(SERVICE), "w1", limit=10)
    assert [f.path for f in batch] == paths[:3]  # one series per batch
    with dbs.catalog.session(write=True) as s:
        staging.complete(s, caller(SERVICE), "w1", batch[0].id)
        staging.fail(s, caller(SERVICE), "w1", batch[1].id, "C-GET failed: 0xA701")
        with pytest.raises(Conflict):
            staging.complete(s, caller(SERVICE), "someone-else", batch[2].id)
        with pytest.raises(PermissionDenied):
            staging.claim(s, caller(BOB), "bob", limit=1)
    with dbs.catalog.session(write=True) as s:
        request = staging.cancel(s, caller(BOB), batch[0].request_id)
    states = [f.state for f in request.files]
    assert states[:2] == [StageState.COMPLETED, StageState.FAILED]
    assert set(states[2:]) == {StageState.CANCELLED}
    assert request.files[1].reason == "C-GET failed: 0xA701"


def test_a_whole_series_claim_takes_a_series_only_if_it_fits(
    empty_queue: CatalogDatabases,
) -> None:
    """What the recall worker tops a small batch up with: the next series, whole or not at
    all (a batch never splits a series it did not start with)."""
    dbs = empty_queue
    paths = _queue(dbs, 3, 4, 62)
    with dbs.catalog.session(write=True) as s:
        first = staging.claim(s, caller(SERVICE), "w", limit=10)
        assert [f.path for f in first] == paths[:4]
        assert staging.claim(s, caller(SERVICE), "w", limit=3, whole_series=True) == []
        second = staging.claim(s, caller(SERVICE), "w", limit=4, whole_series=True)
        assert [f.path for f in second] == paths[4:8]
        assert all(f.state is StageState.STARTED for f in second)
        partial = staging.claim(s, caller(SERVICE), "w", limit=2)  # without: a part of one
        assert [f.path for f in partial] == paths[8:10]


def test_staging_needs_read_and_skips_online_files(empty_queue: CatalogDatabases) -> None:
    dbs = empty_queue
    path, _ = _register(dbs, "2.25.7001", "2.25.7002", "2.25.7003")
    with pytest.raises(PermissionDenied), dbs.catalog.session(write=True) as s:
        staging.submit(s, caller(ALICE), [f"/dicom/{S1}/{S1_MR}/2.25.3011"])  # list only
    with dbs.catalog.session(write=True) as s:
        files.add_replica(s, caller(SERVICE), path, se="SE", url="u", state=ReplicaState.ONLINE)
        request = staging.submit(s, caller(BOB), [path])
        assert request.files[0].state is StageState.COMPLETED
        assert staging.claim(s, caller(SERVICE), "w", limit=5) == []


def test_a_large_staging_request_is_read_in_a_few_queries_and_judged_in_order(
    empty_queue: CatalogDatabases,
) -> None:
    """A Tape REST stage request of thousands of files: its entries, replicas and grants are
    read a few hundred per query (it was four queries per file for a user), and the first bad
    name is still the one reported, whatever the bad names after it."""
    dbs = empty_queue
    paths = [_register(dbs, "2.25.93", f"2.25.93{i}", f"2.25.93{i}{j:03d}")[0]
             for i in range(3) for j in range(40)]  # fmt: skip
    statements: list[str] = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(dbs.catalog.engine, "before_cursor_execute", listen)
    try:
        with dbs.catalog.session(write=True) as s:
            statements.clear()
            request = staging.submit(s, caller(BOB), [*paths, paths[0]])  # a repeat is one file
            reads = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
    finally:
        event.remove(dbs.catalog.engine, "before_cursor_execute", listen)
    assert [f.path for f in request.files] == paths
    assert {f.state for f in request.files} == {StageState.SUBMITTED}
    assert len(reads) <= 4, reads  # entries, replicas, grants (was 4 x 120)
    with dbs.catalog.session() as s:
        guid = files.get_entry(s, caller(ADMIN), paths[5]).guid
    with dbs.catalog.session(write=True) as s:
        by_guid = staging.submit(s, caller(BOB), [guid])
        assert [f.path for f in by_guid.files] == [paths[5]]

    missing, directory = paths[0] + "9", paths[0].rsplit("/", 1)[0]
    for names, error, named in (
        ([paths[1], missing, directory], FileNotFound, missing),
        ([paths[1], directory, missing], UsageError, directory),
    ):
        with pytest.raises(error) as info, dbs.catalog.session(write=True) as s:
            staging.submit(s, caller(BOB), names)
        assert named in str(info.value)
    with pytest.raises(FileNotFound), dbs.catalog.session(write=True) as s:
        staging.submit(s, caller(EVE), paths[:3])  # no list right: not found, no probing
    with pytest.raises(PermissionDenied), dbs.catalog.session(write=True) as s:
        staging.submit(s, caller(ALICE), [f"/dicom/{S1}/{S1_MR}/2.25.3011"])  # list, no read
    with dbs.catalog.session() as s:
        assert s.scalar(select(func.count(StageFile.id))) == 121, "nothing queued by the refusals"


def test_two_workers_claiming_at_once_never_get_the_same_file(
    empty_queue: CatalogDatabases,
) -> None:
    dbs = empty_queue
    paths = _queue(dbs, 6, 5, 81)
    got: dict[str, list[str]] = {"a": [], "b": []}
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            start.wait()
            while True:
                with dbs.catalog.session(write=True) as s:
                    batch = staging.claim(s, caller(SERVICE), name, limit=3)
                    got[name] += [f.path for f in batch]
                if not batch:
                    return
        except BaseException as exc:  # report in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert not set(got["a"]) & set(got["b"])
    assert sorted(got["a"] + got["b"]) == sorted(paths)


def test_claims_that_keep_expiring_end_failed(empty_queue: CatalogDatabases) -> None:
    dbs = empty_queue
    _queue(dbs, 1, 1, 95)
    for _ in range(2):
        with dbs.catalog.session(write=True) as s:
            assert (
                len(staging.claim(s, caller(SERVICE), "hung", limit=1, lease=0.001, max_attempts=2))
                == 1
            )
        time.sleep(0.01)
    with dbs.catalog.session(write=True) as s:
        assert staging.claim(s, caller(SERVICE), "next", limit=1, max_attempts=2) == []
        (f,) = s.scalars(select(StageFile)).all()
        assert f.state is StageState.FAILED
        assert "expired 2 times" in (f.reason or "")


def test_a_claim_taken_over_keeps_its_start_and_counts_the_attempt(
    empty_queue: CatalogDatabases,
) -> None:
    """``claim_rows`` (the recall worker's claim, Core statements): ``(id, path)`` in id
    order; an expired claim taken over keeps when the file was first started, counts one
    more attempt and names its new worker."""
    dbs = empty_queue
    paths = _queue(dbs, 1, 3, 97)
    with dbs.catalog.session(write=True) as s:
        rows = staging.claim_rows(s, caller(SERVICE), "first", limit=5, lease=0.001)
    assert [p for _, p in rows] == paths
    assert [i for i, _ in rows] == sorted(i for i, _ in rows)
    with dbs.catalog.session() as s:
        first = s.get(StageFile, rows[0][0])
        assert first is not None
        started = first.started
        assert (first.state, first.claimed_by, first.attempts) == (StageState.STARTED, "first", 1)
        assert started is not None
    time.sleep(0.01)
    with dbs.catalog.session(write=True) as s:
        assert staging.claim_rows(s, caller(SERVICE), "second", limit=5) == rows
    with dbs.catalog.session() as s:
        again = s.get(StageFile, rows[0][0])
        assert again is not None
        assert (again.state, again.claimed_by, again.attempts) == (StageState.STARTED, "second", 2)
        assert again.started == started
        assert again.claim_expires is not None
        assert again.claim_expires > utcnow() + dt.timedelta(seconds=200)  # default lease


def test_a_batch_looks_its_files_up_in_one_query_and_registers_each_once(
    dbs: CatalogDatabases,
) -> None:
    """``register_many`` (a study of a PACS walk, ``POST /files/batch``) reads which of its files
    exist with one query instead of one per instance; a file already there, or repeated in the
    batch, is still registered once."""
    study, series = "2.25.94", "2.25.941"
    _register(dbs, study, series, "2.25.9410")  # known before the batch
    sops = [f"2.25.941{j}" for j in range(6)] + ["2.25.9413"]  # the last one repeats
    regs = [Registration.from_json({"dataset": dataset(study, series, s)}) for s in sops]
    lookups: list[object] = []

    def listen(_c: object, _cur: object, statement: str, params: object, *_a: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and f"{series}/" in str(params):
            lookups.append(params)  # a query naming one of the batch's files (not its series)

    event.listen(dbs.catalog.engine, "before_cursor_execute", listen)
    try:
        with dbs.catalog.session(write=True) as s:
            done = register_many(s, s, caller(ADMIN), regs)
            made = [(e.path.rsplit("/", 1)[1], created) for e, created in done]
    finally:
        event.remove(dbs.catalog.engine, "before_cursor_execute", listen)
    assert made == [(s, s not in ("2.25.9410", "2.25.9413") or i == 3) for i, s in
                    enumerate(sops)]  # fmt: skip
    assert len(lookups) <= 2, lookups  # the prefetch, and the repeat's own lookup
    with dbs.catalog.session() as s:
        n = s.scalar(select(func.count()).where(Entry.path.like(f"/dicom/{study}/{series}/%")))
    assert n == 6
