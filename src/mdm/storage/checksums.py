"""File checksums the grid expects, computed in one pass with constant memory.

adler32 is what gfal2, FTS and Rucio compare (8 lower-case hex digits, zero-padded as davix
does); md5 and sha256 are offered for ``Want-Digest`` (RFC 3230 / RFC 5843) and for integrity
records. All are returned as lower-case hex; the HTTP layer re-encodes md5/sha-256 in base64.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from collections import OrderedDict
from typing import BinaryIO

CHUNK = 1 << 20


ALGORITHMS = ("adler32", "md5", "sha256")


class Checksummer:
    """Feed bytes with ``update``; ``hexdigests()`` gives ``{"adler32", "md5", "sha256"}``.

    *algorithms* narrows that set: the recall worker records adler32 and sha256 only, and md5
    (which the storage element computes on demand) would cost it more than both together.
    """

    def __init__(self, algorithms: tuple[str, ...] = ALGORITHMS) -> None:
        unknown = set(algorithms) - set(ALGORITHMS)
        if unknown:
            raise ValueError(f"unknown checksum algorithm(s): {', '.join(sorted(unknown))}")
        self._adler: int | None = 1 if "adler32" in algorithms else None
        self._md5 = hashlib.md5(usedforsecurity=False) if "md5" in algorithms else None
        self._sha256 = hashlib.sha256() if "sha256" in algorithms else None
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._adler is not None:
            self._adler = zlib.adler32(data, self._adler)
        if self._md5 is not None:
            self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        self.size += len(data)

    def hexdigests(self) -> dict[str, str]:
        sums = {}
        if self._adler is not None:
            sums["adler32"] = f"{self._adler & 0xFFFFFFFF:08x}"
        if self._md5 is not None:
            sums["md5"] = self._md5.hexdigest()
        if self._sha256 is not None:
            sums["sha256"] = self._sha256.hexdigest()
        return sums


def file_checksums(fh: BinaryIO) -> dict[str, str]:
    """Checksums of everything *fh* yields from its current position to the end."""
    c = Checksummer()
    while chunk := fh.read(CHUNK):
        c.update(chunk)
    return c.hexdigests()


#: What identifies one version of a file on disk: inode, size, mtime (ns).
FileKey = tuple[int, int, int]


def file_key(st: os.stat_result) -> FileKey:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ChecksumMemo:
    """The checksums of cache copies, remembered per LFN for as long as the copy is the same
    file (inode, size, mtime): a stat or ``Want-Digest`` must not read a whole file each time.

    Thread-safe. At most *limit* LFNs, the least recently used forgotten first: a storage
    element that runs for months stats millions of files, and an unbounded memo grew with
    every one of them.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = max(1, limit)
        self._sums: OrderedDict[str, tuple[FileKey, dict[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sums)

    def of(self, lfn: str, fh: BinaryIO, *, compute: bool = True) -> dict[str, str]:
        """The checksums of the open copy *fh* of *lfn*: remembered, or computed (from *fh*'s
        position to its end) unless *compute* is False (then ``{}``)."""
        key = file_key(os.fstat(fh.fileno()))
        with self._lock:
            known = self._sums.get(lfn)
            if known is not None and known[0] == key:
                self._sums.move_to_end(lfn)
                return known[1]
        if not compute:
            return {}
        sums = file_checksums(fh)
        self.remember(lfn, key, sums)
        return sums

    def remember(self, lfn: str, key: FileKey, sums: dict[str, str]) -> None:
        with self._lock:
            self._sums[lfn] = (key, sums)
            self._sums.move_to_end(lfn)
            while len(self._sums) > self._limit:
                self._sums.popitem(last=False)

    def forget(self, lfn: str) -> None:
        with self._lock:
            self._sums.pop(lfn, None)
