"""Recording a recalled batch in one pass (``catalog.recalls``) on a real SQLite catalog: the
same outcomes as the single-file functions, claim and checksum rules included."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from mdm.catalog import files, staging
from mdm.catalog.db import CatalogDatabases
from mdm.catalog.files import FileInfo
from mdm.catalog.models import Entry, Instance, ReplicaState, StageFile, StageState, utcnow
from mdm.catalog.recalls import Recalled, Recorded, record
from mdm.catalog.registration import Registration, register
from mdm.errors import PermissionDenied
from tests.unit.catalog.helpers import ADMIN, ALICE, SERVICE, caller, dataset, dbs

__all__ = ["dbs"]

STUDY, SERIES = "2.25.81", "2.25.811"
PATHS = [f"/dicom/{STUDY}/{SERIES}/2.25.811{i}" for i in range(1, 5)]
SE = "se-recall"
A1, S1 = "0" * 8, "a" * 64


@pytest.fixture(scope="module")
def catalog_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    return f"sqlite:///{tmp_path_factory.mktemp('recalls')}/catalog.db"


@pytest.fixture(autouse=True)
def registered(dbs: CatalogDatabases) -> None:
    with dbs.catalog.session(write=True) as s:
        for i, path in enumerate(PATHS, start=1):
            body = {"dataset": dataset(STUDY, SERIES, path.rsplit("/", 1)[-1], instance_number=i)}
            register(s, s, caller(ADMIN), Registration.from_json(body))


def claimed(dbs: CatalogDatabases, worker: str) -> dict[str, int]:
    with dbs.catalog.session(write=True) as s:
        staging.submit(s, caller(ADMIN), PATHS)
        return {f.path: f.id for f in staging.claim(s, caller(SERVICE), worker, limit=10)}


def run(dbs: CatalogDatabases, worker: str, items: list[Recalled]) -> Recorded:
    with dbs.catalog.session(write=True) as s:
        return record(
            s,
            caller(SERVICE),
            worker,
            items,
            se=SE,
            url=lambda p: "https://se" + p,
            pinned_until=utcnow() + dt.timedelta(hours=1),
        )


def stage_state(dbs: CatalogDatabases, file_id: int) -> tuple[StageState, str | None]:
    with dbs.catalog.session() as s:
        f = s.get(StageFile, file_id)
        assert f is not None
        return f.state, f.reason


def replica_state(dbs: CatalogDatabases, path: str) -> ReplicaState | None:
    with dbs.catalog.session() as s:
        mine = [r for r in files.list_replicas(s, caller(ADMIN), path) if r.se == SE]
        return mine[0].state if mine else None


def test_a_batch_becomes_online_failed_or_lost_in_one_call(dbs: CatalogDatabases) -> None:
    ids = claimed(dbs, "w1")
    p1, p2, p3, p4 = PATHS
    header = {"00280010": {"vr": "US", "Value": [512]}, "00209999": {"vr": "LO", "Value": ["x"]}}
    with dbs.catalog.session(write=True) as s:  # p4's claim expires and goes to another worker
        f4 = s.get(StageFile, ids[p4])
        assert f4 is not None
        f4.claimed_by = "w2"
    out = run(
        dbs,
        "w1",
        [
            Recalled(p1, [ids[p1]], None, FileInfo(10, A1, S1, "k1"), header),
            Recalled(p2, [ids[p2]], "PACS 'main' did not deliver it"),
            Recalled(p3, [ids[p3]], None, FileInfo(11, A1, S1, "k3")),
            Recalled(p4, [ids[p4]], None, FileInfo(12, A1, S1, "k4")),
        ],
    )
    assert sorted(out.online) == [p1, p3]
    assert out.failed == {p2: "PACS 'main' did not deliver it"}
    assert out.lost == [p4]
    assert stage_state(dbs, ids[p1]) == (StageState.COMPLETED, None)
    assert stage_state(dbs, ids[p2]) == (StageState.FAILED, "PACS 'main' did not deliver it")
    assert stage_state(dbs, ids[p4])[0] is StageState.STARTED, "another worker's claim: untouched"
    assert replica_state(dbs, p1) is ReplicaState.ONLINE
    assert replica_state(dbs, p2) is ReplicaState.FAILED
    assert replica_state(dbs, p4) is None
    with dbs.catalog.session() as s:
        entry = s.scalar(select(Entry).where(Entry.path == p1))
        assert entry is not None
        assert (entry.size, entry.adler32, entry.sha256, entry.key_id) == (10, A1, S1, "k1")
        inst = s.scalar(select(Instance).where(Instance.entry_fk == entry.id))
        assert inst is not None
        assert inst.rows == 512
        assert inst.attrs.get("00209999") == {"vr": "LO", "Value": ["x"]}


def set_replica(dbs: CatalogDatabases, path: str, state: ReplicaState) -> None:
    with dbs.catalog.session(write=True) as s:
        files.add_replica(
            s, caller(ADMIN), path, se=SE, url="https://se" + path, state=state,
            pinned_until=utcnow() + dt.timedelta(hours=1), info=FileInfo(10, A1, S1),
        )  # fmt: skip


def test_changed_checksums_fail_and_a_failure_never_hides_an_online_copy(
    dbs: CatalogDatabases,
) -> None:
    p1, p2, p3 = PATHS[:3]
    with dbs.catalog.session(write=True) as s:  # p1 was recalled once: its checksums are known
        files.set_content(s, caller(ADMIN), p1, FileInfo(10, A1, S1, "k1"))
    for path in (p1, p3):  # evicted, then staged again
        set_replica(dbs, path, ReplicaState.NEARLINE)
    ids = claimed(dbs, "w3")
    assert {p1, p2, p3} <= set(ids)
    set_replica(dbs, p3, ReplicaState.ONLINE)  # another worker recorded p3 meanwhile
    out = run(
        dbs,
        "w3",
        [
            Recalled(p1, [ids[p1]], None, FileInfo(10, "ffffffff", S1, "k1")),
            Recalled(p2, [ids[p2]], None, FileInfo(10, A1, S1, "k2")),
            Recalled(p3, [ids[p3]], "PACS 'main': association aborted"),
        ],
    )
    assert out.online == [p2]
    assert out.failed == {
        p1: "adler32 differs from the one recorded at the first recall",
        p3: "PACS 'main': association aborted",
    }
    assert replica_state(dbs, p1) is ReplicaState.FAILED
    assert replica_state(dbs, p3) is ReplicaState.ONLINE, "the good copy stays visible"
    assert stage_state(dbs, ids[p3]) == (StageState.FAILED, "PACS 'main': association aborted")
    with dbs.catalog.session() as s:
        entry = s.scalar(select(Entry).where(Entry.path == p1))
        assert entry is not None
        assert entry.adler32 == A1, "recorded checksums never change"


def test_only_services_record(dbs: CatalogDatabases) -> None:
    with dbs.catalog.session(write=True) as s, pytest.raises(PermissionDenied):
        record(
            s, caller(ALICE), "w1", [], se=SE, url=str, pinned_until=utcnow()
        )  # fmt: skip


def test_a_recalled_file_is_pinned_for_the_longest_lifetime_its_requests_asked(
    dbs: CatalogDatabases,
) -> None:
    """Two requests stage one file, one with the Tape REST ``diskLifetime`` of a week: the
    copy the worker records stays pinned for the week, not the default hour."""
    path = "/dicom/2.25.82/2.25.821/2.25.8211"
    with dbs.catalog.session(write=True) as s:
        body = {"dataset": dataset("2.25.82", "2.25.821", "2.25.8211")}
        register(s, s, caller(ADMIN), Registration.from_json(body))
        staging.submit(s, caller(ADMIN), [path])  # the default lifetime
        staging.submit(s, caller(ADMIN), [path], disk_lifetime=7 * 86400)
        ids = [f.id for f in staging.claim(s, caller(SERVICE), "w9", limit=50) if f.path == path]
    assert len(ids) == 2
    out = run(dbs, "w9", [Recalled(path, ids, None, FileInfo(10, A1, S1, "k9"))])
    assert out.online == [path]
    with dbs.catalog.session() as s:
        (replica,) = [r for r in files.list_replicas(s, caller(ADMIN), path) if r.se == SE]
        assert replica.pinned_until is not None
        assert replica.pinned_until > utcnow() + dt.timedelta(days=6)
