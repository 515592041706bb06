"""Staging requests kept in memory: the Tape REST bookkeeping of a catalog-less backend.

A request belongs to the DN that submitted it: only that caller may poll, cancel, release or
delete it, and anybody else is told it does not exist (``NotFound``), so request ids leak
nothing. Per-file states only move forward (SUBMITTED -> STARTED -> a terminal state), and a
terminal state never changes again: a late recall result cannot turn a CANCELLED file into
COMPLETED. Finished requests are forgotten after ``keep_seconds`` so memory stays bounded.

This is not thread-safe on its own; ``PosixNearline`` calls it under its lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from mdm.errors import NotFound, UsageError
from mdm.storage.backend import StageFile, StageRequest, StageState


@dataclass
class _File:
    state: StageState = StageState.SUBMITTED
    error: str | None = None
    started_at: int | None = None
    finished_at: int | None = None


@dataclass
class _Request:
    id: str
    owner: str
    created_at: int
    lifetime: float
    files: dict[str, _File] = field(default_factory=dict)
    started_at: int | None = None

    def done(self) -> bool:
        return all(f.state.terminal for f in self.files.values())


class RequestBook:
    """Staging requests by id (see the module docstring)."""

    def __init__(self, keep_seconds: float = 7 * 86400) -> None:
        self._requests: dict[str, _Request] = {}
        self._keep = keep_seconds

    def create(self, owner: str, lfns: Sequence[str], lifetime: float, now: float) -> str:
        rid = str(uuid.uuid4())
        req = _Request(rid, owner, int(now), lifetime)
        req.files = {lfn: _File() for lfn in lfns}
        self._requests[rid] = req
        return rid

    def lifetime(self, rid: str) -> float:
        return self._requests[rid].lifetime

    def owner(self, rid: str) -> str | None:
        req = self._requests.get(rid)
        return req.owner if req else None

    def owned(self, owner: str, rid: str) -> _Request:
        req = self._requests.get(rid)
        if req is None or req.owner != owner:
            raise NotFound(f"no staging request {rid}", request_id=rid)
        return req

    def requests_of(self, owner: str) -> Iterator[str]:
        return (r.id for r in self._requests.values() if r.owner == owner)

    def state(self, rid: str, lfn: str) -> StageState | None:
        req = self._requests.get(rid)
        f = req.files.get(lfn) if req else None
        return f.state if f else None

    def start(self, rid: str, lfn: str, now: float) -> None:
        req = self._requests.get(rid)
        f = req.files.get(lfn) if req else None
        if req is None or f is None or f.state is not StageState.SUBMITTED:
            return
        f.state, f.started_at = StageState.STARTED, int(now)
        if req.started_at is None:
            req.started_at = int(now)

    def finish(
        self, rid: str, lfn: str, state: StageState, now: float, error: str | None = None
    ) -> bool:
        """Move a file to terminal *state*; False (and no change) if it already was terminal."""
        req = self._requests.get(rid)
        f = req.files.get(lfn) if req else None
        if req is None or f is None or f.state.terminal:
            return False
        if f.started_at is None:
            f.started_at = int(now)
        if req.started_at is None:
            req.started_at = int(now)
        f.state, f.error, f.finished_at = state, error, int(now)
        return True

    def check_members(self, owner: str, rid: str, lfns: Sequence[str]) -> _Request:
        """The caller's request, after checking every LFN belongs to it (else nothing is done)."""
        req = self.owned(owner, rid)
        missing = [p for p in lfns if p not in req.files]
        if missing:
            raise UsageError(
                f"the file {missing[0]} does not belong to the stage request {rid}; "
                "no modification has been made to this request",
                request_id=rid,
            )
        return req

    def delete(self, owner: str, rid: str) -> _Request:
        req = self.owned(owner, rid)
        del self._requests[rid]
        return req

    def snapshot(self, owner: str, rid: str) -> StageRequest:
        req = self.owned(owner, rid)
        files = tuple(
            StageFile(path, f.state, f.error, f.started_at, f.finished_at)
            for path, f in req.files.items()
        )
        return StageRequest(req.id, req.created_at, files, req.started_at)

    def forget_finished(self, now: float) -> None:
        """Drop requests whose every file has been terminal for longer than ``keep_seconds``."""
        old = [
            rid
            for rid, r in self._requests.items()
            if r.done() and max((f.finished_at or 0) for f in r.files.values()) + self._keep < now
        ]
        for rid in old:
            del self._requests[rid]
