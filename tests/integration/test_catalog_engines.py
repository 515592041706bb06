"""The same catalog suite on SQLite and on a real PostgreSQL (STYLE C12: engine parametrization).

The QIDO matching conformance tests and the file/staging tests of tests/unit/catalog are
collected here again, with ``catalog_url`` parametrized over both engines (one fresh database
per engine for this module). PostgreSQL adds what SQLite cannot show: ``FOR UPDATE SKIP
LOCKED`` claims under real concurrency, JSONB, and its own typing of the migrations. A worker
process killed with SIGKILL proves that its claim comes back after the lease on both engines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from mdm.catalog import audit, staging
from mdm.catalog.db import CatalogDatabases
from mdm.catalog.models import StageRequest, Study
from mdm.catalog.registration import Registration, register
from mdm.errors import Conflict
from tests.helpers.postgres import new_database
from tests.helpers.procs import wait_until
from tests.unit.catalog import test_files_staging, test_migrations, test_qido_matching
from tests.unit.catalog.helpers import (
    ADMIN,
    SERVICE,
    caller,
    dataset,
    dbs,
    empty_queue,
)

__all__ = ["dbs", "empty_queue"]
ROOT = Path(__file__).resolve().parents[2]

for _module in (test_qido_matching, test_files_staging):
    for _name in dir(_module):
        if _name.startswith("test_"):
            globals()[_name] = getattr(_module, _name)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def catalog_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('engines')}/catalog.db"
    return new_database(request.getfixturevalue("postgres_url"), "catalog_engines")


def test_postgres_schema_uses_jsonb_and_agrees_with_models(dbs: CatalogDatabases) -> None:
    assert test_migrations.diff(dbs, "catalog") == []
    assert test_migrations.diff(dbs, "vault") == []
    if dbs.catalog.dialect == "postgresql":
        columns = {
            c["name"]: c["type"] for c in inspect(dbs.catalog.engine).get_columns("md_series")
        }
        assert type(columns["attrs"]).__name__ == "JSONB"


WORKER = textwrap.dedent(
    """
    import sys, time
    from mdm.catalog.db import Database
    from mdm.catalog import staging
    from tests.unit.catalog.helpers import SERVICE, caller
    db = Database(sys.argv[1])
    with db.session(write=True) as s:
        batch = staging.claim(s, caller(SERVICE), "doomed", limit=10, lease=float(sys.argv[2]))
    print(len(batch), flush=True)
    time.sleep(600)
    """
)


def test_a_killed_workers_claim_is_issued_again(empty_queue: CatalogDatabases) -> None:
    dbs = empty_queue
    paths = test_files_staging._queue(dbs, 1, 4, 91)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", WORKER, dbs.catalog.url, "1.0"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "4"
        finally:
            proc.kill()  # SIGKILL: no cleanup, no goodbye
            proc.wait(10)
    with dbs.catalog.session(write=True) as s:
        assert staging.claim(s, caller(SERVICE), "survivor", limit=10) == []  # lease still runs

    def reissued() -> bool:
        with dbs.catalog.session(write=True) as s:
            batch = staging.claim(s, caller(SERVICE), "survivor", limit=10)
            got = sorted(f.path for f in batch)
            return got == sorted(paths) and all(f.attempts == 2 for f in batch)

    wait_until(reissued, timeout=15, interval=0.2)
    with dbs.catalog.session(write=True) as s:
        rid = s.scalar(select(StageRequest.id))
        request = staging.get_request(s, caller(ADMIN), str(rid))
        assert {f.claimed_by for f in request.files} == {"survivor"}
        with pytest.raises(Conflict):  # the dead worker's claim is gone for good
            staging.complete(s, caller(SERVICE), "doomed", request.files[0].id)


def test_postgres_claims_skip_locked_rows_instead_of_waiting(empty_queue: CatalogDatabases) -> None:
    dbs = empty_queue
    if dbs.catalog.dialect != "postgresql":
        assert dbs.catalog.dialect == "sqlite"  # SQLite serializes claims: proved by the twin test
        return
    test_files_staging._queue(dbs, 2, 2, 97)
    # One claimer holds its transaction open; a second one must get the other series at once.
    with dbs.catalog.session(write=True) as first:
        mine = staging.claim(first, caller(SERVICE), "slow", limit=10)
        with dbs.catalog.session(write=True) as second:
            second.execute(text("SET LOCAL lock_timeout = '2s'"))
            theirs = staging.claim(second, caller(SERVICE), "fast", limit=10)
        assert len(mine) == 2
        assert len(theirs) == 2
        assert {f.series_uid for f in mine}.isdisjoint({f.series_uid for f in theirs})


def _in_threads(n: int, work: Callable[[int], None]) -> None:
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            work(i)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_concurrent_audit_appends_keep_one_chain(dbs: CatalogDatabases) -> None:
    with dbs.vault.session() as s:
        before = audit.verify(s).records

    def append(i: int) -> None:
        for j in range(10):
            with dbs.vault.session(write=True) as s:
                audit.append(s, actor=f"dn:/CN=t{i}", action="test", target=f"{i}.{j}")

    _in_threads(4, append)
    with dbs.vault.session() as s:
        assert audit.verify(s).records == before + 40


def test_concurrent_registrations_of_one_new_study(dbs: CatalogDatabases) -> None:
    study = "2.25.990"

    def register_series(i: int) -> None:
        modality = ("CT", "MR", "PT", "US")[i]
        for j in range(5):
            body = {
                "dataset": dataset(study, f"{study}.{i}", f"{study}.{i}.{j}", modality=modality)
            }
            with dbs.catalog.session(write=True) as s:
                register(s, s, caller(ADMIN), Registration.from_json(body))

    _in_threads(4, register_series)
    with dbs.catalog.session() as s:
        row = s.execute(
            select(Study.number_of_series, Study.number_of_instances, Study.modalities_in_study)
            .where(Study.study_uid == study)
        ).one()  # fmt: skip
    assert tuple(row) == (4, 20, "CT\\MR\\PT\\US")
