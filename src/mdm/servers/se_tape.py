"""The WLCG Tape REST API v1 of the storage element: discovery, stage, poll, cancel, release,
archiveinfo, and deletion of a request.

Shaped by what gfal2 2.21.3 really sends (notes/grid-clients.md §3): ``POST /api/v1/stage/``
and ``/archiveinfo/`` with a trailing slash (newer gfal2 sends none; both are routes here, no
redirect), ``release/gfal2-placeholder-id`` from ``gfal-evict`` (released by path), stage must
answer 201 with ``requestId``, cancel and release must answer 200, the poll ``id`` must equal the
request id, files are reported with ``state`` (never ``onDisk`` as well), and no ``error`` key
appears unless there is an error (gfal2 counts even ``"error": null`` as a failure). Errors are
RFC 7807 problem+json through ``mdm.servers.http``. Discovery is public (RFC 8615 metadata);
everything else needs a verified identity, and the backend checks ``read`` on every path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mdm._log import audit_logger
from mdm.errors import PermissionDenied, RequestTooLarge, UsageError
from mdm.servers.http import read_json_object, require_identity
from mdm.settings import StorageSettings
from mdm.storage.backend import Right, StageRequest, StorageBackend, normalize_lfn

API = "/api/v1"
MAX_BODY = 8 << 20
MAX_DISK_LIFETIME = 7 * 86400.0
_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def _backend(request: Request) -> StorageBackend:
    backend: StorageBackend = request.app.state.backend
    return backend


def _settings(request: Request) -> StorageSettings:
    settings: StorageSettings = request.app.state.storage_settings
    return settings


def parse_duration(text: str) -> float:
    """ISO 8601 duration as the Tape REST ``diskLifetime`` uses it (``PT1H``, ``P2DT30M``)."""
    m = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if m is None or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise UsageError(f"diskLifetime must be an ISO 8601 duration such as PT1H, not {text!r}")
    d, h, mi, s = (float(m.group(k) or 0) for k in "dhms")
    return d * 86400 + h * 3600 + mi * 60 + s


async def read_json(request: Request) -> dict[str, Any]:
    """The JSON object of a Tape REST request, refused (413) over ``MAX_BODY`` while streaming.

    Every Tape REST body is an object (``{"files": [...]}``, ``{"paths": [...]}``); the reading,
    the cap and the 400/413 wording are those of every MDM server (``mdm.servers.http``).
    """
    return await read_json_object(request, limit=MAX_BODY)


def _paths(doc: Any, limit: int) -> list[str]:
    paths = doc.get("paths") if isinstance(doc, dict) else None
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise UsageError("JSON validation error: paths must be a non-empty array of strings")
    if len(paths) > limit:
        raise RequestTooLarge(f"at most {limit} paths per request")
    return paths


async def discovery(request: Request) -> Response:
    """``/.well-known/wlcg-tape-rest-api``: where the v1 endpoint is (gfal2 caches it)."""
    base = str(request.base_url).rstrip("/")
    return JSONResponse(
        {
            "sitename": _settings(request).name,
            "description": "MDM storage element: DICOM files, NEARLINE until staged",
            "endpoints": [{"uri": f"{base}{API}/", "version": "v1", "metadata": {}}],
        }
    )


async def stage(request: Request) -> Response:
    who = require_identity(request)
    doc = await read_json(request)
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list) or not files:
        raise UsageError("JSON validation error: files must be a non-empty array")
    if len(files) > _settings(request).max_bulk_paths:
        raise RequestTooLarge(f"at most {_settings(request).max_bulk_paths} files per request")
    paths, lifetimes = [], []
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            raise UsageError("JSON validation error: every file needs a string path")
        paths.append(f["path"])
        if f.get("diskLifetime") is not None:  # targetedMetadata and the rest: ignored (spec)
            lifetimes.append(parse_duration(f["diskLifetime"]))
    lifetime = min(max(lifetimes), MAX_DISK_LIFETIME) if lifetimes else None
    rid = await run_in_threadpool(_backend(request).stage, who, paths, lifetime)
    audit_logger().info("stage request=%s files=%d dn=%s", rid, len(paths), who.dn)
    location = f"{str(request.base_url).rstrip('/')}{API}/stage/{rid}"
    return JSONResponse({"requestId": rid}, status_code=201, headers={"Location": location})


def _poll_body(req: StageRequest) -> dict[str, Any]:
    files = []
    for f in req.files:
        item: dict[str, Any] = {"path": f.path, "state": str(f.state)}
        if f.started_at is not None:
            item["startedAt"] = f.started_at
        if f.finished_at is not None:
            item["finishedAt"] = f.finished_at
        if f.error:
            item["error"] = f.error
        files.append(item)
    body: dict[str, Any] = {
        "id": req.id,
        "createdAt": req.created_at,
        "startedAt": req.started_at if req.started_at is not None else req.created_at,
        "files": files,
    }
    if req.completed_at is not None:
        body["completedAt"] = req.completed_at
    return body


async def stage_request(request: Request) -> Response:
    """GET: poll; DELETE: cancel what is pending and forget the request."""
    who = require_identity(request)
    rid = request.path_params["rid"]
    if request.method == "DELETE":
        await run_in_threadpool(_backend(request).delete_request, who, rid)
        return Response(status_code=200)
    req = await run_in_threadpool(_backend(request).poll, who, rid)
    return JSONResponse(_poll_body(req))


async def cancel(request: Request) -> Response:
    who = require_identity(request)
    paths = _paths(await read_json(request), _settings(request).max_bulk_paths)
    rid = request.path_params["rid"]
    await run_in_threadpool(_backend(request).cancel, who, rid, paths)
    return Response(status_code=200)


async def release(request: Request) -> Response:
    who = require_identity(request)
    paths = _paths(await read_json(request), _settings(request).max_bulk_paths)
    rid = request.path_params["rid"]
    await run_in_threadpool(_backend(request).release, who, rid, paths)
    audit_logger().info("release request=%s files=%d dn=%s", rid, len(paths), who.dn)
    return Response(status_code=200)


def _archiveinfo(backend: StorageBackend, who: Any, paths: Sequence[str]) -> list[dict[str, str]]:
    clean: list[str | None] = []
    for p in paths:
        try:
            clean.append(normalize_lfn(p))
        except UsageError:
            clean.append(None)
    denied = [p for p in clean if p is not None and not backend.authorize(who, p, Right.LIST)]
    if denied:  # one forbidden path refuses the whole request: nothing is disclosed
        raise PermissionDenied(f"list access to {denied[0]} is not granted", lfn=denied[0])
    valid = [p for p in clean if p is not None]
    infos = {i.path: i for i in backend.archiveinfo(valid)} if valid else {}
    out = []
    for raw, lfn in zip(paths, clean, strict=True):
        info = infos.get(lfn) if lfn is not None else None
        if info is None:
            out.append({"path": raw, "error": "invalid path"})
        elif info.locality is not None:
            out.append({"path": lfn or raw, "locality": str(info.locality)})
        else:
            out.append({"path": lfn or raw, "error": info.error or "unavailable"})
    return out


async def archiveinfo(request: Request) -> Response:
    who = require_identity(request)
    paths = _paths(await read_json(request), _settings(request).max_bulk_paths)
    body = await run_in_threadpool(_archiveinfo, _backend(request), who, paths)
    return JSONResponse(body)


def tape_routes() -> list[BaseRoute]:
    """The Tape REST routes, each also with the trailing slash gfal2 2.21.3 appends."""
    table = [
        ("/stage", stage, ["POST"]),
        ("/stage/{rid}", stage_request, ["GET", "DELETE"]),
        ("/stage/{rid}/cancel", cancel, ["POST"]),
        ("/release/{rid}", release, ["POST"]),
        ("/archiveinfo", archiveinfo, ["POST"]),
    ]
    routes: list[BaseRoute] = [
        Route("/.well-known/wlcg-tape-rest-api", discovery, methods=["GET"]),
    ]
    for path, endpoint, methods in table:
        routes.append(Route(API + path, endpoint, methods=methods))
        routes.append(Route(API + path + "/", endpoint, methods=methods))
    return routes
