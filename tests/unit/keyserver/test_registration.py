"""The set-based batch registration (``mdm.keyserver.registration``) on a real database: it must
judge, store and audit every key exactly as one ``PUT`` per key would, and recover when the
database refuses its one INSERT (a key id a concurrent request took between read and insert).

The module-level tests take a ``service`` fixture; tests/integration/test_keyserver_postgres.py
runs them again on PostgreSQL, where the concurrent insert really happens."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, insert, select

from mdm.errors import MDMError, PermissionDenied, UsageError
from mdm.keyserver import KeyService, RequestInfo, open_service
from mdm.keyserver.audit import AuditLog
from mdm.keyserver.models import AuditRecord, KeyRecord
from mdm.keyserver.registration import ShareUpload, insert_records
from tests.unit.keyserver.inprocess import ALICE, BOB, EVE, server_settings
from tests.unit.keyserver.test_keyserver_app import upload

INFO = RequestInfo("127.0.0.1", "req-1")
KEYS = KeyRecord.__table__
assert isinstance(KEYS, Table)


def share_upload(key_id: str, slot: int = 1, **kw: Any) -> ShareUpload:
    body = upload(key_id, slot=slot, **kw)
    return ShareUpload(
        slot=body["slot"],
        share=base64.b64decode(body["share"]),
        share_hashes=tuple(body["share_hashes"]),
        k=body["k"],
        n=body["n"],
        kcv=body["kcv"],
        entries=body["acl"]["entries"],
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[KeyService]:
    svc = open_service(server_settings(tmp_path, 1).keyserver)
    try:
        yield svc
    finally:
        svc.db.dispose()


def audit_of(svc: KeyService) -> list[tuple[str, str, str]]:
    with svc.db.transaction() as s:
        rows = s.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()
        return [(r.key_id, r.outcome, r.detail) for r in rows]


def row(key_id: str, owner: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "key_id": key_id,
        "slot": 1,
        "wrapped": b"\0" * 40,
        "share_hashes": "[]",
        "k": 3,
        "n": 5,
        "kcv": "00" * 16,
        "owner": owner,
        "acl_version": 1,
        "acl_prev": "",
        "acl_digest": "0" * 64,
        "acl_entries": "{}",
        "created_at": now,
        "updated_at": now,
        "updated_by": owner,
    }


def test_batch_stores_what_single_puts_store(service: KeyService) -> None:
    """Same stored columns (except the fresh nonce of the wrap), same views, same audit."""
    acl = {f"dn:{BOB.dn}": ["read"]}
    batched = share_upload("batched", acl=acl)
    service.register(ALICE, INFO, "single", share_upload("single", acl=acl))
    res = service.register_many(ALICE, INFO, [("batched", batched)])
    assert not isinstance(res[0], MDMError)
    view, created = res[0]
    assert created
    with service.db.transaction() as s:
        one, two = (s.get(KeyRecord, k) for k in ("single", "batched"))
        assert one is not None
        assert two is not None
        for col in ("slot", "k", "n", "owner", "acl_version", "acl_prev", "acl_entries"):
            assert getattr(one, col) == getattr(two, col), col
        assert two.acl_digest == view.acl.digest
        assert two.created_at == two.updated_at
    got = service.fetch(BOB, INFO, "batched")  # unwraps: AAD = key id + slot
    assert got.share == batched.share
    assert got.to_json() | {"share": None} == view.to_json() | {"share": None}
    assert [(k, o) for k, o, _ in audit_of(service)] == [
        ("single", "granted"),
        ("batched", "granted"),
        ("batched", "granted"),  # BOB's fetch
    ]


def test_every_refusal_is_judged_per_key_and_audited_in_order(service: KeyService) -> None:
    service.register(ALICE, INFO, "old", share_upload("old"))
    service.register(ALICE, INFO, "dead", share_upload("dead"))
    service.delete(ALICE, INFO, "dead")
    forged = share_upload("forged")
    forged = ShareUpload(**{**forged.__dict__, "share_hashes": ("0" * 64,) * 5})
    items: list[tuple[str, ShareUpload | MDMError]] = [
        ("new", share_upload("new")),
        ("old", share_upload("old")),  # another split: other content
        ("dead", share_upload("dead")),  # tombstone
        ("forged", forged),
        ("bad id!", share_upload("x")),
        ("parse", UsageError("unparsable item")),
        ("new", share_upload("new")),  # other split of the same id, later in the batch
        ("acl", share_upload("acl", acl={"nobody": ["read"]})),
    ]
    res = service.register_many(ALICE, INFO, items)
    kinds = [type(r).__name__ if isinstance(r, MDMError) else r[1] for r in res]
    assert kinds == [
        True,
        "DuplicateKey",
        "DuplicateKey",
        "UsageError",
        "UsageError",
        "UsageError",
        "DuplicateKey",
        "UsageError",
    ]
    batch = audit_of(service)[-len(items) :]
    assert [(k, o) for k, o, _ in batch] == [
        ("new", "granted"),
        ("old", "conflict"),
        ("dead", "conflict"),
        ("forged", "rejected"),
        ("bad id!", "rejected"),
        ("parse", "rejected"),
        ("new", "conflict"),
        ("acl", "rejected"),
    ]
    assert all(d.endswith("(batch)") for _, _, d in batch)
    assert service.verify_audit() == len(audit_of(service))
    with service.db.transaction() as s:
        assert sorted(s.scalars(select(KeyRecord.key_id))) == ["new", "old"]


def test_a_caller_without_the_creator_role_is_refused_for_each_key(service: KeyService) -> None:
    res = service.register_many(EVE, INFO, [("e1", share_upload("e1")), ("e2", share_upload("e2"))])
    assert all(isinstance(r, PermissionDenied) for r in res)
    assert [(k, o) for k, o, _ in audit_of(service)] == [("e1", "denied"), ("e2", "denied")]


def commit_row(svc: KeyService, key_id: str) -> None:
    with svc.db.transaction() as s:
        s.connection().execute(insert(KEYS), row(key_id, EVE.dn))


def test_insert_falls_back_to_one_row_at_a_time(service: KeyService) -> None:
    """A key id another transaction inserted first is the only one left out."""
    commit_row(service, "taken")
    with service.db.transaction() as s:
        lost = insert_records(s, [row("a", ALICE.dn), row("taken", ALICE.dn), row("b", ALICE.dn)])
    assert lost == {"taken"}
    with service.db.transaction() as s:
        owners = {r.key_id: r.owner for r in s.execute(select(KEYS.c.key_id, KEYS.c.owner))}
    assert owners == {"a": ALICE.dn, "b": ALICE.dn, "taken": EVE.dn}


def test_batch_append_writes_the_records_single_appends_would(service: KeyService) -> None:
    """``append_many`` and ``append`` write interchangeable records: one chain verifies."""
    log = AuditLog(b"k" * 32)
    entries = [("register", f"k{i}", "granted", "registered (batch)") for i in range(3)]
    with service.db.transaction() as s:
        log.append(s, who=ALICE, info=INFO, op="fetch", key_id="k0", outcome="granted")
        rows = log.append_many(s, who=ALICE, info=INFO, entries=entries)
        log.append(s, who=BOB, info=INFO, op="fetch", key_id="k1", outcome="denied")
        assert log.append_many(s, who=ALICE, info=INFO, entries=[]) == []
    assert [r["seq"] for r in rows] == [2, 3, 4]
    assert [r["prev"] for r in rows[1:]] == [r["mac"] for r in rows[:-1]]
    with service.db.transaction() as s:
        assert log.verify(s) == 5
