"""The catalog service (``mdm serve catalog``): DICOMweb QIDO-RS, file catalog, vault, staging.

``create_app(settings)`` is pure (no sockets): tests drive it in-process, ``mdm.servers.run``
serves it over mutual TLS, which puts the verified ``Identity`` in each request scope. Every
endpoint turns that identity into a ``catalog.Caller`` and calls exactly one catalog function in
one short transaction (run in a worker thread, so the event loop never blocks on the database).
Errors are ``MDMError`` subclasses rendered as problem+json by ``mdm.servers.http``.

Routes (rights are the catalog's directory rights, see docs/catalog.md)::

    GET  /studies  /series  /instances                          QIDO-RS (list), dicom+json
    GET  /studies/{study}/series  /studies/{study}/instances
    GET  /studies/{study}/series/{series}/instances
    GET  /files?path=  /files/stat?path=  /files/replicas?path=   ls, stat (list), replicas (read)
    POST /files  PUT /files/content  POST|DELETE /files/replicas  register, recall results (write)
    GET|PUT /acl?path=   POST /acl/check                          ACLs (admin), checks (services)
    GET  /identity/studies/{study}  /identity/studies?PatientID=   level 3 (identity), audited
    POST /identity/uids                                           services: original UIDs
    POST /staging/requests  GET /staging/requests/{id}  POST .../cancel
    POST /staging/claim  /staging/extend  /staging/files/{id}/complete|fail   (services)
    GET  /audit/verify (admin)   GET /openapi.json
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mdm import __version__
from mdm.acl import Identity
from mdm.catalog import access, audit, files, metadata, qido, registration, staging, vault
from mdm.catalog.access import Caller
from mdm.catalog.db import CatalogDatabases
from mdm.catalog.models import Right
from mdm.catalog.registration import Registration, ReplicaSpec, file_info
from mdm.errors import FileNotFound, PermissionDenied, RequestTooLarge, UsageError
from mdm.servers.http import EXCEPTION_HANDLERS, require_identity
from mdm.settings import CatalogSettings, Settings

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
MAX_BODY = 4 * 1024 * 1024


class DicomJSONResponse(JSONResponse):
    media_type = DICOM_JSON


class CatalogService:
    """What the endpoints share: the databases and how to turn an identity into a Caller."""

    def __init__(self, settings: CatalogSettings, databases: CatalogDatabases) -> None:
        self.settings = settings
        self.dbs = databases
        self._admins = [f"dn:{d}" for d in settings.admin_dns] + [
            f"fqan:{f}" for f in settings.admin_fqans
        ]
        self._services = [f"dn:{d}" for d in settings.service_dns] + [
            f"fqan:{f}" for f in settings.service_fqans
        ]

    def caller(self, who: Identity) -> Caller:
        return Caller.of(who, admin_entries=self._admins, service_entries=self._services)

    @contextlib.contextmanager
    def sessions(
        self, *, catalog_write: bool, vault_write: bool
    ) -> Iterator[tuple[Session, Session]]:
        """Catalog and vault sessions; one session when both live in the same database."""
        if not self.dbs.separate_vault:
            with self.dbs.catalog.session(write=catalog_write or vault_write) as s:
                yield s, s
            return
        with (
            self.dbs.catalog.session(write=catalog_write) as cs,
            self.dbs.vault.session(write=vault_write) as vs,
        ):
            yield cs, vs


Handler = Callable[[Request, CatalogService, Caller], Awaitable[Response]]


def endpoint(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate (401/403 before anything else), then call *fn* with the caller."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        service: CatalogService = request.app.state.catalog
        caller = service.caller(require_identity(request))
        return await fn(request, service, caller)

    return wrapper


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise RequestTooLarge(f"request body over {MAX_BODY} bytes")
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise UsageError(f"request body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError("request body must be a JSON object")
    return data


def _param(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise UsageError(f"query parameter {name!r} is required")
    return value


def _int(value: Any, name: str, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{name} must be an integer") from exc


# ------------------------------------------------------------------------------------ QIDO


def _qido(level: qido.Level) -> Callable[[Request], Awaitable[Response]]:
    @endpoint
    async def search(request: Request, svc: CatalogService, caller: Caller) -> Response:
        fixed = {}
        if "study" in request.path_params:
            fixed["StudyInstanceUID"] = files.check_uid(request.path_params["study"], "study UID")
        if "series" in request.path_params:
            fixed["SeriesInstanceUID"] = files.check_uid(
                request.path_params["series"], "series UID"
            )
        query = qido.parse(
            level,
            request.query_params.multi_items(),
            max_limit=svc.settings.qido_max_results,
            fixed=fixed,
        )

        def run() -> metadata.SearchResult:
            with svc.dbs.catalog.session() as s:
                return metadata.search(s, caller, query, max_results=svc.settings.qido_max_results)

        result = await run_in_threadpool(run)
        headers = {"Warning": ", ".join(result.warnings)} if result.warnings else None
        return DicomJSONResponse(result.matches, headers=headers)

    return search


# ------------------------------------------------------------------------------ file catalog


@endpoint
async def ls(request: Request, svc: CatalogService, caller: Caller) -> Response:
    path = request.query_params.get("path", access.ROOT)
    limit = min(_int(request.query_params.get("limit"), "limit", 1000), 10000)
    offset = _int(request.query_params.get("offset"), "offset", 0)

    def run() -> list[dict[str, Any]]:
        with svc.dbs.catalog.session() as s:
            entries = files.list_dir(s, caller, path, limit=limit, offset=offset)
            return [files.entry_dict(e) for e in entries]

    return JSONResponse({"path": path, "entries": await run_in_threadpool(run)})


@endpoint
async def stat(request: Request, svc: CatalogService, caller: Caller) -> Response:
    path = _param(request, "path")

    def run() -> dict[str, Any]:
        with svc.dbs.catalog.session() as s:
            entry = files.get_entry(s, caller, path)
            out = files.entry_dict(entry)
            out["rights"] = access.effective_rights(s, caller, entry.path)
            if Right.READ.value in out["rights"]:
                out["replicas"] = [files.replica_dict(r) for r in entry.replicas]
            else:  # states without URLs: enough to know whether staging is needed
                out["replicas"] = [{"se": r.se, "state": r.state.value} for r in entry.replicas]
            return out

    return JSONResponse(await run_in_threadpool(run))


@endpoint
async def register(request: Request, svc: CatalogService, caller: Caller) -> Response:
    reg = Registration.from_json(await _body(request))

    def run() -> tuple[dict[str, Any], bool]:
        with svc.sessions(catalog_write=True, vault_write=reg.original is not None) as (cs, vs):
            entry, created = registration.register(cs, vs, caller, reg)
            return files.entry_dict(entry, with_replicas=True), created

    entry, created = await run_in_threadpool(run)
    return JSONResponse({"entry": entry, "created": created}, status_code=201 if created else 200)


@endpoint
async def register_batch(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await _body(request)
    items = body.get("registrations")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise UsageError("'registrations' must be a list of registration objects")
    regs = [Registration.from_json(i) for i in items]

    def run() -> list[dict[str, Any]]:
        vault_write = any(r.original is not None for r in regs)
        with svc.sessions(catalog_write=True, vault_write=vault_write) as (cs, vs):
            done = registration.register_many(cs, vs, caller, regs)
            return [{"entry": files.entry_dict(e), "created": c} for e, c in done]

    return JSONResponse({"results": await run_in_threadpool(run)})


@endpoint
async def set_content(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await _body(request)
    path = str(body.get("path") or "")

    def run() -> dict[str, Any]:
        with svc.dbs.catalog.session(write=True) as s:
            return files.entry_dict(files.set_content(s, caller, path, file_info(body)))

    return JSONResponse(await run_in_threadpool(run))


@endpoint
async def replicas(request: Request, svc: CatalogService, caller: Caller) -> Response:
    if request.method == "GET":
        path = _param(request, "path")

        def run_list() -> list[dict[str, Any]]:
            with svc.dbs.catalog.session() as s:
                return [files.replica_dict(r) for r in files.list_replicas(s, caller, path)]

        return JSONResponse({"path": path, "replicas": await run_in_threadpool(run_list)})
    if request.method == "DELETE":
        path, se = _param(request, "path"), _param(request, "se")

        def run_delete() -> None:
            with svc.dbs.catalog.session(write=True) as s:
                files.remove_replica(s, caller, path, se)

        await run_in_threadpool(run_delete)
        return Response(status_code=204)
    body = await _body(request)
    spec = ReplicaSpec.from_json(body)
    path = str(body.get("path") or "")

    def run_add() -> dict[str, Any]:
        with svc.dbs.catalog.session(write=True) as s:
            replica = files.add_replica(
                s, caller, path, se=spec.se, url=spec.url, state=spec.state,
                pinned_until=spec.pinned_until, reason=spec.reason, info=file_info(body),
            )  # fmt: skip
            return files.replica_dict(replica)

    return JSONResponse(await run_in_threadpool(run_add))


@endpoint
async def acl(request: Request, svc: CatalogService, caller: Caller) -> Response:
    if request.method == "GET":
        path = request.query_params.get("path", access.ROOT)

        def run_get() -> dict[str, Any]:
            with svc.dbs.catalog.session() as s:
                if not access.has_right(s, caller, path, Right.LIST):  # who may see whom
                    raise FileNotFound(f"no such entry: {path}", path=path)
                return {
                    "path": path,
                    "entries": access.get_acl(s, path),
                    "rights": access.effective_rights(s, caller, path),
                }

        return JSONResponse(await run_in_threadpool(run_get))
    body = await _body(request)
    path = str(body.get("path") or "")
    entries = body.get("entries")
    if not isinstance(entries, dict) or not all(isinstance(v, list) for v in entries.values()):
        raise UsageError("'entries' must map ACL entries to lists of rights")

    def run_set() -> dict[str, Any]:
        with svc.sessions(catalog_write=True, vault_write=True) as (cs, vs):
            access.require(cs, caller, path, Right.ADMIN)
            access.set_acl(cs, path, entries)
            detail = {"entries": {k: sorted(v) for k, v in entries.items()}}
            audit.append(vs, actor=caller.name, action="acl.set", target=path, detail=detail)
            return {"path": path, "entries": access.get_acl(cs, path)}

    return JSONResponse(await run_in_threadpool(run_set))


def _identity_of(data: Any) -> Identity:
    if not isinstance(data, dict) or not data.get("dn"):
        raise UsageError("'identity' must be an object with 'dn' (and optional 'fqans')")
    return Identity(dn=str(data["dn"]), fqans=tuple(str(f) for f in data.get("fqans") or ()))


def _acting(svc: CatalogService, caller: Caller, body: dict[str, Any]) -> Caller:
    """Services (the storage element) may act for the user they authenticated."""
    if body.get("on_behalf_of") is None:
        return caller
    if not (caller.service or caller.admin):
        raise PermissionDenied("only service identities may act on behalf of another identity")
    return svc.caller(_identity_of(body["on_behalf_of"]))


@endpoint
async def acl_check(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await _body(request)
    who = _acting(svc, caller, {"on_behalf_of": body.get("identity")})
    path = str(body.get("path") or "")
    try:
        right = Right(str(body.get("right")))
    except ValueError as exc:
        raise UsageError(f"unknown right {body.get('right')!r}") from exc

    def run() -> dict[str, Any]:
        with svc.dbs.catalog.session() as s:
            return {
                "path": path,
                "right": right.value,
                "allowed": access.has_right(s, who, path, right),
            }

    return JSONResponse(await run_in_threadpool(run))


# ---------------------------------------------------------------------------------- vault


def _vault_call(
    svc: CatalogService, caller: Caller, action: str, target: str, fn: Callable[..., Any]
) -> Any:
    """Run *fn(check, vault_session)*; a refusal is audited in a transaction of its own."""
    try:
        with svc.sessions(catalog_write=False, vault_write=True) as (cs, vs):
            return fn(lambda p, r: access.has_right(cs, caller, p, r), vs)
    except PermissionDenied:
        with svc.sessions(catalog_write=False, vault_write=True) as (_, vs):
            vault.audit_denial(vs, caller, action, target)
        raise


@endpoint
async def identity_study(request: Request, svc: CatalogService, caller: Caller) -> Response:
    study = files.check_uid(request.path_params["study"], "study UID")
    reason = request.query_params.get("reason", "")
    result = await run_in_threadpool(
        _vault_call, svc, caller, "identity.study", study,
        lambda check, vs: vault.study_identity(vs, caller, check, study, reason=reason),
    )  # fmt: skip
    return JSONResponse(result)


@endpoint
async def identity_find(request: Request, svc: CatalogService, caller: Caller) -> Response:
    q = request.query_params
    reason = q.get("reason", "")
    result = await run_in_threadpool(
        _vault_call, svc, caller, "identity.find", "-",
        lambda check, vs: vault.find_studies(
            vs, caller, check, patient_id=q.get("PatientID"),
            accession_number=q.get("AccessionNumber"), reason=reason,
        ),
    )  # fmt: skip
    return JSONResponse({"studies": result})


@endpoint
async def identity_uids(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await _body(request)
    uids = body.get("uids")
    if not isinstance(uids, list) or not uids or not all(isinstance(u, str) for u in uids):
        raise UsageError("'uids' must be a non-empty list of pseudonymous UIDs")
    reason = str(body.get("reason") or "recall")
    result = await run_in_threadpool(
        _vault_call, svc, caller, "identity.uids", ",".join(uids[:5]),
        lambda check, vs: vault.original_uids(vs, caller, check, uids, reason=reason),
    )  # fmt: skip
    return JSONResponse({"uids": result})


# -------------------------------------------------------------------------------- staging


def _write(svc: CatalogService, fn: Callable[[Session], Any]) -> Any:
    with svc.dbs.catalog.session(write=True) as s:
        return fn(s)


def _read(svc: CatalogService, fn: Callable[[Session], Any]) -> Any:
    with svc.dbs.catalog.session() as s:
        return fn(s)


@endpoint
async def stage_submit(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await _body(request)
    who = _acting(svc, caller, body)
    paths = body.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise UsageError("'paths' must be a list of LFNs")
    result = await run_in_threadpool(
        _write, svc, lambda s: staging.request_dict(staging.submit(s, who, paths))
    )
    return JSONResponse(result, status_code=201)


@endpoint
async def stage_get(request: Request, svc: CatalogService, caller: Caller) -> Response:
    rid = request.path_params["rid"]
    result = await run_in_threadpool(
        _read, svc, lambda s: staging.request_dict(staging.get_request(s, caller, rid))
    )
    return JSONResponse(result)


@endpoint
async def stage_cancel(request: Request, svc: CatalogService, caller: Caller) -> Response:
    rid = request.path_params["rid"]
    body = await _body(request)
    paths = body.get("paths")
    result = await run_in_threadpool(
        _write, svc, lambda s: staging.request_dict(staging.cancel(s, caller, rid, paths))
    )
    return JSONResponse(result)


@endpoint
async def stage_claim(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await _body(request)
    worker = str(body.get("worker") or caller.name)
    limit = _int(body.get("limit"), "limit", 50)
    lease = float(body.get("lease") or svc.settings.claim_lease_seconds)

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

    return JSONResponse({"worker": worker, "files": await run_in_threadpool(_write, svc, run)})


@endpoint
async def stage_extend(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await _body(request)
    worker = str(body.get("worker") or caller.name)
    ids = [_int(i, "ids", 0) for i in body.get("ids") or []]
    lease = float(body.get("lease") or svc.settings.claim_lease_seconds)
    await run_in_threadpool(_write, svc, lambda s: staging.extend(s, caller, worker, ids, lease))
    return Response(status_code=204)


@endpoint
async def stage_finish(request: Request, svc: CatalogService, caller: Caller) -> Response:
    body = await _body(request)
    worker = str(body.get("worker") or caller.name)
    file_id = _int(request.path_params["fid"], "file id", 0)
    outcome = request.path_params["outcome"]
    if outcome not in ("complete", "fail"):
        raise UsageError(f"unknown outcome {outcome!r}: complete or fail")
    if outcome == "complete":
        result = await run_in_threadpool(
            _write, svc, lambda s: staging.file_dict(staging.complete(s, caller, worker, file_id))
        )
    else:
        reason = str(body.get("reason") or "")
        result = await run_in_threadpool(
            _write, svc,
            lambda s: staging.file_dict(staging.fail(s, caller, worker, file_id, reason)),
        )  # fmt: skip
    return JSONResponse(result)


@endpoint
async def audit_verify(request: Request, svc: CatalogService, caller: Caller) -> Response:
    if not caller.admin:
        raise PermissionDenied("only administrators verify the audit log")

    def run() -> dict[str, Any]:
        with svc.sessions(catalog_write=False, vault_write=False) as (_, vs):
            v = audit.verify(vs)
            return {"records": v.records, "head": v.head}

    return JSONResponse(await run_in_threadpool(run))


async def root(request: Request) -> Response:
    return JSONResponse({"service": "mdm-catalog", "version": __version__})


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_schema())


def openapi_schema() -> dict[str, Any]:
    """OpenAPI 3.1 description of the routes, with the catalog right each one needs."""
    paths: dict[str, Any] = {}
    for method, path, summary, right in ROUTES_DOC:
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in ("study", "series", "rid", "fid")
            if "{" + n + "}" in path
        ]
        problem = {"description": "problem+json (RFC 9457); type is the MDM error class"}
        media = (
            DICOM_JSON
            if path.startswith(("/studies", "/series", "/instances"))
            else "application/json"
        )
        paths.setdefault(path, {})[method.lower()] = {
            "summary": summary,
            "description": f"Needs the catalog right: {right}.",
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {media: {}}},
                "400": problem, "401": problem, "403": problem, "404": problem,
            },
        }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "MDM catalog", "version": __version__},
        "components": {
            "securitySchemes": {"mutualTLS": {"type": "mutualTLS"}},
        },
        "security": [{"mutualTLS": []}],
        "paths": paths,
    }


#: (method, path, summary, right) for the OpenAPI document.
ROUTES_DOC: list[tuple[str, str, str, str]] = [
    ("GET", "/studies", "QIDO-RS search for studies", "list"),
    ("GET", "/series", "QIDO-RS search for series", "list"),
    ("GET", "/instances", "QIDO-RS search for instances", "list"),
    ("GET", "/studies/{study}/series", "QIDO-RS series of a study", "list"),
    ("GET", "/studies/{study}/instances", "QIDO-RS instances of a study", "list"),
    ("GET", "/studies/{study}/series/{series}/instances", "QIDO-RS instances of a series", "list"),
    ("GET", "/files", "List a directory (ls)", "list"),
    ("GET", "/files/stat", "One entry by LFN or GUID (stat)", "list"),
    ("POST", "/files", "Register an instance (file, metadata, identity)", "write"),
    ("POST", "/files/batch", "Register up to 1000 instances in one transaction", "write"),
    ("PUT", "/files/content", "Record size, checksums and key id after a recall", "write"),
    ("GET", "/files/replicas", "Replicas of a file", "read"),
    ("POST", "/files/replicas", "Add or update a replica", "write"),
    ("DELETE", "/files/replicas", "Remove a replica", "write"),
    ("GET", "/acl", "Grants on a directory", "list"),
    ("PUT", "/acl", "Replace the grants on a directory", "admin"),
    ("POST", "/acl/check", "Check a right for another identity", "service"),
    ("GET", "/identity/studies/{study}", "Original identity of a study", "identity"),
    ("GET", "/identity/studies", "Pseudonymous studies of an original PatientID", "identity"),
    ("POST", "/identity/uids", "Original UIDs of pseudonymous UIDs", "service or identity"),
    ("POST", "/staging/requests", "Submit a staging request", "read"),
    ("GET", "/staging/requests/{rid}", "Staging request status", "owner"),
    ("POST", "/staging/requests/{rid}/cancel", "Cancel a staging request", "owner"),
    ("POST", "/staging/claim", "Claim a batch of one series", "service"),
    ("POST", "/staging/extend", "Renew a claim's lease", "service"),
    ("POST", "/staging/files/{fid}/complete", "Mark a claimed file COMPLETED", "service"),
    ("POST", "/staging/files/{fid}/fail", "Mark a claimed file FAILED", "service"),
    ("GET", "/audit/verify", "Verify the audit hash chain", "admin"),
]


def create_app(settings: Settings, *, databases: CatalogDatabases | None = None) -> Starlette:
    """The catalog ASGI app. *databases* defaults to those of ``settings.catalog``.

    The schema must be current (``mdm catalog upgrade``, or ``catalog.auto_upgrade``).
    """
    cfg = settings.catalog
    dbs = databases or CatalogDatabases(
        cfg.database_url, cfg.vault_database_url, busy_timeout=cfg.busy_timeout_seconds
    )
    if cfg.auto_upgrade:
        from mdm.catalog.migrations import upgrade

        upgrade(dbs)
    routes = [
        Route("/", root),
        Route("/openapi.json", openapi),
        Route("/studies", _qido("study")),
        Route("/series", _qido("series")),
        Route("/instances", _qido("instance")),
        Route("/studies/{study}/series", _qido("series")),
        Route("/studies/{study}/instances", _qido("instance")),
        Route("/studies/{study}/series/{series}/instances", _qido("instance")),
        Route("/files", ls, methods=["GET"]),
        Route("/files", register, methods=["POST"]),
        Route("/files/batch", register_batch, methods=["POST"]),
        Route("/files/stat", stat),
        Route("/files/content", set_content, methods=["PUT"]),
        Route("/files/replicas", replicas, methods=["GET", "POST", "DELETE"]),
        Route("/acl", acl, methods=["GET", "PUT"]),
        Route("/acl/check", acl_check, methods=["POST"]),
        Route("/identity/studies/{study}", identity_study),
        Route("/identity/studies", identity_find),
        Route("/identity/uids", identity_uids, methods=["POST"]),
        Route("/staging/requests", stage_submit, methods=["POST"]),
        Route("/staging/requests/{rid}", stage_get),
        Route("/staging/requests/{rid}/cancel", stage_cancel, methods=["POST"]),
        Route("/staging/claim", stage_claim, methods=["POST"]),
        Route("/staging/extend", stage_extend, methods=["POST"]),
        Route("/staging/files/{fid:int}/{outcome:str}", stage_finish, methods=["POST"]),
        Route("/audit/verify", audit_verify),
    ]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    app.state.catalog = CatalogService(cfg, dbs)
    return app


__all__ = ["DICOM_JSON", "CatalogService", "create_app", "openapi_schema"]
