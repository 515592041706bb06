"""Recording a recalled batch (one series) in the catalog, in a handful of statements.

What the recall worker records per file is what the single-file functions do
(``files.set_content`` + ``files.add_replica`` + ``staging.complete``, or ``staging.fail`` and
a FAILED replica), plus the de-identified header in the metadata catalog. Done file by file,
that is about ten ORM round trips per instance, which measured as a third of the worker's CPU
(``bench/recall.py``). Here the entries (with their replicas), the instance rows and the
staging rows of the whole batch are read with three queries, changed in memory and flushed
once, with the same checks:

* the caller needs ``write`` on every file and must be a service (staging rows);
* a staging row counts only while this worker still holds its claim (``STARTED``, claimed by
  it); a file whose claim was lost is left alone (the worker that holds it now will record it);
* size, checksums and key id, once known, never change: a file whose new values differ is
  recorded FAILED with that reason, never silently overwritten;
* a FAILED replica never replaces an ONLINE one (another worker's good copy stays visible).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from mdm.catalog import access, qido
from mdm.catalog.access import Caller
from mdm.catalog.files import FileInfo, check_checksums, fill_replica
from mdm.catalog.models import (
    Entry,
    Instance,
    Replica,
    ReplicaState,
    Right,
    StageFile,
    StageState,
    utcnow,
)
from mdm.errors import PermissionDenied

logger = logging.getLogger(__name__)

#: Attributes kept per instance only when they differ from the series' (DICOM JSON tags).
_COLUMNS = (("rows", "00280010"), ("columns", "00280011"))


@dataclass(frozen=True)
class Recalled:
    """One file of the batch: ``reason`` None means it is complete in the cache."""

    path: str
    file_ids: Sequence[int]
    reason: str | None = None
    info: FileInfo = field(default_factory=FileInfo)
    header: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Recorded:
    """What became of the batch: paths ONLINE, paths FAILED (path -> reason), and the
    paths left alone because this worker no longer holds their claim."""

    online: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)


def record(
    session: Session,
    caller: Caller,
    worker: str,
    items: Sequence[Recalled],
    *,
    se: str,
    url: Callable[[str], str],
    pinned_until: dt.datetime,
) -> Recorded:
    """Record the outcome of every file of a recalled batch; see the module docstring."""
    if not (caller.service or caller.admin):
        raise PermissionDenied("only service identities record recalls")
    ids = [i for item in items for i in item.file_ids]
    held = {
        f.id: f
        for f in session.scalars(select(StageFile).where(StageFile.id.in_(ids)))
        if f.state is StageState.STARTED and f.claimed_by == worker
    }
    paths = [item.path for item in items]
    entries = {
        e.path: e
        for e in session.scalars(
            select(Entry).where(Entry.path.in_(paths)).options(selectinload(Entry.replicas))
        )
    }
    instances = {
        i.entry_fk: i
        for i in session.scalars(
            select(Instance)
            .where(Instance.entry_fk.in_([e.id for e in entries.values()]))
            .options(selectinload(Instance.series))
        )
    }
    now, out = utcnow(), Recorded()
    for item in items:
        mine = [held[i] for i in item.file_ids if i in held]
        if not mine:
            out.lost.append(item.path)
            continue
        entry = entries.get(item.path)
        reason = item.reason
        if entry is None:
            reason = reason or "the file is no longer in the catalog"
        else:
            access.require(session, caller, entry.path, Right.WRITE)
            if reason is None:
                reason = _content(entry, item.info)
        if reason is None and entry is not None:
            replica = _replica(session, entry, se)
            fill_replica(
                replica, url(entry.path), ReplicaState.ONLINE, pinned_until, None, item.info
            )
            instance = instances.get(entry.id)
            if instance is not None and item.header:
                _header(instance, item.header)
            for f in mine:
                f.state, f.finished, f.claim_expires, f.reason = (
                    StageState.COMPLETED,
                    now,
                    None,
                    None,
                )
            out.online.append(item.path)
            continue
        reason = (reason or "failed")[:1000]
        for f in mine:
            f.state, f.finished, f.claim_expires, f.reason = (
                StageState.FAILED,
                now,
                None,
                reason,
            )
        if entry is not None:
            replica = _replica(session, entry, se)
            if replica.state is not ReplicaState.ONLINE:
                fill_replica(
                    replica, url(entry.path), ReplicaState.FAILED, None, reason, FileInfo()
                )
        out.failed[item.path] = reason
    session.flush()
    return out


def _content(entry: Entry, info: FileInfo) -> str | None:
    """Set size, checksums and key id on *entry*; the reason it cannot be done, if any."""
    check_checksums(info.size, info.adler32, info.sha256)
    for name in ("size", "adler32", "sha256", "key_id"):
        new, old = getattr(info, name), getattr(entry, name)
        if new is not None and old is not None and old != new:
            return f"{name} differs from the one recorded at the first recall"
    for name in ("size", "adler32", "sha256", "key_id"):
        new = getattr(info, name)
        if new is not None:
            setattr(entry, name, new)
    return None


def _replica(session: Session, entry: Entry, se: str) -> Replica:
    for replica in entry.replicas:
        if replica.se == se:
            return replica
    replica = Replica(entry=entry, se=se, url="", state=ReplicaState.NEARLINE)
    session.add(replica)
    return replica


def _header(instance: Instance, header: Mapping[str, Any]) -> None:
    """The de-identified header: what the series does not already say, minus QIDO columns."""
    series_attrs = instance.series.attrs or {}
    instance.attrs = {
        t: e for t, e in header.items() if t not in qido.BY_TAG and series_attrs.get(t) != e
    }
    for column, tag in _COLUMNS:
        value = (header.get(tag) or {}).get("Value")
        if value and getattr(instance, column) is None:
            setattr(instance, column, int(value[0]))
