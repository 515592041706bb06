"""A real nearline store on local disk: an archive directory plays the tape, a cache the disk.

``PosixNearline(archive_dir, cache_dir, grants)`` implements ``StorageBackend`` without a
catalog, for ``mdm serve se`` on its own and for tests with real grid clients:

* The namespace is the archive tree: ``/dicom/a/b`` is ``<archive>/dicom/a/b``. Every file is
  NEARLINE until a copy of it is in the cache (``<cache>/dicom/a/b``), then ONLINE.
* ``stage`` queues files; a recall copies archive -> cache atomically (``DiskCache.store``:
  temporary name, fsync, rename), so a reader never sees a partial file. Recalls run in a
  background thread (``start()``/``stop()``) or synchronously with ``recall_once()``.
* A completed file is pinned by each request that asked for it, for the request's
  ``diskLifetime`` or ``pin_lifetime``. ``release`` drops pins; once a file has no pin left it
  stays ``release_grace`` seconds more, then ``evict_expired`` deletes the copy and the file is
  NEARLINE again; ``cache_limit_bytes`` evicts unpinned copies, least recently read first
  (``mdm.storage.cache``). Requests live in memory only: after a restart, copies found in the
  cache are pinned for ``pin_lifetime`` and any caller with ``read`` may release them.
* Re-staging after eviction copies the same archive bytes again: same size, same checksums.
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from mdm.acl import Identity
from mdm.errors import FileNotFound, FileOffline, PermissionDenied, UsageError
from mdm.storage.backend import (
    ArchiveInfo,
    Entry,
    FileState,
    Right,
    StageRequest,
    StageState,
    normalize_lfn,
)
from mdm.storage.cache import NOBODY, STARTUP, DiskCache
from mdm.storage.grants import Grants
from mdm.storage.requests import RequestBook

logger = logging.getLogger(__name__)

_SWEEP_SECONDS = 30.0


class PosixNearline:
    """Disk-backed nearline storage (see the module docstring)."""

    def __init__(
        self,
        archive_dir: Path,
        cache_dir: Path,
        grants: Grants,
        *,
        pin_lifetime: float = 3600.0,
        release_grace: float = 0.0,
        cache_limit_bytes: int = 0,
        retry_after: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.archive = Path(archive_dir)
        if not self.archive.is_dir():
            raise FileNotFoundError(f"archive directory {self.archive} does not exist")
        self.grants = grants
        self.pin_lifetime = float(pin_lifetime)
        self.retry_after = int(retry_after)
        self.cache = DiskCache(
            Path(cache_dir),
            pin_lifetime=self.pin_lifetime,
            release_grace=float(release_grace),
            limit_bytes=int(cache_limit_bytes),
            clock=clock,
        )
        self._clock = clock
        self._lock = threading.RLock()  # taken before the cache's own lock, never after
        self._wake = threading.Condition(self._lock)
        self._book = RequestBook()
        self._queue: dict[str, None] = {}  # LFNs waiting for a recall, in order
        self._staging: set[str] = set()  # LFNs being copied now
        self._waiting: dict[str, set[str]] = {}  # LFN -> request ids to complete
        self._failed: dict[str, str] = {}  # LFN -> reason of the last failed recall
        self._thread: threading.Thread | None = None
        self._stop = False

    # ------------------------------------------------------------------ paths and namespace

    def _archive_path(self, lfn: str) -> Path:
        return self.archive.joinpath(*lfn.strip("/").split("/")) if lfn != "/" else self.archive

    def authorize(self, who: Identity, lfn: str, right: Right) -> bool:
        return self.grants.allows(who, normalize_lfn(lfn), right)

    def stat(self, lfn: str) -> Entry:
        lfn = normalize_lfn(lfn)
        try:
            st = self._archive_path(lfn).stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise FileNotFound(f"no such file or directory: {lfn}", lfn=lfn) from exc
        if stat_mod.S_ISDIR(st.st_mode):
            return Entry(lfn, True, 0, st.st_mtime)
        if not stat_mod.S_ISREG(st.st_mode) or Path(lfn).name.startswith("."):
            raise FileNotFound(f"no such file or directory: {lfn}", lfn=lfn)
        return self._file_entry(lfn, st.st_size, st.st_mtime)

    def _file_entry(
        self, lfn: str, archived_size: int, mtime: float, *, checksums: bool = True
    ) -> Entry:
        """The entry of a file; ``checksums=False`` (listings) reuses only known checksums."""
        with self._lock:
            if not self.cache.is_online(lfn):
                if lfn in self._staging or lfn in self._queue:
                    return Entry(lfn, False, archived_size, mtime, FileState.STAGING)
                if lfn in self._failed:
                    reason = self._failed[lfn]
                    return Entry(lfn, False, archived_size, mtime, FileState.FAILED, reason)
                return Entry(lfn, False, archived_size, mtime, FileState.NEARLINE)
        fh = self.cache.open(lfn, touch=False)
        if fh is None:  # evicted between the two looks: it is nearline again
            return Entry(lfn, False, archived_size, mtime, FileState.NEARLINE)
        with fh:
            size = os.fstat(fh.fileno()).st_size
            sums = self.cache.checksums(lfn, fh, compute=checksums)
        return Entry(lfn, False, size, mtime, FileState.ONLINE, None, sums)

    def listdir(self, lfn: str) -> list[Entry]:
        lfn = normalize_lfn(lfn)
        if not self.stat(lfn).is_dir:
            raise UsageError(f"not a directory: {lfn}", lfn=lfn)
        out = []
        for child in sorted(os.scandir(self._archive_path(lfn)), key=lambda d: d.name):
            if child.name.startswith("."):
                continue
            path = (lfn.rstrip("/") + "/" + child.name) if lfn != "/" else "/" + child.name
            st = child.stat()
            if child.is_dir():
                out.append(Entry(path, True, 0, st.st_mtime))
            elif child.is_file():
                out.append(self._file_entry(path, st.st_size, st.st_mtime, checksums=False))
        return out

    def open_read(self, lfn: str) -> BinaryIO:
        lfn = normalize_lfn(lfn)
        fh = self.cache.open(lfn)
        if fh is not None:
            return fh
        entry = self.stat(lfn)
        why = f" (last recall failed: {entry.reason})" if entry.reason else ""
        raise FileOffline(
            f"{lfn} is {entry.state}{why}: stage it through the WLCG Tape REST API and retry",
            lfn=lfn,
            state=str(entry.state),
            retry_after=self.retry_after,
        )

    # ------------------------------------------------------------------ staging

    def _check(self, who: Identity, lfns: Sequence[str], right: Right) -> list[str]:
        if not lfns:
            raise UsageError("the request names no path")
        clean = list(dict.fromkeys(normalize_lfn(p) for p in lfns))
        denied = [p for p in clean if not self.grants.allows(who, p, right)]
        if denied:
            raise PermissionDenied(
                f"{right} access to {denied[0]} is not granted"
                + (f" (nor to {len(denied) - 1} more)" if len(denied) > 1 else ""),
                lfn=denied[0],
                right=str(right),
            )
        return clean

    def stage(self, who: Identity, lfns: Sequence[str], disk_lifetime: float | None = None) -> str:
        clean = self._check(who, lfns, Right.READ)
        lifetime = self.pin_lifetime if disk_lifetime is None else float(disk_lifetime)
        kinds = {}
        for lfn in clean:
            try:
                kinds[lfn] = "dir" if self.stat(lfn).is_dir else "file"
            except FileNotFound:
                kinds[lfn] = "missing"
        with self._lock:
            now = self._clock()
            rid = self._book.create(who.dn, clean, lifetime, now)
            for lfn in clean:
                if kinds[lfn] == "missing":
                    self._book.finish(rid, lfn, StageState.FAILED, now, "no such file")
                elif kinds[lfn] == "dir":
                    self._book.finish(rid, lfn, StageState.FAILED, now, "is a directory")
                elif self.cache.is_online(lfn):
                    self._book.finish(rid, lfn, StageState.COMPLETED, now)
                    self.cache.pin(lfn, rid, who.dn, now + lifetime)
                else:
                    self._waiting.setdefault(lfn, set()).add(rid)
                    self._failed.pop(lfn, None)
                    if lfn in self._staging:
                        self._book.start(rid, lfn, now)
                    else:
                        self._queue[lfn] = None
            self._wake.notify_all()
        logger.info("stage request %s: %d file(s) by %s", rid, len(clean), who.dn)
        return rid

    def poll(self, who: Identity, request_id: str) -> StageRequest:
        with self._lock:
            return self._book.snapshot(who.dn, request_id)

    def cancel(self, who: Identity, request_id: str, lfns: Sequence[str]) -> None:
        clean = self._check(who, lfns, Right.READ)
        with self._lock:
            self._book.check_members(who.dn, request_id, clean)
            now = self._clock()
            for lfn in clean:
                self._book.finish(request_id, lfn, StageState.CANCELLED, now)
                self._forget_waiter(lfn, request_id)
                self.cache.unpin(lfn, request_id)
        self.evict_expired()

    def _forget_waiter(self, lfn: str, rid: str) -> None:
        waiters = self._waiting.get(lfn)
        if waiters is not None:
            waiters.discard(rid)
            if not waiters:
                del self._waiting[lfn]
                self._queue.pop(lfn, None)  # nobody wants it any more; a running copy finishes

    def release(self, who: Identity, request_id: str | None, lfns: Sequence[str]) -> None:
        clean = self._check(who, lfns, Right.READ)
        with self._lock:
            if request_id is not None and self._book.owner(request_id) == who.dn:
                rids = {request_id}
            else:  # unknown id (gfal-evict sends "gfal2-placeholder-id"): release by path
                rids = set(self._book.requests_of(who.dn)) | {STARTUP}
            for lfn in clean:
                self.cache.release(lfn, rids, who.dn)
        self.evict_expired()

    def delete_request(self, who: Identity, request_id: str) -> None:
        with self._lock:
            req = self._book.delete(who.dn, request_id)
            for lfn in req.files:
                self._forget_waiter(lfn, request_id)
                self.cache.unpin(lfn, request_id)
        self.evict_expired()

    def archiveinfo(self, lfns: Sequence[str]) -> list[ArchiveInfo]:
        out = []
        for path in lfns:
            try:
                entry = self.stat(path)
            except FileNotFound:
                out.append(ArchiveInfo(path, error="no such file or directory"))
                continue
            except UsageError as exc:
                out.append(ArchiveInfo(path, error=exc.message))
                continue
            if entry.is_dir:
                out.append(ArchiveInfo(path, error="is a directory"))
            else:
                out.append(ArchiveInfo(path, locality=entry.locality))
        return out

    # ------------------------------------------------------------------ recall

    def recall_once(self) -> int:
        """Recall every queued file now, in this thread; return how many became ONLINE."""
        done = 0
        while True:
            with self._lock:
                if not self._queue:
                    break
                lfn = next(iter(self._queue))
                del self._queue[lfn]
                self._staging.add(lfn)
                now = self._clock()
                for rid in self._waiting.get(lfn, ()):
                    self._book.start(rid, lfn, now)
            error = self._copy_to_cache(lfn)
            done += self._finish_recall(lfn, error)
        self.evict_expired()
        return done

    def _copy_to_cache(self, lfn: str) -> str | None:
        """Copy one file from the archive into the cache; the error text, or None."""
        try:
            with self._archive_path(lfn).open("rb") as src:
                self.cache.store(lfn, src)
            return None
        except FileNotFoundError:
            return "the archive no longer holds this file"
        except OSError as exc:
            logger.warning("recall of %s failed: %s", lfn, exc)
            return f"recall failed: {exc.strerror or exc}"

    def _finish_recall(self, lfn: str, error: str | None) -> int:
        with self._lock:
            self._staging.discard(lfn)
            now = self._clock()
            waiters = self._waiting.pop(lfn, set())
            if error is not None:
                self._failed[lfn] = error
            for rid in waiters:
                if error is not None:
                    self._book.finish(rid, lfn, StageState.FAILED, now, error)
                elif self._book.finish(rid, lfn, StageState.COMPLETED, now):
                    owner = self._book.owner(rid) or NOBODY
                    self.cache.pin(lfn, rid, owner, now + self._book.lifetime(rid))
        return int(error is None)

    def start(self) -> PosixNearline:
        """Run recalls and eviction sweeps in a background thread until ``stop()``."""
        with self._lock:
            if self._thread is not None:
                return self
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="mdm-recall", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue and not self._stop:
                    self._wake.wait(_SWEEP_SECONDS)
                if self._stop:
                    return
            try:
                self.recall_once()
            except Exception:  # one bad file must not end recalls for everybody
                logger.exception("recall loop iteration failed")
                time.sleep(1.0)

    # ------------------------------------------------------------------ eviction

    def evict_expired(self) -> list[str]:
        """Forget old requests; evict copies whose pins and grace are over (``DiskCache``)."""
        with self._lock:
            self._book.forget_finished(self._clock())
            return self.cache.evict_expired()

    def evict(self, lfns: Sequence[str]) -> list[str]:
        return self.cache.evict([normalize_lfn(p) for p in lfns])
