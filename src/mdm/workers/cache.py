"""The catalog-backed disk cache: where ONLINE files live, and how they stop being ONLINE.

The cache is a directory tree mirroring the LFNs (``<cache>/dicom/<study>/<series>/<sop>``),
shared by the recall worker (which writes) and the storage element (which reads). The truth
about a file is its replica row in the catalog (``se`` = ``storage.name``): ONLINE means "the
complete copy is in the cache", with ``pinned_until``. Ordering rules, so that no reader ever
sees ONLINE without a complete file:

* writing: temporary name in the final directory, fsync, rename; only then the ONLINE row,
  in a write transaction that checks the file is still there (:func:`present`);
* evicting (:func:`sweep`): in one write transaction, the row goes NEARLINE and the file is
  renamed away to a ``*.mdm-evicted`` name; after the commit the renamed file is deleted. A
  worker that renamed a fresh copy in between sees it gone in its own transaction and writes
  again, so an ONLINE row never points to a file an evictor deleted.

Eviction: copies whose pin ended more than ``grace`` seconds ago; then, over ``limit_bytes``,
copies whose pin ended, oldest pin first (least recently staged). Pinned copies are never
evicted for space.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mdm.catalog.db import Database
from mdm.catalog.models import Entry, Replica, ReplicaState, utcnow
from mdm.storage.cache import TMP_SUFFIX
from mdm.storage.checksums import Checksummer
from mdm.storage.direct import write as write_direct

logger = logging.getLogger(__name__)

EVICTED_SUFFIX = ".mdm-evicted"


def cache_path(root: Path, lfn: str) -> Path:
    return Path(root).joinpath(*lfn.strip("/").split("/"))


def write_atomically(
    root: Path, lfn: str, data: bytes | memoryview, *, fsync: bool = True, direct: bool = False
) -> dict[str, str]:
    """Put *data* in the cache as *lfn* (tmp + fsync + rename); return its adler32 and sha256
    (what the catalog records; md5 is computed by the storage element when asked for).

    ``fsync=False`` leaves the flush to the caller, who must call ``os.sync()`` (one flush for
    a whole batch) before recording any of the files ONLINE. ``direct``: bypass the page
    cache where the filesystem allows it (``mdm.storage.direct``, ``storage.direct_io``).
    """
    dst = cache_path(root, lfn)
    tmp, sums = write_unnamed(root, lfn, data, fsync=fsync, direct=direct)
    commit(tmp, dst)
    return sums


def write_unnamed(
    root: Path, lfn: str, data: bytes | memoryview, *, fsync: bool = False, direct: bool = False
) -> tuple[Path, dict[str, str]]:
    """``write_atomically`` but the rename: *data* under a temporary name beside *lfn*'s
    place, and its adler32 and sha256. The recall worker renames (``commit``) only once the
    file's key is registered, or removes it (``discard``)."""
    summer = Checksummer(("adler32", "sha256"))
    summer.update(data)
    tmp = write_temporary(cache_path(root, lfn), data, fsync=fsync, direct=direct)
    return tmp, summer.hexdigests()


def replace_atomically(
    dst: Path, data: bytes | memoryview, *, fsync: bool = True, direct: bool = False
) -> None:
    """Write *dst* through a ``*.mdm-tmp`` name beside it, then rename over it.

    A reader sees the old file or the complete new one, never part of one; a crash leaves only
    ``*.mdm-tmp`` debris, which :func:`clean_debris` (and the storage element's start-up scan)
    removes. ``fsync=False``: the caller flushes (``os.sync``) before relying on the file.
    ``direct``: written with ``O_DIRECT`` where the filesystem allows it.
    """
    commit(write_temporary(dst, data, fsync=fsync, direct=direct), dst)


def write_temporary(
    dst: Path, data: bytes | memoryview, *, fsync: bool = False, direct: bool = False
) -> Path:
    """The first half of :func:`replace_atomically`: *data* written under a new ``*.mdm-tmp``
    name beside *dst*, returned; :func:`commit` renames it into place, :func:`discard`
    removes it. For the recall worker, which renames only once the file's key is registered."""
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
    try:
        try:
            _write_new(tmp, data, fsync=fsync, direct=direct)
        except FileNotFoundError:  # the directory is new: made only then (one syscall less)
            dst.parent.mkdir(parents=True, exist_ok=True)
            _write_new(tmp, data, fsync=fsync, direct=direct)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit(tmp: Path, dst: Path) -> None:
    """Rename the temporary file *tmp* over *dst* (removing *tmp* if that fails)."""
    try:
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def discard(tmp: Path) -> None:
    """Remove a temporary file that will not be committed."""
    tmp.unlink(missing_ok=True)


def _write_new(path: Path, data: bytes | memoryview, *, fsync: bool, direct: bool) -> None:
    if direct and write_direct(path, data, fsync=fsync):
        return
    with path.open("xb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


def present(root: Path, lfn: str, size: int) -> bool:
    try:
        return cache_path(root, lfn).stat().st_size == size
    except FileNotFoundError:
        return False


def _retire(root: Path, lfn: str) -> Path | None:
    path = cache_path(root, lfn)
    gone = path.with_name(f".{path.name}.{secrets.token_hex(6)}{EVICTED_SUFFIX}")
    try:
        os.replace(path, gone)
    except FileNotFoundError:
        return None
    return gone


def _nearline(session: Session, rows: Sequence[tuple[Replica, str]], root: Path) -> list[Path]:
    retired = []
    for replica, lfn in rows:
        replica.state, replica.pinned_until = ReplicaState.NEARLINE, None
        replica.modified = utcnow()
        gone = _retire(root, lfn)
        if gone is not None:
            retired.append(gone)
    session.flush()
    return retired


def sweep(
    db: Database,
    se: str,
    root: Path,
    *,
    grace: float = 0.0,
    limit_bytes: int = 0,
    lfns: Sequence[str] | None = None,
) -> list[str]:
    """Evict expired copies (or exactly *lfns*, whatever their pins); return the LFNs evicted."""
    now = utcnow()
    online = (
        select(Replica, Entry.path)
        .join(Entry, Replica.entry_id == Entry.id)
        .where(Replica.se == se, Replica.state == ReplicaState.ONLINE)
    )
    if db.dialect == "postgresql":
        online = online.with_for_update(of=Replica)
    with db.session(write=True) as session:
        if lfns is not None:
            victims = [(r, p) for r, p in session.execute(online.where(Entry.path.in_(list(lfns))))]
        else:
            ended = now - dt.timedelta(seconds=grace)
            rows = [(r, p) for r, p in session.execute(online)]
            victims = [(r, p) for r, p in rows if r.pinned_until is None or r.pinned_until <= ended]
            if limit_bytes > 0:
                chosen = {id(r) for r, _ in victims}
                total = sum(r.size or 0 for r, _ in rows if id(r) not in chosen)
                unpinned = sorted(
                    (
                        (r, p)
                        for r, p in rows
                        if id(r) not in chosen
                        and r.pinned_until is not None
                        and r.pinned_until <= now
                    ),
                    key=lambda rp: rp[0].pinned_until or now,
                )
                for r, p in unpinned:
                    if total <= limit_bytes:
                        break
                    victims.append((r, p))
                    total -= r.size or 0
        retired = _nearline(session, victims, root)
    for path in retired:
        path.unlink(missing_ok=True)
    evicted = [p for _, p in victims]
    if evicted:
        logger.info("evicted %d file(s) from the cache of %s", len(evicted), se)
    return evicted


def clean_debris(root: Path, older_than: float) -> int:
    """Remove temporary files of dead writers and leftovers of evictions; return how many."""
    cutoff = time.time() - older_than
    removed = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith((TMP_SUFFIX, EVICTED_SUFFIX)):
                full = Path(dirpath) / name
                try:
                    if name.endswith(EVICTED_SUFFIX) or full.stat().st_mtime < cutoff:
                        full.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
    return removed
