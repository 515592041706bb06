"""The file catalog: LFNs, GUIDs, checksums, replicas and their states (LFC/Rucio style).

The namespace is ``/dicom/<study>/<series>/<instance>`` made of *pseudonymous* UIDs only;
``/dicom``, study and series entries are directories. A file is registered once per
pseudonymous SOP Instance UID: registering it again returns the existing entry unchanged
(``created=False``), so a PACS walk or a C-STORE can be replayed safely. GUIDs are UUIDv7
(time-ordered, index friendly) and never reused.

Checksums (adler32 as 8 lower-case hex digits, the grid convention, and sha256) are those of the
stored, encrypted bytes, so any storage can verify a copy without a key. A file is registered
NEARLINE before its first recall, when its size and checksums are still unknown; they are set
once by the first recall and must match on every later one (a re-recall gives the same bytes).

Every function takes the session and the ``Caller`` and checks rights through ``access``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import literal, select
from sqlalchemy.orm import Session, selectinload

from mdm.catalog import access
from mdm.catalog.access import ROOT, Caller
from mdm.catalog.models import Entry, EntryKind, Replica, ReplicaState, Right, utcnow
from mdm.errors import ChecksumMismatch, FileNotFound, PermissionDenied, UsageError

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ADLER_RE = re.compile(r"^[0-9a-f]{8}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62 | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def check_uid(uid: str, what: str) -> str:
    if not _UID_RE.match(uid) or len(uid) > 64:
        raise UsageError(f"{what} {uid!r} is not a DICOM UID", what=what)
    return uid


def lfn(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> str:
    """The LFN of a study, series or instance (pseudonymous UIDs only)."""
    parts = [check_uid(study_uid, "study UID")]
    if series_uid is not None:
        parts.append(check_uid(series_uid, "series UID"))
    if sop_uid is not None:
        parts.append(check_uid(sop_uid, "SOP instance UID"))
    return ROOT + "/" + "/".join(parts)


def check_checksums(size: int | None, adler32: str | None, sha256: str | None) -> None:
    """Refuse malformed values (UsageError) before they reach the catalog."""
    if size is not None and size < 0:
        raise UsageError("size must be >= 0")
    if adler32 is not None and not _ADLER_RE.match(adler32):
        raise UsageError("adler32 must be 8 lower-case hex digits")
    if sha256 is not None and not _SHA_RE.match(sha256):
        raise UsageError("sha256 must be 64 lower-case hex digits")


def _by_path(session: Session, path: str) -> Entry | None:
    return session.scalar(select(Entry).where(Entry.path == path))


#: ``session.info`` key: the entries ``prefetch`` read (``None``: no entry at that path), kept
#: by strong reference for ``add_file``'s first lookup.
_PREFETCHED = "mdm.files.prefetched"


def prefetch(session: Session, paths: Iterable[str]) -> None:
    """Read the entries of many paths at once before registering them (a study of a PACS
    walk): ``add_file`` then knows which exist without a query per instance. For this
    transaction only: a file another transaction registers meanwhile is still caught by the
    unique path (PostgreSQL: the savepoint in ``add_file``; SQLite: writers are serialized)."""
    known: dict[str, Entry | None] = session.info.setdefault(_PREFETCHED, {})
    for chunk in access.chunks(sorted(set(paths))):
        found = {e.path: e for e in session.scalars(select(Entry).where(Entry.path.in_(chunk)))}
        known.update((p, found.get(p)) for p in chunk)


def _directory(session: Session, path: str, parent: Entry | None, owner: str) -> Entry:
    # Directories met in this transaction are remembered: a batch of one series looks its
    # study and series up once, not once per instance.
    cache: dict[str, Entry] = session.info.setdefault("mdm.directories", {})
    if path in cache:
        return cache[path]
    found = _by_path(session, path)
    if found is not None:
        cache[path] = found
        return found
    entry = Entry(
        guid=uuid7(),
        path=path,
        parent_id=parent.id if parent else None,
        name=path.rsplit("/", 1)[-1],
        kind=EntryKind.DIRECTORY,
        owner=owner,
    )
    try:
        with session.begin_nested():  # a concurrent registration may create it first
            session.add(entry)
    except sa_exc.IntegrityError:
        found = _by_path(session, path)
        if found is None:
            raise
        entry = found
    cache[path] = entry
    return entry


def ensure_root(session: Session) -> Entry:
    return _directory(session, ROOT, None, "mdm")


@dataclass(frozen=True)
class FileInfo:
    """What is known of the stored bytes (all None while the file has never been recalled)."""

    size: int | None = None
    adler32: str | None = None
    sha256: str | None = None
    key_id: str | None = None


def add_file(
    session: Session,
    caller: Caller,
    *,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    info: FileInfo = FileInfo(),
) -> tuple[Entry, bool]:
    """Register an instance's file (and its directories); ``(entry, created)``, idempotent."""
    path = lfn(study_uid, series_uid, sop_uid)
    check_checksums(info.size, info.adler32, info.sha256)
    known: dict[str, Entry | None] = session.info.get(_PREFETCHED, {})
    existing = known.pop(path) if path in known else _by_path(session, path)
    if existing is not None:
        access.require(session, caller, path, Right.LIST)
        return existing, False
    access.require(session, caller, path, Right.WRITE)
    root = ensure_root(session)
    study = _directory(session, lfn(study_uid), root, caller.name)
    series = _directory(session, lfn(study_uid, series_uid), study, caller.name)
    entry = Entry(
        guid=uuid7(),
        path=path,
        parent_id=series.id,
        name=sop_uid,
        kind=EntryKind.FILE,
        owner=caller.name,
        size=info.size,
        adler32=info.adler32,
        sha256=info.sha256,
        key_id=info.key_id,
    )
    if session.get_bind().dialect.name == "sqlite":
        session.add(entry)  # writers are serialized by BEGIN IMMEDIATE: nobody can race us
        session.flush()
        return entry, True
    try:
        with session.begin_nested():
            session.add(entry)
    except sa_exc.IntegrityError:
        raced = _by_path(session, path)
        if raced is None:
            raise
        return raced, False
    return entry, True


def content_changes(entry: Any, info: FileInfo) -> tuple[dict[str, Any], str | None]:
    """The size, checksums and key id *info* adds to *entry* (an ``Entry`` or a row with those
    columns), and the name of the first one that contradicts what is recorded (a later recall
    must give the same), if any. Shared by ``set_content`` and the batch ``recalls.record``."""
    check_checksums(info.size, info.adler32, info.sha256)
    values: dict[str, Any] = {}
    for name in ("size", "adler32", "sha256", "key_id"):
        new, old = getattr(info, name), getattr(entry, name)
        if new is None:
            continue
        if old is not None and old != new:
            return values, name
        if new != old:
            values[name] = new
    return values, None


def set_content(session: Session, caller: Caller, path: str, info: FileInfo) -> Entry:
    """Record size, checksums and key id after a recall; a later recall must match them."""
    entry = get_entry(session, caller, path)
    access.require(session, caller, entry.path, Right.WRITE)
    values, conflict = content_changes(entry, info)
    if conflict is not None:
        raise ChecksumMismatch(f"{conflict} of {entry.path} differs from the registered one")
    for name, value in values.items():
        setattr(entry, name, value)
    session.flush()
    return entry


def get_entry(session: Session, caller: Caller, path_or_guid: str) -> Entry:
    """The entry named by LFN or GUID; 404 also when the caller may not list it (no probing)."""
    entry = find_entries(session, access.Grants(session, caller), [path_or_guid])[0]
    if entry is None:
        raise FileNotFound(f"no such entry: {path_or_guid}", path=path_or_guid)
    return entry


def find_entries(
    session: Session, grants: access.Grants, names: Sequence[str], *, replicas: bool = False
) -> list[Entry | None]:
    """The entries named by *names* (LFNs or GUIDs), in order, read a few hundred per query:
    None where ``get_entry`` would answer 404 (no such entry, or the caller may not list it).
    ``replicas=True`` loads their replicas too (one more query, not one per entry). A name
    that is not a catalog path raises ``UsageError`` before anything is read."""
    lfns = {n: n.rstrip("/") or ROOT for n in names if not _GUID_RE.match(n)}
    for path in lfns:
        access.split_path(path)
    guids = sorted({n for n in names if n not in lfns})
    options = [selectinload(Entry.replicas)] if replicas else []
    by_path: dict[str, Entry] = {}
    by_guid: dict[str, Entry] = {}
    for column, keys, found in (
        (Entry.path, sorted(set(lfns.values())), by_path),
        (Entry.guid, guids, by_guid),
    ):
        for chunk in access.chunks(keys):
            stmt = select(Entry).where(column.in_(chunk)).options(*options)
            for row in session.scalars(stmt):
                found[row.path if column is Entry.path else row.guid] = row
    grants.load([*by_path, *(e.path for e in by_guid.values())])
    out: list[Entry | None] = []
    for name in names:
        entry = by_path.get(lfns[name]) if name in lfns else by_guid.get(name)
        out.append(entry if entry is not None and grants.has(entry.path, Right.LIST) else None)
    return out


def list_dir(
    session: Session, caller: Caller, path: str, *, limit: int = 1000, offset: int = 0
) -> list[Entry]:
    """Children of directory *path* the caller may list (ACLs may be set per study/series)."""
    path = path.rstrip("/") or ROOT
    parent = _by_path(session, path)
    if parent is None:
        if path == ROOT:
            return []
        raise FileNotFound(f"no such directory: {path}", path=path)
    if parent.kind is not EntryKind.DIRECTORY:
        return [get_entry(session, caller, path)]
    # A child is visible with list on itself or on any directory above it.
    paths: list[Any] = [Entry.path, *(literal(a) for a in access.anchors(path))]
    visible = access.scope_clause(caller, Right.LIST, *paths)
    stmt = (
        select(Entry)
        .where(Entry.parent_id == parent.id, visible)
        .order_by(Entry.name)
        .limit(limit)
        .offset(offset)
    )
    children = list(session.scalars(stmt))
    if not children and not access.has_right(session, caller, path, Right.LIST):
        raise FileNotFound(f"no such directory: {path}", path=path)
    return children


def _require_read(session: Session, caller: Caller, entry: Entry) -> None:
    if not access.has_right(session, caller, entry.path, Right.READ):
        raise PermissionDenied(f"read right needed on {entry.path}", path=entry.path)


def list_replicas(session: Session, caller: Caller, path: str) -> list[Replica]:
    """Replicas of a file (their URLs let you download the ciphertext: ``read`` right)."""
    entry = get_entry(session, caller, path)
    _require_read(session, caller, entry)
    return list(entry.replicas)


def add_replica(
    session: Session,
    caller: Caller,
    path: str,
    *,
    se: str,
    url: str,
    state: ReplicaState,
    pinned_until: dt.datetime | None = None,
    reason: str | None = None,
    info: FileInfo = FileInfo(),
) -> Replica:
    """Add a replica, or update the one this storage element already has (state, pin, ...)."""
    _check_replica(state, reason, info)
    entry = get_entry(session, caller, path)
    access.require(session, caller, entry.path, Right.WRITE)
    if entry.kind is not EntryKind.FILE:
        raise UsageError(f"{entry.path} is a directory: replicas belong to files")
    replica = session.scalar(select(Replica).where(Replica.entry_id == entry.id, Replica.se == se))
    return _set_replica(session, entry, replica, se, url, state, pinned_until, reason, info)


def first_replica(
    session: Session,
    entry: Entry,
    *,
    se: str,
    url: str,
    state: ReplicaState,
    pinned_until: dt.datetime | None = None,
    reason: str | None = None,
    info: FileInfo = FileInfo(),
) -> Replica:
    """The replica of a file ``add_file`` has just created (rights checked there, no lookup)."""
    _check_replica(state, reason, info)
    return _set_replica(session, entry, None, se, url, state, pinned_until, reason, info)


def _check_replica(state: ReplicaState, reason: str | None, info: FileInfo) -> None:
    """Refuse bad checksums, and a FAILED replica without its reason, before any lookup."""
    check_checksums(info.size, info.adler32, info.sha256)
    if state is ReplicaState.FAILED and not reason:
        raise UsageError("a FAILED replica needs a reason")


def _set_replica(
    session: Session,
    entry: Entry,
    replica: Replica | None,
    se: str,
    url: str,
    state: ReplicaState,
    pinned_until: dt.datetime | None,
    reason: str | None,
    info: FileInfo,
) -> Replica:
    if replica is None:
        replica = Replica(entry=entry, se=se, url=url, state=state)
        session.add(replica)
    fill_replica(replica, url, state, pinned_until, reason, info)
    session.flush()
    return replica


def fill_replica(
    replica: Replica,
    url: str,
    state: ReplicaState,
    pinned_until: dt.datetime | None,
    reason: str | None,
    info: FileInfo,
) -> None:
    """Set a replica's fields the one way (``replica_fields``)."""
    for name, value in replica_fields(url, state, pinned_until, reason, info).items():
        setattr(replica, name, value)


def replica_fields(
    url: str,
    state: ReplicaState,
    pinned_until: dt.datetime | None,
    reason: str | None,
    info: FileInfo,
) -> dict[str, Any]:
    """A replica's fields the one way: a pin only when ONLINE, a reason only when FAILED."""
    return {
        "url": url,
        "state": state,
        "pinned_until": pinned_until if state is ReplicaState.ONLINE else None,
        "reason": reason if state is ReplicaState.FAILED else None,
        "size": info.size,
        "adler32": info.adler32,
        "sha256": info.sha256,
        "modified": utcnow(),
    }


def remove_replica(session: Session, caller: Caller, path: str, se: str) -> None:
    entry = get_entry(session, caller, path)
    access.require(session, caller, entry.path, Right.WRITE)
    replica = session.scalar(select(Replica).where(Replica.entry_id == entry.id, Replica.se == se))
    if replica is None:
        raise FileNotFound(f"{entry.path} has no replica on {se}", path=entry.path, se=se)
    session.delete(replica)
    session.flush()


def entry_dict(entry: Entry, *, with_replicas: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "guid": entry.guid,
        "path": entry.path,
        "name": entry.name,
        "kind": entry.kind.value,
        "owner": entry.owner,
        "size": entry.size,
        "adler32": entry.adler32,
        "sha256": entry.sha256,
        "key_id": entry.key_id,
        "created": entry.created.isoformat(),
        "modified": entry.modified.isoformat(),
    }
    if with_replicas:
        out["replicas"] = [replica_dict(r) for r in entry.replicas]
    return out


def replica_dict(replica: Replica) -> dict[str, Any]:
    return {
        "se": replica.se,
        "url": replica.url,
        "state": replica.state.value,
        "pinned_until": replica.pinned_until.isoformat() if replica.pinned_until else None,
        "reason": replica.reason,
        "size": replica.size,
        "adler32": replica.adler32,
        "sha256": replica.sha256,
    }
