"""``POST /v1/register`` on one key server (in process): many keys in one transaction, yet
every key validated, authorized and audited on its own, in a chained audit log."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mdm.keyserver.models import KeyRecord
from tests.unit.keyserver.inprocess import ALICE, BOB, EVE, KEEPER, Cluster
from tests.unit.keyserver.test_keyserver_app import audit_rows, upload


def item(key_id: str, slot: int = 1, **kw: Any) -> dict[str, Any]:
    return {"key_id": key_id, **upload(key_id, slot=slot, **kw)}


def stored(cluster: Cluster, slot: int = 1) -> list[str]:
    with cluster.services[slot - 1].db.transaction() as s:
        return sorted(s.scalars(select(KeyRecord.key_id)).all())


def test_one_bad_key_does_not_sink_the_others(cluster: Cluster) -> None:
    forged = item("b2")
    forged["share_hashes"][0] = "0" * 64
    wrong_slot = item("b3", slot=2)
    no_share = {k: v for k, v in item("b4").items() if k != "share"}
    keys = [item("b1", acl={f"dn:{BOB.dn}": ["read"]}), forged, wrong_slot, no_share, item("b5")]
    before = len(audit_rows(cluster))
    r = cluster.client(1, ALICE).post("/v1/register", json={"keys": keys})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["key_id"] for x in res] == ["b1", "b2", "b3", "b4", "b5"]
    assert [x["ok"] for x in res] == [True, False, False, False, True]
    assert res[0]["created"] is True
    assert res[0]["owner"] == ALICE.dn
    assert "share" not in res[0]  # a registration never echoes the share
    assert {res[i]["error"]["type"] for i in (1, 2, 3)} == {"UsageError"}
    assert "slot" in res[2]["error"]["detail"]
    assert stored(cluster) == ["b1", "b5"]
    rows = audit_rows(cluster)[before:]
    assert [(x.op, x.key_id, x.outcome) for x in rows] == [
        ("register", "b1", "granted"),
        ("register", "b2", "rejected"),
        ("register", "b3", "rejected"),
        ("register", "b4", "rejected"),
        ("register", "b5", "granted"),
    ]
    assert all(x.detail.endswith("(batch)") for x in rows)
    assert cluster.services[0].verify_audit() == len(audit_rows(cluster))  # chain intact
    got = cluster.client(1, BOB).get("/v1/keys/b1/share").json()  # the ACL was stored
    assert base64.b64decode(got["share"]) == base64.b64decode(keys[0]["share"])


def test_authorization_is_checked_per_key(cluster: Cluster) -> None:
    alice = cluster.client(1, ALICE)
    assert alice.put("/v1/keys/own/share", json=upload("own")).status_code == 201
    assert alice.put("/v1/keys/gone/share", json=upload("gone")).status_code == 201
    assert alice.delete("/v1/keys/gone").status_code == 204  # tombstone: never reused
    r = cluster.client(1, EVE).post("/v1/register", json={"keys": [item("e1"), item("e2")]})
    assert [x["error"]["type"] for x in r.json()["results"]] == ["PermissionDenied"] * 2
    assert [(x.key_id, x.outcome, x.dn) for x in audit_rows(cluster)[-2:]] == [
        ("e1", "denied", EVE.dn),
        ("e2", "denied", EVE.dn),
    ]
    # the admin may create keys, but not take over Alice's key nor revive a deleted id
    keys = [item("own"), item("gone"), item("k-admin")]
    res = cluster.client(1, KEEPER).post("/v1/register", json={"keys": keys}).json()["results"]
    assert [x["ok"] for x in res] == [False, False, True]
    assert res[0]["error"]["type"] == res[1]["error"]["type"] == "DuplicateKey"
    assert stored(cluster) == ["k-admin", "own"]
    with cluster.services[0].db.transaction() as s:
        assert s.get(KeyRecord, "own").owner == ALICE.dn  # type: ignore[union-attr]


def test_identical_batch_is_idempotent(cluster: Cluster) -> None:
    keys = [item("i1"), item("i2")]
    alice = cluster.client(1, ALICE)
    first = alice.post("/v1/register", json={"keys": keys}).json()["results"]
    again = alice.post("/v1/register", json={"keys": keys}).json()["results"]
    assert [x["created"] for x in first] == [True, True]
    assert [(x["ok"], x["created"]) for x in again] == [(True, False), (True, False)]


def test_batch_size_and_body_limits(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 1).start(max_register_keys=2, max_request_bytes=2048)
    try:
        alice = c.client(1, ALICE)
        r = alice.post("/v1/register", json={"keys": [item("s1"), item("s2"), item("s3")]})
        assert r.status_code == 400
        assert r.json()["type"] == "UsageError"
        assert "at most 2 keys" in r.json()["detail"]
        assert audit_rows(c)[-1].outcome == "rejected"
        assert stored(c) == []  # all or nothing at the batch level: nothing was stored
        r = alice.post("/v1/register", json={"keys": [item("s1"), item("s2")]})
        assert [x["ok"] for x in r.json()["results"]] == [True, True]
        huge = b'{"keys": [' + b" " * (2 * 4096 + 1) + b"]}"
        r = alice.post("/v1/register", content=huge, headers={"content-type": "application/json"})
        assert r.status_code == 413
        for body in ({}, {"keys": []}, {"keys": ["s1"]}):
            assert alice.post("/v1/register", json=body).status_code == 400
    finally:
        c.close()


def test_an_id_twice_in_one_batch_is_judged_like_a_second_request(cluster: Cluster) -> None:
    same = item("t1")
    keys = [same, same, item("t1")]  # identical re-upload, then other content
    res = cluster.client(1, ALICE).post("/v1/register", json={"keys": keys}).json()["results"]
    assert [(x["ok"], x.get("created")) for x in res] == [
        (True, True),
        (True, False),
        (False, None),
    ]
    assert res[2]["error"]["type"] == "DuplicateKey"
    assert stored(cluster) == ["t1"]
