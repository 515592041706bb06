"""The staging queue: bulk requests with per-file states, claimed by recall workers in batches.

A request (WLCG Tape REST API ``POST /stage``) lists LFNs; each file goes SUBMITTED -> STARTED
-> COMPLETED | FAILED (with a reason), or CANCELLED. A file already ONLINE (pin not expired) is
COMPLETED at once. Workers claim a batch of one series (one PACS association per series) under
a lease: the claim records the worker and ``claim_expires``. A worker that dies stops renewing
its lease, and once it expires the files are claimable again, by anyone, up to ``max_attempts``
claims; after that they FAIL with a reason, so nothing stays STARTED forever (the Rucio
STUCK-loop lesson). Completing or failing a file needs the claim still held by that worker: a
worker that lost its claim learns it (``Conflict``) instead of overwriting another's work.

Claiming never hands the same file to two workers: on PostgreSQL the candidates are selected
``FOR UPDATE SKIP LOCKED`` (concurrent claimers skip each other's rows instead of waiting), on
SQLite the claim runs in a ``BEGIN IMMEDIATE`` write transaction (``Database.session(write=True)``)
which serializes claimers. Either way the whole claim is one short transaction and no network
I/O happens inside it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from mdm.catalog import access, files
from mdm.catalog.access import Caller
from mdm.catalog.models import (
    ReplicaState,
    Right,
    StageFile,
    StageRequest,
    StageState,
    utcnow,
)
from mdm.errors import Conflict, FileNotFound, NotFound, PermissionDenied, UsageError

TERMINAL = frozenset({StageState.COMPLETED, StageState.FAILED, StageState.CANCELLED})
MAX_FILES = 10000


def _online(entry: Any, now: dt.datetime) -> bool:
    return any(
        r.state is ReplicaState.ONLINE and (r.pinned_until is None or r.pinned_until > now)
        for r in entry.replicas
    )


def submit(
    session: Session,
    caller: Caller,
    paths: Sequence[str],
    *,
    disk_lifetime: float | None = None,
) -> StageRequest:
    """Queue *paths* for recall; every file needs the ``read`` right (else nothing is queued).

    *disk_lifetime*: seconds each file stays pinned for this request once ONLINE (None: the
    storage element's default; ``mdm.catalog.pins``)."""
    if not paths:
        raise UsageError("a staging request needs at least one file")
    if len(paths) > MAX_FILES:
        raise UsageError(f"at most {MAX_FILES} files per staging request")
    now = utcnow()
    if disk_lifetime is not None and not 0 < disk_lifetime < float("inf"):
        raise UsageError("diskLifetime must be a positive number of seconds")
    request = StageRequest(
        id=str(uuid.uuid4()), caller=caller.name, created=now, disk_lifetime=disk_lifetime
    )
    names = list(dict.fromkeys(paths))
    grants = access.Grants(session, caller)  # entries, replicas, grants: a few queries in all
    for path, entry in zip(
        names, files.find_entries(session, grants, names, replicas=True), strict=True
    ):
        if entry is None:
            raise FileNotFound(f"no such entry: {path}", path=path)
        if entry.kind.value != "file":
            raise UsageError(f"{path} is a directory: stage its files", path=path)
        grants.require(entry.path, Right.READ)
        parts = access.split_path(entry.path)
        done = _online(entry, now)
        request.files.append(
            StageFile(
                path=entry.path,
                study_uid=parts[0],
                series_uid=parts[1],
                state=StageState.COMPLETED if done else StageState.SUBMITTED,
                finished=now if done else None,
                attempts=0,
            )
        )
    session.add(request)
    session.flush()
    return request


def get_request(session: Session, caller: Caller, request_id: str) -> StageRequest:
    request = session.get(StageRequest, request_id)
    if request is None or not (caller.admin or caller.service or request.caller == caller.name):
        raise NotFound(f"no staging request {request_id}", request_id=request_id)
    return request


def cancel(
    session: Session, caller: Caller, request_id: str, paths: Sequence[str] | None = None
) -> StageRequest:
    """Cancel the files of a request that are not finished yet (all, or only *paths*)."""
    request = get_request(session, caller, request_id)
    wanted = set(paths) if paths else None
    if wanted is not None and not wanted <= {f.path for f in request.files}:
        raise UsageError("some files to cancel are not in this request")
    now = utcnow()
    for f in request.files:
        if f.state not in TERMINAL and (wanted is None or f.path in wanted):
            f.state, f.reason, f.finished, f.claimed_by = (
                StageState.CANCELLED,
                "cancelled",
                now,
                None,
            )
    if wanted is None:
        request.cancelled = now
    session.flush()
    return request


def require_worker(caller: Caller, what: str = "claim staging work") -> None:
    """Staging work (claims, outcomes, recall records) is for service identities only."""
    if not (caller.service or caller.admin):
        raise PermissionDenied(f"only service identities {what}")


def finished(state: StageState, reason: str | None, now: dt.datetime) -> dict[str, Any]:
    """The columns of a staging file that ends in *state* (the reason cut to what a grid
    client is shown); shared by ``complete``, ``fail`` and the batch ``recalls.record``."""
    return {
        "state": state,
        "finished": now,
        "claim_expires": None,
        "reason": None if reason is None else reason[:1000],
    }


def claim(
    session: Session,
    caller: Caller,
    worker: str,
    *,
    limit: int = 50,
    lease: float = 300.0,
    max_attempts: int = 3,
    whole_series: bool = False,
) -> list[StageFile]:
    """Claim up to *limit* files of one series; call it in a write session, commit at once.

    ``whole_series``: claim nothing unless every claimable file of that series fits in
    *limit* (a worker topping up a batch with more series must not split one). The files
    claimed, as ``StageFile`` rows (``claim_rows`` is the same claim without them).
    """
    rows = claim_rows(
        session,
        caller,
        worker,
        limit=limit,
        lease=lease,
        max_attempts=max_attempts,
        whole_series=whole_series,
    )
    ids = [i for i, _ in rows]
    if not ids:
        return []
    stmt = select(StageFile).where(StageFile.id.in_(ids))
    got = {f.id: f for f in session.scalars(stmt.execution_options(populate_existing=True))}
    return [got[i] for i in ids]


def claim_rows(
    session: Session,
    caller: Caller,
    worker: str,
    *,
    limit: int = 50,
    lease: float = 300.0,
    max_attempts: int = 3,
    whole_series: bool = False,
) -> list[tuple[int, str]]:
    """``claim``, returning ``(id, path)`` of the files claimed, in id order: the recall
    worker needs no more, and the claim is then a few Core statements (no ORM object per
    file; docs/recall.md, "Throughput, eighth round").

    A file whose claim already expired ``max_attempts`` times FAILS instead (its worker died
    or hung each time) and is not returned.
    """
    require_worker(caller)
    if limit < 1 or lease <= 0:
        raise UsageError("limit must be >= 1 and lease > 0")
    now = utcnow()
    files = _stage_files()
    claimable = or_(
        files.c.state == StageState.SUBMITTED,
        and_(files.c.state == StageState.STARTED, files.c.claim_expires < now),
    )
    pg = session.get_bind().dialect.name == "postgresql"
    first_stmt = select(files.c.series_uid).where(claimable).order_by(files.c.id).limit(1)
    if pg:
        first_stmt = first_stmt.with_for_update(skip_locked=True)
    series = session.scalar(first_stmt)
    if series is None:
        return []
    if whole_series:
        count = select(func.count(files.c.id)).where(claimable, files.c.series_uid == series)
        if (session.scalar(count) or 0) > limit:
            return []
    batch_stmt = (
        select(files.c.id, files.c.path, files.c.attempts)
        .where(claimable, files.c.series_uid == series)
        .order_by(files.c.id)
        .limit(limit)
    )
    if pg:
        batch_stmt = batch_stmt.with_for_update(skip_locked=True)
    rows = session.execute(batch_stmt).all()
    spent = [(i, n) for i, _, n in rows if n >= max_attempts]
    claimed = [(i, path) for i, path, n in rows if n < max_attempts]
    if spent:
        session.execute(
            update(files)
            .where(files.c.id == bindparam("b_id"))
            .values(state=StageState.FAILED, finished=now, claimed_by=None,
                    reason=bindparam("b_reason")),
            [{"b_id": i, "b_reason": f"claim expired {n} times (worker died or hung)"}
             for i, n in spent],
        )  # fmt: skip
    if claimed:
        session.execute(
            update(files)
            .where(files.c.id.in_([i for i, _ in claimed]))
            .values(
                state=StageState.STARTED,
                claimed_by=worker,
                attempts=files.c.attempts + 1,
                claim_expires=now + dt.timedelta(seconds=lease),
                started=func.coalesce(
                    files.c.started, bindparam("b_now", now, files.c.started.type)
                ),
            )
        )
    return claimed


def _stage_files() -> Table:
    return cast(Table, StageFile.__table__)


def _held(session: Session, caller: Caller, worker: str, file_id: int) -> StageFile:
    require_worker(caller)
    f = session.get(StageFile, file_id)
    if f is None:
        raise NotFound(f"no staging file {file_id}")
    if f.state is not StageState.STARTED or f.claimed_by != worker:
        raise Conflict(
            f"claim on staging file {file_id} is not held by {worker}", state=f.state.value
        )
    return f


def extend(
    session: Session, caller: Caller, worker: str, file_ids: Sequence[int], lease: float
) -> None:
    """Renew the lease of files this worker still holds (a heartbeat)."""
    until = utcnow() + dt.timedelta(seconds=lease)
    for file_id in file_ids:
        _held(session, caller, worker, file_id).claim_expires = until
    session.flush()


def complete(session: Session, caller: Caller, worker: str, file_id: int) -> StageFile:
    f = _held(session, caller, worker, file_id)
    for name, value in finished(StageState.COMPLETED, None, utcnow()).items():
        setattr(f, name, value)
    session.flush()
    return f


def fail(session: Session, caller: Caller, worker: str, file_id: int, reason: str) -> StageFile:
    if not reason.strip():
        raise UsageError("a failed staging file needs a reason")
    f = _held(session, caller, worker, file_id)
    for name, value in finished(StageState.FAILED, reason, utcnow()).items():
        setattr(f, name, value)
    session.flush()
    return f


def file_dict(f: StageFile) -> dict[str, Any]:
    return {
        "id": f.id,
        "path": f.path,
        "state": f.state.value,
        "reason": f.reason,
        "attempts": f.attempts,
        "claimed_by": f.claimed_by,
        "claim_expires": f.claim_expires.isoformat() if f.claim_expires else None,
        "study": f.study_uid,
        "series": f.series_uid,
    }


def request_dict(request: StageRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "caller": request.caller,
        "created": request.created.isoformat(),
        "cancelled": request.cancelled.isoformat() if request.cancelled else None,
        "files": [file_dict(f) for f in request.files],
    }
