"""Recording a recalled batch (one series) in the catalog, in a handful of statements.

What the recall worker records per file is what the single-file functions do
(``files.set_content`` + ``files.add_replica`` + ``staging.complete``, or ``staging.fail`` and
a FAILED replica), plus the de-identified header in the metadata catalog. Done file by file,
that is about ten ORM round trips per instance, which measured as a third of the worker's CPU
(``bench/recall.py``). Here the entries, their replicas, the instance rows, the staging rows
and their requests' lifetimes (``mdm.catalog.pins``) are read a batch at a time, changed in
memory and flushed once, with the same checks:

* the caller needs ``write`` on every file and must be a service (staging rows);
* a staging row counts only while this worker still holds its claim (``STARTED``, claimed by
  it); a file whose claim was lost is left alone (the worker that holds it now will record it);
* size, checksums and key id, once known, never change: a file whose new values differ is
  recorded FAILED with that reason, never silently overwritten;
* a FAILED replica never replaces an ONLINE one (another worker's good copy stays visible).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from mdm.catalog import access, pins, staging
from mdm.catalog.access import Caller
from mdm.catalog.files import FileInfo, content_changes, replica_fields
from mdm.catalog.metadata import instance_attrs
from mdm.catalog.models import (
    Entry,
    Instance,
    Replica,
    ReplicaState,
    Right,
    Series,
    StageFile,
    StageState,
    utcnow,
)

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
    staging.require_worker(caller, "record recalls")
    ids = [i for item in items for i in item.file_ids]
    held = set(
        session.scalars(
            select(StageFile.id).where(
                StageFile.id.in_(ids),
                StageFile.state == StageState.STARTED,
                StageFile.claimed_by == worker,
            )
        )
    )
    entries = {
        row.path: row
        for row in session.execute(
            select(
                Entry.id, Entry.path, Entry.size, Entry.adler32, Entry.sha256, Entry.key_id
            ).where(Entry.path.in_([item.path for item in items]))
        )
    }
    entry_ids = [row.id for row in entries.values()]
    replicas = {
        row.entry_id: row
        for row in session.execute(
            select(Replica.id, Replica.entry_id, Replica.state).where(
                Replica.entry_id.in_(entry_ids), Replica.se == se
            )
        )
    }
    instances = {
        row.entry_fk: row
        for row in session.execute(
            select(
                Instance.id, Instance.entry_fk, Instance.series_fk, Instance.rows, Instance.columns
            ).where(Instance.entry_fk.in_(entry_ids))
        )
    }
    series_attrs: dict[int, dict[str, Any]] = {
        row.id: row.attrs
        for row in session.execute(
            select(Series.id, Series.attrs).where(
                Series.id.in_({row.series_fk for row in instances.values()})
            )
        )
    }
    lives = pins.lifetimes(session, sorted(held))  # each request's diskLifetime, if it set one
    now, out = utcnow(), Recorded()
    changes = _Changes(now)
    for item in items:
        mine = [i for i in item.file_ids if i in held]
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
                reason = _content(entry, item.info, changes)
        if reason is None and entry is not None:
            # pinned for the longest lifetime its requests asked (pinned_until: the default)
            until = max(pins.end_of(now, lives.get(i), pinned_until - now) for i in mine)
            changes.replica(entry.id, replicas.get(entry.id), url(entry.path), se,
                            ReplicaState.ONLINE, until, None, item.info)  # fmt: skip
            instance = instances.get(entry.id)
            if instance is not None and item.header:
                changes.instance(instance, item.header, series_attrs.get(instance.series_fk))
            changes.staged(mine, StageState.COMPLETED, None)
            out.online.append(item.path)
            continue
        reason = staging.finished(StageState.FAILED, reason or "failed", changes.now)["reason"]
        changes.staged(mine, StageState.FAILED, reason)
        if entry is not None:
            replica = replicas.get(entry.id)
            if replica is None or replica.state is not ReplicaState.ONLINE:
                changes.replica(entry.id, replica, url(entry.path), se,
                                ReplicaState.FAILED, None, reason, FileInfo())  # fmt: skip
        out.failed[item.path] = reason
    changes.apply(session)
    return out


class _Changes:
    """The rows a batch changes, written with one executemany per table and column set
    (Core statements by primary key: no object per row, which is what cost the time)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.entries: list[dict[str, Any]] = []
        self.replicas: list[dict[str, Any]] = []
        self.new_replicas: list[dict[str, Any]] = []
        self.instances: list[dict[str, Any]] = []
        self.stage_files: list[dict[str, Any]] = []

    def entry(self, entry_id: int, values: dict[str, Any]) -> None:
        self.entries.append({"id": entry_id, "modified": self.now, **values})

    def replica(
        self,
        entry_id: int,
        existing: Any,
        url: str,
        se: str,
        state: ReplicaState,
        pinned_until: dt.datetime | None,
        reason: str | None,
        info: FileInfo,
    ) -> None:
        fields = replica_fields(url, state, pinned_until, reason, info)
        if existing is None:
            self.new_replicas.append(
                {"entry_id": entry_id, "se": se, "created": self.now, **fields}
            )
        else:
            self.replicas.append({"id": existing.id, **fields})

    def instance(
        self, row: Any, header: Mapping[str, Any], series: Mapping[str, Any] | None
    ) -> None:
        """The de-identified header: what the series does not already say, minus QIDO columns."""
        values: dict[str, Any] = {"id": row.id, "attrs": instance_attrs(header, series or {})}
        for column, tag in _COLUMNS:
            value = (header.get(tag) or {}).get("Value")
            if value and getattr(row, column) is None:
                values[column] = int(value[0])
        self.instances.append(values)

    def staged(self, file_ids: Sequence[int], state: StageState, reason: str | None) -> None:
        fields = staging.finished(state, reason, self.now)
        self.stage_files += [{"id": file_id, **fields} for file_id in file_ids]

    def apply(self, session: Session) -> None:
        for model, rows in (
            (Entry, self.entries),
            (Replica, self.replicas),
            (StageFile, self.stage_files),
            (Instance, self.instances),
        ):
            for keys, same in _by_keys(rows).items():
                session.execute(_update_by_id(_table(model), keys), [_bound(r) for r in same])
        if self.new_replicas:
            session.execute(insert(_table(Replica)), self.new_replicas)


def _by_keys(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Rows grouped by their set of keys: one executemany needs the same columns in each."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return groups


def _table(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


@functools.lru_cache(maxsize=64)
def _update_by_id(table: Table, keys: tuple[str, ...]) -> Update:
    """``UPDATE table SET <keys but id> WHERE id = ?`` as a Core statement built once per
    column set: the ORM's bulk update by primary key did the same with more Python per row
    (half of recording a batch; docs/recall.md, "Throughput, eighth round"). The rows'
    keys are column names (``_bound``: prefixed, as SET parameters may not reuse them)."""
    values: dict[str, Any] = {key: bindparam(f"v_{key}") for key in keys if key != "id"}
    return update(table).where(table.c.id == bindparam("v_id")).values(values)


def _bound(row: dict[str, Any]) -> dict[str, Any]:
    return {f"v_{key}": value for key, value in row.items()}


def _content(entry: Any, info: FileInfo, changes: _Changes) -> str | None:
    """Set size, checksums and key id on *entry* (``files.content_changes``); the reason it
    cannot be done, if any."""
    values, conflict = content_changes(entry, info)
    if conflict is not None:
        return f"{conflict} differs from the one recorded at the first recall"
    if values:
        changes.entry(entry.id, values)
    return None
