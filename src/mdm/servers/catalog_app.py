"""The catalog service (``mdm serve catalog``): DICOMweb QIDO-RS, file catalog, vault, staging.

``create_app(settings)`` is pure (no sockets): tests drive it in-process, ``mdm.servers.run``
serves it over mutual TLS, which puts the verified ``Identity`` in each request scope. Every
endpoint turns that identity into a ``catalog.Caller`` and calls exactly one catalog function in
one short transaction (run in a worker thread, so the event loop never blocks on the database).
Errors are ``MDMError`` subclasses rendered as problem+json by ``mdm.servers.http``.

This module is the wiring and the OpenAPI document only. The routes of each part live in a
module named after it: ``catalog_files`` (file catalog), ``catalog_qido`` (metadata search),
``catalog_acl``, ``catalog_vault`` (identity vault and audit chain), ``catalog_staging`` (staging
queue); what they share (authentication, transactions, request parsing) is ``catalog_service``.
Each part lists its routes twice, next to the handlers: ``ROUTES`` for Starlette and
``ROUTES_DOC`` (summary and needed right) for OpenAPI, so a route and its description change
together. Names that other code imports from here are re-exported.

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

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mdm import __version__
from mdm.catalog.db import CatalogDatabases
from mdm.servers import catalog_acl, catalog_files, catalog_qido, catalog_staging, catalog_vault
from mdm.servers.catalog_qido import DICOM_JSON, DicomJSONResponse
from mdm.servers.catalog_service import CatalogService, RouteDoc, endpoint
from mdm.servers.http import EXCEPTION_HANDLERS
from mdm.settings import Settings

#: (method, path, summary, right) of every route, in the order the document lists them.
ROUTES_DOC: list[RouteDoc] = [
    *catalog_qido.ROUTES_DOC,
    *catalog_files.ROUTES_DOC,
    *catalog_acl.ROUTES_DOC,
    *catalog_vault.ROUTES_DOC,
    *catalog_staging.ROUTES_DOC,
]

#: Path parameters any route may carry; each is documented where ``{name}`` is in the path.
_PATH_PARAMS = ("study", "series", "rid", "fid")


def openapi_schema() -> dict[str, Any]:
    """OpenAPI 3.1 description of the routes, with the catalog right each one needs."""
    paths: dict[str, Any] = {}
    for method, path, summary, right in ROUTES_DOC:
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in _PATH_PARAMS
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


async def openapi(request: Request) -> Response:
    """``GET /openapi.json``: asks for no identity (like ``/``), so tools can discover the API."""
    return JSONResponse(openapi_schema())


async def root(request: Request) -> Response:
    """``GET /``: which service and version answers, without asking for an identity."""
    return JSONResponse({"service": "mdm-catalog", "version": __version__})


def routes() -> list[BaseRoute]:
    """Every route of the catalog service, in matching order."""
    return [
        Route("/", root),
        Route("/openapi.json", openapi),
        *catalog_qido.ROUTES,
        *catalog_files.ROUTES,
        *catalog_acl.ROUTES,
        *catalog_vault.ROUTES,
        *catalog_staging.ROUTES,
    ]


def create_app(settings: Settings, *, databases: CatalogDatabases | None = None) -> Starlette:
    """The catalog ASGI app. *databases* defaults to those of ``settings.catalog``.

    The schema must be current (``mdm catalog upgrade``, or ``catalog.auto_upgrade``).
    """
    cfg = settings.catalog
    from mdm.catalog import migrations

    if databases is not None:
        dbs = databases
    elif cfg.auto_upgrade:
        dbs = CatalogDatabases.from_settings(cfg)
        migrations.upgrade(dbs)
    else:
        dbs = migrations.open_current(cfg)  # a clear refusal at start, not 500s later
    app = Starlette(routes=routes(), exception_handlers=EXCEPTION_HANDLERS)
    app.state.catalog = CatalogService(cfg, dbs)
    return app


__all__ = [
    "DICOM_JSON",
    "ROUTES_DOC",
    "CatalogService",
    "DicomJSONResponse",
    "create_app",
    "endpoint",
    "openapi_schema",
    "routes",
]
