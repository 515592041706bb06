"""Registering shares: the checks every upload passes, and the set-based batch path.

A recall registers one new key per DICOM instance, a series at a time, with ``POST
/v1/register`` on each of the n servers; on one machine the servers' CPU per key bounded the
whole recall. ``register_batch`` gives every key exactly the treatment of a single ``PUT``
(the same checks in the same order, its own result, its own audit record) but does the
database work per *batch*:

1. the tombstones and stored rows of all its key ids are read with two ``IN`` queries (the
   rows ``FOR UPDATE``) instead of two queries per key;
2. every item is judged in Python, in the order of a ``PUT``: key id, slot, threshold, share
   layout, its own share-hash-vector entry, KCV (``check_upload``), creator role, tombstone,
   idempotent re-upload by the same owner, ACL; a key id given twice is judged against its
   first occurrence, like a second request. Nothing is written yet;
3. the new rows go in with ONE ``executemany`` INSERT, inside one savepoint;
4. the audit records, one per key, chained in request order, go in with ``append_many`` (one
   head read, one ``executemany``, one head update);
5. the caller commits once (one fsync).

Why there is no savepoint per key any more: every refusal is decided in step 2, before
anything is written, so a refused key has no changes to roll back. The savepoint, the ORM
flush and the three audit statements per key were about nine tenths of a server's time in
the profile (docs/keyserver-protocol.md, "Measured"). The one refusal only the database can
see is a concurrent insert of the same key id between the read and the insert (PostgreSQL
under READ COMMITTED with two requests in flight; SQLite's ``BEGIN IMMEDIATE`` excludes it):
the batch INSERT then fails as a whole, its savepoint is rolled back, and the rows are
inserted one by one, each in its own savepoint, so only the keys that lost become
``DuplicateKey`` (``registered concurrently``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import BindParameter, Table, bindparam, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from mdm.acl import Identity
from mdm.errors import DuplicateKey, MDMError, PermissionDenied, UsageError
from mdm.keyserver.audit import Entry, RequestInfo, outcome_of
from mdm.keyserver.models import KeyRecord, Tombstone
from mdm.keyserver.policy import AclDocument
from mdm.keyserver.views import KeyView, view_of

if TYPE_CHECKING:
    from mdm.keyserver.service import KeyService

KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
KCV_RE = re.compile(r"[0-9a-f]{32,64}")
MAX_SHARE_BYTES = 1024
MAX_BATCH_KEYS = 100  # default of keyserver.max_register_keys

#: One result of a batch: ``(view, created)`` or the key's own refusal.
Outcome = tuple[KeyView, bool] | MDMError

_KEYS = cast(Table, KeyRecord.__table__)
_TOMBS = cast(Table, Tombstone.__table__)
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
_READ_TOMBSTONES = select(_TOMBS.c.key_id).where(_TOMBS.c.key_id.in_(_IDS))
# Rows locked and inserted in key-id order: two batches overlapping in another order would
# deadlock on PostgreSQL (a 500, not the DuplicateKey the loser should get).
_READ_RECORDS = (
    select(_KEYS).where(_KEYS.c.key_id.in_(_IDS)).order_by(_KEYS.c.key_id).with_for_update()
)
_INSERT_RECORDS = insert(_KEYS)
_SORTED = json.JSONEncoder(sort_keys=True)  # json.dumps(..., sort_keys=True), built once


def check_key_id(key_id: str) -> str:
    if not isinstance(key_id, str) or not KEY_ID_RE.match(key_id):
        raise UsageError("a key id is 1-128 characters of A-Z a-z 0-9 . _ : - (a UUID in practice)")
    return key_id


def share_hash(key_id: str, x: int, share: bytes) -> str:
    """``HV[x] = SHA-256("mdm-share|" || key_id || "|" || x || share)`` (protocol v1)."""
    return hashlib.sha256(b"mdm-share|" + key_id.encode() + b"|" + bytes([x]) + share).hexdigest()


@dataclass(frozen=True)
class ShareUpload:
    """A share PUT. ``repair`` uploads (server admins only) also carry owner and ACL."""

    slot: int
    share: bytes
    share_hashes: tuple[str, ...]
    k: int
    n: int
    kcv: str
    entries: Mapping[str, Sequence[str]] = field(default_factory=dict)
    repair: bool = False
    owner: str = ""
    acl_version: int = 1
    acl_prev: str = ""


def check_upload(slot: int, key_id: str, up: ShareUpload) -> None:
    """The checks of one upload that need no database (``UsageError`` naming the fault)."""
    if up.slot != slot:
        raise UsageError(
            f"this is key server {slot}, the share is for slot {up.slot}: "
            "check the order of keystore.servers"
        )
    if not 2 <= up.k <= up.n <= 255 or up.slot > up.n:
        raise UsageError(f"bad threshold k={up.k} n={up.n} for slot {up.slot}")
    if len(up.share_hashes) != up.n:
        raise UsageError(f"share_hashes must have n={up.n} entries")
    if not 2 <= len(up.share) <= MAX_SHARE_BYTES or up.share[-1] != up.slot:
        raise UsageError("share must be y || x (Vault layout) with x equal to the slot")
    own = share_hash(key_id, up.slot, up.share)
    if not hmac.compare_digest(own, up.share_hashes[up.slot - 1]):
        raise UsageError("the share does not match its own entry in share_hashes")
    if not KCV_RE.fullmatch(up.kcv):
        raise UsageError("kcv must be 32-64 lowercase hex digits")


def same_content(seen: KeyView, up: ShareUpload, who: Identity) -> bool:
    """A re-upload of the same key by its owner (then it is acknowledged, not refused)."""
    return (
        seen.share_hashes == list(up.share_hashes)
        and (seen.k, seen.n) == (up.k, up.n)
        and hmac.compare_digest(seen.kcv, up.kcv)
        and seen.owner == who.dn
    )


def register_batch(
    svc: KeyService,
    session: Session,
    who: Identity,
    info: RequestInfo,
    items: Sequence[tuple[str, ShareUpload | MDMError]],
    *,
    batch: bool = True,
) -> list[Outcome]:
    """Judge, store and audit *items* in *session*'s transaction (see the module doc).

    The single ``PUT`` of a new key runs through here too (*batch* False: its audit detail
    says so), so that one key registered alone or in a batch is judged by the same code.
    """
    conn = session.connection()
    ids = sorted({k for k, _ in items if isinstance(k, str) and KEY_ID_RE.match(k)})
    gone: set[str] = set(conn.scalars(_READ_TOMBSTONES, {"ids": ids})) if ids else set()
    stored = {r.key_id: r for r in conn.execute(_READ_RECORDS, {"ids": ids})} if ids else {}
    may_create = svc.policy.may_create(who)  # depends on the caller only: decided once
    now = datetime.now(UTC)
    views: dict[str, KeyView] = {}  # what a later item naming the same id is judged against
    new_rows: dict[str, dict[str, Any]] = {}
    results: list[Outcome] = []
    details: list[str] = []
    for key_id, up in items:
        try:
            if isinstance(up, MDMError):
                raise up
            check_key_id(key_id)
            if up.repair:
                raise UsageError("repairs are not accepted in a batch")
            check_upload(svc.slot, key_id, up)
            if not may_create:
                raise PermissionDenied("this caller may not register keys on this server")
            if key_id in gone:
                raise DuplicateKey(f"key id {key_id} was deleted; key ids are never reused")
            seen = views.get(key_id)
            if seen is None and key_id in stored:
                seen = views[key_id] = view_of(stored[key_id])
            if seen is not None:
                if not same_content(seen, up, who):
                    raise DuplicateKey(f"key {key_id} already exists with other content")
                results.append((seen, False))
                details.append("already registered (identical)")
                continue
            acl = AclDocument.build(key_id, up.acl_version, up.acl_prev, up.entries)
            hashes = list(up.share_hashes)
            new_rows[key_id] = {
                "key_id": key_id,
                "slot": svc.slot,
                "wrapped": svc.master.wrap(key_id, svc.slot, up.share),
                "share_hashes": json.dumps(hashes),
                "k": up.k,
                "n": up.n,
                "kcv": up.kcv,
                "owner": who.dn,
                "acl_version": acl.version,
                "acl_prev": acl.prev,
                "acl_digest": acl.digest,
                "acl_entries": _SORTED.encode(acl.entries),
                "created_at": now,
                "updated_at": now,
                "updated_by": who.dn,
            }
            view = KeyView(key_id, svc.slot, hashes, up.k, up.n, up.kcv, who.dn, acl)
            views[key_id] = view
            results.append((view, True))
            details.append("registered")
        except MDMError as exc:
            results.append(exc)
            details.append(f"{type(exc).__name__}: {exc.message}")
    lost = insert_records(session, [new_rows[k] for k in sorted(new_rows)])
    for i, (key_id, _) in enumerate(items):
        if key_id in lost and not isinstance(results[i], MDMError):
            late = DuplicateKey(f"key {key_id} was registered concurrently")
            results[i], details[i] = late, f"{type(late).__name__}: {late.message}"
    entries: list[Entry] = []
    for (key_id, _), res, detail in zip(items, results, details, strict=True):
        outcome = outcome_of(res) if isinstance(res, MDMError) else "granted"
        entries.append(("register", key_id, outcome, f"{detail} (batch)" if batch else detail))
    svc.audit.append_many(session, who=who, info=info, entries=entries)
    return results


def insert_records(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert new ``key_shares`` rows; returns the key ids a concurrent insert took first.

    One ``executemany`` in a savepoint; if the database refuses it (a unique key), the rows
    are inserted again one per savepoint so that only the losers are left out.
    """
    if not rows:
        return set()
    try:
        # session.connection() inside the block: that is what emits the SAVEPOINT (a
        # connection taken before begin_nested() would run outside it)
        with session.begin_nested():
            session.connection().execute(_INSERT_RECORDS, rows)
        return set()
    except sa_exc.IntegrityError:
        pass
    lost: set[str] = set()
    for row in rows:
        try:
            with session.begin_nested():
                session.connection().execute(_INSERT_RECORDS, row)
        except sa_exc.IntegrityError:
            lost.add(row["key_id"])
    return lost
