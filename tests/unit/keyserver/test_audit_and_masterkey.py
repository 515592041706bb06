"""The audit chain detects every kind of tampering; the master key file is handled strictly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from mdm.errors import AuditChainBroken, ConfigError, IntegrityError
from mdm.keyserver import AuditLog, Database, MasterKey, RequestInfo
from mdm.keyserver.models import AuditRecord
from tests.unit.keyserver.inprocess import ALICE, EVE


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Database, AuditLog]:
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    log = AuditLog(b"k" * 32)
    for i in range(6):
        with db.transaction() as s:
            who = ALICE if i % 2 else EVE
            log.append(
                s,
                who=who,
                info=RequestInfo("127.0.0.1", f"r{i}"),
                op="fetch",
                key_id=f"key{i}",
                outcome="granted" if i % 2 else "denied",
            )
    yield db, log
    db.dispose()


def verify(db: Database, log: AuditLog) -> int:
    with db.transaction() as s:
        return log.verify(s)


def test_intact_chain_verifies(chain: tuple[Database, AuditLog]) -> None:
    assert verify(*chain) == 6


@pytest.mark.parametrize(
    ("tamper", "seq"),
    [
        (update(AuditRecord).where(AuditRecord.seq == 3).values(outcome="granted"), 3),
        (update(AuditRecord).where(AuditRecord.seq == 2).values(dn="/CN=someone else"), 2),
        (delete(AuditRecord).where(AuditRecord.seq == 4), 4),
        (delete(AuditRecord).where(AuditRecord.seq == 6), 6),
    ],
    ids=["altered-outcome", "altered-dn", "removed-middle", "removed-newest"],
)
def test_tampering_is_detected_and_located(
    chain: tuple[Database, AuditLog], tamper: object, seq: int
) -> None:
    db, log = chain
    with db.transaction() as s:
        s.execute(tamper)  # type: ignore[call-overload]
    with pytest.raises(AuditChainBroken) as info:
        verify(db, log)
    assert info.value.seq == seq


def test_rebuilding_the_chain_needs_the_master_key(chain: tuple[Database, AuditLog]) -> None:
    db, _ = chain
    with pytest.raises(AuditChainBroken):
        verify(db, AuditLog(b"x" * 32))  # a forger without the key cannot produce valid MACs


def test_records_are_a_strict_sequence(chain: tuple[Database, AuditLog]) -> None:
    db, _ = chain
    with db.transaction() as s:
        seqs = list(s.scalars(select(AuditRecord.seq).order_by(AuditRecord.seq)))
    assert seqs == [1, 2, 3, 4, 5, 6]


def test_master_key_file_rules(tmp_path: Path) -> None:
    path = tmp_path / "m.key"
    MasterKey.create(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(ConfigError, match="already exists"):
        MasterKey.create(path)
    mk = MasterKey.load(path)
    assert "*" in repr(mk)
    assert path.read_text().strip() not in repr(mk)
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        MasterKey.load(path)
    os.chmod(path, 0o600)
    path.write_text("abcd\n")
    with pytest.raises(ConfigError, match="hex digits"):
        MasterKey.load(path)
    with pytest.raises(ConfigError, match="not set"):
        MasterKey.load(None)


def test_wrap_binds_key_id_and_slot() -> None:
    mk = MasterKey(b"\x01" * 32)
    blob = mk.wrap("key-a", 2, b"share-bytes")
    assert mk.unwrap("key-a", 2, blob) == b"share-bytes"
    for key_id, slot in (("key-b", 2), ("key-a", 3)):
        with pytest.raises(IntegrityError):
            mk.unwrap(key_id, slot, blob)
    with pytest.raises(IntegrityError):
        MasterKey(b"\x02" * 32).unwrap("key-a", 2, blob)
