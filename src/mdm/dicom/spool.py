"""Spool directories: where the dcmtk engine's getscu lands originals for an instant.

A spool is a fresh directory of mode 0700 named ``mdm-getscu-<pid>-<random>`` under
``dicom.spool_dir``, or by default under ``/dev/shm`` (``default_root``). Its files are
handed over and removed as they complete, and the directory goes when the retrieval ends
(``mdm.dicom.getscu``); one left by a process that died is removed by the next process's first
spool in that root (``sweep``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

#: Spool directories are named ``mdm-getscu-<pid>-<random>``: the pid says whose they are.
SPOOL_PREFIX = "mdm-getscu-"
_SPOOL = re.compile(re.escape(SPOOL_PREFIX) + r"(?P<pid>\d+)-")
_swept: set[str] = set()  # spool roots swept by this process


def sweep(root: str) -> list[str]:
    """Remove the spools a dead process left in *root* (once per root and process); returns
    their names.

    A worker killed mid-retrieval leaves its spool behind, originals included; on tmpfs that
    also holds memory until the next boot. A spool is removed only if it is ours (same owner)
    and its process is gone; a pid reused by a live process keeps it (left, not lost)."""
    if root in _swept:
        return []
    _swept.add(root)
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    for entry in entries:
        match = _SPOOL.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            os.kill(int(match["pid"]), 0)
            continue  # its process lives
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
        except OSError:
            continue  # gone meanwhile, or a live process of another user
    if removed:
        logger.info("removed %d spool(s) left by dead workers in %s", len(removed), root)
    return removed


#: The default spool's tmpfs, used when it has at least SHM_MIN_FREE bytes free.
SHM = "/dev/shm"  # noqa: S108 - only ever a parent for mkdtemp (a fresh 0700 directory)
SHM_MIN_FREE = 1 << 30


def default_root(shm: str = SHM) -> str:
    """Where spools go when ``dicom.spool_dir`` is empty: the tmpfs *shm* if it is a writable
    directory with at least ``SHM_MIN_FREE`` free, else the system temp directory.

    Why tmpfs: originals, with patient identity, then never reach a disk; and creating and
    deleting a file per instance on ext4 costs inode allocation that skips recently deleted
    inodes (perf in ``bench/recall.py``: ~9 % of the recall's CPU, getscu's and the worker's).
    Why the free-space floor: container ``/dev/shm`` is often 64 MB, and a spool holds up to a
    series when the consumer is slower than the PACS; a full spool would fail instances."""
    try:
        st = os.statvfs(shm)
    except OSError:
        return tempfile.gettempdir()
    if not os.access(shm, os.W_OK | os.X_OK) or st.f_bavail * st.f_frsize < SHM_MIN_FREE:
        return tempfile.gettempdir()
    return shm


def new_spool(root: str = "") -> Path:
    """A fresh private spool under *root* (default: ``default_root``), after sweeping the
    spools dead processes left there."""
    root = root or default_root()
    sweep(root)
    return Path(tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-", dir=root))
