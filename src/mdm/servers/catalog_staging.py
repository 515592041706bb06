"""The staging queue over HTTP: users submit recalls, recall workers claim and report them.

Users (or the storage element, on their behalf, for the WLCG Tape REST API) submit and follow
staging requests; recall workers claim a batch of one series under a lease, renew the lease
while they work, and mark each file completed or failed. The queue rules (SKIP LOCKED claims,
lease expiry, attempt counting) are in ``mdm.catalog.staging``; the lease and attempt limits come
from the ``[catalog]`` settings so that every worker follows the same policy.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mdm.catalog import staging
from mdm.catalog.access import Caller
from mdm.errors import RequestTooLarge, UsageError
from mdm.servers.catalog_service import (
    CatalogService,
    RouteDoc,
    acting,
    as_int,
    endpoint,
    json_body,
    text_field,
)
from mdm.servers.http import json_kind

#: Longest lease a worker may ask for: a worker that dies holding its claim delays those files
#: by at most this long, so a day is the ceiling whatever a client sends.
MAX_LEASE = 86400.0

#: Longest worker name: ``StageFile.claimed_by`` is a 128-character column.
MAX_WORKER = 128


def _worker(body: dict[str, Any], caller: Caller) -> str:
    """The claiming worker's name: given in the body, else the caller's own name."""
    name = caller.name if body.get("worker") in (None, "") else text_field(body, "worker")
    if len(name) > MAX_WORKER:
        raise UsageError(
            f"worker name is over {MAX_WORKER} characters: give a shorter 'worker'", field="worker"
        )
    return name


def _lease(body: dict[str, Any], svc: CatalogService) -> float:
    """The lease asked for in seconds, else ``catalog.claim_lease_seconds``.

    Checked here, not left to ``float()``: a string would be a 500, and zero, a negative or an
    overlong lease would expire at once or pin files to a dead worker for days.
    """
    value = body.get("lease")
    if value is None:
        return svc.settings.claim_lease_seconds
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(
            f"lease must be a number of seconds, not {json_kind(value)}", field="lease"
        )
    if not 0 < value <= MAX_LEASE:
        raise UsageError(
            f"lease must be more than 0 and at most {MAX_LEASE:g} seconds", field="lease"
        )
    return float(value)


def _file_ids(body: dict[str, Any]) -> list[int]:
    """The ``ids`` list of a heartbeat: staging file ids, at most ``staging.MAX_FILES``."""
    ids = body.get("ids")
    if not isinstance(ids, list):
        raise UsageError("'ids' must be a list of staging file ids", field="ids")
    if len(ids) > staging.MAX_FILES:
        raise RequestTooLarge(f"at most {staging.MAX_FILES} ids per heartbeat", field="ids")
    return [as_int(i, "ids", minimum=1) for i in ids]


def _cancel_paths(body: dict[str, Any]) -> list[str] | None:
    """Files to cancel: ``None`` (the whole request) when ``paths`` is absent.

    An empty list is refused rather than read as "everything": a client that meant to cancel
    some files and sent none must not cancel the whole request.
    """
    paths = body.get("paths")
    if paths is None:
        return None
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise UsageError(
            "'paths' must be a non-empty list of LFNs (omit it to cancel the whole request)",
            field="paths",
        )
    return paths


@endpoint
async def stage_submit(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await json_body(request)
    who = acting(svc, caller, body)
    paths = body.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise UsageError("'paths' must be a list of LFNs")
    result = await svc.write(lambda s: staging.request_dict(staging.submit(s, who, paths)))
    return JSONResponse(result, status_code=201)


@endpoint
async def stage_get(request: Request, svc: CatalogService, caller: Caller) -> Response:
    rid = request.path_params["rid"]
    result = await svc.read(lambda s: staging.request_dict(staging.get_request(s, caller, rid)))
    return JSONResponse(result)


@endpoint
async def stage_cancel(request: Request, svc: CatalogService, caller: Caller) -> Response:
    rid = request.path_params["rid"]
    paths = _cancel_paths(await json_body(request))
    result = await svc.write(lambda s: staging.request_dict(staging.cancel(s, caller, rid, paths)))
    return JSONResponse(result)


@endpoint
async def stage_claim(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await json_body(request)
    worker = _worker(body, caller)
    limit = as_int(body.get("limit"), "limit", 50, minimum=1, maximum=staging.MAX_FILES)
    lease = _lease(body, svc)

    def run(s: Session) -> list[dict[str, Any]]:
        claimed = staging.claim(
            s,
            caller,
            worker,
            limit=limit,
            lease=lease,
            max_attempts=svc.settings.claim_max_attempts,
        )
        return [staging.file_dict(f) for f in claimed]

    return JSONResponse({"worker": worker, "files": await svc.write(run)})


@endpoint
async def stage_extend(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await json_body(request)
    worker = _worker(body, caller)
    ids = _file_ids(body)
    lease = _lease(body, svc)
    await svc.write(lambda s: staging.extend(s, caller, worker, ids, lease))
    return Response(status_code=204)


@endpoint
async def stage_finish(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await json_body(request)
    worker = _worker(body, caller)
    file_id = as_int(request.path_params["fid"], "file id", minimum=1)
    outcome = request.path_params["outcome"]
    if outcome not in ("complete", "fail"):
        raise UsageError(f"unknown outcome {outcome[:40]!r}: complete or fail")
    if outcome == "complete":
        result = await svc.write(
            lambda s: staging.file_dict(staging.complete(s, caller, worker, file_id))
        )
    else:
        reason = text_field(body, "reason")
        result = await svc.write(
            lambda s: staging.file_dict(staging.fail(s, caller, worker, file_id, reason))
        )
    return JSONResponse(result)


ROUTES = [
    Route("/staging/requests", stage_submit, methods=["POST"]),
    Route("/staging/requests/{rid}", stage_get),
    Route("/staging/requests/{rid}/cancel", stage_cancel, methods=["POST"]),
    Route("/staging/claim", stage_claim, methods=["POST"]),
    Route("/staging/extend", stage_extend, methods=["POST"]),
    Route("/staging/files/{fid:int}/{outcome:str}", stage_finish, methods=["POST"]),
]

ROUTES_DOC: list[RouteDoc] = [
    ("POST", "/staging/requests", "Submit a staging request", "read"),
    ("GET", "/staging/requests/{rid}", "Staging request status", "owner"),
    ("POST", "/staging/requests/{rid}/cancel", "Cancel a staging request", "owner"),
    ("POST", "/staging/claim", "Claim a batch of one series", "service"),
    ("POST", "/staging/extend", "Renew a claim's lease", "service"),
    ("POST", "/staging/files/{fid}/complete", "Mark a claimed file COMPLETED", "service"),
    ("POST", "/staging/files/{fid}/fail", "Mark a claimed file FAILED", "service"),
]

__all__ = [
    "MAX_LEASE",
    "MAX_WORKER",
    "ROUTES",
    "ROUTES_DOC",
    "stage_cancel",
    "stage_claim",
    "stage_extend",
    "stage_finish",
    "stage_get",
    "stage_submit",
]
