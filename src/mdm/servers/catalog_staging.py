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
from mdm.errors import UsageError
from mdm.servers.catalog_service import (
    CatalogService,
    RouteDoc,
    acting,
    as_int,
    endpoint,
    json_body,
)


def _worker(body: dict[str, Any], caller: Caller) -> str:
    """The claiming worker's name: given in the body, else the caller's own name."""
    return str(body.get("worker") or caller.name)


def _lease(body: dict[str, Any], svc: CatalogService) -> float:
    """The lease asked for in seconds, else ``catalog.claim_lease_seconds``."""
    return float(body.get("lease") or svc.settings.claim_lease_seconds)


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
    body = await json_body(request)
    paths = body.get("paths")
    result = await svc.write(lambda s: staging.request_dict(staging.cancel(s, caller, rid, paths)))
    return JSONResponse(result)


@endpoint
async def stage_claim(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await json_body(request)
    worker = _worker(body, caller)
    limit = as_int(body.get("limit"), "limit", 50)
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
    ids = [as_int(i, "ids", 0) for i in body.get("ids") or []]
    lease = _lease(body, svc)
    await svc.write(lambda s: staging.extend(s, caller, worker, ids, lease))
    return Response(status_code=204)


@endpoint
async def stage_finish(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await json_body(request)
    worker = _worker(body, caller)
    file_id = as_int(request.path_params["fid"], "file id", 0)
    outcome = request.path_params["outcome"]
    if outcome not in ("complete", "fail"):
        raise UsageError(f"unknown outcome {outcome!r}: complete or fail")
    if outcome == "complete":
        result = await svc.write(
            lambda s: staging.file_dict(staging.complete(s, caller, worker, file_id))
        )
    else:
        reason = str(body.get("reason") or "")
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
    "ROUTES",
    "ROUTES_DOC",
    "stage_cancel",
    "stage_claim",
    "stage_extend",
    "stage_finish",
    "stage_get",
    "stage_submit",
]
