"""What the storage element asks of the storage behind it: the ``StorageBackend`` protocol.

The SE (``mdm.servers.se_app``) speaks HTTP/WebDAV and the WLCG Tape REST API v1; everything it
knows about files comes through this interface, so the same app serves a plain disk-backed
nearline store (``mdm.storage.posix``) and the catalog-backed store fed by the recall worker.
The vocabulary is the one of the catalog and of the Tape REST API:

* a file is NEARLINE (only in the archive: the PACS, a tape), STAGING (a recall is running),
  ONLINE (a complete copy is on disk and may be read) or FAILED (the last recall failed, with a
  reason). Only an ONLINE file has exact size and checksums; a NEARLINE size is an estimate.
* a staging request holds per-file states SUBMITTED -> STARTED -> COMPLETED | FAILED |
  CANCELLED (the spec's spelling; gfal2 2.21.3 expects ``CANCELED`` but treats any unknown
  state as a terminal error, so nothing is lost).
* rights are ``list`` (see an entry) and ``read`` (download, stage, release), granted by ACL
  entries (``mdm.acl``), default deny.

Backends raise ``mdm.errors`` classes: ``FileNotFound``, ``FileOffline`` (with ``retry_after``),
``PermissionDenied``, ``NotFound`` for an unknown request, ``UsageError`` for a bad path list.
Methods are synchronous (disk or database I/O); the app calls them from a thread pool.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, runtime_checkable

from mdm.acl import Identity
from mdm.errors import UsageError

#: Algorithms every ONLINE entry carries in ``Entry.checksums`` (lower-case hex digests).
CHECKSUM_ALGORITHMS = ("adler32", "md5", "sha256")


class FileState(enum.StrEnum):
    """Where a file's bytes are (the catalog's ``ReplicaState``)."""

    NEARLINE = "NEARLINE"
    STAGING = "STAGING"
    ONLINE = "ONLINE"
    FAILED = "FAILED"


class Locality(enum.StrEnum):
    """Tape REST ``archiveinfo`` locality (gfal2 maps TAPE -> NEARLINE, DISK_AND_TAPE -> ONLINE)."""

    TAPE = "TAPE"
    DISK = "DISK"
    DISK_AND_TAPE = "DISK_AND_TAPE"
    LOST = "LOST"
    NONE = "NONE"
    UNAVAILABLE = "UNAVAILABLE"


class StageState(enum.StrEnum):
    """Per-file states of a staging request (WLCG Tape REST API v1)."""

    SUBMITTED = "SUBMITTED"
    STARTED = "STARTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (StageState.COMPLETED, StageState.FAILED, StageState.CANCELLED)


class Right(enum.StrEnum):
    """What a caller may do with an LFN (the subset of the catalog rights the SE checks)."""

    LIST = "list"  # see the entry: PROPFIND, archiveinfo
    READ = "read"  # the bytes: GET/HEAD, stage, cancel, release


@dataclass(frozen=True)
class Entry:
    """One namespace entry as the SE shows it.

    ``size`` is exact once ``state`` is ONLINE (the SE serves exactly that many bytes) and an
    estimate otherwise. ``checksums`` maps ``CHECKSUM_ALGORITHMS`` to lower-case hex, and is
    empty unless the file is ONLINE.
    """

    lfn: str
    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    state: FileState | None = None
    reason: str | None = None
    checksums: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return posixpath.basename(self.lfn.rstrip("/")) or "/"

    @property
    def locality(self) -> Locality:
        if self.is_dir:
            return Locality.NONE
        if self.state is FileState.ONLINE:
            return Locality.DISK_AND_TAPE
        return Locality.TAPE


@dataclass(frozen=True)
class StageFile:
    """One file of a staging request; times are Unix seconds."""

    path: str
    state: StageState
    error: str | None = None
    started_at: int | None = None
    finished_at: int | None = None


@dataclass(frozen=True)
class StageRequest:
    """A staging request as the Tape REST poll shows it."""

    id: str
    created_at: int
    files: tuple[StageFile, ...]
    started_at: int | None = None

    @property
    def completed_at(self) -> int | None:
        """When the last file reached a terminal state (``None`` while any is pending)."""
        if not self.files or not all(f.state.terminal for f in self.files):
            return None
        return max((f.finished_at or self.created_at) for f in self.files)


@dataclass(frozen=True)
class ArchiveInfo:
    """Tape REST ``archiveinfo`` answer for one path: a locality, or an error, never both."""

    path: str
    locality: Locality | None = None
    error: str | None = None


@runtime_checkable
class StorageBackend(Protocol):
    """The namespace and staging operations the storage element needs (see module docstring).

    ``who`` is the verified caller. Methods that take it check ``read`` themselves for every
    path (a request with one forbidden path does nothing and raises ``PermissionDenied``);
    ``stat``/``listdir``/``open_read``/``archiveinfo`` do not, the app calls ``authorize`` first.
    """

    def authorize(self, who: Identity, lfn: str, right: Right) -> bool:
        """True when an ACL entry on *lfn* or its nearest ancestor grants *right* (default deny)."""
        ...

    def stat(self, lfn: str) -> Entry:
        """The entry, or ``FileNotFound``."""
        ...

    def listdir(self, lfn: str) -> list[Entry]:
        """The children of a directory (sorted by name), or ``FileNotFound``."""
        ...

    def open_read(self, lfn: str) -> BinaryIO:
        """A seekable binary file of an ONLINE entry; ``FileOffline`` when it is not ONLINE.

        The returned file keeps its bytes readable even if the copy is evicted meanwhile.
        """
        ...

    def stage(self, who: Identity, lfns: Sequence[str], disk_lifetime: float | None = None) -> str:
        """Queue a recall of *lfns*, pinning them once ONLINE; return the request id."""
        ...

    def poll(self, who: Identity, request_id: str) -> StageRequest:
        """The request's state; ``NotFound`` if unknown or not the caller's."""
        ...

    def cancel(self, who: Identity, request_id: str, lfns: Sequence[str]) -> None:
        """Cancel *lfns* of a request; ``UsageError`` (nothing done) if one is not in it."""
        ...

    def release(self, who: Identity, request_id: str | None, lfns: Sequence[str]) -> None:
        """Drop the caller's pins on *lfns* (of *request_id*, or of any of the caller's requests
        when the id is ``None`` or unknown, as ``gfal-evict`` sends ``gfal2-placeholder-id``)."""
        ...

    def delete_request(self, who: Identity, request_id: str) -> None:
        """Forget a request after cancelling what is still pending in it."""
        ...

    def archiveinfo(self, lfns: Sequence[str]) -> list[ArchiveInfo]:
        """Locality of each path (an ``error`` for a path that does not exist)."""
        ...

    def evict(self, lfns: Sequence[str]) -> list[str]:
        """Drop the disk copies of *lfns* whatever their pins; return the LFNs evicted."""
        ...


def normalize_lfn(path: str) -> str:
    """The sanitised LFN of *path*: one leading slash, no duplicate or trailing slashes.

    The Tape REST API requires servers to sanitise paths (collapse slashes) and gfal2 matches
    poll answers by the collapsed path, so every layer compares LFNs in this form. ``.`` and
    ``..`` segments, backslashes and NUL are refused rather than resolved: an LFN is a name, not
    a filesystem path, and resolving would let ``/dicom/../etc`` escape the namespace.
    """
    if not isinstance(path, str) or not path:
        raise UsageError("a path must be a non-empty string", path=str(path)[:200])
    if "\x00" in path or "\\" in path:
        raise UsageError("a path may not contain NUL or backslash", path=path[:200])
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise UsageError("a path may not contain '.' or '..' segments", path=path[:200])
    return "/" + "/".join(parts)


def ancestors(lfn: str) -> list[str]:
    """*lfn* and its ancestors, nearest first: ``/a/b`` -> ``["/a/b", "/a", "/"]``."""
    out = [lfn]
    while lfn != "/":
        lfn = posixpath.dirname(lfn)
        out.append(lfn)
    return out
