"""One key server over HTTP (in process): authorization per key, audit of every refusal,
limits, CAS on ACLs, shares bound to their key id and slot, and restart on the same database."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from mdm.acl import Identity
from mdm.keyserver import open_service
from mdm.keyserver.models import AuditRecord, KeyRecord
from mdm.keystore import key_check_value, share_hash
from mdm.shamir import split
from tests.unit.keyserver.inprocess import ALICE, BOB, EVE, KEEPER, Cluster

KEY = bytes(range(32))


def upload(key_id: str, slot: int = 1, key: bytes = KEY, acl: Any = None) -> dict[str, Any]:
    shares = split(key, 5, 3)
    hv = [share_hash(key_id, s.x, s.to_bytes()) for s in shares]
    return {
        "slot": slot,
        "share": base64.b64encode(shares[slot - 1].to_bytes()).decode(),
        "share_hashes": hv,
        "k": 3,
        "n": 5,
        "kcv": key_check_value(key, key_id),
        "acl": {"entries": acl or {}},
    }


def audit_rows(cluster: Cluster, slot: int = 1) -> list[AuditRecord]:
    with cluster.services[slot - 1].db.transaction() as s:
        return list(s.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all())


def test_register_fetch_idempotent_and_conflicting(cluster: Cluster) -> None:
    alice = cluster.client(1, ALICE)
    body = upload("k1", acl={f"dn:{BOB.dn}": ["read"]})
    r = alice.put("/v1/keys/k1/share", json=body)
    assert r.status_code == 201, r.text
    assert alice.put("/v1/keys/k1/share", json=body).status_code == 200  # same content: no-op
    other = upload("k1")  # another split of the same key: different shares, different HV
    r = alice.put("/v1/keys/k1/share", json=other)
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "DuplicateKey"
    got = cluster.client(1, BOB).get("/v1/keys/k1/share").json()
    assert base64.b64decode(got["share"]) == base64.b64decode(body["share"])
    assert got["owner"] == ALICE.dn
    assert got["acl"]["version"] == 1


def test_wrong_slot_and_forged_hash_are_rejected(cluster: Cluster) -> None:
    alice = cluster.client(2, ALICE)
    r = alice.put("/v1/keys/k2/share", json=upload("k2", slot=1))
    assert r.status_code == 400
    assert "slot" in r.json()["detail"]
    body = upload("k2", slot=2)
    body["share_hashes"][1] = "0" * 64
    assert alice.put("/v1/keys/k2/share", json=body).status_code == 400


ENDPOINTS = [
    ("GET", "/v1/health", None),
    ("GET", "/openapi.json", None),
    ("GET", "/v1/keys", None),
    ("POST", "/v1/fetch", {"key_ids": ["kx"]}),
    ("POST", "/v1/register", {"keys": [{"key_id": "ky", **upload("ky")}]}),
    ("PUT", "/v1/keys/kx/share", upload("kx")),
    ("GET", "/v1/keys/kx/share", None),
    ("GET", "/v1/keys/kx/meta", None),
    ("GET", "/v1/keys/kx/acl", None),
    (
        "PUT",
        "/v1/keys/kx/acl",
        {
            "if_match": {"version": 1, "digest": "x"},
            "acl": {"version": 2, "prev": "x", "entries": {}},
        },
    ),
    ("DELETE", "/v1/keys/kx", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_endpoint_refuses_unauthenticated_and_unauthorized_and_audits(
    cluster: Cluster, method: str, path: str, body: Any
) -> None:
    assert cluster.client(1, ALICE).put("/v1/keys/kx/share", json=upload("kx")).status_code == 201
    before = len(audit_rows(cluster))
    r = cluster.client(1, None).request(method, path, json=body)
    assert r.status_code == 401, r.text
    assert r.json()["type"] == "AuthenticationRequired"
    rows = audit_rows(cluster)
    assert len(rows) == before + 1
    assert rows[-1].outcome == "unauthenticated"
    assert rows[-1].dn == ""
    if path in ("/v1/health", "/openapi.json"):
        return  # any authenticated caller may read these; nothing to be unauthorized for
    r = cluster.client(1, EVE).request(method, path, json=body)
    if path in ("/v1/fetch", "/v1/register"):  # per-key answer inside a 200
        assert r.status_code == 200
        assert r.json()["results"][0]["error"]["type"] == "PermissionDenied"
    else:
        assert r.status_code == 403, r.text
        assert r.json()["type"] == "PermissionDenied"
    last = audit_rows(cluster)[-1]
    assert (last.outcome, last.dn) == ("denied", EVE.dn)


def test_batch_fetch_checks_every_key_it_names(cluster: Cluster) -> None:
    alice = cluster.client(1, ALICE)
    alice.put("/v1/keys/a1/share", json=upload("a1", acl={f"dn:{BOB.dn}": ["read"]}))
    alice.put("/v1/keys/a2/share", json=upload("a2"))
    before = len(audit_rows(cluster))
    r = cluster.client(1, BOB).post("/v1/fetch", json={"key_ids": ["a1", "a2", "nope"]})
    res = r.json()["results"]
    assert res[0]["ok"]
    assert "share" in res[0]
    assert res[1] == {"key_id": "a2", "ok": False, "error": res[1]["error"]}
    assert res[1]["error"]["type"] == "PermissionDenied"  # Hydra checked only the first key
    assert res[2]["error"]["type"] == "KeyNotFound"
    outcomes = [(x.key_id, x.outcome) for x in audit_rows(cluster)[before:]]
    assert outcomes == [("a1", "granted"), ("a2", "denied"), ("nope", "not-found")]


def test_acl_compare_and_swap(cluster: Cluster) -> None:
    alice = cluster.client(1, ALICE)
    alice.put("/v1/keys/c1/share", json=upload("c1"))
    acl = alice.get("/v1/keys/c1/acl").json()["acl"]
    new = {"version": 2, "prev": acl["digest"], "entries": {f"dn:{BOB.dn}": ["read"]}}
    ok = alice.put("/v1/keys/c1/acl", json={"if_match": acl, "acl": new})
    assert ok.status_code == 200
    assert ok.json()["acl"]["version"] == 2
    stale = alice.put("/v1/keys/c1/acl", json={"if_match": acl, "acl": new})
    assert stale.status_code == 409
    assert stale.json()["type"] == "VersionConflict"
    assert (
        cluster.client(1, BOB)
        .put("/v1/keys/c1/acl", json={"if_match": acl, "acl": new})
        .status_code
        == 403
    )
    # a lagging server rolls forward: base v5 > current v2 is accepted, to v6
    fwd = {"version": 6, "prev": "f" * 64, "entries": {}}
    r = alice.put(
        "/v1/keys/c1/acl", json={"if_match": {"version": 5, "digest": "f" * 64}, "acl": fwd}
    )
    assert r.status_code == 200
    assert r.json()["acl"]["version"] == 6
    assert cluster.client(1, BOB).get("/v1/keys/c1/share").status_code == 403


def test_a_share_moved_to_another_key_id_does_not_unwrap(cluster: Cluster) -> None:
    alice = cluster.client(1, ALICE)
    alice.put("/v1/keys/m1/share", json=upload("m1"))
    alice.put("/v1/keys/m2/share", json=upload("m2"))
    db = cluster.services[0].db
    with db.transaction() as s:
        wrapped = s.get(KeyRecord, "m1").wrapped
        s.execute(update(KeyRecord).where(KeyRecord.key_id == "m2").values(wrapped=wrapped))
    r = alice.get("/v1/keys/m2/share")
    assert r.status_code == 500
    assert r.json()["type"] == "IntegrityError"
    assert audit_rows(cluster)[-1].outcome == "error"


def test_delete_leaves_a_tombstone_but_rollback_does_not(cluster: Cluster) -> None:
    alice = cluster.client(1, ALICE)
    alice.put("/v1/keys/d1/share", json=upload("d1"))
    assert alice.delete("/v1/keys/d1").status_code == 204
    r = alice.put("/v1/keys/d1/share", json=upload("d1"))
    assert r.status_code == 409
    assert "never reused" in r.json()["detail"]
    alice.put("/v1/keys/d2/share", json=upload("d2"))
    assert alice.delete("/v1/keys/d2", params={"rollback": "1"}).status_code == 204
    assert alice.put("/v1/keys/d2/share", json=upload("d2")).status_code == 201


def test_rate_limit_and_size_limit(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 1).start(rate_limit_per_minute=3, max_request_bytes=2048)
    try:
        alice = c.client(1, ALICE)
        r = alice.put(
            "/v1/keys/big/share",
            content=b"{" + b" " * 4096 + b"}",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413
        assert r.json()["type"] == "RequestTooLarge"
        assert audit_rows(c)[-1].outcome == "rejected"
        codes = [alice.get("/v1/health").status_code for _ in range(3)]
        assert codes == [200, 200, 429]  # the oversized PUT spent the first token
        assert int(alice.get("/v1/health").headers["retry-after"]) >= 1
        assert c.client(1, BOB).get("/v1/health").status_code == 200  # per caller
        anon = c.client(1, None)
        audited = len(audit_rows(c))
        codes = [anon.get("/v1/health").status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]  # anonymous: limited per address ...
        assert len(audit_rows(c)) == audited + 3  # ... before auditing: no audit flood
    finally:
        c.close()


def test_openapi_describes_every_route(cluster: Cluster) -> None:
    doc = cluster.client(1, EVE).get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for _, path, _ in ENDPOINTS:
        if path != "/openapi.json":
            assert path.replace("kx", "{key_id}") in doc["paths"], path


def test_restart_on_same_database_serves_shares(cluster: Cluster, tmp_path: Path) -> None:
    body = upload("r1", acl={f"dn:{BOB.dn}": ["read"]})
    cluster.client(1, ALICE).put("/v1/keys/r1/share", json=body)
    cluster.close()
    from tests.unit.keyserver.inprocess import server_settings

    svc = open_service(server_settings(tmp_path, 1).keyserver)
    try:
        from mdm.keyserver import RequestInfo

        view = svc.fetch(BOB, RequestInfo(), "r1")
        assert view.share == base64.b64decode(body["share"])
        assert svc.verify_audit() >= 2
    finally:
        svc.db.dispose()


def test_admin_override_is_audited_as_such(cluster: Cluster) -> None:
    cluster.client(1, ALICE).put("/v1/keys/o1/share", json=upload("o1"))
    assert cluster.client(1, KEEPER).get("/v1/keys/o1/share").status_code == 200
    assert "admin override" in audit_rows(cluster)[-1].detail
    stranger = Identity("/DC=org/DC=mdm/CN=Nobody", ("/mdm",))
    r = cluster.client(1, stranger).put("/v1/keys/o2/share", json=upload("o2"))
    assert r.status_code == 403  # not a creator


def test_audit_log_never_contains_share_material(cluster: Cluster) -> None:
    body = upload("s1")
    cluster.client(1, ALICE).put("/v1/keys/s1/share", json=body)
    cluster.client(1, ALICE).get("/v1/keys/s1/share")
    dump = json.dumps([vars(r) for r in audit_rows(cluster)], default=str)
    assert body["share"] not in dump
    assert base64.b64decode(body["share"]).hex() not in dump


def test_request_id_links_response_and_audit_record(cluster: Cluster) -> None:
    r = cluster.client(1, ALICE).put("/v1/keys/q1/share", json=upload("q1"))
    assert len(r.headers["x-request-id"]) == 32
    assert audit_rows(cluster)[-1].request_id == r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "must be a JSON object"), (b'{"a": NaN}', "")],
)
def test_a_malformed_body_is_a_400_and_audited(cluster: Cluster, body: bytes, detail: str) -> None:
    before = len(audit_rows(cluster))
    r = cluster.client(1, ALICE).put(
        "/v1/keys/bad-body/share", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["type"] == "UsageError"
    assert detail in r.json()["detail"]
    rows = audit_rows(cluster)
    assert len(rows) == before + 1
    assert rows[-1].outcome == "rejected"
