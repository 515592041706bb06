"""Pins: which staging requests keep a file ONLINE, and until when.

Every COMPLETED file of a staging request is a *pin* on that file: from the moment it
completed, for its request's lifetime (the Tape REST ``diskLifetime``, else the storage
element's ``pin_lifetime_seconds``), until the request releases it or is deleted. A file stays
ONLINE until its *last* pin ends (issue 6): one user's ``release`` (or ``gfal-evict``) takes
the file away from nobody else who staged it. The replica's ``pinned_until``, which the
eviction sweep reads, is kept equal to the latest end of its live pins, or to *now + grace*
once none is left (``repin``).

A caller releases only its own pins: those of the request it names when that request is its
own, else (``gfal-evict`` sends a placeholder id) all of its pins on those paths.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from mdm.catalog.access import Caller, chunks
from mdm.catalog.models import (
    Entry,
    Replica,
    ReplicaState,
    StageFile,
    StageRequest,
    StageState,
    utcnow,
)


def end_of(start: dt.datetime, lifetime: float | None, default: dt.timedelta) -> dt.datetime:
    """When a pin that began at *start* ends: its request's lifetime (seconds), else *default*.
    The one rule for the storage element, the recall worker and ``repin``."""
    return start + (dt.timedelta(seconds=lifetime) if lifetime else default)


def release(session: Session, caller: Caller, request_id: str | None, paths: Sequence[str]) -> int:
    """Mark released *caller*'s pins on *paths* (see the module docstring); how many."""
    request = session.get(StageRequest, request_id) if request_id else None
    own = request is not None and request.caller == caller.name
    now, count = utcnow(), 0
    for chunk in chunks(paths):
        stmt = (
            select(StageFile)
            .join(StageRequest, StageFile.request_id == StageRequest.id)
            .where(
                StageFile.path.in_(chunk),
                StageFile.state == StageState.COMPLETED,
                StageFile.released.is_(None),
            )
        )
        if own:
            stmt = stmt.where(StageFile.request_id == request_id)
        else:
            stmt = stmt.where(StageRequest.caller == caller.name)
        for f in session.scalars(stmt):
            f.released = now
            count += 1
    session.flush()
    return count


def ends(
    session: Session, paths: Sequence[str], default: dt.timedelta, now: dt.datetime
) -> dict[str, dt.datetime]:
    """The latest end of the live pins of each of *paths* (a path without one is absent)."""
    out: dict[str, dt.datetime] = {}
    for chunk in chunks(paths):
        rows = session.execute(
            select(StageFile.path, StageFile.finished, StageRequest.disk_lifetime)
            .join(StageRequest, StageFile.request_id == StageRequest.id)
            .where(
                StageFile.path.in_(chunk),
                StageFile.state == StageState.COMPLETED,
                StageFile.released.is_(None),
            )
        )
        for path, finished, lifetime in rows:
            if finished is None:
                continue
            end = end_of(finished, lifetime, default)
            if end > now and end > out.get(path, now):
                out[path] = end
    return out


def repin(
    session: Session, se: str, paths: Sequence[str], default: dt.timedelta, grace: dt.timedelta
) -> None:
    """Set the ``pinned_until`` of *se*'s ONLINE replicas of *paths* to the latest end of their
    live pins, or to *now + grace* when none is left."""
    if not paths:
        return
    # The replica rows are locked first (PostgreSQL; SQLite writers are serialized anyway):
    # a concurrent stage() of the same file writes its replica, so the pins read below then
    # include that request's once it has committed.
    online: list[tuple[Replica, str]] = []
    for chunk in chunks(paths):
        stmt = (
            select(Replica, Entry.path)
            .join(Entry, Replica.entry_id == Entry.id)
            .where(
                Replica.se == se,
                Replica.state == ReplicaState.ONLINE,
                Entry.path.in_(chunk),
            )
        )
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=Replica)
        online += [(replica, path) for replica, path in session.execute(stmt)]
    now = utcnow()
    latest = ends(session, [path for _, path in online], default, now)
    for replica, path in online:
        replica.pinned_until = max(latest.get(path, now), now + grace)
    session.flush()


def lifetimes(session: Session, file_ids: Sequence[int]) -> dict[int, float | None]:
    """The ``diskLifetime`` (seconds, or None for the default) of the request of each staging
    file: the recall worker pins what it completes for the longest of them."""
    out: dict[int, float | None] = {}
    for chunk in chunks(file_ids):
        rows = session.execute(
            select(StageFile.id, StageRequest.disk_lifetime)
            .join(StageRequest, StageFile.request_id == StageRequest.id)
            .where(StageFile.id.in_(chunk))
        )
        out.update((fid, life) for fid, life in rows)
    return out
