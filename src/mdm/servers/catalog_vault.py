"""The identity vault over HTTP (level 3) and the verification of its audit chain.

Original patient identity and original UIDs are only ever read here, each read audited by
``mdm.catalog.vault`` in the vault's hash chain. The vault may live in a database of its own
(``catalog.vault_database_url``), while the rights that guard it are the catalog's directory
ACLs: each call reads rights from the catalog session and identity from the vault session. A
refusal is audited too, in a transaction of its own, because the refused transaction is rolled
back and would otherwise take the record of the attempt with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mdm.catalog import access, audit, files, vault
from mdm.catalog.access import Caller
from mdm.errors import PermissionDenied, UsageError
from mdm.servers.catalog_service import CatalogService, RouteDoc, endpoint, json_body


async def vault_call(
    svc: CatalogService,
    caller: Caller,
    action: str,
    target: str,
    fn: Callable[[vault.Check, Session], Any],
) -> Any:
    """Run *fn(check, vault_session)* in a worker thread; a refusal is audited on its own."""

    def run() -> Any:
        try:
            with svc.sessions(catalog_write=False, vault_write=True) as (cs, vs):
                return fn(lambda p, r: access.has_right(cs, caller, p, r), vs)
        except PermissionDenied:
            with svc.sessions(catalog_write=False, vault_write=True) as (_, vs):
                vault.audit_denial(vs, caller, action, target)
            raise

    return await run_in_threadpool(run)


@endpoint
async def identity_study(request: Request, svc: CatalogService, caller: Caller) -> Response:
    study = files.check_uid(request.path_params["study"], "study UID")
    reason = request.query_params.get("reason", "")
    result = await vault_call(
        svc, caller, "identity.study", study,
        lambda check, vs: vault.study_identity(vs, caller, check, study, reason=reason),
    )  # fmt: skip
    return JSONResponse(result)


@endpoint
async def identity_find(request: Request, svc: CatalogService, caller: Caller) -> Response:
    q = request.query_params
    reason = q.get("reason", "")
    result = await vault_call(
        svc, caller, "identity.find", "-",
        lambda check, vs: vault.find_studies(
            vs, caller, check, patient_id=q.get("PatientID"),
            accession_number=q.get("AccessionNumber"), reason=reason,
        ),
    )  # fmt: skip
    return JSONResponse({"studies": result})


@endpoint
async def identity_uids(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await json_body(request)
    uids = body.get("uids")
    if not isinstance(uids, list) or not uids or not all(isinstance(u, str) for u in uids):
        raise UsageError("'uids' must be a non-empty list of pseudonymous UIDs")
    reason = str(body.get("reason") or "recall")
    result = await vault_call(
        svc, caller, "identity.uids", ",".join(uids[:5]),
        lambda check, vs: vault.original_uids(vs, caller, check, uids, reason=reason),
    )  # fmt: skip
    return JSONResponse({"uids": result})


@endpoint
async def audit_verify(request: Request, svc: CatalogService, caller: Caller) -> Response:
    """Recompute the audit hash chain (it lives with the vault) and return its head."""
    if not caller.admin:
        raise PermissionDenied("only administrators verify the audit log")

    def run(_: Session, vs: Session) -> dict[str, Any]:
        v = audit.verify(vs)
        return {"records": v.records, "head": v.head}

    return JSONResponse(await svc.with_vault(run, catalog_write=False, vault_write=False))


ROUTES = [
    Route("/identity/studies/{study}", identity_study),
    Route("/identity/studies", identity_find),
    Route("/identity/uids", identity_uids, methods=["POST"]),
    Route("/audit/verify", audit_verify),
]

ROUTES_DOC: list[RouteDoc] = [
    ("GET", "/identity/studies/{study}", "Original identity of a study", "identity"),
    ("GET", "/identity/studies", "Pseudonymous studies of an original PatientID", "identity"),
    ("POST", "/identity/uids", "Original UIDs of pseudonymous UIDs", "service or identity"),
    ("GET", "/audit/verify", "Verify the audit hash chain", "admin"),
]

__all__ = [
    "ROUTES",
    "ROUTES_DOC",
    "audit_verify",
    "identity_find",
    "identity_study",
    "identity_uids",
    "vault_call",
]
