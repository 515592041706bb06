"""The hash-chained audit log of the catalog (identity reads, ACL changes, staging by services).

Each record stores ``prev_hash`` and ``hash = sha256(prev_hash || canonical JSON of the record)``,
so removing, reordering or editing any record breaks the chain from that point on, which
``verify`` reports by sequence number (``AuditChainBroken``). ``prev_hash`` is unique: two
writers that raced on the same predecessor cannot both commit, the loser's transaction fails and
its operation is retried by the caller. On PostgreSQL appends also take a transaction-scoped
advisory lock so that the race does not happen at all; on SQLite write sessions are serialized
by ``BEGIN IMMEDIATE`` already.

Records name the actor (DN), the action, the target (pseudonymous UIDs or LFNs, never original
identifiers) and the outcome. The record also goes to the ``mdm.audit`` logger, without detail.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from mdm._log import audit_logger
from mdm.catalog.models import AuditEvent, utcnow
from mdm.errors import AuditChainBroken

GENESIS = "0" * 64
_LOCK_KEY = 0x4D444D41  # "MDMA": advisory lock id serializing audit appends on PostgreSQL


def _digest(prev_hash: str, record: Mapping[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical.encode()).hexdigest()


def _record(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "ts": event.ts.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "outcome": event.outcome,
        "detail": event.detail,
    }


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str,
    outcome: str = "ok",
    detail: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Add one record at the end of the chain, in the caller's transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    last = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    event = AuditEvent(
        seq=seq,
        ts=utcnow(),
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        detail=dict(detail or {}),
        prev_hash=prev,
    )
    event.hash = _digest(prev, _record(event))
    session.add(event)
    session.flush()
    audit_logger().info("%s %s %s -> %s", actor, action, target, outcome)
    return event


def events(session: Session, *, after: int = 0, limit: int = 1000) -> list[AuditEvent]:
    """Records with ``seq > after``, oldest first."""
    stmt = select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq).limit(limit)
    return list(session.scalars(stmt))


def _walk(session: Session, batch: int = 5000) -> Iterator[AuditEvent]:
    after = 0
    while True:
        chunk = events(session, after=after, limit=batch)
        if not chunk:
            return
        yield from chunk
        after = chunk[-1].seq


@dataclass(frozen=True)
class Verification:
    records: int
    head: str


def verify(session: Session) -> Verification:
    """Recompute the whole chain; raise ``AuditChainBroken`` naming the first bad record."""
    prev, expected_seq, count = GENESIS, 1, 0
    for event in _walk(session):
        if event.seq != expected_seq:
            raise AuditChainBroken(
                f"audit record {expected_seq} is missing (next is {event.seq})", seq=expected_seq
            )
        if event.prev_hash != prev or _digest(prev, _record(event)) != event.hash:
            raise AuditChainBroken(f"audit record {event.seq} was altered", seq=event.seq)
        prev, expected_seq, count = event.hash, expected_seq + 1, count + 1
    total = session.scalar(select(func.count()).select_from(AuditEvent)) or 0
    if total != count:
        raise AuditChainBroken(f"audit log has {total} records but the chain covers {count}")
    return Verification(records=count, head=prev)
