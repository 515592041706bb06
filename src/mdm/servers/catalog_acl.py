"""Directory ACLs over HTTP: read and replace the grants, and let services check a right.

Grants live on ``/dicom``, a study or a series directory and are inherited downward
(``mdm.catalog.access``). Reading them needs ``list`` on the path, and a caller without it gets
404, not 403, so that the existence of a study does not leak. Replacing them needs ``admin`` and
is written to the audit chain in the same request. ``/acl/check`` is for services (the storage
element) that authenticated a user themselves and must ask the catalog about that user's rights.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mdm.catalog import access, audit
from mdm.catalog.access import Caller
from mdm.catalog.models import Right
from mdm.errors import FileNotFound, UsageError
from mdm.servers.catalog_service import CatalogService, RouteDoc, acting, endpoint, json_body


@endpoint
async def acl(request: Request, svc: CatalogService, caller: Caller) -> Response:
    """GET the grants on a directory, PUT to replace them (audited)."""
    if request.method == "GET":
        path = request.query_params.get("path", access.ROOT)

        def run_get(s: Session) -> dict[str, Any]:
            if not access.has_right(s, caller, path, Right.LIST):  # who may see whom
                raise FileNotFound(f"no such entry: {path}", path=path)
            return {
                "path": path,
                "entries": access.get_acl(s, path),
                "rights": access.effective_rights(s, caller, path),
            }

        return JSONResponse(await svc.read(run_get))
    body = await json_body(request)
    path = str(body.get("path") or "")
    entries = body.get("entries")
    if not isinstance(entries, dict) or not all(isinstance(v, list) for v in entries.values()):
        raise UsageError("'entries' must map ACL entries to lists of rights")

    def run_set(cs: Session, vs: Session) -> dict[str, Any]:
        access.require(cs, caller, path, Right.ADMIN)
        access.set_acl(cs, path, entries)
        detail = {"entries": {k: sorted(v) for k, v in entries.items()}}
        audit.append(vs, actor=caller.name, action="acl.set", target=path, detail=detail)
        return {"path": path, "entries": access.get_acl(cs, path)}

    return JSONResponse(await svc.with_vault(run_set, catalog_write=True, vault_write=True))


@endpoint
async def acl_check(request: Request, svc: CatalogService, caller: Caller) -> Response:
    """Whether ``identity`` holds ``right`` on ``path``: services only (see ``acting``)."""
    body = await json_body(request)
    who = acting(svc, caller, {"on_behalf_of": body.get("identity")})
    path = str(body.get("path") or "")
    try:
        right = Right(str(body.get("right")))
    except ValueError as exc:
        raise UsageError(f"unknown right {body.get('right')!r}") from exc
    allowed = await svc.read(lambda s: access.has_right(s, who, path, right))
    return JSONResponse({"path": path, "right": right.value, "allowed": allowed})


ROUTES = [
    Route("/acl", acl, methods=["GET", "PUT"]),
    Route("/acl/check", acl_check, methods=["POST"]),
]

ROUTES_DOC: list[RouteDoc] = [
    ("GET", "/acl", "Grants on a directory", "list"),
    ("PUT", "/acl", "Replace the grants on a directory", "admin"),
    ("POST", "/acl/check", "Check a right for another identity", "service"),
]

__all__ = ["ROUTES", "ROUTES_DOC", "acl", "acl_check"]
