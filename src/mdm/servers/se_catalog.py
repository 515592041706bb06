"""``CatalogStorage``: the storage element's backend when the file catalog is the namespace.

The SE shows ``/dicom/<study>/<series>/<instance>`` exactly as the catalog has it, with the
catalog's directory ACLs (``list``, ``read``) and the state of this SE's replica row
(``storage.name``): NEARLINE (only in the PACS), ONLINE (the complete ciphertext is in the
cache, written by the recall worker, ``mdm.workers``), FAILED (last recall failed, reason
kept). Nothing is recalled here: staging requests go to the catalog staging queue, which the
recall workers drain; poll, cancel and delete read and change that queue; release drops the
caller's own pins (``mdm.catalog.pins``: pins are per request) and evicts at once, when no
grace is configured and nobody else pins the file (``gfal-evict`` expects NEARLINE right
after). Sizes: exact once the file was recalled once (a re-recall gives the same
bytes), otherwise an estimate from the image size in the metadata catalog.

Every method opens its own short session (the app calls them from a thread pool).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from mdm.acl import Identity
from mdm.catalog import access, migrations, pins, staging
from mdm.catalog.access import ROOT, Caller
from mdm.catalog.db import CatalogDatabases
from mdm.catalog.models import Entry, EntryKind, Instance, Replica, utcnow
from mdm.catalog.models import Right as CatalogRight
from mdm.catalog.models import StageState as CatalogStageState
from mdm.crypto import ciphertext_length
from mdm.errors import FileNotFound, FileOffline, NotFound, PermissionDenied
from mdm.settings import Settings
from mdm.storage.backend import (
    ArchiveInfo,
    FileState,
    Right,
    StageFile,
    StageRequest,
    StageState,
    normalize_lfn,
)
from mdm.storage.backend import (
    Entry as SeEntry,
)
from mdm.storage.checksums import ChecksumMemo
from mdm.workers import cache

#: Part 10 preamble, meta and a typical de-identified header, added to the pixel bytes.
HEADER_ESTIMATE = 4096
#: Rows, columns, frames assumed (16-bit pixels) while the catalog does not know the image
#: size: C-FIND does not return it; the first recall records it (and the exact size).
DEFAULT_IMAGE = (512, 512, 1)


def _ts(when: dt.datetime | None) -> int | None:
    return int(when.timestamp()) if when is not None else None


class CatalogStorage:
    """The ``StorageBackend`` over the catalog database and the recall worker's cache."""

    def __init__(self, settings: Settings, databases: CatalogDatabases | None = None) -> None:
        cat, st = settings.catalog, settings.storage
        # the schema checked at start: not a missing column in the middle of a request
        self.dbs = databases or migrations.open_current(cat)
        self.se = st.name
        self.cache_root = Path(st.cache_dir)
        self.pin = st.pin_lifetime_seconds
        self.grace = st.release_grace_seconds
        self.limit = st.cache_limit_bytes
        self.retry_after = st.retry_after_seconds
        self._admins = [f"dn:{d}" for d in cat.admin_dns] + [f"fqan:{f}" for f in cat.admin_fqans]
        self._services = [f"dn:{d}" for d in cat.service_dns] + [
            f"fqan:{f}" for f in cat.service_fqans
        ]
        self._sums = ChecksumMemo()  # md5 of the cache copies, on demand

    def caller(self, who: Identity) -> Caller:
        return Caller.of(who, admin_entries=self._admins, service_entries=self._services)

    def close(self) -> None:
        self.dbs.dispose()

    # -- namespace ---------------------------------------------------------------------------

    def authorize(self, who: Identity, lfn: str, right: Right) -> bool:
        lfn = normalize_lfn(lfn)
        if lfn == "/":
            return right is Right.LIST  # the root only lists /dicom, itself filtered
        try:
            with self.dbs.catalog.session() as s:
                return access.has_right(s, self.caller(who), lfn, CatalogRight(right.value))
        except (ValueError, NotFound):
            return False

    def _entry(self, s: Session, lfn: str) -> Entry:
        if lfn != ROOT and not lfn.startswith(ROOT + "/"):
            raise FileNotFound(f"no such file or directory: {lfn}", path=lfn)
        stmt = select(Entry).where(Entry.path == lfn).options(selectinload(Entry.replicas))
        entry = s.scalar(stmt)
        if entry is None:
            raise FileNotFound(f"no such file or directory: {lfn}", path=lfn)
        return entry

    def _view(self, s: Session, entry: Entry) -> SeEntry:
        mtime = entry.modified.timestamp()
        if entry.kind is EntryKind.DIRECTORY:
            return SeEntry(entry.path, True, mtime=mtime)
        mine = next((r for r in entry.replicas if r.se == self.se), None)
        state = FileState(mine.state.value) if mine is not None else FileState.NEARLINE
        if state is FileState.ONLINE and not cache.present(
            self.cache_root, entry.path, entry.size or 0
        ):
            state = FileState.NEARLINE  # evicted behind the catalog's back: never serve it
        size = entry.size if entry.size is not None else self._estimate(s, entry)
        sums: dict[str, str] = {}
        if state is FileState.ONLINE and entry.adler32 and entry.sha256:
            sums = {"adler32": entry.adler32, "sha256": entry.sha256}
            md5 = self._md5_of(entry.path)
            if md5:
                sums["md5"] = md5
        reason = mine.reason if mine is not None and state is FileState.FAILED else None
        return SeEntry(entry.path, False, size, mtime, state, reason, sums)

    def _estimate(self, s: Session, entry: Entry) -> int:
        inst = s.scalar(select(Instance).where(Instance.entry_fk == entry.id))
        rows, columns, frames = DEFAULT_IMAGE
        if inst is not None and inst.rows and inst.columns:
            rows, columns, frames = inst.rows, inst.columns, inst.number_of_frames or 1
        return ciphertext_length(rows * columns * 2 * frames + HEADER_ESTIMATE)

    def _md5_of(self, lfn: str) -> str | None:
        """md5 of the cache copy (the worker records adler32 and sha256 only), remembered."""
        try:
            with cache.cache_path(self.cache_root, lfn).open("rb") as fh:
                return self._sums.of(lfn, fh).get("md5")
        except FileNotFoundError:
            return None

    def stat(self, lfn: str) -> SeEntry:
        lfn = normalize_lfn(lfn)
        if lfn == "/":
            return SeEntry("/", True)
        with self.dbs.catalog.session() as s:
            return self._view(s, self._entry(s, lfn))

    def listdir(self, lfn: str) -> list[SeEntry]:
        lfn = normalize_lfn(lfn)
        with self.dbs.catalog.session() as s:
            if lfn == "/":
                root = s.scalar(select(Entry).where(Entry.path == ROOT))
                return [SeEntry(ROOT, True, mtime=root.modified.timestamp())] if root else []
            parent = self._entry(s, lfn)
            if parent.kind is not EntryKind.DIRECTORY:
                raise FileNotFound(f"{lfn} is not a directory", path=lfn)
            stmt = (
                select(Entry)
                .where(Entry.parent_id == parent.id)
                .options(selectinload(Entry.replicas))
                .order_by(Entry.name)
            )
            return [self._view(s, e) for e in s.scalars(stmt)]

    def open_read(self, lfn: str) -> BinaryIO:
        entry = self.stat(lfn)
        if entry.is_dir:
            raise FileNotFound(f"{entry.lfn} is a directory", path=entry.lfn)
        if entry.state is FileState.ONLINE:
            try:
                return cache.cache_path(self.cache_root, entry.lfn).open("rb")
            except FileNotFoundError:
                pass  # evicted between the stat and the open
        why = f" (last recall failed: {entry.reason})" if entry.reason else ""
        raise FileOffline(
            f"{entry.lfn} is {entry.state or 'NEARLINE'}{why}: stage it through the WLCG Tape "
            "REST API and retry",
            lfn=entry.lfn,
            state=str(entry.state or "NEARLINE"),
            retry_after=self.retry_after,
        )

    # -- staging -----------------------------------------------------------------------------

    def _require_read(self, s: Session, caller: Caller, lfns: Sequence[str]) -> list[str]:
        clean = [normalize_lfn(p) for p in lfns]
        for lfn in clean:
            if lfn == "/" or not access.has_right(s, caller, lfn, CatalogRight.READ):
                raise PermissionDenied(f"read right needed on {lfn}", path=lfn)
        return clean

    def stage(self, who: Identity, lfns: Sequence[str], disk_lifetime: float | None = None) -> str:
        caller = self.caller(who)
        with self.dbs.catalog.session(write=True) as s:
            clean = self._require_read(s, caller, lfns)
            request = staging.submit(s, caller, clean, disk_lifetime=disk_lifetime or None)
            until = pins.end_of(utcnow(), disk_lifetime, dt.timedelta(seconds=self.pin))
            done = [f.path for f in request.files if f.state is CatalogStageState.COMPLETED]
            for replica in self._mine(s, done, lock=True):
                if replica.pinned_until is not None and replica.pinned_until < until:
                    replica.pinned_until = until  # staging an ONLINE file renews its pin
            return request.id

    def _mine(self, s: Session, lfns: Sequence[str], *, lock: bool = False) -> list[Replica]:
        """This SE's replicas of *lfns*; *lock*: locked and read afresh (PostgreSQL), so that
        a concurrent release (``pins.repin`` locks them too) cannot overwrite a renewed pin
        with one computed before this request's pin existed."""
        if not lfns:
            return []
        stmt = (
            select(Replica)
            .join(Entry, Replica.entry_id == Entry.id)
            .where(Replica.se == self.se, Entry.path.in_(list(lfns)))
        )
        if lock and s.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=Replica).execution_options(populate_existing=True)
        return list(s.scalars(stmt))

    def poll(self, who: Identity, request_id: str) -> StageRequest:
        with self.dbs.catalog.session() as s:
            request = staging.get_request(s, self.caller(who), request_id)
            out = tuple(
                StageFile(
                    path=f.path,
                    state=StageState(f.state.value),
                    error=f.reason if f.state is not CatalogStageState.COMPLETED else None,
                    started_at=_ts(f.started),
                    finished_at=_ts(f.finished),
                )
                for f in request.files
            )
            started = [f.started_at for f in out if f.started_at is not None]
            return StageRequest(
                request.id, int(request.created.timestamp()), out, min(started, default=None)
            )

    def cancel(self, who: Identity, request_id: str, lfns: Sequence[str]) -> None:
        with self.dbs.catalog.session(write=True) as s:
            staging.cancel(s, self.caller(who), request_id, [normalize_lfn(p) for p in lfns])

    def release(self, who: Identity, request_id: str | None, lfns: Sequence[str]) -> None:
        """Drop the caller's pins on *lfns* (``mdm.catalog.pins``); a file nobody else pins
        stays ``release_grace_seconds``, and is evicted at once without a grace."""
        caller = self.caller(who)
        with self.dbs.catalog.session(write=True) as s:
            clean = self._require_read(s, caller, lfns)
            pins.release(s, caller, request_id, clean)
            self._repin(s, clean)
        if self.grace <= 0:
            cache.sweep(self.dbs.catalog, self.se, self.cache_root, limit_bytes=self.limit)

    def delete_request(self, who: Identity, request_id: str) -> None:
        """Forget a request: its pending files are cancelled and its pins dropped."""
        with self.dbs.catalog.session(write=True) as s:
            request = staging.cancel(s, self.caller(who), request_id)
            pinned = sorted(
                {f.path for f in request.files if f.state is CatalogStageState.COMPLETED}
            )
            s.delete(request)
            s.flush()
            self._repin(s, pinned)
        if pinned and self.grace <= 0:
            cache.sweep(self.dbs.catalog, self.se, self.cache_root, limit_bytes=self.limit)

    def _repin(self, s: Session, lfns: Sequence[str]) -> None:
        default, grace = dt.timedelta(seconds=self.pin), dt.timedelta(seconds=self.grace)
        pins.repin(s, self.se, lfns, default, grace)

    def archiveinfo(self, lfns: Sequence[str]) -> list[ArchiveInfo]:
        out = []
        for path in lfns:
            try:
                entry = self.stat(path)
            except FileNotFound:
                out.append(ArchiveInfo(path, error="USER ERROR: file does not exist"))
                continue
            out.append(ArchiveInfo(path, locality=entry.locality))
        return out

    def evict(self, lfns: Sequence[str]) -> list[str]:
        clean = [normalize_lfn(p) for p in lfns]
        return cache.sweep(self.dbs.catalog, self.se, self.cache_root, lfns=clean)

    def evict_expired(self) -> list[str]:
        return cache.sweep(
            self.dbs.catalog, self.se, self.cache_root, grace=self.grace, limit_bytes=self.limit
        )
