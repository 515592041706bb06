"""The disk cache of a nearline store: complete copies only, pins, and eviction.

A copy enters the cache through a temporary name in its final directory, is fsynced, then
renamed (atomic on POSIX), with adler32/md5/sha256 computed on the way: a reader sees no copy
or a complete one, never a partial file, and a crash leaves only ``*.mdm-tmp`` debris, which
the next start removes. Copies found at start-up are pinned for ``pin_lifetime`` from their
change time, held by nobody in particular (``NOBODY``: any caller with ``read`` may release).

A pin is held by a staging request (``holder``) for its ``owner`` until a time. When a copy's
last pin ends (released or expired) it stays ``release_grace`` seconds more, then
``evict_expired`` deletes it. With ``limit_bytes``, unpinned copies are evicted least recently
read first until the cache fits; pinned copies are never evicted for space. An open reader
keeps its bytes after an eviction (the file is unlinked, not truncated).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from mdm.storage.checksums import CHUNK, ChecksumMemo, Checksummer, file_key

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".mdm-tmp"
#: Owner of pins on copies found at start-up: any caller with ``read`` may release them.
NOBODY = ""
STARTUP = "startup"


class DiskCache:
    """Complete copies under *root*, addressed by LFN (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        pin_lifetime: float,
        release_grace: float = 0.0,
        limit_bytes: int = 0,
        clock: Callable[[], float],
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.pin_lifetime = pin_lifetime
        self.release_grace = release_grace
        self.limit = limit_bytes
        self._clock = clock
        self._lock = threading.RLock()
        self._online: dict[str, int] = {}  # LFN -> size of the copy
        self._pins: dict[str, dict[str, tuple[str, float]]] = {}  # LFN -> holder -> (owner, until)
        self._keep_until: dict[str, float] = {}  # LFN -> end of grace after the last pin
        self._last_read: dict[str, float] = {}
        self._sums = ChecksumMemo()
        self._scan()

    def path(self, lfn: str) -> Path:
        return self.root.joinpath(*lfn.strip("/").split("/"))

    def _scan(self) -> None:
        now = self._clock()
        for dirpath, _dirs, names in os.walk(self.root):
            for name in names:
                full = Path(dirpath) / name
                if name.endswith(TMP_SUFFIX):  # a copy interrupted by a crash
                    full.unlink(missing_ok=True)
                    continue
                lfn = "/" + full.relative_to(self.root).as_posix()
                st = full.stat()
                self._online[lfn] = st.st_size
                until = max(now, st.st_ctime + self.pin_lifetime)
                self._pins.setdefault(lfn, {})[STARTUP] = (NOBODY, until)

    def is_online(self, lfn: str) -> bool:
        with self._lock:
            return lfn in self._online

    def open(self, lfn: str, *, touch: bool = True) -> BinaryIO | None:
        """The copy opened for reading, or ``None``; eviction never interleaves with it.

        ``touch`` records a read for the least-recently-read order (not for a mere stat).
        """
        with self._lock:
            if lfn not in self._online:
                return None
            with contextlib.suppress(FileNotFoundError):
                fh = self.path(lfn).open("rb")
                if touch:
                    self._last_read[lfn] = self._clock()
                return fh
        return None

    def checksums(self, lfn: str, fh: BinaryIO, *, compute: bool = True) -> dict[str, str]:
        """Checksums of the open copy *fh* (remembered; ``compute=False``: known ones only)."""
        return self._sums.of(lfn, fh, compute=compute)

    def store(self, lfn: str, src: BinaryIO) -> None:
        """Copy *src* in as *lfn*, atomically; ``OSError`` leaves nothing behind."""
        dst = self.path(lfn)
        tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            summer = Checksummer()
            with tmp.open("xb") as out:
                while chunk := src.read(CHUNK):
                    summer.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dst)
            st = dst.stat()
            with self._lock:
                self._sums.remember(lfn, file_key(st), summer.hexdigests())
                self._online[lfn] = st.st_size
                if lfn not in self._pins:
                    self._keep_until[lfn] = self._clock() + self.release_grace
        finally:
            tmp.unlink(missing_ok=True)

    def pin(self, lfn: str, holder: str, owner: str, until: float) -> None:
        with self._lock:
            self._pins.setdefault(lfn, {})[holder] = (owner, until)
            self._keep_until.pop(lfn, None)

    def unpin(self, lfn: str, holder: str) -> None:
        with self._lock:
            pins = self._pins.get(lfn)
            if pins is not None and pins.pop(holder, None) is not None and not pins:
                del self._pins[lfn]
                self._keep_until[lfn] = self._clock() + self.release_grace

    def release(self, lfn: str, holders: set[str], owner: str) -> None:
        """Drop the pins on *lfn* held by *holders* for *owner* (or for nobody in particular)."""
        with self._lock:
            for holder, (who, _until) in list(self._pins.get(lfn, {}).items()):
                if holder in holders and who in (owner, NOBODY):
                    self.unpin(lfn, holder)

    def evict_expired(self) -> list[str]:
        """Evict copies without a live pin whose grace is over, then enforce the size limit."""
        with self._lock:
            now = self._clock()
            victims = []
            for lfn in list(self._online):
                pins = self._pins.get(lfn, {})
                for holder in [h for h, (_o, until) in pins.items() if until <= now]:
                    self.unpin(lfn, holder)
                if lfn not in self._pins and self._keep_until.get(lfn, 0.0) <= now:
                    victims.append(lfn)
            evicted = self._evict_locked(victims)
            if self.limit > 0:
                evicted += self._evict_for_space()
        return evicted

    def _evict_for_space(self) -> list[str]:
        total = sum(self._online.values())
        unpinned = sorted(
            (lfn for lfn in self._online if lfn not in self._pins),
            key=lambda lfn: self._last_read.get(lfn, 0.0),
        )
        victims = []
        for lfn in unpinned:
            if total <= self.limit:
                break
            victims.append(lfn)
            total -= self._online[lfn]
        if total > self.limit:
            logger.warning("cache over its limit by %d bytes, all pinned", total - self.limit)
        return self._evict_locked(victims)

    def evict(self, lfns: Sequence[str]) -> list[str]:
        """Delete the copies of *lfns* whatever their pins; the LFNs that had one."""
        with self._lock:
            return self._evict_locked([lfn for lfn in lfns if lfn in self._online])

    def _evict_locked(self, lfns: list[str]) -> list[str]:
        for lfn in lfns:
            self.path(lfn).unlink(missing_ok=True)
            self._online.pop(lfn, None)
            self._sums.forget(lfn)
            self._last_read.pop(lfn, None)
            self._keep_until.pop(lfn, None)
            self._pins.pop(lfn, None)
            logger.info("evicted %s from the disk cache", lfn)
        return lfns
