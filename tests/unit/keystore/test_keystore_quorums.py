"""The key-store client against 5 in-process key servers: outages, quorums, lying servers,
ACL compare-and-swap under concurrency, VOMS groups, repair and scan."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from mdm.errors import NotEnoughShares, QuorumNotReached, UsageError
from mdm.keyserver.models import KeyRecord
from mdm.keystore import new_key
from tests.unit.keyserver.inprocess import ALICE, BOB, CAROL, EVE, KEEPER, Cluster


def present(cluster: Cluster, key_id: str) -> list[int]:
    out = []
    for slot, svc in enumerate(cluster.services, 1):
        with svc.db.transaction() as s:
            if s.get(KeyRecord, key_id) is not None:
                out.append(slot)
    return out


def test_all_up_register_and_fetch(cluster: Cluster) -> None:
    key = new_key()
    with cluster.keystore(ALICE) as ks:
        res = ks.register("k-all", key)
        assert res.acked == (1, 2, 3, 4, 5)
        got = ks.retrieve("k-all")
        assert got.key == key
        assert len(got.used) == 3
        assert not got.bad_servers


def test_one_down_register_and_fetch(cluster: Cluster) -> None:
    cluster.stop([2])
    key = new_key()
    with cluster.keystore(ALICE) as ks:
        res = ks.register("k-one", key)
        assert res.acked == (1, 3, 4, 5)
        assert res.problems[2].reason == "down"
        assert ks.fetch("k-one") == key


def test_two_down_fetch_works_register_needs_quorum_k(cluster: Cluster) -> None:
    key = new_key()
    with cluster.keystore(ALICE) as ks:
        ks.register("k-before", key)
    cluster.stop([1, 4])
    with cluster.keystore(ALICE) as ks:
        assert ks.fetch("k-before") == key
        with pytest.raises(QuorumNotReached) as info:
            ks.register("k-two", new_key())
        assert info.value.failures == {1: "down", 4: "down"}
        assert "3 of 5 key servers took a share, 4 needed" in str(info.value)
    assert present(cluster, "k-two") == []  # rolled back
    with cluster.keystore(ALICE, write_quorum=3) as ks:
        assert ks.register("k-two", key).acked == (
            2,
            3,
            5,
        )  # same id again: rollback left no tombstone
        assert ks.fetch("k-two") == key


def test_three_down_fetch_and_register_fail_clearly(cluster: Cluster) -> None:
    key = new_key()
    with cluster.keystore(ALICE) as ks:
        ks.register("k-three", key)
    cluster.stop([1, 2, 5])
    with cluster.keystore(ALICE) as ks:
        with pytest.raises(NotEnoughShares) as info:
            ks.fetch("k-three")
        assert info.value.failures == {1: "down", 2: "down", 5: "down"}
        assert "server 2 (http://ks2.test): down" in str(info.value)
        with pytest.raises(NotEnoughShares):
            ks.register("k-new", new_key())
    assert present(cluster, "k-new") == []


def test_missing_and_denied_are_told_apart(cluster: Cluster) -> None:
    with cluster.keystore(ALICE) as ks:
        ks.register("k-md", new_key())
    with cluster.services[2].db.transaction() as s:
        s.delete(s.get(KeyRecord, "k-md"))
    with cluster.keystore(EVE) as ks, pytest.raises(NotEnoughShares) as info:
        ks.fetch("k-md")
    assert info.value.failures[3] == "missing"
    assert info.value.failures[1] == "denied"


def corrupt_share(cluster: Cluster, slot: int, key_id: str) -> None:
    """A lying server: its share re-wrapped with one bit flipped (the master key is ours)."""
    svc = cluster.services[slot - 1]
    with svc.db.transaction() as s:
        rec = s.scalars(select(KeyRecord).where(KeyRecord.key_id == key_id)).one()
        share = bytearray(svc.master.unwrap(key_id, slot, rec.wrapped))
        share[5] ^= 0x40
        rec.wrapped = svc.master.wrap(key_id, slot, bytes(share))


def test_lying_server_is_named_and_key_still_right(cluster: Cluster) -> None:
    key = new_key()
    with cluster.keystore(ALICE) as ks:
        ks.register("k-lie", key)
        corrupt_share(cluster, 4, "k-lie")
        got = ks.retrieve("k-lie", wait_all=True)
        assert got.key == key
        assert list(got.bad_servers) == [4]
        assert "share-hash" in got.bad_servers[4].detail or "wrong" in got.bad_servers[4].detail
        assert 4 not in got.used
        cluster.stop([1])  # and with a server down too: still right from 2, 3, 5
        assert ks.fetch("k-lie") == key


def test_revoke_then_denied_and_voms_group_grant(cluster: Cluster) -> None:
    key = new_key()
    with cluster.keystore(ALICE) as ks:
        ks.register("k-acl", key, acl={f"dn:{CAROL.dn}": ["read"]})
        ks.grant("k-acl", "fqan:/mdm/radiology")
    with cluster.keystore(BOB) as bob:  # member of /mdm/radiology
        assert bob.fetch("k-acl") == key
    with cluster.keystore(EVE) as eve, pytest.raises(NotEnoughShares):
        eve.fetch("k-acl")
    with cluster.keystore(CAROL) as carol:
        assert carol.fetch("k-acl") == key
        with cluster.keystore(ALICE) as ks:
            res = ks.revoke("k-acl", f"dn:{CAROL.dn}")
        assert f"dn:{CAROL.dn}" not in res.entries
        assert len(res.acked) >= 3
        with pytest.raises(NotEnoughShares) as info:
            carol.fetch("k-acl")
        assert set(info.value.failures.values()) == {"denied"}


def test_revoke_with_two_servers_down_still_takes_effect(cluster: Cluster) -> None:
    with cluster.keystore(ALICE) as ks:
        ks.register("k-rv", new_key(), acl={f"dn:{BOB.dn}": ["read"]})
    cluster.stop([1, 2])
    with cluster.keystore(ALICE) as ks:
        res = ks.revoke("k-rv", f"dn:{BOB.dn}")
        assert res.acked == (3, 4, 5)
    cluster.down.clear()  # the two stale servers come back, still granting: k-1 = 2 of them
    with cluster.keystore(BOB) as bob, pytest.raises(NotEnoughShares):
        bob.fetch("k-rv")


def test_concurrent_grant_and_revoke_converge(cluster: Cluster) -> None:
    with cluster.keystore(ALICE) as ks:
        ks.register("k-race", new_key(), acl={f"dn:{CAROL.dn}": ["read"]})
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            with cluster.keystore(ALICE) as ks:
                if name == "revoker":
                    ks.revoke("k-race", f"dn:{CAROL.dn}")
                for i in range(3):
                    ks.grant("k-race", f"dn:/CN={name}{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("granter", "revoker")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with cluster.keystore(ALICE) as ks:
        states, problems = ks.read_acls("k-race")
        final = ks.get_acl("k-race")
    assert not problems
    # no lost update: every edit of both writers is in the document a quorum holds ...
    assert f"dn:{CAROL.dn}" not in final.entries
    assert {f"dn:/CN={n}{i}" for n in ("granter", "revoker") for i in range(3)} == set(
        final.entries
    )
    assert final.version >= 1 + 7  # 7 edits; a retried partial write may add a version
    assert len(final.acked) >= 3
    assert max(st.version for st in states.values()) == final.version


def test_repair_and_scan(cluster: Cluster) -> None:
    key = new_key()
    with cluster.keystore(ALICE) as ks:
        ks.register("k-rep", key, acl={f"dn:{BOB.dn}": ["read"]})
        ks.grant("k-rep", f"dn:{CAROL.dn}")
    with cluster.services[1].db.transaction() as s:
        s.delete(s.get(KeyRecord, "k-rep"))
    corrupt_share(cluster, 5, "k-rep")
    with cluster.keystore(KEEPER) as keeper:
        divergent, _ = keeper.scan()
        assert [(d.key_id, d.missing) for d in divergent] == [("k-rep", (2,))]
        result = keeper.repair("k-rep")
        assert result.repaired == (2, 5)
        assert keeper.scan()[0] == []
    cluster.stop([1, 3])  # only the repaired servers 2 and 5 plus 4 are left
    with cluster.keystore(CAROL) as carol:
        got = carol.retrieve("k-rep", wait_all=True)
        assert got.key == key
        assert set(got.used) == {2, 4, 5}
        assert not got.problems.keys() - {1, 3}
    cluster.down.clear()
    with cluster.services[2].db.transaction() as s:
        s.delete(s.get(KeyRecord, "k-rep"))
    with cluster.keystore(ALICE) as ks:
        result = ks.repair("k-rep")  # the owner is no server admin: repair uploads refused
    assert result.repaired == ()
    assert result.problems[3].reason == "denied"
    assert present(cluster, "k-rep") == [1, 2, 4, 5]


def test_settings_are_validated(cluster: Cluster) -> None:
    from mdm.errors import ConfigError

    with pytest.raises(ConfigError, match="write_quorum"):
        cluster.keystore(ALICE, write_quorum=2)
    with pytest.raises(ConfigError, match="threshold"):
        cluster.keystore(ALICE, k=6)
    with cluster.keystore(ALICE) as ks, pytest.raises(UsageError):
        ks.register("short", b"123")


def test_fetch_many_checks_each_key_and_names_liars(cluster: Cluster) -> None:
    keys = {f"k-many-{i}": new_key() for i in range(4)}
    with cluster.keystore(ALICE) as ks:
        for i, (key_id, key) in enumerate(keys.items()):
            ks.register(key_id, key, acl={f"dn:{BOB.dn}": ["read"]} if i % 2 == 0 else None)
    corrupt_share(cluster, 2, "k-many-0")
    cluster.stop([5])
    with cluster.keystore(BOB) as bob:
        got = bob.fetch_many([*keys, "k-none"])
    first = got["k-many-0"]
    assert not isinstance(first, Exception)
    assert first.key == keys["k-many-0"]
    assert list(first.bad_servers) == [2]
    assert not isinstance(got["k-many-2"], Exception)
    assert got["k-many-2"].key == keys["k-many-2"]
    denied = got["k-many-1"]  # no right for Bob: refused on every server, key by key
    assert isinstance(denied, NotEnoughShares)
    assert denied.failures == {1: "denied", 2: "denied", 3: "denied", 4: "denied", 5: "down"}
    missing = got["k-none"]
    assert isinstance(missing, NotEnoughShares)
    assert missing.failures[1] == "missing"
