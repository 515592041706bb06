"""Storage-element domain logic without HTTP (layer 1): what a file's state is, where its
bytes are, who may see and read it, and how staging requests progress.

``StorageBackend`` (``mdm.storage.backend``) is the interface the SE app talks to;
``PosixNearline`` (``mdm.storage.posix``) is a real disk-backed implementation (archive
directory = tape, cache directory = disk) with path ACLs from ``Grants``; its ``DiskCache``
(atomic complete copies, pins, eviction) and ``Checksummer`` are reusable by a recall worker.
"""

from __future__ import annotations

from mdm.storage.backend import (
    CHECKSUM_ALGORITHMS,
    ArchiveInfo,
    Entry,
    FileState,
    Locality,
    Right,
    StageFile,
    StageRequest,
    StageState,
    StorageBackend,
    normalize_lfn,
)
from mdm.storage.cache import DiskCache
from mdm.storage.checksums import Checksummer, file_checksums
from mdm.storage.grants import Grants
from mdm.storage.posix import PosixNearline

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "ArchiveInfo",
    "Checksummer",
    "DiskCache",
    "Entry",
    "FileState",
    "Grants",
    "Locality",
    "PosixNearline",
    "Right",
    "StageFile",
    "StageRequest",
    "StageState",
    "StorageBackend",
    "file_checksums",
    "normalize_lfn",
]
