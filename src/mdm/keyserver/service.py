"""The key server's operations: one transaction each, authorization and audit included.

The HTTP layer (``mdm.servers.keyserver_app``) parses requests and calls these methods with
the verified ``Identity`` (or ``None``). Each method opens one transaction, decides, writes its
audit record *in the same transaction*, commits, and only then raises a refusal, so every
refusal is on record and no operation is recorded that did not happen.

Every key a request names is checked on its own (``fetch_many``): the original Hydra service
returned after the first key it authorized and never checked the others (notes §1.5).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.orm import Session

from mdm.acl import Identity
from mdm.errors import (
    AuthenticationRequired,
    DuplicateKey,
    KeyNotFound,
    MDMError,
    PermissionDenied,
    UsageError,
    VersionConflict,
)
from mdm.keyserver.audit import AuditLog, RequestInfo, outcome_of
from mdm.keyserver.db import Database
from mdm.keyserver.masterkey import MasterKey
from mdm.keyserver.models import KeyRecord, Tombstone
from mdm.keyserver.policy import AclDocument, Right, ServerPolicy, decide
from mdm.keyserver.registration import (
    KEY_ID_RE,
    MAX_BATCH_KEYS,
    MAX_SHARE_BYTES,
    ShareUpload,
    check_key_id,
    check_upload,
    register_batch,
    share_hash,
)
from mdm.keyserver.views import KeyView, acl_of, view_of

__all__ = [
    "KEY_ID_RE",
    "MAX_SHARE_BYTES",
    "KeyService",
    "KeyView",
    "ShareUpload",
    "check_key_id",
    "share_hash",
]
T = TypeVar("T")


class KeyService:
    def __init__(
        self,
        db: Database,
        master: MasterKey,
        *,
        slot: int,
        policy: ServerPolicy,
        max_batch: int = MAX_BATCH_KEYS,
    ) -> None:
        if not 1 <= slot <= 255:
            raise UsageError(f"a key-server index is 1..255, got {slot}")
        self.db = db
        self.master = master
        self.slot = slot
        self.policy = policy
        self.max_batch = max(1, max_batch)
        self.audit = AuditLog(master.audit_key, server=f"[{slot}]")

    # -- plumbing -----------------------------------------------------------------------------

    def _run(
        self,
        who: Identity | None,
        info: RequestInfo,
        op: str,
        key_id: str,
        body: Callable[[Session, Identity], tuple[T, str]],
        *,
        writes: bool = True,
    ) -> T:
        """Run *body* in one transaction and audit it; refusals are committed, then raised.

        A body that *writes* runs inside a savepoint, so that a refusal it raises halfway
        rolls its own changes back while the audit record is still committed. Read-only
        bodies skip the savepoint (two statements less on the hot fetch path).
        """
        error: MDMError | None = None
        result: T | None = None
        with self.db.transaction(durable=writes) as s:
            try:
                if who is None:
                    raise AuthenticationRequired("key servers need a client certificate")
                if key_id:
                    check_key_id(key_id)
                if writes:
                    with s.begin_nested():
                        result, detail = body(s, who)
                else:
                    result, detail = body(s, who)
                outcome = "granted"
            except MDMError as exc:
                error, outcome, detail = (
                    exc,
                    outcome_of(exc),
                    f"{type(exc).__name__}: {exc.message}",
                )
            self.audit.append(
                s, who=who, info=info, op=op, key_id=key_id, outcome=outcome, detail=detail
            )
        if error is not None:
            raise error
        return result  # type: ignore[return-value]

    def _get(self, s: Session, key_id: str, *, lock: bool = False) -> KeyRecord:
        stmt = select(KeyRecord).where(KeyRecord.key_id == key_id)
        rec = s.scalars(stmt.with_for_update() if lock else stmt).one_or_none()
        if rec is None:
            raise KeyNotFound(f"key {key_id} has no share on server {self.slot}", key_id=key_id)
        return rec

    def _allow(self, who: Identity, rec: KeyRecord, right: Right) -> str:
        how = decide(self.policy, who, rec.owner, acl_of(rec), right)
        if how is None:
            raise PermissionDenied(
                f"no {right.value} right on key {rec.key_id} for this caller",
                key_id=rec.key_id,
                right=right.value,
            )
        return "admin override" if how == "admin" else how

    # -- operations ---------------------------------------------------------------------------

    def register(
        self, who: Identity | None, info: RequestInfo, key_id: str, up: ShareUpload
    ) -> tuple[KeyView, bool]:
        """Store this server's share; returns ``(view, created)``. Idempotent when identical.

        A new key is judged and stored by ``register_batch`` (a batch of one), exactly as in
        ``register_many``; only a repair (an admin override) has a body of its own.
        """
        if up.repair:
            return self._run(who, info, "repair", key_id, self._repair_body(key_id, up))
        if who is None:
            exc = AuthenticationRequired("key servers need a client certificate")
            self.record_refusal(who, info, "register", key_id, exc)
            raise exc
        with self.db.transaction(durable=True) as s:
            (result,) = register_batch(self, s, who, info, [(key_id, up)], batch=False)
        if isinstance(result, MDMError):
            raise result
        return result

    def register_many(
        self,
        who: Identity | None,
        info: RequestInfo,
        items: Sequence[tuple[str, ShareUpload | MDMError]],
    ) -> list[tuple[KeyView, bool] | MDMError]:
        """Register many shares in ONE transaction (one fsync), each key on its own.

        Every key is validated, authorized and audited exactly as by ``register`` (one audit
        record per key, chained in order): a refused key writes nothing and is reported in its
        slot of the result; the others commit together. Repairs are single-key only (an admin
        action, not a bulk path). An item may be the ``MDMError`` the HTTP layer met parsing
        it: it is audited and reported alike. The set-based storage is
        ``mdm.keyserver.registration.register_batch``.
        """
        if who is None:
            exc = AuthenticationRequired("key servers need a client certificate")
            self.record_refusal(who, info, "register", "", exc)
            raise exc
        if len(items) > self.max_batch:
            err = UsageError(f"a batch registers at most {self.max_batch} keys, got {len(items)}")
            self.record_refusal(who, info, "register", "", err)
            raise err
        with self.db.transaction(durable=True) as s:
            return register_batch(self, s, who, info, items)

    def _repair_body(
        self, key_id: str, up: ShareUpload
    ) -> Callable[[Session, Identity], tuple[tuple[KeyView, bool], str]]:
        """The body of a repair (``PUT`` with ``repair``, admins only), run by ``_run``."""

        def body(s: Session, who: Identity) -> tuple[tuple[KeyView, bool], str]:
            check_upload(self.slot, key_id, up)
            if not self.policy.is_admin(who):
                raise PermissionDenied("repairing a share needs the key-server admin role")
            if s.get(Tombstone, key_id) is not None:
                raise DuplicateKey(f"key id {key_id} was deleted; key ids are never reused")
            rec = s.scalars(
                select(KeyRecord).where(KeyRecord.key_id == key_id).with_for_update()
            ).one_or_none()
            now = datetime.now(UTC)
            acl = AclDocument.build(key_id, up.acl_version, up.acl_prev, up.entries)
            wrapped = self.master.wrap(key_id, self.slot, up.share)
            if rec is None:
                rec = KeyRecord(key_id=key_id, created_at=now)
                s.add(rec)
            elif rec.acl_version > acl.version:  # repair never rolls an ACL back
                acl = acl_of(rec)
            rec.slot, rec.wrapped, rec.k, rec.n, rec.kcv = self.slot, wrapped, up.k, up.n, up.kcv
            rec.share_hashes = json.dumps(list(up.share_hashes))
            rec.owner = up.owner or who.dn
            rec.acl_version, rec.acl_prev, rec.acl_digest = acl.version, acl.prev, acl.digest
            rec.acl_entries = json.dumps(acl.entries, sort_keys=True)
            rec.updated_at, rec.updated_by = now, who.dn
            try:
                s.flush()
            except sa_exc.IntegrityError as exc:  # a concurrent PUT won the insert
                raise DuplicateKey(f"key {key_id} was registered concurrently") from exc
            return (view_of(rec), True), "repair (admin override)"

        return body

    def fetch(self, who: Identity | None, info: RequestInfo, key_id: str) -> KeyView:
        def body(s: Session, who: Identity) -> tuple[KeyView, str]:
            rec = self._get(s, key_id)
            how = self._allow(who, rec, Right.READ)
            share = self.master.unwrap(key_id, rec.slot, rec.wrapped)
            return view_of(rec, share), how

        return self._run(who, info, "fetch", key_id, body, writes=False)

    def fetch_many(
        self, who: Identity | None, info: RequestInfo, key_ids: Sequence[str]
    ) -> list[KeyView | MDMError]:
        """Each key id is authorized and audited on its own; one refusal spoils no other."""
        out: list[KeyView | MDMError] = []
        for key_id in key_ids:
            try:
                out.append(self.fetch(who, info, key_id))
            except AuthenticationRequired:
                raise
            except MDMError as exc:
                out.append(exc)
        return out

    def meta(self, who: Identity | None, info: RequestInfo, key_id: str) -> KeyView:
        """Everything but the share (for scans and ACL reads): read or admin right."""

        def body(s: Session, who: Identity) -> tuple[KeyView, str]:
            rec = self._get(s, key_id)
            how = decide(self.policy, who, rec.owner, acl_of(rec), Right.READ) or decide(
                self.policy, who, rec.owner, acl_of(rec), Right.ADMIN
            )
            if how is None:
                raise PermissionDenied(f"no right on key {key_id} for this caller", key_id=key_id)
            return view_of(rec), "admin override" if how == "admin" else how

        return self._run(who, info, "meta", key_id, body, writes=False)

    def put_acl(
        self,
        who: Identity | None,
        info: RequestInfo,
        key_id: str,
        *,
        if_version: int,
        if_digest: str,
        version: int,
        prev: str,
        entries: Mapping[str, Sequence[str]],
    ) -> AclDocument:
        """Compare-and-swap the ACL document.

        Accepted when this server holds exactly the ``if_*`` document, or is *behind* it (an
        older version: a lagging server rolls forward). The new document must be newer than
        what is stored. Authority is checked against this server's *current* ACL.
        """

        def body(s: Session, who: Identity) -> tuple[AclDocument, str]:
            rec = self._get(s, key_id, lock=True)
            how = self._allow(who, rec, Right.ADMIN)
            current = acl_of(rec)
            matches = current.version == if_version and hmac.compare_digest(
                current.digest, if_digest
            )
            if not (matches or current.version < if_version) or version <= current.version:
                raise VersionConflict(
                    f"ACL of {key_id} is at version {current.version} on server {self.slot}",
                    key_id=key_id,
                    version=current.version,
                    digest=current.digest,
                )
            new = AclDocument.build(key_id, version, prev, entries)
            rec.acl_version, rec.acl_prev, rec.acl_digest = new.version, new.prev, new.digest
            rec.acl_entries = json.dumps(new.entries, sort_keys=True)
            rec.updated_at, rec.updated_by = datetime.now(UTC), who.dn
            return new, f"{how}; acl v{current.version} -> v{new.version}"

        return self._run(who, info, "set_acl", key_id, body)

    def delete(
        self, who: Identity | None, info: RequestInfo, key_id: str, *, rollback: bool = False
    ) -> None:
        """Destroy the share. A *rollback* (owner, ACL never changed) leaves no tombstone, so a
        registration that failed its quorum can be retried with the same key id."""

        def body(s: Session, who: Identity) -> tuple[None, str]:
            rec = self._get(s, key_id, lock=True)
            how = self._allow(who, rec, Right.ADMIN)
            quiet = rollback and how == "owner" and rec.acl_version == 1
            s.delete(rec)
            if not quiet:
                s.add(Tombstone(key_id=key_id, deleted_at=datetime.now(UTC), deleted_by=who.dn))
            return None, f"{how}; {'rollback' if quiet else 'deleted, tombstone kept'}"

        self._run(who, info, "rollback" if rollback else "delete", key_id, body)

    def list_keys(
        self, who: Identity | None, info: RequestInfo, *, after: str = "", limit: int = 500
    ) -> list[dict[str, object]]:
        """Metadata of every key (no shares): for the repair scan, server admins only."""

        def body(s: Session, who: Identity) -> tuple[list[dict[str, object]], str]:
            if not self.policy.is_admin(who):
                raise PermissionDenied("listing keys needs the key-server admin role")
            rows = s.scalars(
                select(KeyRecord)
                .where(KeyRecord.key_id > after)
                .order_by(KeyRecord.key_id)
                .limit(max(1, min(limit, 1000)))
            ).all()
            out: list[dict[str, object]] = []
            for r in rows:
                hv = hashlib.sha256(r.share_hashes.encode()).hexdigest()
                out.append(
                    {
                        "key_id": r.key_id,
                        "k": r.k,
                        "n": r.n,
                        "hv_digest": hv,
                        "acl_version": r.acl_version,
                        "acl_digest": r.acl_digest,
                    }
                )
            return out, f"admin; {len(out)} keys listed"

        return self._run(who, info, "list", "", body, writes=False)

    def record_refusal(
        self, who: Identity | None, info: RequestInfo, op: str, key_id: str, exc: MDMError
    ) -> None:
        """Audit a refusal the HTTP layer decided (no certificate, oversized or bad body)."""
        with self.db.transaction(durable=False) as s:
            self.audit.append(
                s,
                who=who,
                info=info,
                op=op,
                key_id=key_id[:128],
                outcome=outcome_of(exc),
                detail=f"{type(exc).__name__}: {exc.message}",
            )

    def verify_audit(self) -> int:
        with self.db.transaction() as s:
            return self.audit.verify(s)
