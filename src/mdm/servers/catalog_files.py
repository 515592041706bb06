"""The file catalog over HTTP: ls, stat, registration, recall results and replicas (level 1).

These are the routes the storage element, the recall worker and ``mdm ls/stat/register`` use;
the rules (LFN syntax, inherited directory rights, what a replica is) are in
``mdm.catalog.files`` and ``mdm.catalog.registration``, so each handler only parses the request
and runs one catalog call in one transaction. A registration that carries the original identity
writes the vault in the same request, which is why it asks for both sessions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mdm.catalog import access, files, registration
from mdm.catalog.access import Caller
from mdm.catalog.models import Right
from mdm.catalog.registration import MAX_SE, Registration, ReplicaSpec, file_info
from mdm.errors import UsageError
from mdm.servers.catalog_service import (
    CatalogService,
    RouteDoc,
    as_int,
    endpoint,
    json_body,
    query_param,
    text_field,
)
from mdm.servers.http import json_kind


def _replica(body: dict[str, Any]) -> ReplicaSpec:
    """The replica of a ``POST /files/replicas`` body (see ``ReplicaSpec``), checked: the
    field checks here only name a missing or mistyped field more plainly; the limits are
    ``ReplicaSpec``'s and ``file_info``'s, for every caller."""
    text_field(body, "se", max_length=MAX_SE)
    text_field(body, "url")
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise UsageError(f"reason must be a string, not {json_kind(reason)}", field="reason")
    return ReplicaSpec.from_json(body)


@endpoint
async def ls(request: Request, svc: CatalogService, caller: Caller) -> Response:
    path = request.query_params.get("path", access.ROOT)
    limit = min(as_int(request.query_params.get("limit"), "limit", 1000), 10000)
    offset = as_int(request.query_params.get("offset"), "offset", 0)  # >= 0: PostgreSQL refuses

    def run(s: Session) -> list[dict[str, Any]]:
        entries = files.list_dir(s, caller, path, limit=limit, offset=offset)
        return [files.entry_dict(e) for e in entries]

    return JSONResponse({"path": path, "entries": await svc.read(run)})


@endpoint
async def stat(request: Request, svc: CatalogService, caller: Caller) -> Response:
    path = query_param(request, "path")

    def run(s: Session) -> dict[str, Any]:
        entry = files.get_entry(s, caller, path)
        out = files.entry_dict(entry)
        out["rights"] = access.effective_rights(s, caller, entry.path)
        if Right.READ.value in out["rights"]:
            out["replicas"] = [files.replica_dict(r) for r in entry.replicas]
        else:  # states without URLs: enough to know whether staging is needed
            out["replicas"] = [{"se": r.se, "state": r.state.value} for r in entry.replicas]
        return out

    return JSONResponse(await svc.read(run))


@endpoint
async def register(request: Request, svc: CatalogService, caller: Caller) -> Response:
    reg = Registration.from_json(await json_body(request))

    def run(cs: Session, vs: Session) -> tuple[dict[str, Any], bool]:
        entry, created = registration.register(cs, vs, caller, reg)
        return files.entry_dict(entry, with_replicas=True), created

    entry, created = await svc.with_vault(
        run, catalog_write=True, vault_write=reg.original is not None
    )
    return JSONResponse({"entry": entry, "created": created}, status_code=201 if created else 200)


@endpoint
async def register_batch(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await json_body(request)
    items = body.get("registrations")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise UsageError("'registrations' must be a list of registration objects")
    regs = [Registration.from_json(i) for i in items]

    def run(cs: Session, vs: Session) -> list[dict[str, Any]]:
        done = registration.register_many(cs, vs, caller, regs)
        return [{"entry": files.entry_dict(e), "created": c} for e, c in done]

    vault_write = any(r.original is not None for r in regs)
    results = await svc.with_vault(run, catalog_write=True, vault_write=vault_write)
    return JSONResponse({"results": results})


@endpoint
async def set_content(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await json_body(request)
    path, info = text_field(body, "path"), file_info(body)
    return JSONResponse(
        await svc.write(lambda s: files.entry_dict(files.set_content(s, caller, path, info)))
    )


@endpoint
async def replicas(request: Request, svc: CatalogService, caller: Caller) -> Response:
    """GET lists, DELETE removes, POST adds or updates (one route, so 405 names all three)."""
    if request.method == "GET":
        path = query_param(request, "path")
        found = await svc.read(
            lambda s: [files.replica_dict(r) for r in files.list_replicas(s, caller, path)]
        )
        return JSONResponse({"path": path, "replicas": found})
    if request.method == "DELETE":
        path, se = query_param(request, "path"), query_param(request, "se")
        await svc.write(lambda s: files.remove_replica(s, caller, path, se))
        return Response(status_code=204)
    body = await json_body(request)
    path, spec, info = text_field(body, "path"), _replica(body), file_info(body)

    def run_add(s: Session) -> dict[str, Any]:
        replica = files.add_replica(
            s, caller, path, se=spec.se, url=spec.url, state=spec.state,
            pinned_until=spec.pinned_until, reason=spec.reason, info=info,
        )  # fmt: skip
        return files.replica_dict(replica)

    return JSONResponse(await svc.write(run_add))


ROUTES = [
    Route("/files", ls, methods=["GET"]),
    Route("/files", register, methods=["POST"]),
    Route("/files/batch", register_batch, methods=["POST"]),
    Route("/files/stat", stat),
    Route("/files/content", set_content, methods=["PUT"]),
    Route("/files/replicas", replicas, methods=["GET", "POST", "DELETE"]),
]

ROUTES_DOC: list[RouteDoc] = [
    ("GET", "/files", "List a directory (ls)", "list"),
    ("GET", "/files/stat", "One entry by LFN or GUID (stat)", "list"),
    ("POST", "/files", "Register an instance (file, metadata, identity)", "write"),
    ("POST", "/files/batch", "Register up to 1000 instances in one transaction", "write"),
    ("PUT", "/files/content", "Record size, checksums and key id after a recall", "write"),
    ("GET", "/files/replicas", "Replicas of a file", "read"),
    ("POST", "/files/replicas", "Add or update a replica", "write"),
    ("DELETE", "/files/replicas", "Remove a replica", "write"),
]

__all__ = [
    "ROUTES",
    "ROUTES_DOC",
    "ls",
    "register",
    "register_batch",
    "replicas",
    "set_content",
    "stat",
]
