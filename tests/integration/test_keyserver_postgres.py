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
from sqlalchemy import select

from mdm.errors import NotEnoughShares, PermissionDenied
from mdm.keyserver import RequestInfo
from mdm.keyserver.models import AuditRecord
from mdm.keystore import new_key
from tests.helpers.postgres import new_database
from tests.unit.keyserver import test_keyserver_app as app_suite
from tests.unit.keyserver import test_register_many as batch_app_suite
from tests.unit.keyserver.inprocess import ALICE, BOB, CAROL, EVE, Cluster
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
