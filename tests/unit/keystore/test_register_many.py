"""``KeyStore.register_many`` against 5 in-process key servers: the quorum and rollback rules
of ``register`` applied to each key alone, chunking, and refusals that touch one key only."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from mdm.errors import NotEnoughShares, QuorumNotReached, UsageError
from mdm.keyserver import RequestInfo
from mdm.keyserver.models import AuditRecord
from mdm.keystore import RegisterResult, new_key
from tests.unit.keyserver.inprocess import ALICE, BOB, EVE, Cluster
from tests.unit.keystore.test_keystore_quorums import present


def test_all_up_every_key_registered_and_fetchable(cluster: Cluster) -> None:
    keys = {f"m{i}": new_key() for i in range(5)}
    acl = {f"dn:{BOB.dn}": ["read"]}
    with cluster.keystore(ALICE) as ks:
        ks.register_batch = 2  # 3 requests per server
        out = ks.register_many([(kid, key, acl) for kid, key in keys.items()])
    assert set(out) == set(keys)
    for res in out.values():
        assert isinstance(res, RegisterResult)
        assert res.acked == (1, 2, 3, 4, 5)
    with cluster.keystore(BOB) as ks:
        assert {kid: ks.fetch(kid) for kid in keys} == keys
    with cluster.services[0].db.transaction() as s:
        rows = s.scalars(select(AuditRecord).where(AuditRecord.op == "register")).all()
        assert sorted(r.key_id for r in rows) == sorted(keys)  # one record per key
        assert len({r.request_id for r in rows}) == 3


def test_a_key_below_quorum_is_rolled_back_alone(cluster: Cluster) -> None:
    """ "taken" already holds other content on servers 1-2 (a clash), "lost" on 1-3."""
    with cluster.keystore(ALICE) as ks:
        ks.register("taken", new_key())
        ks.register("lost", new_key())
    for slot, svc in enumerate(cluster.services, 1):  # keep them only where the test says
        for kid, keep in (("taken", (1, 2)), ("lost", (1, 2, 3))):
            if slot not in keep:
                svc.delete(ALICE, RequestInfo(client="test"), kid, rollback=True)
    items = [("taken", new_key(), None), ("fresh", new_key(), None), ("lost", new_key(), None)]
    with cluster.keystore(ALICE) as ks:
        out = ks.register_many(items)
    assert isinstance(out["fresh"], RegisterResult)
    assert out["fresh"].acked == (1, 2, 3, 4, 5)
    taken, lost = out["taken"], out["lost"]
    assert isinstance(taken, QuorumNotReached)  # 3 acks >= k, < write quorum 4
    assert set(taken.failures) == {1, 2}  # DuplicateKey there: other content
    assert "3 of 5 key servers took a share, 4 needed" in str(taken)
    assert isinstance(lost, NotEnoughShares)  # 2 acks < k
    assert present(cluster, "taken") == [1, 2]  # the new shares on 3-5 were rolled back
    assert present(cluster, "lost") == [1, 2, 3]
    assert present(cluster, "fresh") == [1, 2, 3, 4, 5]


def test_servers_down_fail_every_key_then_a_lower_quorum_succeeds(cluster: Cluster) -> None:
    cluster.stop([1, 4])
    items = [("d1", new_key(), None), ("d2", new_key(), None)]
    with cluster.keystore(ALICE) as ks:
        out = ks.register_many(items)
    for kid in ("d1", "d2"):
        err = out[kid]
        assert isinstance(err, QuorumNotReached)
        assert err.failures == {1: "down", 4: "down"}
        assert present(cluster, kid) == []
    with cluster.keystore(ALICE, write_quorum=3) as ks:
        out = ks.register_many(items)
    assert [r.acked for r in out.values() if isinstance(r, RegisterResult)] == [(2, 3, 5)] * 2


def test_client_side_refusals_touch_one_key(cluster: Cluster) -> None:
    with cluster.keystore(ALICE) as ks:
        out = ks.register_many([("short", b"x" * 8, None), ("fine", new_key(), None)])
        assert isinstance(out["short"], UsageError)
        assert isinstance(out["fine"], RegisterResult)
        assert present(cluster, "short") == []
        with pytest.raises(UsageError, match="more than once"):
            ks.register_many([("twice", new_key(), None), ("twice", new_key(), None)])
        assert ks.register_many([]) == {}


def test_unauthorized_caller_registers_nothing(cluster: Cluster) -> None:
    with cluster.keystore(EVE) as ks:
        out = ks.register_many([("e1", new_key(), None)])
    err = out["e1"]
    assert isinstance(err, NotEnoughShares)
    assert set(err.failures.values()) == {"denied"}


def test_a_batch_over_the_server_limit_fails_loudly(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 5).start(max_register_keys=2)
    try:
        with c.keystore(ALICE) as ks:
            out = ks.register_many([(f"o{i}", new_key(), None) for i in range(3)])
            assert all(isinstance(e, NotEnoughShares) for e in out.values())
            ks.register_batch = 2  # matching the servers' limit: fine
            out = ks.register_many([(f"o{i}", new_key(), None) for i in range(3)])
            assert all(isinstance(r, RegisterResult) for r in out.values())
    finally:
        c.close()
