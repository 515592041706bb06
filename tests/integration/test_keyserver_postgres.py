"""The key-server storage on a real PostgreSQL (Debian package, started by the tests): the
same operations as on SQLite, plus what only a concurrent server shows (row locks on the audit
head and on the ACL under parallel writers)."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text

from mdm.errors import DuplicateKey, NotEnoughShares, PermissionDenied
from mdm.keyserver import KeyService, RequestInfo
from mdm.keyserver.models import AuditRecord
from mdm.keystore import new_key
from tests.helpers.postgres import new_database
from tests.helpers.procs import wait_until
from tests.unit.keyserver import test_keyserver_app as app_suite
from tests.unit.keyserver import test_register_many as batch_app_suite
from tests.unit.keyserver import test_registration as registration_suite
from tests.unit.keyserver.inprocess import ALICE, BOB, CAROL, EVE, Cluster, server_settings
from tests.unit.keystore import test_keystore_quorums as quorum_suite
from tests.unit.keystore import test_register_many as batch_client_suite

pytestmark = pytest.mark.postgres

# The storage-relevant tests of the SQLite suites, run again here on PostgreSQL: pytest
# resolves their ``cluster`` fixture in this module, i.e. the PostgreSQL-backed one below.
test_register_fetch_idempotent_and_conflicting = (
    app_suite.test_register_fetch_idempotent_and_conflicting
)
test_batch_fetch_checks_every_key_it_names = app_suite.test_batch_fetch_checks_every_key_it_names
test_acl_compare_and_swap = app_suite.test_acl_compare_and_swap
test_a_share_moved_to_another_key_id_does_not_unwrap = (
    app_suite.test_a_share_moved_to_another_key_id_does_not_unwrap
)
test_delete_leaves_a_tombstone_but_rollback_does_not = (
    app_suite.test_delete_leaves_a_tombstone_but_rollback_does_not
)
test_audit_log_never_contains_share_material = (
    app_suite.test_audit_log_never_contains_share_material
)
test_two_down_fetch_works_register_needs_quorum_k = (
    quorum_suite.test_two_down_fetch_works_register_needs_quorum_k
)
test_lying_server_is_named_and_key_still_right = (
    quorum_suite.test_lying_server_is_named_and_key_still_right
)
test_missing_and_denied_are_told_apart = quorum_suite.test_missing_and_denied_are_told_apart
test_concurrent_grant_and_revoke_converge = quorum_suite.test_concurrent_grant_and_revoke_converge
test_repair_and_scan = quorum_suite.test_repair_and_scan
test_one_bad_key_does_not_sink_the_others = (
    batch_app_suite.test_one_bad_key_does_not_sink_the_others
)
test_an_id_twice_in_one_batch_is_judged_like_a_second_request = (
    batch_app_suite.test_an_id_twice_in_one_batch_is_judged_like_a_second_request
)
test_a_key_below_quorum_is_rolled_back_alone = (
    batch_client_suite.test_a_key_below_quorum_is_rolled_back_alone
)

test_batch_stores_what_single_puts_store = (
    registration_suite.test_batch_stores_what_single_puts_store
)
test_every_refusal_is_judged_per_key_and_audited_in_order = (
    registration_suite.test_every_refusal_is_judged_per_key_and_audited_in_order
)
test_insert_falls_back_to_one_row_at_a_time = (
    registration_suite.test_insert_falls_back_to_one_row_at_a_time
)
test_batch_append_writes_the_records_single_appends_would = (
    registration_suite.test_batch_append_writes_the_records_single_appends_would
)


@pytest.fixture
def service(postgres_url: str, tmp_path: Path) -> Iterator[KeyService]:
    """One key server on its own fresh PostgreSQL database (for the registration suite)."""
    from mdm.keyserver import open_service

    url = new_database(postgres_url, f"ksreg_{uuid.uuid4().hex[:8]}")
    svc = open_service(server_settings(tmp_path, 1, database_url=url).keyserver)
    try:
        yield svc
    finally:
        svc.db.dispose()


def test_a_key_inserted_concurrently_is_refused_alone(service: KeyService) -> None:
    """Another request inserts key "race" after the batch read its key ids but before the
    batch INSERT: on READ COMMITTED the batch cannot see it, its INSERT waits on the row lock,
    then fails; only "race" is refused (audited as a conflict), the others are stored."""
    from mdm.keyserver.models import KeyRecord

    items = [(k, registration_suite.share_upload(k)) for k in ("before", "race", "after")]
    other = service.db.engine.connect()
    tx = other.begin()
    other.execute(insert(KeyRecord.__table__), registration_suite.row("race", EVE.dn))
    out: list[object] = []
    worker = threading.Thread(
        target=lambda: out.append(service.register_many(ALICE, RequestInfo(), items))
    )
    worker.start()
    try:
        with service.db.engine.connect() as probe:

            def batch_waits_on_the_row_lock() -> bool:
                waiting = probe.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO key_shares%'"
                    )
                ).scalar_one()
                probe.rollback()
                return bool(waiting)

            wait_until(batch_waits_on_the_row_lock, timeout=30)
        tx.commit()
    finally:
        other.close()
        worker.join(60)
    [results] = out
    assert isinstance(results, list)
    assert isinstance(results[1], DuplicateKey)
    assert "concurrently" in results[1].message
    assert [r[1] for r in (results[0], results[2])] == [True, True]
    audit = registration_suite.audit_of(service)
    assert [(k, o) for k, o, _ in audit] == [
        ("before", "granted"),
        ("race", "conflict"),
        ("after", "granted"),
    ]
    assert service.verify_audit() == 3
    with service.db.transaction() as s:
        owners = {r.key_id: r.owner for r in s.execute(select(KeyRecord.key_id, KeyRecord.owner))}
    assert owners == {"before": ALICE.dn, "race": EVE.dn, "after": ALICE.dn}


@pytest.fixture
def cluster(postgres_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """Five servers, each on its own fresh PostgreSQL database."""
    tag = uuid.uuid4().hex[:8]
    urls = [new_database(postgres_url, f"ks_{tag}_{i}") for i in range(1, 6)]
    c = Cluster(tmp_path, 5).start(database_urls=urls)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def pg_cluster(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    urls = [new_database(postgres_url, f"keyserver_{i}") for i in range(1, 6)]
    c = Cluster(tmp_path_factory.mktemp("pgks"), 5).start(database_urls=urls)
    try:
        yield c
    finally:
        c.close()


def test_register_fetch_acl_on_postgres(pg_cluster: Cluster) -> None:
    assert pg_cluster.services[0].db.engine.dialect.name == "postgresql"
    key = new_key()
    with pg_cluster.keystore(ALICE) as ks:
        ks.register("pg-1", key, acl={"fqan:/mdm/radiology": ["read"]})
        assert ks.fetch("pg-1") == key
    with pg_cluster.keystore(BOB) as bob:
        assert bob.fetch("pg-1") == key
    with pg_cluster.keystore(EVE) as eve, pytest.raises(NotEnoughShares):
        eve.fetch("pg-1")
    with pg_cluster.keystore(ALICE) as ks:
        ks.revoke("pg-1", "fqan:/mdm/radiology")
    with pg_cluster.keystore(BOB) as bob, pytest.raises(NotEnoughShares):
        bob.fetch("pg-1")


def test_parallel_requests_keep_one_audit_chain(pg_cluster: Cluster) -> None:
    svc = pg_cluster.services[1]
    with pg_cluster.keystore(ALICE) as ks:
        ks.register("pg-audit", new_key(), acl={f"dn:{CAROL.dn}": ["read"]})
    errors: list[BaseException] = []

    def hammer(i: int) -> None:
        try:
            for _ in range(10):
                who = CAROL if i % 2 else EVE
                with contextlib.suppress(PermissionDenied):
                    svc.fetch(who, RequestInfo("127.0.0.1", f"t{i}"), "pg-audit")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    count = svc.verify_audit()
    with svc.db.transaction() as s:
        seqs = list(s.scalars(select(AuditRecord.seq).order_by(AuditRecord.seq)))
    assert seqs == list(range(1, count + 1))
    assert count >= 61


def test_concurrent_acl_writers_on_postgres(pg_cluster: Cluster) -> None:
    with pg_cluster.keystore(ALICE) as ks:
        ks.register("pg-race", new_key())
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with pg_cluster.keystore(ALICE) as ks:
                ks.grant("pg-race", f"dn:/CN=user{i}")
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with pg_cluster.keystore(ALICE) as ks:
        final = ks.get_acl("pg-race")
    assert {f"dn:/CN=user{i}" for i in range(4)} <= set(final.entries)
    assert final.version >= 5  # 4 grants; a retried partial write may add a version


def test_restart_on_same_postgres_database(pg_cluster: Cluster, tmp_path: Path) -> None:
    from mdm.keyserver import open_service
    from tests.unit.keyserver.inprocess import server_settings

    key = new_key()
    with pg_cluster.keystore(ALICE) as ks:
        ks.register("pg-restart", key)
    url = pg_cluster.services[0].db.url
    settings = server_settings(pg_cluster.tmp_path, 1, database_url=url)
    svc = open_service(settings.keyserver)
    try:
        view = svc.fetch(ALICE, RequestInfo(), "pg-restart")
        assert view.share is not None
        assert view.share[-1] == 1
    finally:
        svc.db.dispose()
