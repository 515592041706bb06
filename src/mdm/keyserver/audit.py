"""The tamper-evident audit log: one record per request touching a key, MAC-chained.

Each record carries ``mac = HMAC-SHA-256(audit_key, prev_mac || canonical(record))`` where the
audit key is derived from the server master key. Editing, removing, inserting or reordering a
record breaks the chain at that point, and ``audit_head`` (updated in the same transaction) makes
dropping the newest records detectable too. Because the chain is keyed, someone who can write
the database but does not hold the master key cannot rebuild a consistent chain after editing it
(a plain hash chain would let them). Records never contain a share or any key material.

Appends are serialised by locking the head row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
transactions are ``BEGIN IMMEDIATE`` already), so concurrent requests cannot fork the chain.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from mdm._log import audit_logger
from mdm.acl import Identity
from mdm.errors import (
    AuditChainBroken,
    AuthenticationRequired,
    DuplicateKey,
    KeyNotFound,
    MDMError,
    PermissionDenied,
    UsageError,
    VersionConflict,
)
from mdm.keyserver.models import AuditHead, AuditRecord
from mdm.keyserver.policy import CANONICAL_JSON

_GENESIS = "0" * 64
_FIELDS = ("seq", "ts", "dn", "fqans", "client", "request_id", "op", "key_id", "outcome", "detail")
log = logging.getLogger(__name__)

#: One audit record to append: ``(op, key_id, outcome, detail)``.
Entry = tuple[str, str, str, str]

# Built once: statement construction and ORM bookkeeping were most of the cost of an append.
_HEAD_T = cast(Table, AuditHead.__table__)
_READ_HEAD = select(_HEAD_T.c.seq, _HEAD_T.c.mac).where(_HEAD_T.c.id == 1).with_for_update()
_NEW_HEAD = insert(_HEAD_T)
_INSERT = insert(cast(Table, AuditRecord.__table__))
_MOVE_HEAD = (
    update(_HEAD_T)
    .where(_HEAD_T.c.id == 1)
    .values(seq=bindparam("new_seq"), mac=bindparam("new_mac"))
)


def outcome_of(exc: MDMError) -> str:
    """The audit ``outcome`` word of a refusal."""
    if isinstance(exc, AuthenticationRequired):
        return "unauthenticated"
    if isinstance(exc, PermissionDenied):
        return "denied"
    if isinstance(exc, KeyNotFound):
        return "not-found"
    if isinstance(exc, VersionConflict | DuplicateKey):
        return "conflict"
    if isinstance(exc, UsageError):
        return "rejected"
    return "error"


@dataclass(frozen=True)
class RequestInfo:
    """What the HTTP layer knows about a request besides the identity."""

    client: str = ""
    request_id: str = ""


def _mac(key: bytes, prev: str, fields: dict[str, object]) -> str:
    blob = CANONICAL_JSON.encode(fields)
    return hmac.digest(key, prev.encode() + b"|" + blob.encode(), "sha256").hex()


def _fields(rec: AuditRecord) -> dict[str, object]:
    return {name: getattr(rec, name) for name in _FIELDS}


class AuditLog:
    def __init__(self, key: bytes, *, server: str = "") -> None:
        self._key = key
        self._server = server

    def append(
        self,
        session: Session,
        *,
        who: Identity | None,
        info: RequestInfo,
        op: str,
        key_id: str,
        outcome: str,
        detail: str = "",
    ) -> dict[str, object]:
        """Add one record inside *session*'s transaction (committed with the operation);
        returns the record's fields.

        Three prebuilt Core statements on the session's connection (lock and read the head,
        insert, move the head), not ORM objects: every request runs this, and building and
        flushing two ORM objects cost more than the rest of a share fetch.
        """
        return self.append_many(
            session, who=who, info=info, entries=[(op, key_id, outcome, detail)]
        )[0]

    def append_many(
        self,
        session: Session,
        *,
        who: Identity | None,
        info: RequestInfo,
        entries: Sequence[Entry],
    ) -> list[dict[str, object]]:
        """Add one record per ``(op, key_id, outcome, detail)`` entry, chained in that order,
        inside *session*'s transaction; returns the records' fields.

        The head is locked and read once and moved once, and the records go in with one
        ``executemany`` INSERT: a batch registration of 64 keys writes 64 records for the
        price of three statements. Each record is the same as ``append`` would write, so the
        chain and ``verify`` do not know whether a record came alone or in a batch.
        """
        if not entries:
            return []
        conn = session.connection()
        head = conn.execute(_READ_HEAD).one_or_none()
        if head is None:
            conn.execute(_NEW_HEAD, {"id": 1, "seq": 0, "mac": _GENESIS})
            seq, prev = 0, _GENESIS
        else:
            seq, prev = head.seq, head.mac
        dn = who.dn if who else ""
        fqans = json.dumps(list(who.fqans) if who else [])
        client, request_id = info.client[:128], info.request_id[:64]
        log_on = audit_logger().isEnabledFor(logging.INFO)
        rows: list[dict[str, object]] = []
        for op, key_id, outcome, detail in entries:
            seq += 1
            fields: dict[str, object] = {
                "seq": seq,
                "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
                "dn": dn,
                "fqans": fqans,
                "client": client,
                "request_id": request_id,
                "op": op,
                "key_id": key_id[:128],
                "outcome": outcome,
                "detail": detail[:2000],
            }
            mac = _mac(self._key, prev, fields)
            rows.append({**fields, "prev": prev, "mac": mac})
            prev = mac
            if log_on:
                audit_logger().info(
                    "keyserver%s op=%s key=%s outcome=%s dn=%r detail=%s",
                    self._server,
                    op,
                    key_id,
                    outcome,
                    dn,
                    detail,
                )
        conn.execute(_INSERT, rows)
        conn.execute(_MOVE_HEAD, {"new_seq": seq, "new_mac": prev})
        return rows

    def verify(self, session: Session, *, batch: int = 1000) -> int:
        """Walk the whole chain; return the number of records or raise ``AuditChainBroken``."""
        prev, expected_seq, count = _GENESIS, 1, 0
        for rec in _iter_records(session, batch):
            if rec.seq != expected_seq:
                raise AuditChainBroken(
                    f"audit record {expected_seq} is missing (next present is {rec.seq})",
                    seq=expected_seq,
                )
            if not hmac.compare_digest(rec.prev, prev):
                raise AuditChainBroken(
                    f"audit record {rec.seq} does not follow record {rec.seq - 1}", seq=rec.seq
                )
            want = _mac(self._key, prev, _fields(rec))
            if not hmac.compare_digest(rec.mac, want):
                raise AuditChainBroken(
                    f"audit record {rec.seq} was altered after it was written", seq=rec.seq
                )
            prev, expected_seq, count = rec.mac, expected_seq + 1, count + 1
        head = session.get(AuditHead, 1)
        head_seq, head_mac = (head.seq, head.mac) if head else (0, _GENESIS)
        if head_seq != count or not hmac.compare_digest(head_mac, prev):
            raise AuditChainBroken(
                f"the audit log ends at record {count} but its head says {head_seq}: "
                "the newest records were removed",
                seq=count + 1,
            )
        return count


def _iter_records(session: Session, batch: int) -> Iterator[AuditRecord]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditRecord).where(AuditRecord.seq > last).order_by(AuditRecord.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()
