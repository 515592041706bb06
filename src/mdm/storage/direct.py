"""Writing a whole new file with ``O_DIRECT``: from a reused buffer to the disk, without
filling the page cache.

Why: the recall worker writes every recalled instance once and never reads it back (the
storage element reads it when a client asks, usually later). Written through the page cache,
each 0.5 MB CT instance needed fresh page-cache pages, copied into one by one, and then
written back by the flush before ONLINE anyway. In ``bench/recall.py`` that copy was the
largest single cost of the worker's pool threads (perf: 19 % of their samples in the kernel's
``copy_folio_from_iter_atomic``, ~1.4 ms per instance with the cores busy); ``O_DIRECT``
removed it (docs/recall.md, "Throughput, fourth round").

``O_DIRECT`` wants the buffer address, the length and the file offset aligned to the device's
logical block size. So the bytes are copied in chunks into a page-aligned buffer kept per
thread (an anonymous mmap; copying 0.5 MB into a warm buffer costs ~0.02 ms), the last chunk is
padded with zeros to a multiple of ``ALIGN``, and the file is then truncated to its length.
Memory stays flat whatever the file size (one ``CHUNK`` per thread).

A filesystem that refuses ``O_DIRECT`` (tmpfs, some FUSE or network filesystems) or a device
that wants a larger alignment makes :func:`write` return False with nothing left behind; the
caller then writes the ordinary way. The refusal is remembered per filesystem (device) and
logged once, so the probe costs one failed ``open``.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["ALIGN", "CHUNK", "write"]

#: Alignment of buffer, offsets and lengths: the largest logical block size of common disks.
ALIGN = 4096
#: Bytes copied and written per call (a multiple of ALIGN).
CHUNK = 4 << 20

_local = threading.local()
_refused: set[int] = set()  # st_dev of filesystems that refused O_DIRECT
_lock = threading.Lock()


def write(path: Path, data: bytes | bytearray | memoryview, *, fsync: bool = False) -> bool:
    """Create *path* (it must not exist) holding *data*, bypassing the page cache.

    Returns False, leaving nothing at *path*, when this filesystem does not do ``O_DIRECT``;
    other errors (disk full, I/O error) are raised, also leaving nothing. ``fsync=True`` also
    makes the size durable (the data already is on the device, short of its write cache).
    """
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    try:
        device = path.parent.stat().st_dev
    except OSError:
        return False  # let the ordinary write report the problem
    if device in _refused:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | flag, 0o666)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            _refuse(device, path, "open")
            return False
        raise
    done = False
    try:
        done = _write_all(fd, memoryview(data).cast("B"))
        if done:
            os.ftruncate(fd, len(data))
            if fsync:
                os.fsync(fd)
    finally:
        os.close(fd)
        if not done:
            path.unlink(missing_ok=True)
    if not done:
        _refuse(device, path, "write")
    return done


def _write_all(fd: int, data: memoryview) -> bool:
    """Write *data* padded to ALIGN through this thread's aligned buffer; False if the
    device refuses the alignment (EINVAL)."""
    buf: mmap.mmap | None = getattr(_local, "buffer", None)
    if buf is None:
        buf = _local.buffer = mmap.mmap(-1, CHUNK)
    view = memoryview(buf)
    try:
        for start in range(0, len(data), CHUNK):
            piece = data[start : start + CHUNK]
            n = len(piece)
            padded = -(-n // ALIGN) * ALIGN
            view[:n] = piece
            view[n:padded] = bytes(padded - n)
            written = 0
            while written < padded:
                try:
                    written += os.write(fd, view[written:padded])
                except OSError as exc:
                    if exc.errno == errno.EINVAL and start == 0 and written == 0:
                        return False
                    raise
                if written % ALIGN:
                    raise OSError(errno.EIO, "short write not aligned to the block size")
    finally:
        view.release()
    return True


def _refuse(device: int, path: Path, step: str) -> None:
    with _lock:
        if device in _refused:
            return
        _refused.add(device)
    logger.info(
        "the filesystem of %s refuses O_DIRECT (%s): files there are written through the "
        "page cache",
        path.parent,
        step,
    )
